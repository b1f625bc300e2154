//! Snapshots of the IR of every model in `models/`, compiled for a committed fixture's
//! config.json (a few small layers, so the dumps stay readable). A change to lowering, the
//! prelude or a spec shows up here as a diff to read.

use kiln_frontend::CompileOptions;
use kiln_suite::fixture;

fn dump(spec: &str, fixture_name: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let spec_path = format!("{root}/models/{spec}");
    let text = std::fs::read_to_string(&spec_path).unwrap();
    let spec = kiln_frontend::parse_spec(kiln_frontend::SourceFile::new(
        format!("models/{}", spec_path.rsplit('/').next().unwrap()),
        text,
    ))
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name).join("config.json")).unwrap()).unwrap();
    let graph = kiln_runtime::compile_spec(&spec, &config, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    graph.to_string()
}

#[test]
fn rwkv4() {
    insta::assert_snapshot!("rwkv4", dump("rwkv4.toml", "rwkv4-tied"));
}

#[test]
fn mamba() {
    insta::assert_snapshot!("mamba", dump("mamba.toml", "mamba-tied"));
}

#[test]
fn mamba2() {
    insta::assert_snapshot!("mamba2", dump("mamba2.toml", "mamba2-g2"));
}

/// The tiny model of `tests/in/adapters/`, with an adapter and/or quantization: the graph right
/// after the pass `at` (its dump) and after the whole pipeline.
fn tiny(
    adapter: Option<&kiln_runtime::AdapterConfig>,
    quantize: Option<&kiln_passes::QuantizeOptions>,
    at: &str,
) -> (String, String) {
    use kiln_passes::{DumpPoint, PipelineOptions};
    let spec = kiln_runtime::specs::parse_file(std::path::Path::new("tests/in/adapters/tiny.toml")).unwrap();
    let compile = |dump: Option<(String, DumpPoint)>| {
        let passes = PipelineOptions { dump, ..PipelineOptions::default() };
        let config = serde_json::json!({});
        kiln_runtime::adapter::compile_spec_adapted(
            &spec,
            &config,
            &CompileOptions::default(),
            adapter,
            quantize,
            &passes,
        )
        .unwrap_or_else(|e| panic!("{}", e.render()))
    };
    let after = compile(Some((at.into(), DumpPoint::After))).report.dump.unwrap();
    (after, compile(None).graph.to_string())
}

/// LoRA on `q_proj` and `o_proj` (r = 2, alpha = 4).
#[test]
fn lora_tiny() {
    let root = env!("CARGO_MANIFEST_DIR");
    let config_path = std::path::Path::new(root).join("tests/in/adapters/tiny_adapter_config.json");
    let json = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let adapter = kiln_runtime::AdapterConfig::from_json(&config_path, &json).unwrap();
    let (after_lora, end) = tiny(Some(&adapter), None, "lora");
    insta::assert_snapshot!("lora_tiny_after_lora", after_lora);
    insta::assert_snapshot!("lora_tiny", end);
}

/// Quantized (`q4_1:4`, head included, activation-aware scales on `o_proj`): after the
/// `quantize` pass the weights are retyped and `x / s` precedes the scaled product; after the
/// pipeline the division is fused into the preceding kernel.
#[test]
fn quantized_tiny() {
    use kiln_ir::{Quant, QuantScheme};
    let mut quantize = kiln_passes::QuantizeOptions::new(Quant { scheme: QuantScheme::Q4_1, group: 4 });
    quantize.head = true;
    quantize.input_scales.insert("model.attn.o_proj.weight".into());
    let (after, end) = tiny(None, Some(&quantize), "quantize");
    insta::assert_snapshot!("quantized_tiny_after_quantize", after);
    insta::assert_snapshot!("quantized_tiny", end);
}
