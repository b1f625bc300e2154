//! Calibrates a model on a text file, searches AWQ scales for every product weight and prints
//! the comparison with round-to-nearest, with the time each step took.
//!
//! ```sh
//! cargo run --release -p kiln-runtime --example awq -- MODEL_DIR TEXT_FILE [TOKENS] [q4_0|q4_1] [GROUP] [ONLY]
//! ```
//!
//! The text is tokenized with the model's `tokenizer.json` when it has one, else taken as byte
//! ids; the first `TOKENS` (default 2048) are used. With `ONLY`, the search covers just the
//! weights whose name contains it.

use kiln_backend::quant::QuantFormat;
use kiln_runtime::awq::{calibrate, search_scales, AwqReport, CalibrationOptions, ScaledWeight};
use kiln_runtime::checkpoint::Checkpoint;
use kiln_runtime::Tokenizer;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, text, rest @ ..] = &args[..] else {
        return Err("usage: awq MODEL_DIR TEXT_FILE [TOKENS] [q4_0|q4_1] [GROUP] [ONLY]".into());
    };
    let count: usize = rest.first().map_or(Ok(2048), |s| s.parse())?;
    let format_name = rest.get(1).map_or("q4_0", String::as_str);
    let format = QuantFormat::from_name(format_name).ok_or_else(|| format!("unknown format `{format_name}`"))?;
    let group: usize = rest.get(2).map_or(Ok(32), |s| s.parse())?;
    let only = rest.get(3).map_or("", String::as_str);
    let dir = PathBuf::from(dir);
    let text = std::fs::read_to_string(text)?;
    let mut tokens = match Tokenizer::from_dir(&dir)? {
        Some(t) => t.encode(&text)?,
        None => text.bytes().map(i64::from).collect(),
    };
    tokens.truncate(count);

    let options = CalibrationOptions::default();
    let start = Instant::now();
    let calibration = calibrate(Checkpoint::open(&dir)?, &tokens, &options)?;
    println!(
        "calibration: {} tokens in {} windows of {}, {} weights, {:.2} s",
        calibration.tokens,
        calibration.windows,
        options.window,
        calibration.weights.len(),
        start.elapsed().as_secs_f64()
    );

    let checkpoint = Checkpoint::open(&dir)?;
    let search = Instant::now();
    let mut scaled = Vec::new();
    for w in calibration.weights.iter().filter(|w| w.name.contains(only)) {
        let started = Instant::now();
        let values = checkpoint.tensor_f32(&w.name, &[w.rows, w.cols])?;
        let choice = search_scales(&w.name, &values, w.rows, w.cols, &w.stats, format, group)?;
        println!(
            "search {:<48} {:>6} × {:<5} {} rows: {:.2} s",
            w.name,
            w.rows,
            w.cols,
            w.stats.sampled_rows(),
            started.elapsed().as_secs_f64()
        );
        scaled.push(ScaledWeight {
            name: w.name.clone(),
            rows: w.rows,
            cols: w.cols,
            sampled_rows: w.stats.sampled_rows(),
            choice,
        });
    }
    println!("search: {:.2} s for {} weights\n", search.elapsed().as_secs_f64(), scaled.len());
    print!("{}", AwqReport::new(format, group, &scaled).table());
    Ok(())
}
