//! The decode product with 4-bit weights against f32: `kiln_backend::quant::matvec` on q4_0 and
//! q4_1 weights (groups of 32) and the JIT's f32 matrix-vector kernel (`kiln_backend::jit::matvec`)
//! at two shapes of the 169M models: the head (768 → 50277) and a block projection
//! (768 → 3072), with the default rayon pool (every core).
//!
//! Throughput is the bytes of weights read per call (f32: `4·N·K`; q4: packed values, scales and
//! minimums, [`QuantizedMatrix::bytes`]), so the GB/s compare directly with the streaming read
//! bandwidth printed first (`kiln_backend::jit::read_bandwidth`); the speed-up of q4 over f32 is
//! the ratio of the times.
//!
//! Also the prefill product (`kiln_backend::quant::matmul`, 64 tokens through the block shape)
//! against the JIT's f32 product (`kiln_backend::jit::product`), in flops (2 × multiply-adds).
//!
//! Run: `cargo bench --bench quant` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_backend::quant::{matmul, matvec, quantize, QuantFormat, QuantizedMatrix};
use kiln_suite::random_values as random;
use std::hint::black_box;
use std::time::Duration;

/// (name, K, N)
const SHAPES: [(&str, usize, usize); 2] = [("head_768x50277", 768, 50277), ("block_768x3072", 768, 3072)];

const GROUP: usize = 32;

fn bench(c: &mut Criterion) {
    let bandwidth = kiln_backend::jit::read_bandwidth(512 << 20, 5);
    eprintln!("streaming read bandwidth: {:.2} GB/s ({} threads)", bandwidth / 1e9, rayon::current_num_threads());
    for (name, k, n) in SHAPES {
        let w = random(n * k, 1);
        let x = random(k, 2);
        let mut reference = vec![0.0; n];
        assert!(kiln_backend::jit::matvec(&x, &w, k, &mut reference));
        let mut group = c.benchmark_group(format!("matvec/{name}"));
        group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        let mut y = vec![0.0; n];
        group.throughput(Throughput::Bytes((4 * n * k) as u64));
        group.bench_function(BenchmarkId::from_parameter("f32"), |b| {
            b.iter(|| kiln_backend::jit::matvec(black_box(&x), &w, k, black_box(&mut y)))
        });
        for format in [QuantFormat::Q4_0, QuantFormat::Q4_1] {
            let q: QuantizedMatrix = quantize(&w, n, k, format, GROUP).unwrap();
            matvec(&q, &x, &mut y).unwrap();
            let err = y.iter().zip(&reference).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            eprintln!(
                "{name} {format}: {} bytes ({:.2}× smaller than f32), max |y − y_f32| = {err:.3e}",
                q.bytes(),
                (4 * n * k) as f64 / q.bytes() as f64
            );
            group.throughput(Throughput::Bytes(q.bytes() as u64));
            group.bench_function(BenchmarkId::from_parameter(format.name()), |b| {
                b.iter(|| matvec(&q, black_box(&x), black_box(&mut y)).unwrap())
            });
        }
        group.finish();
    }
    prefill(c);
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
    for format in [QuantFormat::Q4_0, QuantFormat::Q4_1] {
        let q = quantize(&w, n, k, format, GROUP).unwrap();
        group.bench_function(BenchmarkId::from_parameter(format.name()), |b| {
            b.iter(|| matmul(&q, black_box(&x), black_box(&mut y)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
