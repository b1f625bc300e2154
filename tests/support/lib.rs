//! Shared support for Kiln's cross-crate tests: fixture paths, reference outputs written by the
//! fixture generator (`tests/fixtures/generate.py`), and comparisons.

use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// The directory of a committed fixture, e.g. `fixture("rwkv4-tied")`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data").join(name)
}

/// Every model fixture (directories holding `reference.safetensors`).
pub fn model_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.safetensors").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A tensor read from a safetensors file, as f32 or i64 values with its shape.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Vec<(String, Loaded)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Loaded)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let (f32, i64) = match view.dtype() {
                Dtype::F32 => {
                    (data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(), vec![])
                }
                Dtype::I64 => {
                    (vec![], data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
                }
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, Loaded { shape: view.shape().to_vec(), f32, i64 })
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The reference outputs of a model fixture.
#[derive(Clone, Debug)]
pub struct Reference {
    pub tokens: Vec<i64>,
    /// Full-run logits, `[T, V]` row-major.
    pub logits: Vec<f32>,
    pub vocab: usize,
    /// Where the fixture's split run splits the tokens.
    pub split: usize,
}

pub fn reference(dir: &Path) -> Reference {
    let t = read_safetensors(&dir.join("reference.safetensors"));
    let get = |n: &str| t.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no `{n}`"));
    let logits = get("logits");
    Reference {
        tokens: get("tokens").i64,
        vocab: logits.shape[1],
        logits: logits.f32,
        split: get("split").i64[0] as usize,
    }
}

/// `max |a − b| / max |b|`: the error relative to the largest reference value.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let diff =
        a.iter().zip(b).fold(0f32, |m, (x, y)| if (x - y).is_nan() { f32::INFINITY } else { m.max((x - y).abs()) });
    diff / scale
}

pub use kiln_backend::testing::random_values;

/// A fresh, empty scratch directory for one test (removed first if a previous run left it).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kiln ARGS`, run in this process: what it printed, or its error.
pub fn cli(args: &[&str]) -> Result<String, kiln_runtime::Error> {
    let mut out = Vec::new();
    kiln_runtime::cli::run(std::iter::once("kiln").chain(args.iter().copied()), &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

/// The error `kiln ARGS` fails with; panics if it succeeds.
pub fn cli_err(args: &[&str]) -> String {
    cli(args).map(|o| panic!("kiln {} succeeded: {o}", args.join(" "))).unwrap_or_else(|e| e.to_string())
}

/// A model's logits for `tokens`: in one call, in two calls split at `split` with the state
/// carried, and one token per call.
pub fn runs(model: &kiln_runtime::Model, tokens: &[i64], split: usize) -> [Vec<f32>; 3] {
    let full = model.forward(tokens, &mut model.new_state()).unwrap().data;
    let mut state = model.new_state();
    let mut split_run = model.forward(&tokens[..split], &mut state).unwrap().data;
    split_run.extend(model.forward(&tokens[split..], &mut state).unwrap().data);
    let mut state = model.new_state();
    let decode = tokens.iter().flat_map(|&t| model.forward(&[t], &mut state).unwrap().data).collect();
    [full, split_run, decode]
}
