//! Quantized models: the `--quantize q4_0|q4_1[:GROUP]` option, checkpoints that store 4-bit
//! weights (written by `kiln quantize`), and the quantized matrices a model binds.
//!
//! A quantized checkpoint is an ordinary model directory whose `config.json` carries
//! `"quantization_config": {"quant_method": "kiln", "format": "q4_0", "group_size": 32}` and
//! whose safetensors hold, for every quantized weight `NAME`, the tensors of
//! [`kiln_backend::quant::StoredTensor`] (`NAME.qweight` U8, `NAME.scales` F16, `NAME.mins` F16
//! for q4_1) and, with activation-aware scales, `NAME.awq_scale` F32 `[K]`, instead of `NAME`.
//! Loading one runs the quantize pass with exactly those weights directed to be quantized
//! ([`QuantizeOptions::exact`]), so the file, not the policy of the day, decides.
//!
//! Guarantees: a malformed `quantization_config`, a packed tensor of the wrong dtype or shape,
//! or `--quantize` on a checkpoint that is already quantized are errors naming what is wrong;
//! packed parts are validated by [`QuantizedMatrix::from_parts`] before any kernel reads them.

use crate::checkpoint::{Checkpoint, CheckpointError, Dtype};
use crate::Error;
use half::f16;
use kiln_backend::quant::{self, QuantizedMatrix};
use kiln_ir::{DType, Graph, ParamRole};
use kiln_ir::{Quant, QuantScheme};
use kiln_passes::quantize::input_scale_name;
use kiln_passes::QuantizeOptions;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

mod write;
pub use write::{decisions, write_quantized, Written};

/// The `quant_method` `kiln quantize` writes.
pub const METHOD: &str = "kiln";
/// The default group size.
pub const DEFAULT_GROUP: u32 = 32;

/// Parses `q4_0`, `q4_1`, `q4_0:64`: a format and an optional group size.
pub fn parse_quant(text: &str) -> Result<Quant, String> {
    let (name, group) = match text.split_once(':') {
        Some((name, group)) => {
            let group: u32 = group
                .parse()
                .ok()
                .filter(|&g| g > 0)
                .ok_or_else(|| format!("`{group}` is not a group size (a positive integer)"))?;
            (name, group)
        }
        None => (text, DEFAULT_GROUP),
    };
    let scheme =
        QuantScheme::from_name(name).ok_or_else(|| format!("unknown format `{name}` (expected q4_0 or q4_1)"))?;
    Ok(Quant { scheme, group })
}

/// The quantization a checkpoint was written with, if any.
pub fn stored_quantization(checkpoint: &Checkpoint) -> Result<Option<Quant>, Error> {
    let Some(config) = checkpoint.config().get("quantization_config") else { return Ok(None) };
    let bad = |what: &str| {
        Error::Usage(format!(
            "{}: `quantization_config` {what} (Kiln reads the one `kiln quantize` writes: \
             {{\"quant_method\": \"kiln\", \"format\": \"q4_0\", \"group_size\": 32}})",
            checkpoint.dir().join("config.json").display()
        ))
    };
    if config.get("quant_method").and_then(|m| m.as_str()) != Some(METHOD) {
        return Err(bad("is not Kiln's"));
    }
    let format = config.get("format").and_then(|f| f.as_str()).ok_or_else(|| bad("has no `format`"))?;
    let scheme = QuantScheme::from_name(format).ok_or_else(|| bad("names an unknown format"))?;
    let group = config
        .get("group_size")
        .and_then(|g| g.as_u64())
        .and_then(|g| u32::try_from(g).ok())
        .filter(|&g| g > 0)
        .ok_or_else(|| bad("has no positive `group_size`"))?;
    Ok(Some(Quant { scheme, group }))
}

/// The quantize pass's options for loading `checkpoint`: those the caller asked for, or, for a
/// quantized checkpoint, exactly its packed weights (and their activation-aware scales).
pub fn load_options(
    checkpoint: &Checkpoint,
    requested: Option<&QuantizeOptions>,
) -> Result<Option<QuantizeOptions>, Error> {
    let Some(quant) = stored_quantization(checkpoint)? else { return Ok(requested.cloned()) };
    if requested.is_some() {
        return Err(Error::Usage(format!(
            "{} is already quantized ({quant}); load it without --quantize",
            checkpoint.dir().display()
        )));
    }
    let mut options = QuantizeOptions::new(quant);
    options.exact = true;
    for name in checkpoint.tensor_names() {
        if let Some(weight) = name.strip_suffix(".qweight") {
            options.overrides.insert(weight.to_string(), true);
            if checkpoint.contains(&input_scale_name(weight)) {
                options.input_scales.insert(weight.to_string());
            }
        }
    }
    Ok(Some(options))
}

