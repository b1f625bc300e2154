//! Adapter specs (the format of `models/lora.toml`): every file under `tests/in/adapters/errors/`
//! is `lora.toml` with one defect, applied to the tiny model in `tests/in/adapters/`. Its
//! rendered diagnostic is snapshotted: like any spec error it names the file, line and column
//! and underlines the offending text.

use kiln_frontend::{parse_adapter_spec, CompileOptions, SourceFile};
use kiln_runtime::adapter::{apply_adapter_spec, AdapterConfig};
use kiln_runtime::Error;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_config() -> AdapterConfig {
    let path = root().join("tests/in/adapters/tiny_adapter_config.json");
    let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    AdapterConfig::from_json(&path, &json).unwrap()
}

fn render(path: &Path) -> String {
    let rel = path.strip_prefix(root()).unwrap().display().to_string();
    let spec = match parse_adapter_spec(SourceFile::new(rel.clone(), std::fs::read_to_string(path).unwrap())) {
        Ok(s) => s,
        Err(d) => return d.to_string(),
    };
    let model = kiln_runtime::specs::parse_file(&root().join("tests/in/adapters/tiny.toml")).unwrap();
    let mut graph = kiln_frontend::compile(&model, &serde_json::json!({}), &CompileOptions::default()).unwrap();
    match apply_adapter_spec(&mut graph, &spec, &tiny_config()) {
        Ok(_) => panic!("{rel} applied, but it is meant to fail:\n{graph}"),
        Err(e @ Error::Spec(_)) => e.render(),
        Err(other) => panic!("{rel}: expected a located diagnostic, got: {other}"),
    }
}

#[test]
fn adapter_spec_errors() {
    let dir = root().join("tests/in/adapters/errors");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    assert!(files.len() >= 8, "expected the error corpus under {}", dir.display());
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(name, render(&path));
    }
}
