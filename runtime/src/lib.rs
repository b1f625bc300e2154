//! Kiln runtime: load Hugging Face checkpoints, run models with carried state; the `kiln` CLI.
//!
//! ```no_run
//! use kiln_runtime::{LoadOptions, Model};
//! let model = Model::load("path/to/model".as_ref(), &LoadOptions::default())?;
//! let mut state = model.new_state();
//! let logits = model.forward(&[3, 14, 15], &mut state)?;   // [3, vocab]
//! let more = model.forward(&[92], &mut state)?;            // continues from the state
//! # Ok::<(), kiln_runtime::Error>(())
//! ```

pub mod adapter;
pub mod awq;
pub mod checkpoint;
pub mod cli;
mod demo;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod gradient;
pub mod init;
pub mod model;
pub mod quantized;
mod rng;
pub mod sample;
pub mod specs;
pub mod tokenizer;
pub mod train;

pub use adapter::{Adapter, AdapterConfig};
pub use error::Error;
pub use eval::{perplexity, EvalOptions, EvalReport};
pub use generate::{generate, GenerateOptions};
pub use gradient::{GradientOptions, GradientProgram, PlannedMemory};
pub use model::{compile_spec, compile_spec_with, resolve_spec, Backend, LoadOptions, Logits, Model, State, StateSlot};
pub use sample::{Sampler, SamplingOptions};
pub use tokenizer::Tokenizer;
