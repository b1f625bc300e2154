//! `adapter_config.json` as peft writes and reads it.
//!
//! [`AdapterConfig::from_json`] takes the keys Kiln uses (`peft_type`, `r`, `lora_alpha`,
//! `target_modules`, `use_rslora`, `lora_dropout`, `task_type`, `base_model_name_or_path`) and
//! rejects, with a message naming the key, every setting that would change the math in a way
//! Kiln does not implement: DoRA, trained biases, `fan_in_fan_out`, per-module rank or alpha
//! patterns, extra trained modules, layer selection. Dropout is accepted: it is the identity
//! outside training. Every other key is kept and written back by [`AdapterConfig::to_json`], so
//! a loaded config round-trips; a fresh one ([`AdapterConfig::lora`]) writes what
//! `PeftModel.from_pretrained` needs.

use super::AdapterError;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The adapter types Kiln has a spec for.
pub const SUPPORTED_PEFT_TYPES: &[&str] = &["LORA"];

/// An adapter's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// `LORA`.
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    /// Module names (peft's rule: a module matches when its path equals one or ends with `.name`).
    pub target_modules: Vec<String>,
    /// Scale by `lora_alpha / √r` instead of `lora_alpha / r`.
    pub use_rslora: bool,
    /// Only used in training (the identity otherwise).
    pub lora_dropout: f64,
    /// `CAUSAL_LM` for a fresh adapter.
    pub task_type: Option<String>,
    pub base_model_name_or_path: Option<String>,
    /// Every other key of a loaded file, written back unchanged.
    extra: Map<String, Value>,
}

impl AdapterConfig {
    /// A fresh LoRA configuration for a causal LM: no rslora, no dropout.
    pub fn lora(r: usize, lora_alpha: f64, target_modules: Vec<String>) -> AdapterConfig {
        AdapterConfig {
            peft_type: "LORA".into(),
            r,
            lora_alpha,
            target_modules,
            use_rslora: false,
            lora_dropout: 0.0,
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            extra: Map::new(),
        }
    }

    /// Reads the parsed contents of `path` (an adapter_config.json).
    pub fn from_json(path: &Path, json: &Value) -> Result<AdapterConfig, AdapterError> {
        let err = |reason: String| AdapterError::Config { path: path.to_path_buf(), reason };
        let Some(obj) = json.as_object() else {
            return Err(err(format!("expected a JSON object, found {}", kind(json))));
        };
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let peft_type = match get("peft_type") {
            Some(Value::String(s)) if SUPPORTED_PEFT_TYPES.contains(&s.as_str()) => s.clone(),
            Some(Value::String(s)) => {
                return Err(err(format!(
                    "peft_type `{s}` is not supported (Kiln has adapter specs for: {})",
                    SUPPORTED_PEFT_TYPES.join(", ")
                )))
            }
            Some(other) => return Err(err(format!("`peft_type` is {}, not a string", kind(other)))),
            None => return Err(err("no `peft_type` (expected \"LORA\")".into())),
        };
        let r = match get("r").and_then(Value::as_u64) {
            Some(r) if r > 0 => usize::try_from(r).map_err(|_| err(format!("`r` = {r} is too large")))?,
            _ => return Err(err(format!("`r` must be a positive integer, found {}", shown(get("r"))))),
        };
        let lora_alpha = get("lora_alpha")
            .map(|v| v.as_f64().ok_or_else(|| err(format!("`lora_alpha` must be a number, found {}", kind(v)))))
            .transpose()?
            .unwrap_or(8.0);
        let target_modules = match get("target_modules") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("`target_modules` holds {i}, not a module name")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::String(s)) => {
                return Err(err(format!(
                    "`target_modules` is the regular expression {s:?}; Kiln supports a list of module names"
                )))
            }
            other => return Err(err(format!("`target_modules` must list module names, found {}", shown(other)))),
        };
        let flag = |key: &str| match get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(err(format!("`{key}` must be true or false, found {}", kind(other)))),
        };
        let use_rslora = flag("use_rslora")?;
        for (key, what) in [
            ("use_dora", "DoRA (weight-decomposed LoRA)"),
            ("fan_in_fan_out", "fan_in_fan_out (Conv1D-layout weights)"),
            ("lora_bias", "lora_bias (a trained bias on lora_B)"),
            ("use_qalora", "QALoRA"),
        ] {
            if flag(key)? {
                return Err(err(format!("`{key}` is true: {what} is not supported")));
            }
        }
        match get("bias") {
            None => {}
            Some(Value::String(s)) if s == "none" => {}
            Some(other) => {
                return Err(err(format!(
                    "`bias` is {other}: adapters that train biases are not supported (only \"none\")"
                )))
            }
        }
        for key in [
            "rank_pattern",
            "alpha_pattern",
            "modules_to_save",
            "layers_to_transform",
            "exclude_modules",
            "trainable_token_indices",
            "target_parameters",
        ] {
            let empty = match get(key) {
                None => true,
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            };
            if !empty {
                return Err(err(format!("`{key}` is set ({}): it is not supported", shown(get(key)))));
            }
        }
        let lora_dropout = get("lora_dropout")
            .map(|v| v.as_f64().ok_or_else(|| err(format!("`lora_dropout` must be a number, found {}", kind(v)))))
            .transpose()?
            .unwrap_or(0.0);
        let string = |key: &str| get(key).and_then(Value::as_str).map(str::to_string);
        let mut extra = obj.clone();
        for key in OWNED {
            extra.remove(*key);
        }
        Ok(AdapterConfig {
            peft_type,
            r,
            lora_alpha,
            target_modules,
            use_rslora,
            lora_dropout,
            task_type: string("task_type"),
            base_model_name_or_path: string("base_model_name_or_path"),
            extra,
        })
    }

    /// The JSON peft writes: the kept keys of a loaded file, overridden by this config's values,
    /// and the defaults `LoraConfig` needs for a fresh one.
    pub fn to_json(&self) -> Value {
        let mut obj = self.extra.clone();
        let number = |x: f64| {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                json!(x as i64)
            } else {
                json!(x)
            }
        };
        let owned = [
            ("peft_type", json!(self.peft_type)),
            ("task_type", json!(self.task_type)),
            ("r", json!(self.r)),
            ("lora_alpha", number(self.lora_alpha)),
            ("target_modules", json!(self.target_modules)),
            ("use_rslora", json!(self.use_rslora)),
            ("lora_dropout", json!(self.lora_dropout)),
            ("base_model_name_or_path", json!(self.base_model_name_or_path)),
            ("bias", json!("none")),
            ("fan_in_fan_out", json!(false)),
            ("use_dora", json!(false)),
            ("lora_bias", json!(false)),
        ];
        for (k, v) in owned {
            obj.insert(k.to_string(), v);
        }
        let defaults = [
            ("inference_mode", json!(true)),
            ("init_lora_weights", json!(true)),
            ("modules_to_save", Value::Null),
            ("rank_pattern", json!({})),
            ("alpha_pattern", json!({})),
            ("layers_to_transform", Value::Null),
            ("layers_pattern", Value::Null),
            ("revision", Value::Null),
        ];
        for (k, v) in defaults {
            obj.entry(k).or_insert(v);
        }
        Value::Object(obj)
    }
}

