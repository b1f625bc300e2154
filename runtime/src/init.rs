//! Randomly initialized models in the Hugging Face layout (`kiln init`), so full-size benchmarks
//! need no download.
//!
//! [`init_model`] compiles a spec for a config, and writes to a directory `config.json` (the
//! config as given, with `model_type` set to the spec's and `dtype` defaulting to `float32`) and
//! `model.safetensors` holding every weight the compiled graph declares, at its declared shape,
//! as f32. Tied weights the spec replaces (`when = "not tied", else = ...`) are not graph inputs
//! and are not written, as `save_pretrained` drops them.
//!
//! # How each weight is initialized
//!
//! The runtime knows no model by name, so the rule comes from the tensor's shape and from the
//! *parameter-name conventions* of Hugging Face checkpoints, matched on the last components of
//! the name (`a.b.c` matches pattern `b.c`; a trailing `*` matches a prefix of the last
//! component). The first matching rule wins ([`DEFAULT_RULES`], then the shape defaults):
//!
//! | name pattern                 | rule                                      | why                                                        |
//! |------------------------------|-------------------------------------------|------------------------------------------------------------|
//! | `A_log`                      | `ln U(1, 16)`                             | SSM decay rates `A = −exp(A_log)` in `[−16, −1]`           |
//! | `dt_bias`, `dt_proj.bias`    | `softplus⁻¹(exp U(ln 1e-3, ln 1e-1))`     | SSM time steps start log-uniform in `[0.001, 0.1]`         |
//! | `D`                          | `1`                                       | SSM skip connection                                        |
//! | `time_decay`                 | `U(−5, 3)`                                | RWKV log-log decay: `w = −exp(time_decay)` in `[−20, −0.007]` |
//! | `time_first`                 | `U(−1.7, −0.7)`                           | RWKV current-token bonus around `ln 0.3`                   |
//! | `time_mix_*`                 | `U(0, 1)`                                 | RWKV token-shift interpolation weights                     |
//! | `*.weight` of rank 1         | `1`                                       | the scale of a LayerNorm / RMSNorm / group norm            |
//! | `*.bias`, `*_bias`           | `0`                                       | biases                                                     |
//! | anything else of rank ≥ 2    | `U(±1/√fan_in)`, `fan_in = ∏ dims[1..]`   | PyTorch's `Linear`/`Conv1d` default bound (embeddings too) |
//! | anything else of rank ≤ 1    | `U(±1/√n)`                                | a small, non-constant vector                               |
//!
//! Values come from a SplitMix64 stream seeded by the seed and the tensor's name, so a tensor
//! does not depend on which other tensors exist, and the same seed gives the same bytes.

use crate::checkpoint::{self, TensorData};
use crate::rng::SplitMix64;
use crate::{compile_spec, Error};
use kiln_frontend::{CompileOptions, SpecFile};
use kiln_ir::ParamRole;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// How one tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every value `v`.
    Constant(f32),
    /// Uniform in `[lo, hi)`.
    Uniform { lo: f32, hi: f32 },
    /// `ln x`, `x` uniform in `[lo, hi)`.
    LogOfUniform { lo: f32, hi: f32 },
    /// `softplus⁻¹(x)`, `x` log-uniform in `[lo, hi)`.
    InvSoftplusLogUniform { lo: f32, hi: f32 },
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Init::Constant(v) => write!(f, "{v}"),
            Init::Uniform { lo, hi } if lo == -hi => write!(f, "U(±{hi:.4})"),
            Init::Uniform { lo, hi } => write!(f, "U({lo}, {hi})"),
            Init::LogOfUniform { lo, hi } => write!(f, "ln U({lo}, {hi})"),
            Init::InvSoftplusLogUniform { lo, hi } => write!(f, "softplus⁻¹(logU({lo}, {hi}))"),
        }
    }
}

/// A named-parameter convention: a name pattern (see the module docs) and its rule.
#[derive(Clone, Copy, Debug)]
pub struct NameRule {
    pub pattern: &'static str,
    pub init: Init,
}

/// The name-convention rules, tried in order before the shape defaults.
pub const DEFAULT_RULES: &[NameRule] = &[
    NameRule { pattern: "A_log", init: Init::LogOfUniform { lo: 1.0, hi: 16.0 } },
    NameRule { pattern: "dt_bias", init: Init::InvSoftplusLogUniform { lo: 1e-3, hi: 1e-1 } },
    NameRule { pattern: "dt_proj.bias", init: Init::InvSoftplusLogUniform { lo: 1e-3, hi: 1e-1 } },
    NameRule { pattern: "D", init: Init::Constant(1.0) },
    NameRule { pattern: "time_decay", init: Init::Uniform { lo: -5.0, hi: 3.0 } },
    NameRule { pattern: "time_first", init: Init::Uniform { lo: -1.7, hi: -0.7 } },
    NameRule { pattern: "time_mix_*", init: Init::Uniform { lo: 0.0, hi: 1.0 } },
];

