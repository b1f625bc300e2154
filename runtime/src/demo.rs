//! `kiln demo`: the main job on an embedded default. A tiny random-weight RWKV-4 checkpoint (made
//! by the fixture generator with transformers, 64 hidden, 3 layers) and its byte-level BPE
//! tokenizer are compiled into the binary, so this runs from any directory with no download.

use crate::checkpoint::Checkpoint;
use crate::Error;
use std::io::Write;

const CONFIG: &str = include_str!("../../tests/fixtures/data/rwkv4-untied/config.json");
const WEIGHTS: &[u8] = include_bytes!("../../tests/fixtures/data/rwkv4-untied/model.safetensors");

/// Token ids the demo runs when none are given (the fixture's first tokens).
const DEFAULT_TOKENS: [i64; 8] = [38, 73, 82, 296, 221, 35, 275, 73];

pub(crate) fn run(tokens: Option<Vec<i64>>, top: usize, out: &mut dyn Write) -> Result<(), Error> {
    let tokens = tokens.unwrap_or_else(|| DEFAULT_TOKENS.to_vec());
    let checkpoint = Checkpoint::from_static("<embedded rwkv4-untied>", CONFIG, WEIGHTS)?;
    let spec = crate::resolve_spec(checkpoint.config(), None)?;
    let model = crate::Model::with_spec(&spec, checkpoint, &crate::LoadOptions::default())?;
    let mut state = model.new_state();
    let logits = model.forward(&tokens, &mut state)?;
    let w = |e| Error::Io { path: "<stdout>".into(), source: e };
    writeln!(out, "model: {} (embedded, {} nodes), tokens: {tokens:?}", model.name(), model.graph().node_count())
        .map_err(w)?;
    let last = logits.last();
    let mut ranked: Vec<(usize, f32)> = last.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let max = ranked.first().map_or(0.0, |r| r.1);
    let z: f32 = last.iter().map(|&l| (l - max).exp()).sum();
    writeln!(out, "top {top} next tokens:").map_err(w)?;
    for (id, logit) in ranked.into_iter().take(top) {
        writeln!(out, "  {id:>5}  logit {logit:>8.4}  p = {:.4}", (logit - max).exp() / z).map_err(w)?;
    }
    Ok(())
}
