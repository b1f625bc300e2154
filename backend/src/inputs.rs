//! Binding a call's inputs to a graph: determining the sequence length `T` and checking every
//! input against its declared type. Backend-neutral: every executor starts a call here.
//!
//! Rule: `inputs[i]` binds `graph.inputs()[i]`. The first input whose declared shape contains a
//! `T`-dependent dimension `T + k` fixes `T` as its actual size there minus `k`; a call needs
//! `T >= 1`. If no input depends on `T`, `T` is irrelevant and taken as 1. Then every input must
//! have exactly its declared dtype and its declared shape resolved for that `T`.
//!
//! Guarantee: on success, every input matches its declaration, so executors may rely on it;
//! on failure the error names the input by position and parameter name.

use crate::error::{ExecError, Location, NodeErrorKind, Scope};
use crate::tensor::Tensor;
use kiln_ir::{Dim, Graph, Type};

/// Checks `inputs` against `graph.inputs()` and returns the sequence length `T` of the call.
pub fn check_inputs(graph: &Graph, inputs: &[Tensor<'_>]) -> Result<usize, ExecError> {
    let ids = graph.inputs();
    if inputs.len() != ids.len() {
        return Err(ExecError::InputCount { expected: ids.len(), found: inputs.len() });
    }
    let mut declared: Vec<(&str, &Type)> = Vec::with_capacity(ids.len());
    for &id in ids {
        let node = graph.node(id);
        let name = graph.param(id).map_or("", |p| p.name.as_str());
        let Some(ty) = node.results.first() else {
            return Err(ExecError::Node {
                at: Box::new(Location { scope: Scope::default(), node: id, origin: node.origin.clone() }),
                kind: NodeErrorKind::Unbound { name: name.into(), what: "the input node declares no type".into() },
            });
        };
        declared.push((name, ty));
    }

    let type_error = |index: usize, t: Option<usize>| {
        let (name, ty) = declared[index];
        ExecError::InputType {
            index,
            name: name.into(),
            found: inputs[index].tensor_type(),
            declared: Box::new(ty.clone()),
            t,
        }
    };

    let mut t = 1;
    let first_seq = declared.iter().enumerate().find_map(|(i, (_, ty))| {
        ty.shape.dims().iter().enumerate().find_map(|(axis, d)| match *d {
            Dim::Seq(k) => Some((i, axis, k)),
            Dim::Fixed(_) => None,
        })
    });
    if let Some((index, axis, k)) = first_seq {
        let (name, ty) = declared[index];
        let found = inputs[index].shape();
        if found.len() != ty.rank() {
            return Err(type_error(index, None));
        }
        let size = i64::try_from(found[axis]).unwrap_or(i64::MAX);
        let seq = size.saturating_sub(k);
        t = match usize::try_from(seq) {
            Ok(t) if t >= 1 => t,
            _ => {
                return Err(ExecError::SeqLen {
                    index,
                    name: name.into(),
                    found: found.to_vec(),
                    declared: Box::new(ty.shape.clone()),
                    t: seq,
                })
            }
        };
    }

    for (index, (input, (_, ty))) in inputs.iter().zip(&declared).enumerate() {
        let ok = input.dtype() == ty.dtype && ty.shape.resolve(t).is_some_and(|s| s.as_slice() == input.shape());
        if !ok {
            return Err(type_error(index, Some(t)));
        }
    }
    Ok(t)
}
