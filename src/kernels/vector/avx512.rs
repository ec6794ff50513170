//! AVX-512F: one vector per 512-bit register. Also the kernels' AVX-512 entry points: each
//! carries `#[target_feature(enable = "avx512f")]` so that the generic kernel body and the
//! intrinsics inline into it and compile to AVX-512 instructions. The dispatch enters them only for
//! an op whose backend is [`Backend::Avx512`](crate::kernels::Backend::Avx512), which the module's
//! invariant makes available.

use std::arch::x86_64::*;

use super::Vector;
use crate::kernels::conv_chain::{conv_any, maxpool_any, Conv3x3, Layout};
use crate::kernels::depthwise::{depthwise_any, depthwise_same_any, Taps};
use crate::kernels::image_conv::{image_conv_any, ImageConv};
use crate::kernels::pointwise::{pointwise_any, Pointwise};

#[derive(Clone, Copy)]
struct Avx512(__m512);

impl Vector for Avx512 {
    const WIDE_REGISTERS: bool = true;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { Avx512(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the CPU has AVX-512F and `p` is readable for 16 floats (the caller's contract);
        // `loadu` needs no alignment.
        unsafe { Avx512(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { Avx512(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { Avx512(_mm512_fmadd_ps(a.0, b.0, acc.0)) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { Avx512(_mm512_max_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the CPU has AVX-512F (the caller's contract).
        unsafe { Avx512(_mm512_add_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the CPU has AVX-512F and `p` is writable for 16 floats (the caller's contract);
        // `storeu` needs no alignment.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
}

/// # Safety
///
/// The CPU has AVX-512F, and [`conv_any`]'s contract holds.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn conv(
    conv: &Conv3x3,
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    // SAFETY: AVX-512F is enabled here and the CPU has it; the rest is the caller's contract.
    unsafe { conv_any::<Avx512>(conv, from, src, to, dst) }
}

/// # Safety
///
/// The CPU has AVX-512F, and [`depthwise_any`]'s contract holds.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn depthwise(
    taps: &Taps,
    planes: &[f32],
    out: &mut [f32],
    ow: usize,
) {
    // SAFETY: AVX-512F is enabled here and the CPU has it; the rest is the caller's contract.
    unsafe { depthwise_any::<Avx512>(taps, planes, out, ow) }
}

/// # Safety
///
/// The CPU has AVX-512F, and [`depthwise_same_any`]'s contract holds.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn depthwise_same(
    weights: &[f32],
    bias: f32,
    input: &[f32],
    out: &mut [f32],
    w: usize,
) {
    // SAFETY: AVX-512F is enabled here and the CPU has it; the rest is the caller's
    // contract.
    unsafe { depthwise_same_any::<Avx512>(weights, bias, input, out, w) }
}

/// # Safety
///
/// The CPU has AVX-512F, and [`pointwise_any`]'s contract holds for the wide tile.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn pointwise(
    pw: &Pointwise,
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    // SAFETY: AVX-512F is enabled here and the CPU has it; the rest is the caller's contract.
    unsafe {
        pointwise_any::<Avx512, { Pointwise::WIDE_TILE.0 }, { Pointwise::WIDE_TILE.1 }>(
            pw, input, residual, out,
        )
    }
}

/// # Safety
///
/// The CPU has AVX-512F, and [`image_conv_any`]'s contract holds for the wide tile.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn image_conv(op: &ImageConv, planes: &[f32], out: &mut [f32]) {
    // SAFETY: AVX-512F is enabled here and the CPU has it; the rest is the caller's contract.
    unsafe {
        image_conv_any::<Avx512, { Pointwise::WIDE_TILE.0 }, { Pointwise::WIDE_TILE.1 }>(
            op, planes, out,
        )
    }
}

/// # Safety
///
/// The CPU has AVX-512F, and [`maxpool_any`]'s contract holds.
#[target_feature(enable = "avx512f")]
pub(in crate::kernels) unsafe fn maxpool(from: &Layout, src: &[f32], to: &Layout, dst: &mut [f32]) {
    // SAFETY: AVX-512F is enabled here and the CPU has it; the rest is the caller's contract.
    unsafe { maxpool_any::<Avx512>(from, src, to, dst) }
}
