//! `kiln quantize`: writing a model directory with 4-bit weights that `kiln forward`,
//! `generate`, `eval` and `bench` load directly (see the parent module for the layout).
//!
//! Which weights are quantized is the quantize pass's decision for the model's spec and config
//! (the same policy as `--quantize` at load), so a written model computes exactly what loading
//! the f32 model with the same options computes; the round trip is tested bit for bit. With
//! activation-aware scales (AWQ) a weight is stored as `Q(W·diag(s))` beside `s`.
//!
//! Guarantees: every tensor of the source checkpoint is kept (quantized weights as their packed
//! parts, the rest as f32), every other file of the directory is copied (but a trainer's
//! optimizer state), `config.json` gains
//! `quantization_config`; the output directory must not be the source, and an existing output is
//! replaced only with `force`. Files are written atomically.

use super::METHOD;
use crate::adapter::apply::quantize_adapted;
use crate::checkpoint::{save_with_metadata, write_atomically, Checkpoint, TensorData};
use crate::{resolve_spec, Error};
use kiln_backend::quant::{self, QuantizedMatrix};
use kiln_frontend::CompileOptions;
use kiln_passes::quantize::input_scale_name;
use kiln_passes::{QuantizeOptions, QuantizeReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What [`write_quantized`] wrote.
#[derive(Debug)]
pub struct Written {
    pub report: QuantizeReport,
    /// Bytes of the quantized matrices as f32, and as written (packed values and scales).
    pub f32_bytes: u64,
    pub quantized_bytes: u64,
    /// The size of the source's and the written weights files.
    pub source_file_bytes: u64,
    pub file_bytes: u64,
}

/// Writes `source` quantized by `options` to `out`; `input_scales` gives activation-aware
/// scales (`[K]`, positive) for some of the quantized weights.
pub fn write_quantized(
    source: &Path,
    out: &Path,
    options: &QuantizeOptions,
    input_scales: &BTreeMap<String, Vec<f32>>,
    force: bool,
) -> Result<Written, Error> {
    let checkpoint = Checkpoint::open(source)?;
    if super::stored_quantization(&checkpoint)?.is_some() {
        return Err(Error::Usage(format!("{} is already quantized", source.display())));
    }
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(source, out) {
        return Err(Error::Usage(format!("--out {} is the model directory itself", out.display())));
    }
    if out.exists() && !force {
        return Err(Error::Usage(format!("{} exists; pass --force to replace its files", out.display())));
    }
    let report = decisions(&checkpoint, options)?;
    let chosen: BTreeMap<&str, (usize, usize)> =
        report.quantized().map(|d| (d.name.as_str(), (d.rows, d.cols))).collect();
    if let Some(name) = input_scales.keys().find(|n| !chosen.contains_key(n.as_str())) {
        return Err(Error::Usage(format!("activation-aware scales are given for `{name}`, which is not quantized")));
    }

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path: path.clone(), source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut matrices: Vec<(String, QuantizedMatrix)> = Vec::new();
    let mut dense: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut scales_out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let (mut f32_bytes, mut quantized_bytes) = (0u64, 0u64);
    let format = options.quant.scheme;
    for name in checkpoint.tensor_names() {
        let shape = checkpoint.info(name).map(|i| i.shape.clone()).unwrap_or_default();
        let values = checkpoint.tensor_f32(name, &shape)?;
        let Some(&(rows, cols)) = chosen.get(name) else {
            dense.push((name.to_string(), shape, values.into_owned()));
            continue;
        };
        let matrix = match input_scales.get(name) {
            None => quant::quantize(&values, rows, cols, format, options.quant.group as usize),
            Some(s) => {
                if s.len() != cols || s.iter().any(|&x| !(x > 0.0 && x.is_finite())) {
                    return Err(Error::Usage(format!(
                        "the activation-aware scales of `{name}` must be {cols} positive numbers"
                    )));
                }
                let scaled: Vec<f32> =
                    values.chunks_exact(cols).flat_map(|row| row.iter().zip(s).map(|(w, s)| w * s)).collect();
                scales_out.push((input_scale_name(name), vec![cols], s.clone()));
                quant::quantize(&scaled, rows, cols, format, options.quant.group as usize)
            }
        }
        .map_err(|e| Error::Usage(format!("weight `{name}`: {e}")))?;
        f32_bytes += (rows * cols * 4) as u64;
        quantized_bytes += matrix.bytes() as u64;
        matrices.push((name.to_string(), matrix));
    }

    let mut tensors: Vec<(String, Vec<usize>, TensorData<'_>)> = Vec::new();
    let mut metadata = vec![("quantization".to_string(), format!("{METHOD} {}", options.quant))];
    for (name, m) in &matrices {
        for stored in m.stored_tensors(name) {
            let data = match stored.name.rsplit('.').next() {
                Some("qweight") => TensorData::U8(m.packed()),
                Some("scales") => TensorData::F16(m.scales()),
                _ => TensorData::F16(m.mins().unwrap_or_default()),
            };
            tensors.push((stored.name, stored.shape.to_vec(), data));
        }
        metadata.extend(m.stored_metadata(name));
    }
    for (name, shape, values) in dense.iter().chain(&scales_out) {
        tensors.push((name.clone(), shape.clone(), TensorData::F32(values)));
    }
    let borrowed: Vec<(&str, &[usize], TensorData<'_>)> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), *d)).collect();
    let weights_path = out.join("model.safetensors");
    save_with_metadata(&weights_path, &borrowed, &metadata)?;

    let mut config = checkpoint.config().clone();
    if let Some(object) = config.as_object_mut() {
        object.insert(
            "quantization_config".into(),
            serde_json::json!({
                "quant_method": METHOD,
                "format": options.quant.scheme.name(),
                "group_size": options.quant.group,
            }),
        );
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::Usage(e.to_string()))?;
    write_atomically(&out.join("config.json"), text.as_bytes())?;
    copy_other_files(source, out)?;
    let size = |p: PathBuf| std::fs::metadata(&p).map(|m| m.len()).map_err(io(&p));
    let source_file_bytes = weights_files(source).into_iter().map(size).sum::<Result<u64, Error>>()?;
    Ok(Written { report, f32_bytes, quantized_bytes, source_file_bytes, file_bytes: size(weights_path)? })
}

/// What the quantize pass decides for `checkpoint`'s model under `options` (on the graph as
/// lowered: the decisions do not depend on the later passes).
pub fn decisions(checkpoint: &Checkpoint, options: &QuantizeOptions) -> Result<QuantizeReport, Error> {
    let spec = resolve_spec(checkpoint.config(), None)?;
    let mut graph = kiln_frontend::compile(&spec, checkpoint.config(), &CompileOptions::default())?;
    quantize_adapted(&mut graph, &[], options)
}

/// The weights files of a model directory (one file, or an index and its shards).
fn weights_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| is_weights_file(p)).collect()
}

fn is_weights_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "model.safetensors"
        || name == "model.safetensors.index.json"
        || (name.starts_with("model-") && name.ends_with(".safetensors"))
}

/// A trainer's optimizer state (`kiln train --resume` reads it): it belongs to the f32 weights
/// and would resume training the wrong model, so it is not copied.
const TRAINER_STATE: &str = "trainer_state.safetensors";

/// Copies every regular file of `source` but the weights and `config.json` (tokenizers,
/// vocabularies, generation configs) into `out`.
fn copy_other_files(source: &Path, out: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path: path.clone(), source }
    };
    for entry in std::fs::read_dir(source).map_err(io(source))? {
        let path = entry.map_err(io(source))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !path.is_file() || is_weights_file(&path) || name == "config.json" || name == TRAINER_STATE {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        write_atomically(&out.join(name), &bytes)?;
    }
    Ok(())
}
