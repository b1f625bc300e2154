//! Tests for checkpoint loading and saving. Error messages are user-facing, so the tests pin them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-checkpoint-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A directory with a minimal `config.json`.
    fn with_config(label: &str) -> TempDir {
        let dir = TempDir::new(label);
        dir.write("config.json", r#"{"model_type": "mamba", "hidden_size": 4}"#);
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A safetensors file holding `(name, dtype, shape, little-endian bytes)`, via the reference writer.
fn safetensors_file(tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| (*name, TensorView::new(*dtype, shape.to_vec(), bytes).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A safetensors file with a hand-written header (no padding added).
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn open_err(dir: &Path) -> String {
    Checkpoint::open(dir).unwrap_err().to_string()
}

/// A checkpoint directory with one `model.safetensors` holding `w` [3, 4], `b` [4], `tokens` I64.
fn simple_checkpoint(label: &str) -> TempDir {
    let dir = TempDir::with_config(label);
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let tokens: Vec<u8> = [5i64, 7].iter().flat_map(|t| t.to_le_bytes()).collect();
    dir.write(
        "model.safetensors",
        safetensors_file(&[
            ("backbone.norm_f.weight", Dtype::F32, &[4], f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
            ("w", Dtype::F32, &[3, 4], f32_bytes(&w)),
            ("tokens", Dtype::I64, &[2], tokens),
        ]),
    );
    dir
}

#[test]
fn aligned_f32_is_borrowed_from_the_mapping() {
    let dir = simple_checkpoint("borrow");
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.dir(), dir.path());
    assert_eq!(ck.config()["model_type"], "mamba");
    assert_eq!(ck.tensor_names(), ["backbone.norm_f.weight", "tokens", "w"]);
    assert_eq!(ck.info("w"), Some(&TensorInfo { dtype: Dtype::F32, shape: vec![3, 4] }));
    assert!(ck.contains("w") && !ck.contains("lm_head.weight"));
    assert_eq!(ck.info("lm_head.weight"), None);

    let w = ck.tensor_f32("w", &[3, 4]).unwrap();
    let Cow::Borrowed(slice) = &w else { panic!("aligned F32 must be borrowed, got an owned copy") };
    let map = ck.shards[0].mmap.as_ptr_range();
    let data = slice.as_ptr_range();
    assert!(map.start <= data.start.cast() && data.end.cast() <= map.end);
    let expected: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    assert_eq!(&*w, expected.as_slice());
    assert_eq!(&*ck.tensor_f32("backbone.norm_f.weight", &[4]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn half_and_double_precision_are_converted() {
    let dir = TempDir::with_config("convert");
    let values = [1.0f32, -2.5, 0.1, 65504.0, -0.0, 3.0e-5];
    let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let f64s = [1.0f64, std::f64::consts::PI, -1e-3, 1e300];
    let f64_bytes: Vec<u8> = f64s.iter().flat_map(|v| v.to_le_bytes()).collect();
    dir.write(
        "model.safetensors",
        safetensors_file(&[
            ("h", Dtype::F16, &[2, 3], f16),
            ("b", Dtype::BF16, &[6], bf16),
            ("d", Dtype::F64, &[4], f64_bytes),
        ]),
    );
    let ck = Checkpoint::open(dir.path()).unwrap();

    let h = ck.tensor_f32("h", &[2, 3]).unwrap();
    assert!(matches!(h, Cow::Owned(_)));
    // Exactly representable values come back exactly; others as the nearest f16.
    assert_eq!(&h[..2], [1.0, -2.5]);
    assert_eq!(h[2], 0.099_975_586);
    assert_eq!(h[3], 65504.0);
    assert!(h[4] == 0.0 && h[4].is_sign_negative());
    assert_eq!(h[5], half::f16::from_f32(3.0e-5).to_f32()); // an f16 subnormal
    assert!((h[5] - 3.0e-5).abs() < 1e-7);

    let b = ck.tensor_f32("b", &[6]).unwrap();
    assert_eq!(&b[..2], [1.0, -2.5]);
    assert_eq!(b[2], 0.100_097_656);
    assert_eq!(b[3], 65536.0); // bf16 has 8 significant bits
    assert!(b[4] == 0.0 && b[4].is_sign_negative());

    let d = ck.tensor_f32("d", &[4]).unwrap();
    assert_eq!(&*d, [1.0, std::f32::consts::PI, -1e-3, f32::INFINITY]);
}

#[test]
fn unaligned_f32_is_copied() {
    let dir = TempDir::with_config("unaligned");
    // Pad the header so the data starts at an odd file offset, where no f32 slice can start.
    let mut header = r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#.to_string();
    while (8 + header.len()) % 4 != 1 {
        header.push(' ');
    }
    dir.write("model.safetensors", raw_file(&header, &f32_bytes(&[1.5, -2.0, 7.25])));
    let ck = Checkpoint::open(dir.path()).unwrap();
    let x = ck.tensor_f32("x", &[3]).unwrap();
    assert!(matches!(x, Cow::Owned(_)));
    assert_eq!(&*x, [1.5, -2.0, 7.25]);
}

#[test]
fn sharded_checkpoint_loads_through_the_index() {
    let dir = TempDir::with_config("sharded");
    dir.write(
        "model-00001-of-00002.safetensors",
        safetensors_file(&[
            ("a", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0])),
            ("b", Dtype::F32, &[1, 1, 2], f32_bytes(&[3.0, 4.0])),
        ]),
    );
    dir.write(
        "model-00002-of-00002.safetensors",
        safetensors_file(&[
            ("c", Dtype::F32, &[2, 1], f32_bytes(&[5.0, 6.0])),
            ("unlisted", Dtype::F32, &[1], f32_bytes(&[9.0])),
        ]),
    );
    dir.write(
        "model.safetensors.index.json",
        r#"{"metadata": {"total_size": 24}, "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"}}"#,
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.tensor_names(), ["a", "b", "c"]);
    assert_eq!(&*ck.tensor_f32("a", &[2]).unwrap(), [1.0, 2.0]);
    assert_eq!(&*ck.tensor_f32("b", &[1, 1, 2]).unwrap(), [3.0, 4.0]);
    let c = ck.tensor_f32("c", &[2, 1]).unwrap();
    assert!(matches!(c, Cow::Borrowed(_)));
    assert_eq!(&*c, [5.0, 6.0]);
    assert_eq!(
        ck.tensor_f32("c", &[2]).unwrap_err().to_string(),
        "tensor `c` has shape [2, 1] in model-00002-of-00002.safetensors but the spec declares [2]"
    );
    assert_eq!(
        ck.tensor_f32("unlisted", &[1]).unwrap_err().to_string(),
        "tensor `unlisted` not found in model.safetensors.index.json"
    );
}

#[test]
fn missing_tensor_names_it_and_suggests_a_similar_name() {
    let dir = simple_checkpoint("missing");
    let ck = Checkpoint::open(dir.path()).unwrap();
    let err = |name: &str| ck.tensor_f32(name, &[4]).unwrap_err().to_string();
    assert_eq!(
        err("model.norm_f.weight"),
        "tensor `model.norm_f.weight` not found in model.safetensors; did you mean \
         `backbone.norm_f.weight`?"
    );
    assert_eq!(
        err("norm_f.weight"),
        "tensor `norm_f.weight` not found in model.safetensors; did you mean \
         `backbone.norm_f.weight`?"
    );
    assert_eq!(
        err("backbone.norm.weight"),
        "tensor `backbone.norm.weight` not found in model.safetensors; did you mean \
         `backbone.norm_f.weight`?"
    );
    assert_eq!(err("lm_head.weight"), "tensor `lm_head.weight` not found in model.safetensors");
}

#[test]
fn suggestions() {
    let names = ["backbone.embeddings.weight", "backbone.layers.0.mixer.D", "head.weight", "rwkv.blocks.0.ln1.weight"];
    let s = |name| suggest(name, names.iter().copied());
    assert_eq!(s("backbone.embedding.weight"), Some("backbone.embeddings.weight"));
    assert_eq!(s("model.layers.0.mixer.D"), Some("backbone.layers.0.mixer.D"));
    assert_eq!(s("layers.0.mixer.D"), Some("backbone.layers.0.mixer.D"));
    assert_eq!(s("x.backbone.layers.0.mixer.D"), Some("backbone.layers.0.mixer.D"));
    // Another layer's tensor is not a typo: a missing block-1 weight gets no suggestion.
    assert_eq!(s("rwkv.blocks.1.ln1.weight"), None);
    // Sharing only the last component is not similar enough.
    assert_eq!(s("lm_head.weight"), None);
    assert_eq!(s("weight"), None);
}

#[test]
fn misshaped_tensor_names_both_shapes() {
    let dir = simple_checkpoint("shape");
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        ck.tensor_f32("w", &[4, 3]).unwrap_err().to_string(),
        "tensor `w` has shape [3, 4] in model.safetensors but the spec declares [4, 3]"
    );
    // Strict: size-1 dimensions are not squeezed.
    assert_eq!(
        ck.tensor_f32("backbone.norm_f.weight", &[1, 1, 4]).unwrap_err().to_string(),
        "tensor `backbone.norm_f.weight` has shape [4] in model.safetensors but the spec \
         declares [1, 1, 4]"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = simple_checkpoint("dtype");
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        ck.tensor_f32("tokens", &[2]).unwrap_err().to_string(),
        "tensor `tokens` in model.safetensors has dtype I64, which cannot be read as f32 \
         (supported: F32, F16, BF16, F64)"
    );
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let dir = TempDir::with_config("truncated");
    let whole = safetensors_file(&[
        ("a", Dtype::F32, &[4], f32_bytes(&[1.0; 4])),
        ("b", Dtype::F32, &[4], f32_bytes(&[2.0; 4])),
    ]);
    let header_len = u64::from_le_bytes(whole[..8].try_into().unwrap()) as usize;
    let path = dir.path().join("model.safetensors");
    let p = path.display();
    let check = |bytes: &[u8], expected: String| {
        dir.write("model.safetensors", bytes);
        assert_eq!(open_err(dir.path()), expected);
    };

    // Cut in the middle of the data: `b` runs past the end.
    let cut = 8 + header_len + 24;
    check(
        &whole[..cut],
        format!(
            "{p}: corrupt safetensors file: tensor `b` occupies bytes [16, 32) of the data \
             section, but only 24 bytes follow the header (truncated?)"
        ),
    );
    // Cut in the middle of the header.
    check(
        &whole[..8 + header_len / 2],
        format!(
            "{p}: corrupt safetensors file: the header length {header_len} runs past the end \
             of the file ({} bytes; truncated?)",
            8 + header_len / 2
        ),
    );
    // Cut inside the length prefix, and an empty file.
    check(
        &whole[..5],
        format!(
            "{p}: corrupt safetensors file: the file is 5 bytes, too short for the 8-byte \
             header length (truncated?)"
        ),
    );
    check(
        &[],
        format!(
            "{p}: corrupt safetensors file: the file is 0 bytes, too short for the 8-byte \
             header length (truncated?)"
        ),
    );
    // An absurd header length.
    check(
        &u64::MAX.to_le_bytes(),
        format!(
            "{p}: corrupt safetensors file: the header length 18446744073709551615 runs past \
             the end of the file (8 bytes; truncated?)"
        ),
    );
    // Header that is not JSON.
    check(
        &raw_file("{not json", &[]),
        format!(
            "{p}: corrupt safetensors file: the header is not a valid JSON object: key must be \
             a string at line 1 column 2"
        ),
    );
    // Data that the tensors do not cover.
    check(
        &raw_file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 6]),
        format!(
            "{p}: corrupt safetensors file: 2 bytes at the end of the data section belong to \
             no tensor"
        ),
    );
    // Offsets that disagree with the shape.
    check(
        &raw_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]),
        format!(
            "{p}: corrupt safetensors file: tensor `a` has data_offsets [0, 4) but dtype F32 \
             and shape [2] need 8 bytes"
        ),
    );
    // Overlapping tensors.
    check(
        &raw_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                "b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        format!(
            "{p}: corrupt safetensors file: tensor `b` starts at data offset 0 but the previous \
             tensor ends at 4 (tensors must be stored back to back)"
        ),
    );
    // A dtype nobody knows.
    check(
        &raw_file(r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
        format!("{p}: corrupt safetensors file: tensor `a` has unknown dtype `F12`"),
    );

    // Every prefix of a valid file is an error, never a panic.
    for len in 0..whole.len() {
        dir.write("model.safetensors", &whole[..len]);
        assert!(Checkpoint::open(dir.path()).is_err(), "prefix of {len} bytes");
    }
}

