//! The decode product with 4-bit weights against f32, at the four matrix shapes of the 169M
//! models (RWKV-4 169M: `H = 768`, `I = 3072`, `V = 50277`), in one run with the current rayon
//! pool (run with `RAYON_NUM_THREADS=2` for the issue-8 setting):
//!
//! - `f32`: the JIT's matrix-vector kernel (`kiln_backend::jit::matvec`);
//! - `q4_0`, `q4_1`: the exact quantized kernel (`kiln_backend::quant::matvec`, groups of 32);
//! - `q4_0+q8`, `q4_1+q8`: the 8-bit-activation kernel (`kiln_backend::quant::matvec_q8`).
//!
//! Each shape is a criterion group, then one decode step of the whole 169M model
//! (`decode_169m`: the 12 layers' seven projections and the head, distinct weights, so they
//! stream from memory as in a real decode instead of staying in cache the way a single small
//! matrix does between calls). Throughput is the bytes of weights read per call (f32: `4·N·K`;
//! q4: packed values, scales and minimums, `QuantizedMatrix::bytes`).
//!
//! A summary table follows (median over rounds that call every variant in turn, measured here,
//! not by criterion, so that the machine's changing load weighs on all variants alike): time,
//! achieved bandwidth and its share of the streaming read bandwidth measured at the start of the
//! same process (`kiln_backend::jit::read_bandwidth`), and the speed-up over f32.
//!
//! Also the prefill product (`kiln_backend::quant::matmul`, 64 tokens through the block shape)
//! against the JIT's f32 product (`kiln_backend::jit::product`), in flops (2 × multiply-adds).
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench quant` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_backend::quant::{matmul, matvec, matvec_q8, quantize, QuantScheme, QuantizedMatrix};
use kiln_suite::random_values as random;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// (name, K, N) of the products `y[N] = W[N, K]·x[K]`.
const SHAPES: [(&str, usize, usize); 4] = [
    ("att_768x768", 768, 768),
    ("ffn_key_768x3072", 768, 3072),
    ("ffn_value_3072x768", 3072, 768),
    ("head_768x50277", 768, 50277),
];

/// The 169M model: layers, and per layer the (K, N) of its projections (RWKV-4: key, value,
/// receptance, output; channel mixing: key, value, receptance).
const LAYERS: usize = 12;
const LAYER: [(usize, usize); 7] =
    [(768, 768), (768, 768), (768, 768), (768, 768), (768, 3072), (3072, 768), (768, 768)];
const HEAD: (usize, usize) = (768, 50277);

const GROUP: usize = 32;

/// The q4_0 bytes of the `cold` copies of a shape: twice the 32 MiB last-level cache.
const COLD_BYTES: usize = 64 << 20;

/// One way to run the decode product on a set of weights.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    F32,
    Exact(QuantScheme),
    Q8(QuantScheme),
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::F32,
        Variant::Exact(QuantScheme::Q4_0),
        Variant::Exact(QuantScheme::Q4_1),
        Variant::Q8(QuantScheme::Q4_0),
        Variant::Q8(QuantScheme::Q4_1),
    ];

    fn name(self) -> String {
        match self {
            Variant::F32 => "f32".into(),
            Variant::Exact(f) => f.name().into(),
            Variant::Q8(f) => format!("{}+q8", f.name()),
        }
    }

    fn format(self) -> Option<QuantScheme> {
        match self {
            Variant::F32 => None,
            Variant::Exact(f) | Variant::Q8(f) => Some(f),
        }
    }
}

/// A weight `[N, K]` in f32 and in both 4-bit formats.
struct Weight {
    k: usize,
    n: usize,
    f32: Vec<f32>,
    q4_0: QuantizedMatrix,
    q4_1: QuantizedMatrix,
}

impl Weight {
    fn new(k: usize, n: usize, seed: u64) -> Weight {
        let f32 = random(n * k, seed);
        let q = |format| quantize(&f32, n, k, format, GROUP).expect("quantize a random weight");
        Weight { k, n, q4_0: q(QuantScheme::Q4_0), q4_1: q(QuantScheme::Q4_1), f32 }
    }

    fn quantized(&self, format: QuantScheme) -> &QuantizedMatrix {
        match format {
            QuantScheme::Q4_0 => &self.q4_0,
            QuantScheme::Q4_1 => &self.q4_1,
        }
    }

    /// Bytes of weights one product reads.
    fn bytes(&self, v: Variant) -> usize {
        v.format().map_or(4 * self.n * self.k, |f| self.quantized(f).bytes())
    }

    /// `y = W·x` by `v`.
    fn run(&self, v: Variant, x: &[f32], y: &mut [f32]) {
        match v {
            Variant::F32 => assert!(kiln_backend::jit::matvec(x, &self.f32, self.k, y)),
            Variant::Exact(f) => matvec(self.quantized(f), x, y).expect("matvec"),
            Variant::Q8(f) => matvec_q8(self.quantized(f), x, y).expect("matvec_q8"),
        }
    }
}

/// One decode step's products over `weights`, each with its own input width.
fn run_all(weights: &[Weight], v: Variant, xs: &[Vec<f32>], ys: &mut [Vec<f32>]) {
    for ((w, x), y) in weights.iter().zip(xs).zip(ys.iter_mut()) {
        w.run(v, black_box(x), black_box(y));
    }
}

/// The median time of each of `runs` over `reps` rounds, after a warm-up round; each round
/// calls every run once, in turn, so that a change in the machine's load between rounds (other
/// processes sharing the cores) weighs on all of them alike.
fn medians(reps: usize, runs: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    for f in runs.iter_mut() {
        f();
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(reps); runs.len()];
    for _ in 0..reps {
        for (f, t) in runs.iter_mut().zip(&mut times) {
            let start = Instant::now();
            f();
            t.push(start.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[reps / 2]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let bandwidth = kiln_backend::jit::read_bandwidth(512 << 20, 5);
    let threads = rayon::current_num_threads();
    eprintln!("streaming read bandwidth: {:.2} GB/s ({threads} threads)", bandwidth / 1e9);
    // Per shape: one matrix called again and again (`hot`: it stays in cache if it fits), and
    // distinct copies adding up to twice the last-level cache in q4_0, called in turn (`cold`:
    // every call streams its weights from memory, as in a whole-model decode); then the model.
    // Each case is (name, the (K, N) of its matrices); its weights are made when it runs.
    let mut cases: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
    for &(name, k, n) in &SHAPES {
        cases.push((format!("{name}/hot"), vec![(k, n)]));
        let q4_0 = n * k.div_ceil(GROUP) * (GROUP / 2 + 2);
        cases.push((format!("{name}/cold"), vec![(k, n); COLD_BYTES.div_ceil(q4_0).max(2)]));
    }
    let model = (0..LAYERS).flat_map(|_| LAYER).chain([HEAD]).collect();
    cases.push(("decode_169m".into(), model));

    let mut summary = Vec::new();
    for (name, dims) in &cases {
        let name = name.as_str();
        let weights: &[Weight] =
            &dims.iter().enumerate().map(|(i, &(k, n))| Weight::new(k, n, i as u64 + 1)).collect::<Vec<_>>();
        // Shapes report the time per matrix, the model per decode step.
        let per = if name == "decode_169m" { 1 } else { weights.len() };
        let xs: Vec<Vec<f32>> = weights.iter().enumerate().map(|(i, w)| random(w.k, 1000 + i as u64)).collect();
        let mut ys: Vec<Vec<f32>> = weights.iter().map(|w| vec![0.0; w.n]).collect();
        let mut reference: Vec<Vec<f32>> = ys.clone();
        run_all(weights, Variant::F32, &xs, &mut reference);
        let mut group = c.benchmark_group(format!("matvec/{name}"));
        let mut sizes = Vec::new();
        group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for v in Variant::ALL {
            let bytes: usize = weights.iter().map(|w| w.bytes(v)).sum::<usize>() / per;
            run_all(weights, v, &xs, &mut ys);
            let err = ys.iter().flatten().zip(reference.iter().flatten()).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            eprintln!("{name} {}: {bytes} bytes, max |y − y_f32| = {err:.3e}", v.name());
            group.throughput(Throughput::Bytes((bytes * weights.len() / per) as u64));
            group.bench_function(BenchmarkId::from_parameter(v.name()), |b| {
                b.iter(|| run_all(weights, v, &xs, &mut ys))
            });
            sizes.push(bytes);
        }
        group.finish();
        let reps = if sizes[0] * per > 64 << 20 { 15 } else { 101 };
        let (xs, ys) = (&xs, &std::cell::RefCell::new(ys));
        let mut runs: Vec<Box<dyn FnMut()>> = Variant::ALL
            .iter()
            .map(|&v| Box::new(move || run_all(weights, v, xs, &mut ys.borrow_mut())) as Box<dyn FnMut()>)
            .collect();
        let mut refs: Vec<&mut dyn FnMut()> = runs.iter_mut().map(|f| &mut **f as &mut dyn FnMut()).collect();
        let times = medians(reps, &mut refs);
        for ((v, bytes), t) in Variant::ALL.into_iter().zip(sizes).zip(times) {
            summary.push((name.to_string(), v, bytes, t / per as u32));
        }
    }
    prefill(c);

    eprintln!(
        "\nsummary ({threads} threads, streaming read bandwidth {:.2} GB/s; median of interleaved rounds)",
        bandwidth / 1e9
    );
    eprintln!("{:<26} {:<8} {:>11} {:>10} {:>8} {:>8}", "shape", "variant", "time", "GB/s", "of read", "vs f32");
    for (name, v, bytes, t) in &summary {
        let (v, bytes, t) = (*v, *bytes, *t);
        let f32_time = summary.iter().find(|s| s.0 == *name && s.1 == Variant::F32).map_or(t, |s| s.3);
        let rate = bytes as f64 / t.as_secs_f64();
        eprintln!(
            "{name:<26} {:<8} {:>8.1} µs {:>10.2} {:>7.0}% {:>7.2}×",
            v.name(),
            t.as_secs_f64() * 1e6,
            rate / 1e9,
            100.0 * rate / bandwidth,
            f32_time.as_secs_f64() / t.as_secs_f64()
        );
    }
}

/// 64 tokens through the 768 → 3072 block projection.
fn prefill(c: &mut Criterion) {
    let (m, k, n) = (64, 768, 3072);
    let w = random(n * k, 3);
    let x = random(m * k, 4);
    let mut y = vec![0.0; m * n];
    let mut group = c.benchmark_group("matmul/block_768x3072_m64");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements((2 * m * k * n) as u64));
    let dims = kiln_backend::jit::ProductDims { rows: m, k, n, transpose_rhs: true };
    group.bench_function(BenchmarkId::from_parameter("f32"), |b| {
        b.iter(|| kiln_backend::jit::product(dims, black_box(&x), &w, black_box(&mut y)).unwrap())
    });
    for format in [QuantScheme::Q4_0, QuantScheme::Q4_1] {
        let q = quantize(&w, n, k, format, GROUP).unwrap();
        group.bench_function(BenchmarkId::from_parameter(format.name()), |b| {
            b.iter(|| matmul(&q, black_box(&x), black_box(&mut y)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
