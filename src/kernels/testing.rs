//! What the kernels' unit tests share: inputs and the backends to check.

use super::Backend;

/// Deterministic values in [-1, 1) without a random-number crate.
pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

pub(super) fn backends() -> Vec<Backend> {
    [
        Backend::Portable,
        Backend::Avx512,
        Backend::Avx2,
        Backend::Neon,
    ]
    .into_iter()
    .filter(|b| b.available())
    .collect()
}