#[test]
fn invalid_config_json_reports_line_and_column() {
    let dir = simple_checkpoint("config");
    let config = dir.write("config.json", "{\n  \"hidden_size\": 4,\n  \"vocab_size\": ,\n}\n");
    assert_eq!(open_err(dir.path()), format!("{}:3:17: invalid JSON: expected value", config.display()));
    dir.write("config.json", "{\n  \"time_step_limit\": [0.0, Infinity]\n}\n");
    assert_eq!(
        open_err(dir.path()),
        format!(
            "{}:2:28: invalid JSON: expected value (bare Infinity/NaN is Python's non-standard \
             JSON; write {{\"__float__\": \"Infinity\"}} as transformers 5 does)",
            config.display()
        )
    );
    dir.write("config.json", "{\"x\": NaN}");
    assert!(open_err(dir.path()).ends_with("as transformers 5 does)"));
    dir.write("config.json", "{\"x\": -Infinity}");
    assert!(open_err(dir.path()).ends_with("as transformers 5 does)"));
    // transformers 5 writes non-finite floats as objects, which is plain JSON.
    dir.write("config.json", r#"{"time_step_limit": [0.0, {"__float__": "Infinity"}]}"#);
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.config()["time_step_limit"][1]["__float__"], "Infinity");
}

