//! [`AdapterError`]: every way reading, applying, binding or saving an adapter can fail, one
//! line each, naming the directory, file, key or tensor involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    #[error("adapter directory {} does not exist", .dir.display())]
    DirMissing { dir: PathBuf },

    #[error("adapter path {} is not a directory", .dir.display())]
    NotADirectory { dir: PathBuf },

    #[error("no adapter_config.json in adapter directory {}", .dir.display())]
    ConfigMissing { dir: PathBuf },

    #[error("no adapter_model.safetensors in adapter directory {}{hint}", .dir.display())]
    WeightsMissing {
        dir: PathBuf,
        /// Empty, or `"; found ..."` naming other weight-like files.
        hint: String,
    },

    /// adapter_config.json holds something Kiln cannot honour.
    #[error("{}: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },

    #[error("{file} holds `{name}` twice, with and without the adapter name `.default`")]
    DuplicateTensor { name: String, file: String },

    /// The model needs an adapter tensor the adapter does not hold.
    #[error("adapter tensor `{name}` not found in {file} (declared at {declared}){}", suggestion.as_ref().map_or(String::new(), |s| format!("; did you mean `{s}`?")))]
    MissingTensor { name: String, file: String, declared: String, suggestion: Option<String> },

    #[error("adapter tensor `{name}` has shape {found:?} in {file} but the model needs {expected:?} (declared at {declared})")]
    Shape { name: String, file: String, found: Vec<usize>, expected: Vec<usize>, declared: String },

    /// A tensor no rewritten product uses: the file does not belong to this model and config.
    #[error("{file} holds `{name}`, which no adapted product of this model uses (target_modules: {})", targets.join(", "))]
    UnusedTensor { name: String, file: String, targets: Vec<String> },

    /// Like peft, an adapter none of whose targets names a module of the model is an error.
    #[error("no matrix product of the model has a weight in a module named by target_modules ({})", targets.join(", "))]
    NoTargetFound { targets: Vec<String> },

    /// The lora pass refused the graph (a target in an unsupported layout).
    #[error("{0}")]
    Rewrite(String),

    #[error("{} already holds an adapter; pass force to overwrite it", .dir.display())]
    Exists { dir: PathBuf },
}