/// Whether the dotted `name` ends with the components of `pattern` (a trailing `*` in the
/// pattern matches any rest of the last component).
fn matches(name: &str, pattern: &str) -> bool {
    let name: Vec<&str> = name.split('.').collect();
    let pat: Vec<&str> = pattern.split('.').collect();
    if pat.len() > name.len() {
        return false;
    }
    let tail = &name[name.len() - pat.len()..];
    tail.iter().zip(&pat).enumerate().all(|(i, (n, p))| match p.strip_suffix('*') {
        Some(prefix) if i + 1 == pat.len() => n.starts_with(prefix),
        _ => n == p,
    })
}

/// The rule for a weight named `name` of shape `shape` (see the module docs).
pub fn default_init(name: &str, shape: &[usize]) -> Init {
    if let Some(rule) = DEFAULT_RULES.iter().find(|r| matches(name, r.pattern)) {
        return rule.init;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if shape.len() == 1 && last == "weight" {
        return Init::Constant(1.0);
    }
    if last == "bias" || last.ends_with("_bias") {
        return Init::Constant(0.0);
    }
    let fan_in: usize = if shape.len() >= 2 { shape[1..].iter().product() } else { shape.iter().product() };
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    Init::Uniform { lo: -bound, hi: bound }
}

/// The stream of tensor `name` under `seed`: FNV-1a of the name, mixed with the seed.
fn stream(seed: u64, name: &str) -> SplitMix64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut mix = SplitMix64(seed ^ h.rotate_left(17));
    SplitMix64(mix.next_u64())
}

/// `len` values of `init` for tensor `name` under `seed`.
pub fn fill(init: Init, name: &str, len: usize, seed: u64) -> Vec<f32> {
    let mut rng = stream(seed, name);
    let mut u = |lo: f32, hi: f32| lo + (hi - lo) * rng.next_f32();
    (0..len)
        .map(|_| match init {
            Init::Constant(v) => v,
            Init::Uniform { lo, hi } => u(lo, hi),
            Init::LogOfUniform { lo, hi } => u(lo, hi).ln(),
            Init::InvSoftplusLogUniform { lo, hi } => {
                let x = u(lo.ln(), hi.ln()).exp();
                // softplus⁻¹(x) = ln(eˣ − 1) = x + ln(1 − e⁻ˣ)
                x + (-(-x).exp_m1()).ln()
            }
        })
        .collect()
}

/// How [`init_model`] writes.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub seed: u64,
    /// Write into a directory that is not empty (replacing `config.json` and `model.safetensors`).
    pub force: bool,
}

/// What [`init_model`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct InitSummary {
    pub model_type: String,
    pub tensors: usize,
    pub parameters: usize,
    /// How many tensors each rule initialized, by the rule's description.
    pub rules: Vec<(String, usize)>,
}

/// The `config.json` to write: `config` with `model_type` set to the spec's (they must agree if
/// both are given) and `dtype` defaulting to `float32`.
fn normalized_config(spec: &SpecFile, config: &serde_json::Value) -> Result<(serde_json::Value, String), Error> {
    let mut map = match config {
        serde_json::Value::Object(m) => m.clone(),
        _ => return Err(Error::Usage("the config must be a JSON object".into())),
    };
    let from_spec = spec.model.as_ref().and_then(|m| m.model_type.clone());
    let from_config = map.get("model_type").and_then(|v| v.as_str()).map(str::to_string);
    let model_type = match (from_spec, from_config) {
        (Some(s), Some(c)) if s != c => {
            return Err(Error::Usage(format!(
                "the config's model_type `{c}` differs from the spec's `{s}`: the written model would not load with this spec"
            )))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::Usage(
                "neither the spec ([model] model_type) nor the config names a model_type: the model would not load".into(),
            ))
        }
    };
    map.insert("model_type".into(), serde_json::Value::String(model_type.clone()));
    map.entry("dtype").or_insert_with(|| serde_json::Value::String("float32".into()));
    Ok((serde_json::Value::Object(map), model_type))
}

/// Every weight the graph of `spec` compiled for `config` declares: name → (shape, init).
pub fn declared_weights(
    spec: &SpecFile,
    config: &serde_json::Value,
) -> Result<BTreeMap<String, (Vec<usize>, Init)>, Error> {
    let graph = compile_spec(spec, config, &CompileOptions::default())?;
    let mut weights = BTreeMap::new();
    for &input in graph.inputs() {
        let Some(param) = graph.param(input).filter(|p| p.role == ParamRole::Weight) else { continue };
        let dims = graph.node(input).results[0].shape.dims();
        let shape: Vec<usize> = dims.iter().filter_map(|d| d.fixed()).collect();
        if shape.len() != dims.len() {
            return Err(Error::Usage(format!("weight `{}` has a shape that depends on the sequence", param.name)));
        }
        let init = default_init(&param.name, &shape);
        if let Some((other, _)) = weights.insert(param.name.clone(), (shape.clone(), init)) {
            if other != shape {
                return Err(Error::Usage(format!("weight `{}` is declared as {other:?} and {shape:?}", param.name)));
            }
        }
    }
    Ok(weights)
}