/// The quantized matrix `name` (`[rows, cols]`, format `quant`): read from its packed tensors
/// when the checkpoint holds them, otherwise quantized from the f32 weight by round-to-nearest.
pub fn quantized_weight(
    checkpoint: &Checkpoint,
    name: &str,
    quant: Quant,
    rows: usize,
    cols: usize,
) -> Result<Arc<QuantizedMatrix>, Error> {
    let format = quant.scheme;
    let group = quant.group as usize;
    let invalid = |e: quant::QuantError| Error::Usage(format!("weight `{name}`: {e}"));
    let packed_name = format!("{name}.qweight");
    if !checkpoint.contains(&packed_name) {
        let values = checkpoint.tensor_f32(name, &[rows, cols])?;
        return Ok(Arc::new(quant::quantize(&values, rows, cols, format, group).map_err(invalid)?));
    }
    let groups = cols.div_ceil(group);
    let row_bytes = kiln_ir::packed_row_bytes(cols, group);
    let packed = checkpoint.tensor_bytes(&packed_name, Dtype::U8, &[rows, row_bytes])?.to_vec();
    let f16s = |suffix: &str| -> Result<Vec<f16>, CheckpointError> {
        let bytes = checkpoint.tensor_bytes(&format!("{name}.{suffix}"), Dtype::F16, &[rows, groups])?;
        Ok(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect())
    };
    let scales = f16s("scales")?;
    let mins = match quant.scheme {
        QuantScheme::Q4_0 => None,
        QuantScheme::Q4_1 => Some(f16s("mins")?),
    };
    let matrix = QuantizedMatrix::from_parts(format, group, rows, cols, packed, scales, mins).map_err(invalid)?;
    Ok(Arc::new(matrix))
}

/// Every quantized weight input of `graph`, by name: read packed or quantized from `checkpoint`,
/// in parallel (quantizing a 169M model's matrices at load is the bulk of its compile time). A
/// missing or misshaped tensor names the spec line that declared it.
pub fn quantized_inputs(
    checkpoint: &Checkpoint,
    graph: &Graph,
) -> Result<BTreeMap<String, Arc<QuantizedMatrix>>, Error> {
    let wanted: Vec<(String, Quant, usize, usize, Option<String>)> = graph
        .inputs()
        .iter()
        .filter_map(|&n| {
            let param = graph.param(n).filter(|p| p.role == ParamRole::Weight)?;
            let ty = graph.value_type(n.into());
            let (DType::Quant(q), [rows, cols]) = (ty.dtype, ty.shape.dims()) else { return None };
            let origin = graph.node(n).origin.as_ref().map(ToString::to_string);
            Some((param.name.clone(), q, rows.fixed()?, cols.fixed()?, origin))
        })
        .collect();
    let read: Vec<Result<(String, Arc<QuantizedMatrix>), Error>> = wanted
        .into_par_iter()
        .map(|(name, q, rows, cols, origin)| {
            let matrix = quantized_weight(checkpoint, &name, q, rows, cols).map_err(|e| match (e, origin) {
                (Error::Checkpoint(source), Some(declared)) => Error::Weight { source, declared },
                (e, _) => e,
            })?;
            Ok((name, matrix))
        })
        .collect();
    // The first failure in input order, whatever the threads finished first.
    read.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_and_groups() {
        assert_eq!(parse_quant("q4_0"), Ok(Quant { scheme: QuantScheme::Q4_0, group: 32 }));
        assert_eq!(parse_quant("q4_1:64"), Ok(Quant { scheme: QuantScheme::Q4_1, group: 64 }));
        assert!(parse_quant("q8_0").unwrap_err().contains("unknown format `q8_0`"));
        assert!(parse_quant("q4_0:0").unwrap_err().contains("not a group size"));
        assert!(parse_quant("q4_0:x").unwrap_err().contains("not a group size"));
    }
}
