//! Training checkpoints: everything a run needs to continue exactly where it stopped, in one
//! safetensors file written atomically (see [`super::atomic`]), so a crash while saving leaves
//! the previous checkpoint intact.
//!
//! The file holds, for every trainable `NAME` (its shape as declared), the f32 tensors
//! `param.NAME`, `exp_avg.NAME` and `exp_avg_sq.NAME` (the values and AdamW's moments), and in
//! its string metadata `kiln.step` (optimizer steps taken), `kiln.rng` (the window sampler's
//! SplitMix64 state), `kiln.options` ([`TrainOptions`] as JSON) and `kiln.data` (the dataset's
//! fingerprint, hexadecimal). Loading checks the trainables' names and shapes, the options (see
//! [`TrainOptions::resume_conflicts`]) and the fingerprint, so a checkpoint is only resumed by the
//! run it belongs to.

use super::adamw::{AdamW, AdamWConfig};
use super::atomic::write_atomically;
use super::options::TrainOptions;
use super::{TrainError, TrainableSpec};
use safetensors::tensor::View;
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// The state of a run after `step` optimizer steps.
#[derive(Clone, Debug)]
pub struct TrainState {
    pub step: u64,
    /// Current values, in trainables order.
    pub params: Vec<Vec<f32>>,
    pub optimizer: AdamW,
    /// The window sampler's state.
    pub rng: u64,
}

/// What a checkpoint must match to be resumed.
#[derive(Clone, Copy, Debug)]
pub struct RunIdentity<'a> {
    pub trainables: &'a [TrainableSpec],
    pub options: &'a TrainOptions,
    /// [`super::Dataset::fingerprint`].
    pub data: u64,
}

struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for &F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

const GROUPS: [&str; 3] = ["param", "exp_avg", "exp_avg_sq"];

/// Writes `state` of the run `id` to `path`, atomically.
pub fn save_state(path: &Path, id: RunIdentity<'_>, state: &TrainState) -> Result<(), TrainError> {
    let bad = |reason: String| TrainError::BadCheckpoint { path: path.to_path_buf(), reason };
    let tensors = [state.params.as_slice(), state.optimizer.first_moments(), state.optimizer.second_moments()];
    let mut views = Vec::with_capacity(3 * id.trainables.len());
    for (group, values) in GROUPS.iter().zip(tensors) {
        if values.len() != id.trainables.len() {
            return Err(bad(format!("{} {group} tensors for {} trainables", values.len(), id.trainables.len())));
        }
        for (spec, data) in id.trainables.iter().zip(values) {
            check_size(group, spec, data.len())?;
            views.push((format!("{group}.{}", spec.name), F32View { shape: &spec.shape, data }));
        }
    }
    let options = serde_json::to_string(id.options).map_err(|e| bad(format!("cannot serialize the options: {e}")))?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("kiln.step".to_string(), state.step.to_string()),
        ("kiln.rng".to_string(), state.rng.to_string()),
        ("kiln.options".to_string(), options),
        ("kiln.data".to_string(), format!("{:016x}", id.data)),
    ]);
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| bad(e.to_string()))?;
    write_atomically(path, &bytes)
}

