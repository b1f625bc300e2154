//! Kiln's passes over the IR. Each pass is a free function in its own module that takes a
//! graph and leaves it valid (the verifier holds before and after).

pub mod dead_code;

pub use dead_code::dead_code;
