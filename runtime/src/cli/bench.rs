//! `kiln bench`: prefill and decode throughput, compile time and peak memory of a model directory.
//!
//! - *open*: [`Checkpoint::open`] (parse config.json, memory-map and validate the weights).
//! - *compile*: spec → ready model: parse the spec, lower, run the passes, verify, bind the
//!   weights, build the executable ([`Model::with_spec`]); the weights are already mapped.
//! - *prefill*: one call over `--prefill` tokens from a fresh state.
//! - *decode*: `--decode` calls of one token each with the carried state, after `--warmup` calls.
//! - *peak RSS*: `VmHWM` of `/proc/self/status` (it counts the mapped weight pages touched), reset
//!   through `/proc/self/clear_refs` before each backend when the kernel allows.
//!
//! - *memory read*: the streaming read bandwidth of the machine, measured once per run with the
//!   same threads ([`kiln_backend::jit::read_bandwidth`]: a parallel sum over 256 MiB, best of 5).
//! - *decode floor*: the bytes of weights one token reads (every weight, except a table only
//!   gathered from, of which one row per token) over that bandwidth, the speed decode would reach
//!   if it did nothing but stream the weights once; and the bandwidth decode achieves.
//!
//! `--backend interp,jit` measures each backend in turn, in the same process. Every timing is the
//! median of `--reps` repetitions. The first call of the model (a short
//! prefill) is untimed, so page faults on the mapped weights are not counted. Token ids are a fixed
//! pseudo-random sequence, the same the PyTorch comparison script (`benches/pytorch_compare.py`)
//! uses.

use super::commands::backend;
use super::BackendArg;
use crate::checkpoint::Checkpoint;
use crate::{resolve_spec, Error, LoadOptions, Model};
use clap::{Args, ValueEnum};
use kiln_ir::plan::value_bytes;
use kiln_ir::{Graph, Op, ParamRole};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A model directory (config.json + weights), e.g. one written by `kiln init`.
    pub model_dir: PathBuf,
    /// Tokens of the prefill call.
    #[arg(long, default_value_t = 512)]
    pub prefill: usize,
    /// One-token decode calls timed per repetition.
    #[arg(long, default_value_t = 128)]
    pub decode: usize,
    /// Untimed one-token calls before the decode timing.
    #[arg(long, default_value_t = 4)]
    pub warmup: usize,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Worker threads (default: rayon's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The backends to measure, in turn (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "jit")]
    pub backend: Vec<BackendArg>,
    /// A spec file to use instead of the built-in one matching config.json's model_type.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Print one JSON object per backend (one a line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The weight formats to measure, in turn (comma-separated): `f32`, or a `--quantize`
    /// format such as `q4_0`, `q4_1:64`. With more than one, speeds are also given relative to
    /// the first, measured in the same run.
    #[arg(long, value_delimiter = ',', default_value = "f32", value_parser = parse_weights)]
    pub weights: Vec<Weights>,
    /// Quantize the head too (with a quantized format in --weights).
    #[arg(long)]
    pub quantize_head: bool,
    /// Quantize the token embedding too (with a quantized format in --weights).
    #[arg(long)]
    pub quantize_embeddings: bool,
}

/// A weight format `kiln bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights(pub Option<kiln_ir::Quant>);

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("f32"),
            Some(q) => write!(f, "{q}"),
        }
    }
}

fn parse_weights(text: &str) -> Result<Weights, String> {
    match text {
        "f32" => Ok(Weights(None)),
        q => crate::quantized::parse_quant(q).map(|q| Weights(Some(q))),
    }
}

/// The `n`-th token of the benchmark sequence: a fixed LCG walk over the vocabulary.
pub fn bench_token(n: usize, vocab: usize) -> i64 {
    let x = (n as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    ((x >> 33) % vocab.max(1) as u64) as i64
}

fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    match s.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2,
    }
}

/// Peak resident set size in bytes, from `/proc/self/status` (Linux only).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn per_second(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        f64::INFINITY
    } else {
        n as f64 / secs(d)
    }
}

/// The size of the read-bandwidth probe's buffer (8× a 32 MiB last-level cache).
const BANDWIDTH_BYTES: usize = 256 << 20;

/// Bytes of weights one decode step reads: every weight's bytes, except a weight only gathered
/// from (a token embedding), of which one row.
fn weight_bytes_per_token(graph: &Graph) -> u64 {
    let mut bytes = 0u64;
    for &n in graph.inputs() {
        if !graph.param(n).is_some_and(|p| p.role == ParamRole::Weight) {
            continue;
        }
        let ty = &graph.node(n).results[0];
        let dims: Vec<usize> = ty.shape.dims().iter().filter_map(|d| d.fixed()).collect();
        let total = value_bytes(ty).map_or(0, |c| c.constant.max(0) as u64);
        let users = graph.users(n);
        let gathered_only = !users.is_empty() && users.iter().all(|&u| matches!(graph.node(u).op, Op::Gather));
        bytes += if gathered_only { total / dims.first().copied().unwrap_or(1).max(1) as u64 } else { total };
    }
    bytes
}