/// Reads the checkpoint at `path` for the run `id` (see the module docs for what is checked).
/// `decay` says which tensors AdamW decays, as for [`AdamW::new`].
pub fn load_state(path: &Path, id: RunIdentity<'_>, decay: Vec<bool>) -> Result<TrainState, TrainError> {
    let bad = |reason: String| TrainError::BadCheckpoint { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(TrainError::NoCheckpoint { path: path.to_path_buf() });
    }
    let bytes =
        std::fs::read(path).map_err(|source| TrainError::Io { op: "read", path: path.to_path_buf(), source })?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("corrupt safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("corrupt safetensors file: {e}")))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let field = |key: &str| {
        meta.get(key).ok_or_else(|| bad(format!("no `{key}` in the metadata: not a Kiln training checkpoint")))
    };
    let number = |key: &str| -> Result<u64, TrainError> {
        field(key)?.parse().map_err(|_| bad(format!("`{key}` is not a number: {:?}", meta[key])))
    };

    let saved: TrainOptions =
        serde_json::from_str(field("kiln.options")?).map_err(|e| bad(format!("unreadable `kiln.options`: {e}")))?;
    let conflicts = id.options.resume_conflicts(&saved);
    if !conflicts.is_empty() {
        return Err(TrainError::ResumeMismatch(format!(
            "{} was written with other options ({}); resume with the same ones",
            path.display(),
            conflicts.join(", ")
        )));
    }
    let data = field("kiln.data")?;
    if *data != format!("{:016x}", id.data) {
        return Err(TrainError::ResumeMismatch(format!(
            "{} was written for other data or another validation split (fingerprint {data}, now {:016x})",
            path.display(),
            id.data
        )));
    }
    let step = number("kiln.step")?;
    let rng = number("kiln.rng")?;

    let mut groups: Vec<Vec<Vec<f32>>> = Vec::with_capacity(3);
    for group in GROUPS {
        let mut values = Vec::with_capacity(id.trainables.len());
        for spec in id.trainables {
            let name = format!("{group}.{}", spec.name);
            let view = file.tensor(&name).map_err(|_| bad(format!("no tensor `{name}`: it trains other tensors")))?;
            if view.dtype() != Dtype::F32 || view.shape() != spec.shape.as_slice() {
                return Err(bad(format!(
                    "`{name}` is {:?} {:?}, expected F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    spec.shape
                )));
            }
            values.push(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
        }
        groups.push(values);
    }
    if file.len() != 3 * id.trainables.len() {
        return Err(bad(format!(
            "{} tensors where {} trainables need {}: it trains other tensors",
            file.len(),
            id.trainables.len(),
            3 * id.trainables.len()
        )));
    }
    let (Some(v), Some(m), Some(params)) = (groups.pop(), groups.pop(), groups.pop()) else {
        return Err(bad("missing tensor groups".into()));
    };
    let config: AdamWConfig = id.options.adamw()?;
    let optimizer = AdamW::from_state(config, step, m, v, decay)?;
    Ok(TrainState { step, params, optimizer, rng })
}

fn check_size(what: &'static str, spec: &TrainableSpec, found: usize) -> Result<(), TrainError> {
    let expected: usize = spec.shape.iter().product();
    if found != expected {
        return Err(TrainError::WrongSize {
            what,
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            expected,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<TrainableSpec> {
        vec![TrainableSpec::new("w", vec![2, 3]), TrainableSpec::new("b", vec![3])]
    }

    fn state() -> TrainState {
        let mut optimizer = AdamW::new(AdamWConfig::default(), &[6, 3], vec![true, false]);
        let mut params = vec![(0..6).map(|i| i as f32 * 0.1).collect(), vec![1.0, -2.0, 0.5]];
        optimizer.step(&mut params, &[vec![0.3; 6], vec![-0.1, 0.2, 1e-30]], 1e-2).unwrap();
        TrainState { step: 1, params, optimizer, rng: u64::MAX - 5 }
    }

    #[test]
    fn roundtrips_bit_for_bit_and_checks_the_run() {
        let dir = std::env::temp_dir().join(format!("kiln-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trainer_state.safetensors");
        let (specs, options) = (specs(), TrainOptions::default());
        let id = RunIdentity { trainables: &specs, options: &options, data: 0xfeed };
        let saved = state();
        save_state(&path, id, &saved).unwrap();
        let loaded = load_state(&path, id, vec![true, false]).unwrap();
        assert_eq!((loaded.step, loaded.rng, &loaded.params), (1, u64::MAX - 5, &saved.params));
        assert_eq!(loaded.optimizer.first_moments(), saved.optimizer.first_moments());
        assert_eq!(loaded.optimizer.second_moments(), saved.optimizer.second_moments());
        assert_eq!(loaded.optimizer.steps(), 1);

        let err = load_state(&path, RunIdentity { data: 1, ..id }, vec![true, false]).unwrap_err();
        assert!(err.to_string().contains("other data"), "{err}");
        let other = TrainOptions { lr: 0.5, ..TrainOptions::default() };
        let err = load_state(&path, RunIdentity { options: &other, ..id }, vec![true, false]).unwrap_err();
        assert!(err.to_string().contains("lr: 0.001 → 0.5"), "{err}");
        let wrong = vec![TrainableSpec::new("w", vec![3, 2]), TrainableSpec::new("b", vec![3])];
        let err = load_state(&path, RunIdentity { trainables: &wrong, ..id }, vec![true, false]).unwrap_err();
        assert!(err.to_string().contains("`param.w` is F32 [2, 3], expected F32 [3, 2]"), "{err}");

        std::fs::write(&path, b"garbage").unwrap();
        let err = load_state(&path, id, vec![true, false]).unwrap_err();
        assert!(err.to_string().contains("corrupt safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(load_state(&path, id, vec![]), Err(TrainError::NoCheckpoint { .. })));
    }
}