/// The keys [`AdapterConfig`] holds as fields (or always writes itself).
const OWNED: &[&str] = &[
    "peft_type",
    "task_type",
    "r",
    "lora_alpha",
    "target_modules",
    "use_rslora",
    "lora_dropout",
    "base_model_name_or_path",
    "bias",
    "fan_in_fan_out",
    "use_dora",
    "lora_bias",
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_string(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value) -> Result<AdapterConfig, String> {
        AdapterConfig::from_json(Path::new("adapter_config.json"), &v).map_err(|e| e.to_string())
    }

    #[test]
    fn a_fresh_config_round_trips() {
        let c = AdapterConfig::lora(4, 8.0, vec!["key".into(), "value".into()]);
        let json = c.to_json();
        assert_eq!(json["lora_alpha"], json!(8));
        assert_eq!(json["task_type"], json!("CAUSAL_LM"));
        assert_eq!(read(json).unwrap(), AdapterConfig { extra: read(c.to_json()).unwrap().extra, ..c });
    }

    #[test]
    fn unsupported_settings_are_named() {
        let base = || json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["key"]});
        let with = |k: &str, v: Value| {
            let mut j = base();
            j[k] = v;
            read(j).unwrap_err()
        };
        assert_eq!(
            with("use_dora", json!(true)),
            "adapter_config.json: `use_dora` is true: DoRA (weight-decomposed LoRA) is not supported"
        );
        assert_eq!(
            with("bias", json!("all")),
            "adapter_config.json: `bias` is \"all\": adapters that train biases are not supported (only \"none\")"
        );
        assert_eq!(with("r", json!(0)), "adapter_config.json: `r` must be a positive integer, found 0");
        assert_eq!(with("target_modules", json!(".*proj")), "adapter_config.json: `target_modules` is the regular expression \".*proj\"; Kiln supports a list of module names");
        assert_eq!(
            with("peft_type", json!("IA3")),
            "adapter_config.json: peft_type `IA3` is not supported (Kiln has adapter specs for: LORA)"
        );
        assert!(read(json!({"peft_type": "LORA", "r": 4, "target_modules": ["k"], "lora_dropout": 0.1})).is_ok());
    }
}
