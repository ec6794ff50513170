//! AVX512-VNNI: 16 int32 accumulators in one 512-bit register, four input channels per
//! `vpdpbusd` (64 multiply-adds in one instruction, against 16 per `vpmaddwd` pair on AVX2).
//! `vpdpbusd` multiplies unsigned bytes by signed bytes, so activations live in memory as
//! `value + 128` ([`Storage::U8`](super::int8::Storage::U8)) and each convolution's bias
//! carries `-128 * sum(w)` to cancel the shift. Its non-saturating form sums the four products into
//! the int32 lane exactly, so the result is the same integer as every other backend's. Also the
//! entry point that carries the target features, so that the generic chain body and the
//! intrinsics inline into it.

use std::arch::x86_64::*;

use super::int8::{Int8Vector, Requant};
use crate::kernels::qconv_chain::{run_any, QConvChain};

#[derive(Clone, Copy)]
pub(in crate::kernels) struct Avx512Vnni(__m512i);

impl Int8Vector for Avx512Vnni {
    type Elem = u8;
    type Weights = __m512i;
    const K: usize = 4;
    // Two blocks of 12 accumulators, their two weight vectors and a broadcast: 27 of the 32
    // registers. Every ensemble row width (48, 24, 12) is a multiple of 12; the 6-wide last stage
    // takes the 6-pixel tile.
    const TILE: usize = 12;
    const BLOCKS: usize = 2;

    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> Self {
        // SAFETY: the CPU has AVX-512F and `p` is readable for 16 int32 (the caller's contract).
        unsafe { Avx512Vnni(_mm512_loadu_si512(p as *const __m512i)) }
    }
    #[inline(always)]
    unsafe fn weights(w: *const u8) -> Self::Weights {
        // SAFETY: the CPU has AVX-512F and `w` is readable for 64 bytes (the caller's contract).
        unsafe { _mm512_loadu_si512(w as *const __m512i) }
    }
    #[inline(always)]
    unsafe fn dot(self, x: *const u8, w: Self::Weights) -> Self {
        // SAFETY: the CPU has AVX-512F and AVX512-VNNI, and `x` is readable for four bytes (the
        // caller's contract), read as one unaligned int32 and broadcast.
        unsafe {
            let quad = _mm512_set1_epi32(std::ptr::read_unaligned(x as *const i32));
            Avx512Vnni(_mm512_dpbusd_epi32(self.0, quad, w))
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the CPU has AVX-512F and `p` is readable for 16 bytes (the caller's contract).
        unsafe {
            let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
            Avx512Vnni(_mm512_sub_epi32(bytes, _mm512_set1_epi32(128)))
        }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { Avx512Vnni(_mm512_max_epi32(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn requantize(self, scale: *const f32, requant: &Requant) -> Self {
        // SAFETY: the CPU has AVX-512F and `scale` is readable for 16 floats (the caller's
        // contract).
        unsafe { Avx512Vnni(requantize16(self.0, _mm512_loadu_ps(scale), requant)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the CPU has AVX-512F and `p` is writable for 16 bytes (the caller's contract).
        // The lanes hold int8 values, so after the shift each fits a byte and the truncating
        // narrow (`vpmovdb`) keeps it whole.
        unsafe {
            let shifted = _mm512_add_epi32(self.0, _mm512_set1_epi32(128));
            _mm_storeu_si128(p as *mut __m128i, _mm512_cvtepi32_epi8(shifted));
        }
    }
}

/// [`Requant::apply`] on 16 lanes. `cvtps_epi32` rounds half to even in the default MXCSR
/// rounding mode, which Rust code never changes.
///
/// # Safety
///
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn requantize16(acc: __m512i, scale: __m512, requant: &Requant) -> __m512i {
    // SAFETY: the CPU has AVX-512F (the caller's contract).
    unsafe {
        let y_zero = _mm512_set1_epi32(requant.y_zero);
        let lo = _mm512_set1_ps((i8::MIN as i32 - requant.y_zero) as f32);
        let hi = _mm512_set1_ps((i8::MAX as i32 - requant.y_zero) as f32);
        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
        let f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
        let y = _mm512_add_epi32(_mm512_cvtps_epi32(f), y_zero);
        match requant.next {
            None => _mm512_max_epi32(y, y_zero),
            Some((next_scale, next_zero)) => {
                let relu = _mm512_max_ps(
                    _mm512_mul_ps(
                        _mm512_cvtepi32_ps(_mm512_sub_epi32(y, y_zero)),
                        _mm512_set1_ps(requant.y_scale),
                    ),
                    _mm512_setzero_ps(),
                );
                let lo = _mm512_set1_ps((i8::MIN as i32 - next_zero) as f32);
                let hi = _mm512_set1_ps((i8::MAX as i32 - next_zero) as f32);
                let q = _mm512_div_ps(relu, _mm512_set1_ps(next_scale));
                let q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
                _mm512_add_epi32(_mm512_cvtps_epi32(q), _mm512_set1_epi32(next_zero))
            }
        }
    }
}

/// # Safety
///
/// The CPU has AVX-512F and AVX512-VNNI, and [`run_any`]'s contract holds.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(in crate::kernels) unsafe fn run(
    chain: &QConvChain,
    input: &[i8],
    output: &mut [f32],
    src: &mut [u8],
    dst: &mut [u8],
) {
    // SAFETY: AVX-512F and AVX512-VNNI are enabled here and the CPU has them; the rest is the
    // caller's contract.
    unsafe { run_any::<Avx512Vnni>(chain, input, output, src, dst) }
}