#[test]
fn directory_level_errors() {
    let dir = TempDir::new("dirs");
    let d = dir.path().display();
    let gone = dir.path().join("nope");
    assert_eq!(open_err(&gone), format!("checkpoint directory {} does not exist", gone.display()));
    let file = dir.write("file.txt", "x");
    assert_eq!(open_err(&file), format!("checkpoint path {} is not a directory", file.display()));
    assert_eq!(open_err(dir.path()), format!("no config.json in checkpoint directory {d}"));
    dir.write("config.json", "{}");
    assert_eq!(
        open_err(dir.path()),
        format!(
            "no weights in checkpoint directory {d}: looked for model.safetensors and \
             model.safetensors.index.json"
        )
    );
    dir.write("pytorch_model.bin", "x");
    dir.write("adapter_model.safetensors", "x");
    assert_eq!(
        open_err(dir.path()),
        format!(
            "no weights in checkpoint directory {d}: looked for model.safetensors and \
             model.safetensors.index.json; found only adapter_model.safetensors, \
             pytorch_model.bin (PyTorch pickles are not supported: re-save with \
             safe_serialization=True)"
        )
    );
}

#[test]
fn index_errors() {
    let dir = TempDir::with_config("index");
    let index = dir.path().join("model.safetensors.index.json");
    let i = index.display();
    let check = |text: &str, expected: String| {
        dir.write("model.safetensors.index.json", text);
        assert_eq!(open_err(dir.path()), expected);
    };
    check("{\"weight_map\": {\"a\": }}", format!("{i}:1:22: invalid JSON: expected value"));
    check(r#"{"metadata": {}}"#, format!("{i}: no `weight_map` object"));
    check(r#"{"weight_map": {"a": 3}}"#, format!("{i}: weight_map entry for `a` is 3, not a file name"));
    check(
        r#"{"weight_map": {"a": "../model.safetensors"}}"#,
        format!(
            "{i}: weight_map maps `a` to `../model.safetensors`, which is not a file name \
             inside the checkpoint directory"
        ),
    );
    check(
        r#"{"weight_map": {"b": "model-00002-of-00002.safetensors",
                           "a": "model-00002-of-00002.safetensors"}}"#,
        format!("{i} maps `a` to model-00002-of-00002.safetensors, which does not exist"),
    );
    dir.write("model-00001-of-00001.safetensors", safetensors_file(&[("a", Dtype::F32, &[1], f32_bytes(&[1.0]))]));
    check(
        r#"{"weight_map": {"a": "model-00001-of-00001.safetensors",
                           "z": "model-00001-of-00001.safetensors"}}"#,
        format!(
            "{i}: weight_map maps `z` to model-00001-of-00001.safetensors, which does not \
             contain it"
        ),
    );
    // A corrupt shard is named by its own path.
    let shard = dir.write("model-00001-of-00001.safetensors", [1u8, 2, 3]);
    check(
        r#"{"weight_map": {"a": "model-00001-of-00001.safetensors"}}"#,
        format!(
            "{}: corrupt safetensors file: the file is 3 bytes, too short for the 8-byte header \
             length (truncated?)",
            shard.display()
        ),
    );
}

