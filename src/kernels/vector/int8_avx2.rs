//! AVX2: 16 int32 accumulators in two 256-bit registers. Activations and weights are kept as
//! 16-bit values and multiplied in pairs by `vpmaddwd` (two products summed into each int32 lane,
//! exact for any int8 values). `vpmaddubsw` would take bytes directly but adds its pairs with
//! int16 saturation, which real activations (0..255 after the unsigned shift) times weights of up
//! to 127 overflow. Also the entry point that carries the target features, so that the generic
//! chain body and the intrinsics inline into it.

use std::arch::x86_64::*;

use super::int8::{Int8Vector, Requant};
use crate::kernels::qconv_chain::{run_any, QConvChain};

#[derive(Clone, Copy)]
pub(in crate::kernels) struct Avx2Int8([__m256i; 2]);

impl Int8Vector for Avx2Int8 {
    type Elem = i16;
    type Weights = [__m256i; 2];
    const K: usize = 2;
    // 12 accumulators, 2 weight registers, the broadcast input and one product: all 16 registers.
    const TILE: usize = 6;

    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> Self {
        // SAFETY: the CPU has AVX2 and `p` is readable for 16 int32 (the caller's contract).
        unsafe {
            Avx2Int8([
                _mm256_loadu_si256(p as *const __m256i),
                _mm256_loadu_si256(p.add(8) as *const __m256i),
            ])
        }
    }
    #[inline(always)]
    unsafe fn weights(w: *const i16) -> Self::Weights {
        // SAFETY: the CPU has AVX2 and `w` is readable for 32 int16 (the caller's contract).
        unsafe {
            [
                _mm256_loadu_si256(w as *const __m256i),
                _mm256_loadu_si256(w.add(16) as *const __m256i),
            ]
        }
    }
    #[inline(always)]
    unsafe fn dot(self, x: *const i16, w: Self::Weights) -> Self {
        // SAFETY: the CPU has AVX2 and `x` is readable for two int16 (the caller's contract),
        // read as one unaligned int32 and broadcast.
        unsafe {
            let pair = _mm256_set1_epi32(std::ptr::read_unaligned(x as *const i32));
            Avx2Int8([
                _mm256_add_epi32(self.0[0], _mm256_madd_epi16(pair, w[0])),
                _mm256_add_epi32(self.0[1], _mm256_madd_epi16(pair, w[1])),
            ])
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const i16) -> Self {
        // SAFETY: the CPU has AVX2 and `p` is readable for 16 int16 (the caller's contract).
        unsafe {
            Avx2Int8([
                _mm256_cvtepi16_epi32(_mm_loadu_si128(p as *const __m128i)),
                _mm256_cvtepi16_epi32(_mm_loadu_si128(p.add(8) as *const __m128i)),
            ])
        }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: the CPU has AVX2 (the caller's contract).
        unsafe {
            Avx2Int8([
                _mm256_max_epi32(a.0[0], b.0[0]),
                _mm256_max_epi32(a.0[1], b.0[1]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn requantize(self, scale: *const f32, requant: &Requant) -> Self {
        // SAFETY: the CPU has AVX2 and `scale` is readable for 16 floats (the caller's contract).
        unsafe {
            Avx2Int8([
                requantize8(self.0[0], _mm256_loadu_ps(scale), requant),
                requantize8(self.0[1], _mm256_loadu_ps(scale.add(8)), requant),
            ])
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i16) {
        // SAFETY: the CPU has AVX2 and `p` is writable for 16 int16 (the caller's contract). The
        // pack interleaves the two registers' 128-bit halves; the permute puts them back in order.
        unsafe {
            let packed = _mm256_packs_epi32(self.0[0], self.0[1]);
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            _mm256_storeu_si256(p as *mut __m256i, ordered);
        }
    }
}

/// [`Requant::apply`] on eight lanes. `cvtps_epi32` rounds half to even in the default MXCSR
/// rounding mode, which Rust code never changes.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
unsafe fn requantize8(acc: __m256i, scale: __m256, requant: &Requant) -> __m256i {
    // SAFETY: the CPU has AVX2 (the caller's contract).
    unsafe {
        let y_zero = _mm256_set1_epi32(requant.y_zero);
        let lo = _mm256_set1_ps((i8::MIN as i32 - requant.y_zero) as f32);
        let hi = _mm256_set1_ps((i8::MAX as i32 - requant.y_zero) as f32);
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale);
        let f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
        let y = _mm256_add_epi32(_mm256_cvtps_epi32(f), y_zero);
        match requant.next {
            None => _mm256_max_epi32(y, y_zero),
            Some((next_scale, next_zero)) => {
                let relu = _mm256_max_ps(
                    _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(y, y_zero)),
                        _mm256_set1_ps(requant.y_scale),
                    ),
                    _mm256_setzero_ps(),
                );
                let lo = _mm256_set1_ps((i8::MIN as i32 - next_zero) as f32);
                let hi = _mm256_set1_ps((i8::MAX as i32 - next_zero) as f32);
                let q = _mm256_div_ps(relu, _mm256_set1_ps(next_scale));
                let q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
                _mm256_add_epi32(_mm256_cvtps_epi32(q), _mm256_set1_epi32(next_zero))
            }
        }
    }
}

/// # Safety
///
/// The CPU has AVX2, and [`run_any`]'s contract holds.
#[target_feature(enable = "avx2")]
pub(in crate::kernels) unsafe fn run(
    chain: &QConvChain,
    input: &[i8],
    output: &mut [f32],
    src: &mut [i16],
    dst: &mut [i16],
) {
    // SAFETY: AVX2 is enabled here and the CPU has it; the rest is the caller's contract.
    unsafe { run_any::<Avx2Int8>(chain, input, output, src, dst) }
}
