//! AVX2 with FMA: one 16-float vector in two 256-bit registers, as on NEON (four registers) a
//! narrow vector: 16 registers hold the narrow tiles (a 6-pixel tile of one block: 12
//! accumulators). Also the kernels' AVX2 entry points: each carries `#[target_feature(enable =
//! "avx2,fma")]` so that the generic body and the intrinsics inline into it. The dispatch enters
//! them only for an op whose backend is [`Backend::Avx2`](crate::kernels::Backend::Avx2), which
//! the module's invariant makes available.

use std::arch::x86_64::*;

use super::Vector;
use crate::kernels::conv_chain::{conv_any, maxpool_any, Conv3x3, Layout};
use crate::kernels::depthwise::{depthwise_any, depthwise_same_any, Taps};
use crate::kernels::image_conv::{image_conv_any, ImageConv};
use crate::kernels::pointwise::{pointwise_any, Pointwise};

#[derive(Clone, Copy)]
struct Avx2([__m256; 2]);

impl Vector for Avx2 {
    const WIDE_REGISTERS: bool = false;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the CPU has AVX (the caller's contract).
        unsafe { Avx2([_mm256_setzero_ps(); 2]) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the CPU has AVX and `p` is readable for 16 floats (the caller's contract);
        // `loadu` needs no alignment.
        unsafe { Avx2([_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: the CPU has AVX (the caller's contract).
        unsafe { Avx2([_mm256_set1_ps(v); 2]) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        // SAFETY: the CPU has FMA (the caller's contract).
        unsafe {
            Avx2([
                _mm256_fmadd_ps(a.0[0], b.0[0], acc.0[0]),
                _mm256_fmadd_ps(a.0[1], b.0[1], acc.0[1]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: the CPU has AVX (the caller's contract).
        unsafe { Avx2([_mm256_max_ps(a.0[0], b.0[0]), _mm256_max_ps(a.0[1], b.0[1])]) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the CPU has AVX (the caller's contract).
        unsafe { Avx2([_mm256_add_ps(a.0[0], b.0[0]), _mm256_add_ps(a.0[1], b.0[1])]) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the CPU has AVX and `p` is writable for 16 floats (the caller's contract);
        // `storeu` needs no alignment.
        unsafe {
            _mm256_storeu_ps(p, self.0[0]);
            _mm256_storeu_ps(p.add(8), self.0[1]);
        }
    }
}

/// # Safety
///
/// The CPU has AVX2 and FMA, and [`conv_any`]'s contract holds.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn conv(
    conv: &Conv3x3,
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    // SAFETY: AVX2 and FMA are enabled here and the CPU has them; the rest is the caller's
    // contract.
    unsafe { conv_any::<Avx2>(conv, from, src, to, dst) }
}

/// # Safety
///
/// The CPU has AVX2 and FMA, and [`depthwise_any`]'s contract holds.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn depthwise(
    taps: &Taps,
    planes: &[f32],
    out: &mut [f32],
    ow: usize,
) {
    // SAFETY: AVX2 and FMA are enabled here and the CPU has them; the rest is the caller's
    // contract.
    unsafe { depthwise_any::<Avx2>(taps, planes, out, ow) }
}

/// # Safety
///
/// The CPU has AVX2 and FMA, and [`depthwise_same_any`]'s contract holds.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn depthwise_same(
    weights: &[f32],
    bias: f32,
    input: &[f32],
    out: &mut [f32],
    w: usize,
) {
    // SAFETY: AVX2 and FMA are enabled here and the CPU has them; the rest is the caller's
    // contract.
    unsafe { depthwise_same_any::<Avx2>(weights, bias, input, out, w) }
}

/// # Safety
///
/// The CPU has AVX2 and FMA, and [`pointwise_any`]'s contract holds for the narrow tile.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn pointwise(
    pw: &Pointwise,
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    // SAFETY: AVX2 and FMA are enabled here and the CPU has them; the rest is the caller's
    // contract.
    unsafe {
        pointwise_any::<Avx2, { Pointwise::NARROW_TILE.0 }, { Pointwise::NARROW_TILE.1 }>(
            pw, input, residual, out,
        )
    }
}

/// # Safety
///
/// The CPU has AVX2 and FMA, and [`image_conv_any`]'s contract holds for the narrow tile.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn image_conv(op: &ImageConv, planes: &[f32], out: &mut [f32]) {
    // SAFETY: AVX2 and FMA are enabled here and the CPU has them; the rest is the caller's
    // contract.
    unsafe {
        image_conv_any::<Avx2, { Pointwise::NARROW_TILE.0 }, { Pointwise::NARROW_TILE.1 }>(
            op, planes, out,
        )
    }
}

/// # Safety
///
/// The CPU has AVX2 and FMA, and [`maxpool_any`]'s contract holds.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn maxpool(from: &Layout, src: &[f32], to: &Layout, dst: &mut [f32]) {
    // SAFETY: AVX2 and FMA are enabled here and the CPU has them; the rest is the caller's
    // contract.
    unsafe { maxpool_any::<Avx2>(from, src, to, dst) }
}
