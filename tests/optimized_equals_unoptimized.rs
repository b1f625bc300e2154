//! The optional passes change how a model computes, not what: for every model fixture, the
//! logits of the default pipeline equal the logits with every optional pass turned off, and with
//! any one optional pass turned off the logits still match transformers' reference. The verifier
//! runs after every pass.

use kiln_passes::PipelineOptions;
use kiln_runtime::{LoadOptions, Model};
use kiln_suite::{fixture, model_fixtures, reference, rel_err};
use std::path::Path;

/// The names of the passes that can be turned off, each once, in pipeline order.
fn optional_passes() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in kiln_passes::default_pipeline().passes() {
        if !p.required && !names.iter().any(|n| n == p.name) {
            names.push(p.name.to_string());
        }
    }
    names
}

/// The logits of a full run over the fixture's reference tokens with `disabled` passes off.
fn logits(dir: &Path, tokens: &[i64], disabled: &[String]) -> Vec<f32> {
    let passes = PipelineOptions { disabled: disabled.to_vec(), verify_each: true, ..Default::default() };
    let model = Model::load(dir, &LoadOptions { passes, ..LoadOptions::default() })
        .unwrap_or_else(|e| panic!("{} with {disabled:?} off: {}", dir.display(), e.render()));
    model.forward(tokens, &mut model.new_state()).unwrap().data
}

#[test]
fn optimized_logits_equal_unoptimized_logits() {
    let optional = optional_passes();
    assert!(!optional.is_empty());
    let mut worst = (0f32, String::new());
    for name in model_fixtures() {
        let dir = fixture(&name);
        let tokens = reference(&dir).tokens;
        let optimized = logits(&dir, &tokens, &[]);
        let plain = logits(&dir, &tokens, &optional);
        let err = rel_err(&optimized, &plain);
        let identical = optimized.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits());
        println!("{name}: max relative difference {err:e}{}", if identical { " (bit for bit equal)" } else { "" });
        assert!(err <= 1e-6, "{name}: optimized logits differ from unoptimized ones by {err:e} (relative)");
        if err >= worst.0 {
            worst = (err, name);
        }
    }
    println!("largest difference: {:e} ({}), with {} off", worst.0, worst.1, optional.join(", "));
}

#[test]
fn each_optional_pass_turned_off_alone_still_matches_transformers() {
    let mut worst = (0f32, String::new());
    for name in model_fixtures() {
        let dir = fixture(&name);
        let r = reference(&dir);
        for pass in optional_passes() {
            let err = rel_err(&logits(&dir, &r.tokens, std::slice::from_ref(&pass)), &r.logits);
            assert!(err < 1e-4, "{name} with `{pass}` off: {err:e} from transformers' logits");
            if err >= worst.0 {
                worst = (err, format!("{name} with `{pass}` off"));
            }
        }
    }
    println!("largest difference from transformers: {:e} ({})", worst.0, worst.1);
}