/// Everything one `kiln bench` run measures.
#[derive(Debug)]
struct Report {
    backend: BackendArg,
    /// The weight format: the one asked for, or the checkpoint's own.
    weights: String,
    model: String,
    parameters: usize,
    /// Bytes of weights one decode step reads.
    weight_bytes: u64,
    /// The machine's read bandwidth, bytes per second.
    read_bandwidth: f64,
    threads: usize,
    open: Duration,
    compile: Vec<Duration>,
    prefill: Vec<Duration>,
    decode: Vec<Duration>,
    peak_rss: Option<u64>,
}

pub(super) fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), Error> {
    if args.prefill == 0 || args.decode == 0 || args.reps == 0 {
        return Err(Error::Usage("--prefill, --decode and --reps must be at least 1".into()));
    }
    let pool = match args.threads {
        None => None,
        Some(n) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::Usage(format!("--threads {n}: {e}")))?,
        ),
    };
    let bandwidth = || kiln_backend::jit::read_bandwidth(BANDWIDTH_BYTES, 5);
    let read_bandwidth = match &pool {
        None => bandwidth(),
        Some(pool) => pool.install(bandwidth),
    };
    let write = |out: &mut dyn Write, text: &str| {
        out.write_all(text.as_bytes()).map_err(|source| Error::Io { path: "<stdout>".into(), source })
    };
    for &b in &args.backend {
        let mut first: Option<Report> = None;
        for &w in &args.weights {
            // Best effort: the peak of one backend should not include the previous one's.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let report = match &pool {
                None => measure(args, b, w, read_bandwidth)?,
                Some(pool) => pool.install(|| measure(args, b, w, read_bandwidth))?,
            };
            let mut text = if args.json { json(args, &report) } else { text(args, &report) };
            if let (Some(base), false) = (&first, args.json) {
                text += &relative(&report, base);
            }
            write(out, &text)?;
            first.get_or_insert(report);
        }
    }
    Ok(())
}

/// Speeds of `r` as multiples of `base`'s (the first weight format, same backend, same run).
fn relative(r: &Report, base: &Report) -> String {
    let ratio = |a: &[Duration], b: &[Duration]| secs(median(b)) / secs(median(a)).max(f64::MIN_POSITIVE);
    format!(
        "  vs {:<12} prefill {:.2}×, decode {:.2}×, weights read per token {:.2}× smaller\n",
        base.weights,
        ratio(&r.prefill, &base.prefill),
        ratio(&r.decode, &base.decode),
        base.weight_bytes as f64 / r.weight_bytes.max(1) as f64
    )
}

fn measure(args: &BenchArgs, b: BackendArg, w: Weights, read_bandwidth: f64) -> Result<Report, Error> {
    let quantize = w.0.map(|q| {
        let mut o = kiln_passes::QuantizeOptions::new(q);
        o.head = args.quantize_head;
        o.embeddings = args.quantize_embeddings;
        o
    });
    let options = LoadOptions { spec: args.spec.clone(), backend: backend(b), quantize, ..LoadOptions::default() };
    let t = Instant::now();
    let first = Checkpoint::open(&args.model_dir)?;
    let open = t.elapsed();
    // Each compilation consumes a checkpoint: map one per repetition up front, untimed.
    let mut checkpoints = vec![first];
    for _ in 1..args.reps {
        checkpoints.push(Checkpoint::open(&args.model_dir)?);
    }
    let mut compile = Vec::with_capacity(args.reps);
    let mut model = None;
    for checkpoint in checkpoints {
        let t = Instant::now();
        let spec = resolve_spec(checkpoint.config(), options.spec.as_deref())?;
        let m = Model::with_spec(&spec, checkpoint, &options)?;
        compile.push(t.elapsed());
        model = Some(m);
    }
    let model = model.ok_or_else(|| Error::Usage("--reps must be at least 1".into()))?;
    let graph = model.graph();
    let parameters = graph
        .inputs()
        .iter()
        .filter(|&&n| graph.param(n).is_some_and(|p| p.role == ParamRole::Weight))
        .map(|&n| graph.node(n).results[0].shape.dims().iter().filter_map(|d| d.fixed()).product::<usize>())
        .sum();
    let weight_bytes = weight_bytes_per_token(graph);
    let vocab = model.vocab_size().unwrap_or(256);
    let tokens: Vec<i64> = (0..args.prefill + args.warmup + args.decode).map(|n| bench_token(n, vocab)).collect();

    // Untimed: fault in the mapped weights and let allocators settle.
    model.forward(&tokens[..args.prefill.min(16)], &mut model.new_state())?;

    let mut prefill = Vec::with_capacity(args.reps);
    let mut decode = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        let mut state = model.new_state();
        let t = Instant::now();
        model.forward(&tokens[..args.prefill], &mut state)?;
        prefill.push(t.elapsed());

        let steps = &tokens[args.prefill..];
        for id in &steps[..args.warmup] {
            model.forward(std::slice::from_ref(id), &mut state)?;
        }
        let t = Instant::now();
        for id in &steps[args.warmup..] {
            model.forward(std::slice::from_ref(id), &mut state)?;
        }
        decode.push(t.elapsed());
    }
    let weights = match (w.0, crate::quantized::stored_quantization(model.checkpoint())?) {
        (None, Some(stored)) => format!("{stored} (as stored)"),
        _ => w.to_string(),
    };
    Ok(Report {
        backend: b,
        weights,
        model: model.name().to_string(),
        parameters,
        weight_bytes,
        read_bandwidth,
        threads: rayon::current_num_threads(),
        open,
        compile,
        prefill,
        decode,
        peak_rss: peak_rss(),
    })
}

