//! Deterministic test data, shared by the backend's unit tests, the integration tests and the
//! benches (`kiln_suite::random_values` re-exports it). Not part of the API.

/// Deterministic pseudo-random values in [-0.5, 0.5) (xorshift64 seeded from `seed`).
pub fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
