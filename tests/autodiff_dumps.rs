//! The training graphs the autodiff pass builds, as snapshots: every spec under
//! `tests/in/autodiff/` is compiled (hyperparameter defaults), turned into its training step for
//! all its weights, and dumped as built and after the default pipeline, one under the other.

use kiln_passes::PipelineOptions;
use std::path::Path;

fn training_dumps(root: &Path, file: &Path) -> String {
    let name = file.strip_prefix(root).unwrap().display().to_string();
    let text = std::fs::read_to_string(file).unwrap();
    let spec = kiln_frontend::parse_spec(kiln_frontend::SourceFile::new(name, text)).unwrap_or_else(|e| panic!("{e}"));
    let lowered =
        kiln_frontend::compile(&spec, &serde_json::json!({}), &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let weights = kiln_runtime::finetune::weight_names(&lowered);
    let mut g = kiln_passes::training_graph(&lowered, &weights).unwrap();
    kiln_ir::verify(&g).unwrap();
    let built = g.to_string();
    kiln_passes::default_pipeline().run(&mut g, &PipelineOptions { verify_each: true, ..Default::default() }).unwrap();
    format!("--- training graph as built ---\n{built}\n--- after the default pipeline ---\n{g}")
}

#[test]
fn training_graphs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> =
        std::fs::read_dir(root.join("tests/in/autodiff")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(stem, training_dumps(root, &file));
    }
}
