//! Writing files atomically: safetensors (logits from the CLI, adapters, token tensors from
//! tests) and any other bytes (an adapter's JSON config).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::View;
use safetensors::{Dtype, SafeTensorError};

use super::CheckpointError;

/// The elements of a tensor to [`save`], borrowed.
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    /// Stored as `F32`.
    F32(&'a [f32]),
    /// Stored as `I64` (token ids).
    I64(&'a [i64]),
    /// Stored as `U8` (packed 4-bit weights).
    U8(&'a [u8]),
    /// Stored as `F16` (quantization scales).
    F16(&'a [half::f16]),
}

impl TensorData<'_> {
    fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::F16(v) => v.len(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::I64(_) => Dtype::I64,
            TensorData::U8(_) => Dtype::U8,
            TensorData::F16(_) => Dtype::F16,
        }
    }

    /// The little-endian bytes, borrowed on little-endian hosts.
    fn le_bytes(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            match self {
                TensorData::F32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
                TensorData::I64(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
                TensorData::U8(v) => Cow::Borrowed(v),
                TensorData::F16(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            }
        } else {
            match self {
                TensorData::F32(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                TensorData::I64(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                TensorData::U8(v) => Cow::Borrowed(v),
                TensorData::F16(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            }
        }
    }
}

/// A tensor as the `safetensors` serializer wants it.
struct Entry<'a> {
    shape: &'a [usize],
    data: TensorData<'a>,
}

impl View for &Entry<'_> {
    fn dtype(&self) -> Dtype {
        self.data.dtype()
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        self.data.le_bytes()
    }
    fn data_len(&self) -> usize {
        self.data.len() * (self.data.dtype().bitsize() / 8)
    }
}

/// Writes `tensors` (name, shape, data) to the safetensors file `path`, atomically: the bytes go to
/// `<path>.tmp-<pid>-<n>` in the same directory, are fsynced, and the temporary file is renamed
/// over `path`. Readers never see a partial file, and an existing file that is memory-mapped (for
/// example by an open [`Checkpoint`](super::Checkpoint)) keeps its old contents for that mapping.
///
/// The header carries `{"format": "pt"}` metadata, as `save_pretrained` writes, so transformers
/// accepts the file too. Names must be unique and each data length must equal its shape's product.
pub fn save(path: &Path, tensors: &[(&str, &[usize], TensorData<'_>)]) -> Result<(), CheckpointError> {
    save_with_metadata(path, tensors, &[])
}

/// [`save`] with extra header metadata entries (key, value) besides `format`.
pub fn save_with_metadata(
    path: &Path,
    tensors: &[(&str, &[usize], TensorData<'_>)],
    metadata: &[(String, String)],
) -> Result<(), CheckpointError> {
    let invalid = |reason: String| CheckpointError::InvalidSave { path: path.to_path_buf(), reason };
    let mut names = BTreeSet::new();
    let mut entries = Vec::with_capacity(tensors.len());
    for &(name, shape, data) in tensors {
        if name == "__metadata__" {
            return Err(invalid("`__metadata__` is reserved and cannot name a tensor".into()));
        }
        if !names.insert(name) {
            return Err(invalid(format!("tensor `{name}` is given twice")));
        }
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if elements != Some(data.len()) {
            return Err(invalid(format!(
                "tensor `{name}` has {} values but shape {shape:?} needs {}",
                data.len(),
                elements.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
            )));
        }
        entries.push((name, Entry { shape, data }));
    }

    let (dir, tmp) = temp_path(path).ok_or_else(|| invalid("the path names no file".into()))?;
    let result = write_and_rename(path, &dir, &tmp, &entries, metadata);
    if result.is_err() {
        // Best effort: the temporary file may not exist, and the original error matters more.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`save`] for f32 tensors held as owned `(name, shape, values)` triples.
pub fn save_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), CheckpointError> {
    let borrowed: Vec<_> =
        tensors.iter().map(|(name, shape, data)| (name.as_str(), shape.as_slice(), TensorData::F32(data))).collect();
    save(path, &borrowed)
}

/// Writes `bytes` to `path` atomically, like [`save`]: to a temporary file next to it, fsynced,
/// then renamed over `path` (for JSON files written next to safetensors ones).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let invalid = |reason: String| CheckpointError::InvalidSave { path: path.to_path_buf(), reason };
    let (dir, tmp) = temp_path(path).ok_or_else(|| invalid("the path names no file".into()))?;
    let io = |op, source| CheckpointError::Io { op, path: path.to_path_buf(), source };
    let result = fs::write(&tmp, bytes)
        .and_then(|()| OpenOptions::new().write(true).open(&tmp)?.sync_all())
        .map_err(|e| io("write", e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io("write", e)));
    if result.is_err() {
        // Best effort: the temporary file may not exist, and the original error matters more.
        let _ = fs::remove_file(&tmp);
    } else if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    result
}

/// The directory of `path` and a temporary file name next to it that no other writer uses.
fn temp_path(path: &Path) -> Option<(PathBuf, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name()?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(tmp_name);
    Some((dir, tmp))
}

fn write_and_rename(
    path: &Path,
    dir: &Path,
    tmp: &Path,
    entries: &[(&str, Entry<'_>)],
    extra: &[(String, String)],
) -> Result<(), CheckpointError> {
    let io = |op, source| CheckpointError::Io { op, path: path.to_path_buf(), source };
    let mut metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    metadata.extend(extra.iter().cloned());
    let views = entries.iter().map(|(name, entry)| (*name, entry));
    safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(|e| match e {
        SafeTensorError::IoError(source) => io("write", source),
        other => CheckpointError::InvalidSave { path: path.to_path_buf(), reason: other.to_string() },
    })?;
    OpenOptions::new().write(true).open(tmp).and_then(|f| f.sync_all()).map_err(|e| io("write", e))?;
    fs::rename(tmp, path).map_err(|e| io("write", e))?;
    // Make the rename itself durable. Directories cannot be opened for syncing on every platform,
    // and the file is already complete under its final name, so a failure here is not an error.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
