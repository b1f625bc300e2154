//! One memory-mapped `.safetensors` file: header parsing and validation.
//!
//! The header is parsed here rather than through `SafeTensors::deserialize` so that every tensor's
//! absolute byte range in the mapping is known (the accessors hand out borrowed slices of it) and so
//! that a truncated or corrupt file gets a precise message. The checks are the ones the format (and
//! the `safetensors` crate) demands: the 8-byte little-endian header length, a UTF-8 JSON object
//! header, a known dtype per tensor, `data_offsets` matching dtype × shape, tensors laid out
//! back to back, and a data section that is exactly covered by them. The crate's own
//! `read_metadata` then runs as a second opinion.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::{CheckpointError, TensorInfo};

/// Bytes of the little-endian `u64` header length that starts every safetensors file.
const LEN_PREFIX: usize = 8;

/// A mapped safetensors file and the tensors it holds.
#[derive(Debug)]
pub(super) struct Shard {
    /// The file name as the checkpoint refers to it (`model.safetensors`, a shard name).
    pub(super) file_name: String,
    pub(super) mmap: Bytes,
    /// Name, dtype/shape and absolute byte range within `mmap`, in file order.
    pub(super) tensors: Vec<(String, TensorInfo, Range<usize>)>,
}

/// A header entry as written in the file; the dtype is kept as text so an unknown one can be named.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// A shard's bytes: a read-only file mapping, or bytes compiled into the binary.
pub(super) enum Bytes {
    Mapped(Mmap),
    Static(&'static [u8]),
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Mapped(m) => write!(f, "Mapped({} bytes)", m.len()),
            Bytes::Static(b) => write!(f, "Static({} bytes)", b.len()),
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Static(b) => b,
        }
    }
}

/// Validates a safetensors file compiled into the binary; `path` names it in errors.
pub(super) fn from_static(bytes: &'static [u8], path: &Path, file_name: String) -> Result<Shard, CheckpointError> {
    let tensors = parse(bytes).map_err(|reason| corrupt(path, reason))?;
    SafeTensors::read_metadata(bytes).map_err(|e| corrupt(path, e.to_string()))?;
    Ok(Shard { file_name, mmap: Bytes::Static(bytes), tensors })
}

/// Opens, maps and validates `path`. `file_name` is how error messages refer to it.
pub(super) fn open(path: &Path, file_name: String) -> Result<Shard, CheckpointError> {
    let io = |op, source| CheckpointError::Io { op, path: path.to_path_buf(), source };
    let file = File::open(path).map_err(|e| io("open", e))?;
    let len = file.metadata().map_err(|e| io("read", e))?.len();
    if len < LEN_PREFIX as u64 {
        // Checked before mapping: a zero-length mapping is an error on some platforms.
        return Err(corrupt(
            path,
            format!("the file is {len} bytes, too short for the 8-byte header length (truncated?)"),
        ));
    }
    // SAFETY: the mapping is read-only (PROT_READ) and `Shard` owns it, so every slice handed out
    // borrows from the `Checkpoint` that owns the shard and cannot outlive the mapping. What the
    // compiler cannot check is that no other process writes to or truncates the file while it is
    // mapped: a write would change bytes behind a `&[u8]`, and a truncation would make reads of the
    // lost pages raise SIGBUS. We assume, as every safetensors loader does, that checkpoint files
    // are not modified in place while a `Checkpoint` is open. Kiln itself never does that: `save`
    // writes a temporary file and renames it over the target, which leaves an existing mapping of
    // the old file intact.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io("map", e))?;
    let tensors = parse(&mmap).map_err(|reason| corrupt(path, reason))?;
    // Second opinion from the reference implementation; `parse` performs a superset of its checks,
    // so this only fires if the two disagree.
    SafeTensors::read_metadata(&mmap).map_err(|e| corrupt(path, e.to_string()))?;
    Ok(Shard { file_name, mmap: Bytes::Mapped(mmap), tensors })
}

fn corrupt(path: &Path, reason: String) -> CheckpointError {
    CheckpointError::Corrupt { path: PathBuf::from(path), reason }
}

/// Parses and validates the header of a whole safetensors file held in `buf`, returning every
/// tensor with its absolute byte range in `buf`, sorted by offset. Errors are the reason only.
pub(super) fn parse(buf: &[u8]) -> Result<Vec<(String, TensorInfo, Range<usize>)>, String> {
    let file_len = buf.len();
    let Some((prefix, rest)) = buf.split_first_chunk::<LEN_PREFIX>() else {
        return Err(format!("the file is {file_len} bytes, too short for the 8-byte header length (truncated?)"));
    };
    let header_len = u64::from_le_bytes(*prefix);
    let header_len = match usize::try_from(header_len) {
        Ok(n) if n <= rest.len() => n,
        _ => {
            return Err(format!(
                "the header length {header_len} runs past the end of the file \
                 ({file_len} bytes; truncated?)"
            ))
        }
    };
    let (header, data) = rest.split_at(header_len);
    let header = std::str::from_utf8(header).map_err(|e| format!("the header is not valid UTF-8: {e}"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(header).map_err(|e| format!("the header is not a valid JSON object: {e}"))?;

    let data_start = LEN_PREFIX + header_len;
    let mut tensors = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let raw =
            RawEntry::deserialize(value).map_err(|e| format!("tensor `{name}` has an invalid header entry: {e}"))?;
        let dtype = Dtype::deserialize(serde_json::Value::String(raw.dtype.clone()))
            .map_err(|_| format!("tensor `{name}` has unknown dtype `{}`", raw.dtype))?;
        let (start, end) = raw.data_offsets;
        let bits = raw.shape.iter().try_fold(dtype.bitsize(), |acc, &d| acc.checked_mul(d));
        let expected = match bits {
            Some(bits) if bits % 8 == 0 => bits / 8,
            _ => {
                return Err(format!(
                    "tensor `{name}` of dtype {dtype} and shape {:?} does not occupy a whole \
                     number of bytes that fits in memory",
                    raw.shape
                ))
            }
        };
        if end < start || end - start != expected {
            return Err(format!(
                "tensor `{name}` has data_offsets [{start}, {end}) but dtype {dtype} and shape \
                 {:?} need {expected} bytes",
                raw.shape
            ));
        }
        tensors.push((name, TensorInfo { dtype, shape: raw.shape }, start..end));
    }

    // The format requires the tensors to tile the data section exactly, in offset order.
    tensors.sort_by_key(|(_, _, range)| (range.start, range.end));
    let mut next = 0;
    for (name, _, range) in &mut tensors {
        if range.end > data.len() {
            return Err(format!(
                "tensor `{name}` occupies bytes [{}, {}) of the data section, but only {} bytes \
                 follow the header (truncated?)",
                range.start,
                range.end,
                data.len()
            ));
        }
        if range.start != next {
            return Err(format!(
                "tensor `{name}` starts at data offset {} but the previous tensor ends at {next} \
                 (tensors must be stored back to back)",
                range.start
            ));
        }
        next = range.end;
        *range = data_start + range.start..data_start + range.end;
    }
    if next != data.len() {
        return Err(format!("{} bytes at the end of the data section belong to no tensor", data.len() - next));
    }
    Ok(tensors)
}
