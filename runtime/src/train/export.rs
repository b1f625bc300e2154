//! How a run's result is saved: [`SaveTrained`], implemented by the caller for what it trains
//! (a full model directory, a LoRA adapter), and [`SaveTensors`], which covers the common case of
//! one safetensors file of the trained tensors plus fixed side files.

use super::atomic::write_atomically;
use super::TrainableSpec;
use crate::checkpoint::{self, TensorData};
use crate::Error;
use std::path::Path;

/// Writes the trained tensors as the run's result. The trainer calls [`SaveTrained::save`] with
/// each checkpoint and after the last step, so the result in the output directory is always that
/// of the latest checkpoint.
pub trait SaveTrained {
    /// The names of the files [`SaveTrained::save`] writes in the output directory (a new run
    /// refuses to start if any exists, unless forced).
    fn file_names(&self) -> Vec<String>;

    /// Writes `params` (values of `trainables`, in order) into `dir`. Each file must be replaced
    /// atomically ([`write_atomically`], [`checkpoint::save`]), so a crash leaves the previous
    /// result whole.
    fn save(&mut self, dir: &Path, trainables: &[TrainableSpec], params: &[Vec<f32>]) -> Result<(), Error>;
}

/// Saves the trained tensors under their names to one safetensors file, and writes fixed side
/// files beside it: e.g. `model.safetensors` with `config.json` and `tokenizer.json` for a model
/// trained from scratch (every weight trained).
#[derive(Clone, Debug)]
pub struct SaveTensors {
    tensor_file: String,
    side_files: Vec<(String, Vec<u8>)>,
}

impl SaveTensors {
    /// Saves to `tensor_file` (a file name in the output directory).
    pub fn new(tensor_file: impl Into<String>) -> SaveTensors {
        SaveTensors { tensor_file: tensor_file.into(), side_files: Vec::new() }
    }

    /// Also writes `bytes` to `name` with every save.
    pub fn with_file(mut self, name: impl Into<String>, bytes: Vec<u8>) -> SaveTensors {
        self.side_files.push((name.into(), bytes));
        self
    }
}

impl SaveTrained for SaveTensors {
    fn file_names(&self) -> Vec<String> {
        std::iter::once(self.tensor_file.clone()).chain(self.side_files.iter().map(|(n, _)| n.clone())).collect()
    }

    fn save(&mut self, dir: &Path, trainables: &[TrainableSpec], params: &[Vec<f32>]) -> Result<(), Error> {
        let tensors: Vec<_> = trainables
            .iter()
            .zip(params)
            .map(|(spec, values)| (spec.name.as_str(), spec.shape.as_slice(), TensorData::F32(values)))
            .collect();
        checkpoint::save(&dir.join(&self.tensor_file), &tensors)?;
        for (name, bytes) in &self.side_files {
            write_atomically(&dir.join(name), bytes)?;
        }
        Ok(())
    }
}