#[test]
fn save_round_trips_atomically() {
    let dir = TempDir::with_config("save");
    let path = dir.path().join("model.safetensors");
    let logits: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let tokens = [3i64, 1, 4, 1, 5];
    save(&path, &[("logits", &[1, 2, 3], TensorData::F32(&logits)), ("tokens", &[1, 5], TensorData::I64(&tokens))])
        .unwrap();

    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(&*ck.tensor_f32("logits", &[1, 2, 3]).unwrap(), logits);
    assert_eq!(ck.info("tokens").unwrap().dtype, Dtype::I64);

    let bytes = std::fs::read(&path).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(metadata.metadata().as_ref().unwrap()["format"], "pt", "transformers needs format=pt");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("tokens").unwrap();
    let read: Vec<i64> = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(read, tokens);

    // Overwrite while the old file is mapped: the rename leaves the mapping untouched.
    save_f32(&path, &[("logits".into(), vec![1, 2, 3], vec![7.0; 6])]).unwrap();
    #[cfg(unix)]
    assert_eq!(&*ck.tensor_f32("logits", &[1, 2, 3]).unwrap(), logits);
    let reopened = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(&*reopened.tensor_f32("logits", &[1, 2, 3]).unwrap(), [7.0; 6]);
    assert_eq!(reopened.tensor_names(), ["logits"]);

    // No temporary files are left behind.
    let mut names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors"]);

    // Empty tensors and an empty file are fine.
    save(&path, &[("empty", &[0, 3], TensorData::F32(&[]))]).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert!(ck.tensor_f32("empty", &[0, 3]).unwrap().is_empty());
    save(&path, &[]).unwrap();
    assert!(Checkpoint::open(dir.path()).unwrap().tensor_names().is_empty());
}