fn backend_name(b: BackendArg) -> String {
    b.to_possible_value().map_or_else(|| format!("{b:?}"), |v| v.get_name().to_string())
}

fn text(args: &BenchArgs, r: &Report) -> String {
    let (p, d) = (median(&r.prefill), median(&r.decode));
    let mut s = format!(
        "kiln bench {}: {} ({} parameters), backend {}, weights {}, {} threads\n",
        args.model_dir.display(),
        r.model,
        if r.parameters >= 100_000 { format!("{:.1}M", r.parameters as f64 / 1e6) } else { r.parameters.to_string() },
        backend_name(r.backend),
        r.weights,
        r.threads
    );
    s += &format!("  open checkpoint  {:>10.1} ms\n", secs(r.open) * 1e3);
    s += &format!(
        "  compile          {:>10.1} ms      spec → ready model, median of {}\n",
        secs(median(&r.compile)) * 1e3,
        r.compile.len()
    );
    s += &format!(
        "  prefill {:<8} {:>10.1} tokens/s  {:.3} s per call, median of {}\n",
        args.prefill,
        per_second(args.prefill, p),
        secs(p),
        r.prefill.len()
    );
    s += &format!(
        "  decode {:<9} {:>10.2} tokens/s  {:.2} ms per token, median of {}\n",
        args.decode,
        per_second(args.decode, d),
        secs(d) * 1e3 / args.decode as f64,
        r.decode.len()
    );
    let decode_rate = per_second(args.decode, d);
    let floor = r.read_bandwidth / r.weight_bytes.max(1) as f64;
    s += &format!(
        "  memory read      {:>10.1} GB/s      parallel sum over {} MiB, {} threads, best of 5\n",
        r.read_bandwidth / 1e9,
        BANDWIDTH_BYTES >> 20,
        r.threads
    );
    s += &format!(
        "  decode floor     {:>10.2} tokens/s  {:.1} MB of weights per token at that rate; decode reads {:.1} GB/s, {:.0}% of it\n",
        floor,
        r.weight_bytes as f64 / 1e6,
        decode_rate * r.weight_bytes as f64 / 1e9,
        100.0 * decode_rate / floor
    );
    match r.peak_rss {
        Some(b) => s += &format!("  peak RSS         {:>10.1} MiB\n", b as f64 / (1024.0 * 1024.0)),
        None => s += "  peak RSS                n/a\n",
    }
    s
}

fn json(args: &BenchArgs, r: &Report) -> String {
    let all = |v: &[Duration]| v.iter().map(|d| secs(*d)).collect::<Vec<_>>();
    let value = serde_json::json!({
        "model_dir": args.model_dir.display().to_string(),
        "model": r.model,
        "parameters": r.parameters,
        "backend": backend_name(r.backend),
        "weights": r.weights,
        "threads": r.threads,
        "open_s": secs(r.open),
        "compile_s": secs(median(&r.compile)),
        "compile_samples_s": all(&r.compile),
        "prefill_tokens": args.prefill,
        "prefill_tokens_per_s": per_second(args.prefill, median(&r.prefill)),
        "prefill_samples_s": all(&r.prefill),
        "decode_tokens": args.decode,
        "decode_tokens_per_s": per_second(args.decode, median(&r.decode)),
        "decode_samples_s": all(&r.decode),
        "peak_rss_bytes": r.peak_rss,
        "weight_bytes_per_token": r.weight_bytes,
        "read_bandwidth_bytes_per_s": r.read_bandwidth,
        "decode_floor_tokens_per_s": r.read_bandwidth / r.weight_bytes.max(1) as f64,
    });
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_tokens() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(3)]), Duration::from_micros(2500));
        let t: Vec<i64> = (0..1000).map(|n| bench_token(n, 50)).collect();
        assert!(t.iter().all(|&x| (0..50).contains(&x)));
        assert!(t.iter().collect::<std::collections::BTreeSet<_>>().len() == 50);
    }

    #[test]
    fn peak_rss_reads_proc() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss().is_some_and(|b| b > 0));
        }
    }
}
