//! f32 GEMM candidates for the JIT's matrix products: the `gemm` crate (one call, and fixed row
//! tiles of 64, 128 and 256 rows each one single-threaded call), `matrixmultiply`, a naive loop,
//! and what the JIT runs (`kiln`: `kiln_backend::jit::product`, gemm tiles of 256 rows × 512
//! columns, or the SIMD matrix-vector kernel for one row), at the shapes of a 768-wide model: `C[m, n] = A[m, k] · B[n, k]ᵀ` with `B` stored
//! as a PyTorch weight (`[out, in]`, row-major), the layout of every `linear` in Kiln.
//!
//! - `prefill_768x768`: a 512-token sequence through a 768 → 768 projection;
//! - `prefill_768x3072`: through a 768 → 3072 projection (an RWKV channel-mix key);
//! - `decode_head`: one token through a 768 → 50277 head (matrix-vector, memory-bound).
//!
//! One and two threads each. `gemm` parallelizes itself (`Parallelism::Rayon(2)`).
//! `matrixmultiply` sizes its own pool from a process-wide variable read once
//! (`MATMUL_NUM_THREADS`), so here its two-thread rows split the output across `rayon::join`
//! (rows for sequences, columns for one token), as a caller would; so does the naive loop.
//!
//! `gemm` is built with its `x86-v4` feature (root `Cargo.toml`): without it the crate compiles no
//! AVX-512 kernels and runs its AVX2 ones even where the CPU has AVX-512. The kernel is still picked
//! at run time, so the feature is safe on CPUs without AVX-512. `matrixmultiply` detects AVX-512 by
//! itself.
//!
//! Throughput is in multiply-adds × 2 (flops). Run: `cargo bench --bench gemm`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_suite::random_values as random;
use std::hint::black_box;
use std::time::Duration;

/// (name, m, k, n)
const SHAPES: [(&str, usize, usize, usize); 3] =
    [("prefill_768x768", 512, 768, 768), ("prefill_768x3072", 512, 768, 3072), ("decode_head", 1, 768, 50277)];

/// `c = a · bᵀ` with the `gemm` crate.
fn with_gemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, threads: usize) {
    assert!(a.len() == m * k && b.len() == n * k && c.len() == m * n);
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let (k_, n_) = (k as isize, n as isize);
    // SAFETY: the slices hold m·k, n·k and m·n values, which the strides below stay within:
    // dst row-major [m, n]; lhs row-major [m, k]; rhs is bᵀ, element (p, j) at b[j·k + p].
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n_,
            false,
            a.as_ptr(),
            1,
            k_,
            b.as_ptr(),
            k_,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `c = a · bᵀ` as fixed tiles of `tile` rows, each a single-threaded `gemm` call, spread over
/// the pool by rayon (how the JIT's products can be made independent of the thread count).
fn gemm_row_tiles(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, tile: usize) {
    use rayon::prelude::*;
    c.par_chunks_mut(tile * n).zip(a.par_chunks(tile * k)).for_each(|(c, a)| {
        let rows = c.len() / n;
        with_gemm(a, b, c, rows, k, n, 1);
    });
    let _ = m;
}

/// `c = a · bᵀ` with `matrixmultiply` on the calling thread.
fn mm_serial(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() == m * k && b.len() == n * k && c.len() == m * n);
    // SAFETY: as in `with_gemm`; matrixmultiply takes row and column strides of each operand.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn naive_serial(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                s += a[i * k + p] * b[j * k + p];
            }
            c[i * n + j] = s;
        }
    }
}

type Serial = fn(&[f32], &[f32], &mut [f32], usize, usize, usize);

/// One way to fill the output for the current shape and thread count.
type Candidate<'a> = dyn Fn(&mut [f32]) + Sync + 'a;

/// Runs `f` on two halves of the output with `rayon::join`: halves of the rows when there are
/// several, else halves of the columns (then `c` is one row and `b`'s halves are contiguous).
fn split2(f: Serial, a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    if m > 1 {
        let h = m / 2;
        let (a0, a1) = a.split_at(h * k);
        let (c0, c1) = c.split_at_mut(h * n);
        rayon::join(|| f(a0, b, c0, h, k, n), || f(a1, b, c1, m - h, k, n));
    } else {
        let h = n / 2;
        let (b0, b1) = b.split_at(h * k);
        let (c0, c1) = c.split_at_mut(h);
        rayon::join(|| f(a, b0, c0, 1, k, h), || f(a, b1, c1, 1, k, n - h));
    }
}

fn bench(c: &mut Criterion) {
    let pools: Vec<(usize, rayon::ThreadPool)> =
        [1, 2].into_iter().map(|t| (t, rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap())).collect();
    for (name, m, k, n) in SHAPES {
        let a = random(m * k, 1);
        let b = random(n * k, 2);
        let mut reference = vec![0.0; m * n];
        mm_serial(&a, &b, &mut reference, m, k, n);
        let mut group = c.benchmark_group(format!("sgemm/{name}"));
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for (threads, pool) in &pools {
            let t = *threads;
            let mut out = vec![0.0; m * n];
            let dims = kiln_backend::jit::ProductDims { rows: m, k, n, transpose_rhs: true };
            let candidates: [(&str, &Candidate); 7] = [
                ("kiln", &|o| kiln_backend::jit::product(dims, &a, &b, o).unwrap()),
                ("gemm", &|o| with_gemm(&a, &b, o, m, k, n, t)),
                ("gemm_tiles64", &|o| gemm_row_tiles(&a, &b, o, m, k, n, 64)),
                ("gemm_tiles128", &|o| gemm_row_tiles(&a, &b, o, m, k, n, 128)),
                ("gemm_tiles256", &|o| gemm_row_tiles(&a, &b, o, m, k, n, 256)),
                ("matrixmultiply", &|o| {
                    if t > 1 {
                        split2(mm_serial, &a, &b, o, m, k, n)
                    } else {
                        mm_serial(&a, &b, o, m, k, n)
                    }
                }),
                ("naive", &|o| {
                    if t > 1 {
                        split2(naive_serial, &a, &b, o, m, k, n)
                    } else {
                        naive_serial(&a, &b, o, m, k, n)
                    }
                }),
            ];
            for (crate_name, run) in candidates {
                pool.install(|| run(&mut out));
                let err = out.iter().zip(&reference).fold(0f32, |e, (x, y)| e.max((x - y).abs()));
                assert!(err < 1e-3, "{crate_name} {name}: max error {err}");
                group.bench_function(BenchmarkId::new(crate_name, format!("{t}t")), |bench| {
                    bench.iter(|| pool.install(|| run(black_box(&mut out))))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
