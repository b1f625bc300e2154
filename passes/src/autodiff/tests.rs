//! Structural tests of the autodiff pass (numerical checks live in the workspace tests).
