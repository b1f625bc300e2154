//! What each pass does, shown like rustc's mir-opt tests: every spec under
//! `tests/in/passes/<pass>/` is compiled (hyperparameter defaults, config `{}`), the default
//! pipeline runs with the verifier after every pass, and the graph is dumped just before and
//! just after `<pass>`. Both dumps go into one snapshot, `passes__<pass>__<spec>.snap`, one under
//! the other, so reading it (or its diff) shows what the pass changed.
//!
//! A pass is covered by adding a directory named after it. A directory naming no pass of the
//! pipeline (a pass still being written) is skipped with a message. For a pass that runs more
//! than once (`dead-code`), "before" is its first run and "after" its last.

use kiln_frontend::CompileOptions;
use kiln_passes::{DumpPoint, PipelineOptions};
use std::path::Path;

fn dump(spec: &kiln_frontend::SpecFile, pass: &str, point: DumpPoint) -> String {
    let options = PipelineOptions { verify_each: true, dump: Some((pass.to_string(), point)), ..Default::default() };
    let (_, report) =
        kiln_runtime::compile_spec_with(spec, &serde_json::json!({}), &CompileOptions::default(), &options)
            .unwrap_or_else(|e| panic!("{}", e.render()));
    report.dump.unwrap_or_else(|| panic!("no dump {point:?} `{pass}`"))
}

/// The snapshot of one spec: the graph before and after `pass`.
fn before_and_after(root: &Path, pass: &str, file: &Path) -> String {
    // Spec paths relative to the repository, so origins in the dumps do not depend on the checkout.
    let name = file.strip_prefix(root).unwrap().display().to_string();
    let text = std::fs::read_to_string(file).unwrap();
    let spec = kiln_frontend::parse_spec(kiln_frontend::SourceFile::new(name, text)).unwrap_or_else(|e| panic!("{e}"));
    let before = dump(&spec, pass, DumpPoint::Before);
    let after = dump(&spec, pass, DumpPoint::After);
    if before == after {
        format!("--- before {pass} ---\n{before}\n--- after {pass}: unchanged ---\n")
    } else {
        format!("--- before {pass} ---\n{before}\n--- after {pass} ---\n{after}")
    }
}

fn sorted(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    entries
}

#[test]
fn each_pass_before_and_after() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = kiln_passes::default_pipeline();
    let known: Vec<&str> = pipeline.passes().iter().map(|p| p.name).collect();
    let mut failed = Vec::new();
    let mut checked = 0;
    for dir in sorted(&root.join("tests/in/passes")).into_iter().filter(|d| d.is_dir()) {
        let pass = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !known.contains(&pass.as_str()) {
            eprintln!("skipping tests/in/passes/{pass}/: the pipeline has no pass `{pass}` (yet)");
            continue;
        }
        for file in sorted(&dir).into_iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let snapshot = before_and_after(root, &pass, &file);
            // Every snapshot is checked (and written, when updating) before the test fails.
            let result = std::panic::catch_unwind(|| {
                insta::assert_snapshot!(format!("{pass}__{stem}"), snapshot);
            });
            if result.is_err() {
                failed.push(format!("{pass}/{stem}"));
            }
            checked += 1;
        }
    }
    assert!(failed.is_empty(), "snapshots differ: {}", failed.join(", "));
    assert!(checked > 0, "no specs under tests/in/passes/");
}
