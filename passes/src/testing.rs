//! Helpers for the passes' unit tests.

use kiln_ir::{Graph, Param, ParamRole, Shape, Type, Value};

/// Adds an `f32` weight input of `shape`.
pub fn f32_input(g: &mut Graph, name: &str, shape: Shape) -> Value {
    g.add_input(Param { role: ParamRole::Weight, name: name.into() }, Type::f32(shape), None)
}

/// Fails the test if `g` is invalid.
pub fn finish(g: &Graph) {
    if let Err(e) = kiln_ir::verify(g) {
        panic!("{e}\n{g}");
    }
}
