//! The interpreter's forward pass on the committed fixture models: a 64-token prefill from a fresh
//! state, and a one-token decode step with the carried state. The fixtures are tiny (hidden size
//! 32, two layers), so this measures per-call and per-node overhead more than arithmetic; full-size
//! throughput is `kiln bench` on a `kiln init` model (see `benches/configs/`).
//!
//! Run: `cargo bench --bench models`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_runtime::{LoadOptions, Model};
use kiln_suite::fixture;
use std::hint::black_box;
use std::time::Duration;

const FIXTURES: [&str; 3] = ["rwkv4-tied", "mamba-tied", "mamba2-g1"];
const PREFILL: usize = 64;

fn bench(c: &mut Criterion) {
    let mut prefill = c.benchmark_group("interp/prefill64");
    prefill.throughput(Throughput::Elements(PREFILL as u64));
    prefill.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let models: Vec<(&str, Model)> =
        FIXTURES.iter().map(|&name| (name, Model::load(&fixture(name), &LoadOptions::default()).unwrap())).collect();
    for (name, model) in &models {
        let vocab = model.vocab_size().unwrap_or(256) as i64;
        let tokens: Vec<i64> = (0..PREFILL as i64).map(|i| (i * 37 + 11) % vocab).collect();
        prefill.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| model.forward(black_box(&tokens), &mut model.new_state()).unwrap())
        });
    }
    prefill.finish();

    let mut decode = c.benchmark_group("interp/decode1");
    decode.throughput(Throughput::Elements(1));
    decode.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (name, model) in &models {
        let mut state = model.new_state();
        model.forward(&[1, 2, 3, 4], &mut state).unwrap();
        decode.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| model.forward(black_box(&[5]), &mut state).unwrap())
        });
    }
    decode.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