/// Writes a randomly initialized model for `spec` and `config` to `dir` (created if missing).
/// Refuses a non-empty `dir` unless `options.force`.
pub fn init_model(
    spec: &SpecFile,
    config: &serde_json::Value,
    dir: &Path,
    options: &InitOptions,
) -> Result<InitSummary, Error> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::Usage(format!("{} exists and is not a directory", dir.display())));
        }
        if !options.force && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(Error::Usage(format!("{} is not empty; pass --force to write into it", dir.display())));
        }
    }
    let (config, model_type) = normalized_config(spec, config)?;
    let weights = declared_weights(spec, &config)?;

    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut parameters = 0;
    let mut data = Vec::with_capacity(weights.len());
    for (name, (shape, init)) in &weights {
        let len = shape.iter().product();
        parameters += len;
        *rules.entry(init.to_string()).or_default() += 1;
        data.push(fill(*init, name, len, options.seed));
    }

    std::fs::create_dir_all(dir).map_err(io)?;
    let tensors: Vec<_> = weights
        .iter()
        .zip(&data)
        .map(|((name, (shape, _)), values)| (name.as_str(), shape.as_slice(), TensorData::F32(values)))
        .collect();
    checkpoint::save(&dir.join("model.safetensors"), &tensors)?;
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::Usage(format!("config.json: {e}")))?;
    std::fs::write(&config_path, format!("{text}\n")).map_err(|source| Error::Io { path: config_path, source })?;

    let mut rules: Vec<(String, usize)> = rules.into_iter().collect();
    rules.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(InitSummary { model_type, tensors: weights.len(), parameters, rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_trailing_components() {
        assert!(matches("backbone.layers.3.mixer.A_log", "A_log"));
        assert!(!matches("backbone.layers.3.mixer.xA_log", "A_log"));
        assert!(matches("backbone.layers.3.mixer.dt_proj.bias", "dt_proj.bias"));
        assert!(!matches("bias", "dt_proj.bias"));
        assert!(matches("rwkv.blocks.0.attention.time_mix_key", "time_mix_*"));
        assert!(!matches("rwkv.blocks.0.attention.time_mixer.weight", "time_mix_*"));
        assert!(matches("D", "D") && !matches("mixer.Dx", "D"));
    }

    #[test]
    fn shape_and_name_defaults() {
        assert_eq!(default_init("rwkv.ln_out.weight", &[768]), Init::Constant(1.0));
        assert_eq!(default_init("rwkv.ln_out.bias", &[768]), Init::Constant(0.0));
        assert_eq!(default_init("m.conv1d.bias", &[64]), Init::Constant(0.0));
        assert_eq!(default_init("m.mixer.D", &[64]), Init::Constant(1.0));
        assert_eq!(
            default_init("m.out_proj.weight", &[768, 1536]),
            Init::Uniform { lo: -1.0 / 1536f32.sqrt(), hi: 1.0 / 1536f32.sqrt() }
        );
        assert_eq!(default_init("m.conv1d.weight", &[64, 1, 4]), Init::Uniform { lo: -0.5, hi: 0.5 });
        assert!(matches!(default_init("m.dt_bias", &[24]), Init::InvSoftplusLogUniform { .. }));
    }

    #[test]
    fn fills_are_deterministic_in_range_and_per_name() {
        let a = fill(Init::Uniform { lo: -0.5, hi: 0.5 }, "w", 1000, 7);
        assert_eq!(a, fill(Init::Uniform { lo: -0.5, hi: 0.5 }, "w", 1000, 7));
        assert_ne!(a, fill(Init::Uniform { lo: -0.5, hi: 0.5 }, "v", 1000, 7));
        assert_ne!(a, fill(Init::Uniform { lo: -0.5, hi: 0.5 }, "w", 1000, 8));
        assert!(a.iter().all(|x| (-0.5..0.5).contains(x)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05, "{mean}");
        let dt = fill(Init::InvSoftplusLogUniform { lo: 1e-3, hi: 1e-1 }, "dt", 1000, 1);
        for b in dt {
            let x = b.exp().ln_1p();
            assert!((0.99e-3..=1.01e-1).contains(&x), "{b} -> {x}");
        }
        let a_log = fill(Init::LogOfUniform { lo: 1.0, hi: 16.0 }, "A", 100, 1);
        assert!(a_log.iter().all(|&v| (0.0..=16f32.ln()).contains(&v)));
    }
}