#[test]
fn save_rejects_bad_input_and_cleans_up() {
    let dir = TempDir::new("save-errors");
    let path = dir.path().join("out.safetensors");
    let p = path.display();
    let err = |tensors: &[(&str, &[usize], TensorData<'_>)]| save(&path, tensors).unwrap_err().to_string();
    assert_eq!(
        err(&[("x", &[2, 2], TensorData::F32(&[1.0; 3]))]),
        format!("cannot write {p}: tensor `x` has 3 values but shape [2, 2] needs 4")
    );
    assert_eq!(
        err(&[("x", &[1], TensorData::F32(&[1.0])), ("x", &[1], TensorData::I64(&[1])),]),
        format!("cannot write {p}: tensor `x` is given twice")
    );
    assert_eq!(
        err(&[("__metadata__", &[1], TensorData::F32(&[1.0]))]),
        format!("cannot write {p}: `__metadata__` is reserved and cannot name a tensor")
    );
    let nowhere = dir.path().join("missing-dir").join("out.safetensors");
    assert_eq!(
        save(&nowhere, &[]).unwrap_err().to_string(),
        format!("cannot write {}: No such file or directory (os error 2)", nowhere.display())
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn opens_a_transformers_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data/mamba2-g1");
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!(ck.config()["model_type"], "mamba2");
    assert_eq!(ck.config()["time_step_limit"][1]["__float__"], "Infinity");
    let emb = ck.tensor_f32("backbone.embeddings.weight", &[300, 32]).unwrap();
    assert!(matches!(emb, Cow::Borrowed(_)));
    assert!(emb.iter().all(|v| v.is_finite()));
    assert!(ck.contains("lm_head.weight"));
    assert_eq!(
        ck.tensor_f32("backbone.layers.0.mixer.conv1d.weight", &[96]).unwrap_err().to_string(),
        "tensor `backbone.layers.0.mixer.conv1d.weight` has shape [96, 1, 4] in \
         model.safetensors but the spec declares [96]"
    );
}
