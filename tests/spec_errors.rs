//! Every spec under `tests/in/errors/` has one defect; its rendered diagnostic is snapshotted.
//! A diagnostic must name the file, line and column, underline the offending text and say what
//! was expected. Compiled with an empty config.json, so hyperparameters take their defaults.

use kiln_frontend::CompileOptions;
use std::path::Path;

fn render(path: &Path) -> String {
    let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let spec = kiln_frontend::parse_spec(kiln_frontend::SourceFile::new(rel.display().to_string(), text));
    let result = spec.and_then(|s| kiln_frontend::compile(&s, &serde_json::json!({}), &CompileOptions::default()));
    match result {
        Ok(g) => panic!("{} compiled, but it is meant to fail:\n{g}", rel.display()),
        Err(d) => d.to_string(),
    }
}

#[test]
fn spec_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/in/errors");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    assert!(files.len() >= 15, "expected the error corpus under {}", dir.display());
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(name, render(&path));
    }
}
