//! Kiln's frontend: the spec language.
//!
//! A model is a TOML spec ([`spec`]) whose bindings are written in a small expression language
//! ([`expr`]). [`lower`] evaluates a spec against a checkpoint's `config.json` and produces a
//! verified [`kiln_ir::Graph`]. Composite operations (layer norm, silu, token shift, causal
//! convolution, ...) are spec functions in the prelude (`models/prelude.toml`), embedded here.
//! An adapter spec ([`adapter`], `models/lora.toml`) rewrites a compiled model's matrix products;
//! [`compile_adapter`] builds that rewrite for an `adapter_config.json`.
//! Every error is a [`Diagnostic`] naming the file, line and column.

pub mod adapter;
pub mod expr;
pub mod lower;
pub mod source;
pub mod spec;

pub use adapter::{parse_adapter_spec, AdapterSpec};
pub use lower::adapter::{compile_adapter, AdapterCompiler, AdapterWeight, InitRule};
pub use lower::{compile, CompileOptions};
pub use source::{Diagnostic, Location, SourceFile};
pub use spec::{parse_spec, SpecFile};

/// The prelude's source text.
pub const PRELUDE: &str = include_str!("../../models/prelude.toml");
