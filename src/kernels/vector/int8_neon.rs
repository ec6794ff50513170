//! NEON: 16 int32 accumulators in four 128-bit registers, two ways.
//!
//! - [`NeonDot`]: bytes, four input channels per `sdot` (Armv8.2 dot product: Cortex-A55, A76,
//!   A78AE; detected at run time). Rust's `vdotq_s32` is not stable yet, so the instruction is
//!   written as inline assembly inside the entry point that enables the feature.
//! - [`NeonI16`]: every aarch64 CPU (Cortex-A53, A57, A72): 16-bit values, one input channel per
//!   widening multiply-add (`smlal`), as many instructions per product as fp32's `fmla` but a
//!   quarter of the bytes moved.

use std::arch::aarch64::*;

use super::int8::{Int8Vector, Requant};
use crate::kernels::qconv_chain::{run_any, QConvChain};

#[derive(Clone, Copy)]
pub(in crate::kernels) struct NeonDot([int32x4_t; 4]);

#[derive(Clone, Copy)]
pub(in crate::kernels) struct NeonI16([int32x4_t; 4]);

/// # Safety
///
/// `p` is readable for 16 int32.
#[inline(always)]
unsafe fn load_i32x16(p: *const i32) -> [int32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU and `p` is readable for 16 int32.
    unsafe {
        [
            vld1q_s32(p),
            vld1q_s32(p.add(4)),
            vld1q_s32(p.add(8)),
            vld1q_s32(p.add(12)),
        ]
    }
}

#[inline(always)]
fn max4(a: [int32x4_t; 4], b: [int32x4_t; 4]) -> [int32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe {
        [
            vmaxq_s32(a[0], b[0]),
            vmaxq_s32(a[1], b[1]),
            vmaxq_s32(a[2], b[2]),
            vmaxq_s32(a[3], b[3]),
        ]
    }
}

/// [`Requant::apply`] on 16 lanes; `vcvtnq` rounds half to even.
///
/// # Safety
///
/// `scale` is readable for 16 floats.
#[inline(always)]
unsafe fn requantize16(acc: [int32x4_t; 4], scale: *const f32, r: &Requant) -> [int32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU and `scale` is readable for 16 floats.
    unsafe {
        let y_zero = vdupq_n_s32(r.y_zero);
        let lo = vdupq_n_f32((i8::MIN as i32 - r.y_zero) as f32);
        let hi = vdupq_n_f32((i8::MAX as i32 - r.y_zero) as f32);
        let mut out = acc;
        for (q, v) in out.iter_mut().enumerate() {
            let f = vmulq_f32(vcvtq_f32_s32(*v), vld1q_f32(scale.add(4 * q)));
            let y = vaddq_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(f, lo), hi)), y_zero);
            *v = match r.next {
                None => vmaxq_s32(y, y_zero),
                Some((next_scale, next_zero)) => {
                    let relu = vmaxq_f32(
                        vmulq_f32(vcvtq_f32_s32(vsubq_s32(y, y_zero)), vdupq_n_f32(r.y_scale)),
                        vdupq_n_f32(0.0),
                    );
                    let lo = vdupq_n_f32((i8::MIN as i32 - next_zero) as f32);
                    let hi = vdupq_n_f32((i8::MAX as i32 - next_zero) as f32);
                    let q = vdivq_f32(relu, vdupq_n_f32(next_scale));
                    let q = vminq_f32(vmaxq_f32(q, lo), hi);
                    vaddq_s32(vcvtnq_s32_f32(q), vdupq_n_s32(next_zero))
                }
            };
        }
        out
    }
}

impl Int8Vector for NeonDot {
    type Elem = i8;
    type Weights = [int8x16_t; 4];
    const K: usize = 4;
    // 24 accumulators, 4 weight registers and the broadcast input, of 32.
    const TILE: usize = 6;

    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> Self {
        // SAFETY: the caller's contract.
        unsafe { NeonDot(load_i32x16(p)) }
    }
    #[inline(always)]
    unsafe fn weights(w: *const i8) -> Self::Weights {
        // SAFETY: `w` is readable for 64 bytes (the caller's contract).
        unsafe {
            [
                vld1q_s8(w),
                vld1q_s8(w.add(16)),
                vld1q_s8(w.add(32)),
                vld1q_s8(w.add(48)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn dot(self, x: *const i8, w: Self::Weights) -> Self {
        // SAFETY: `x` is readable for four bytes (the caller's contract), loaded as one int32 and
        // broadcast. `sdot` needs the dot-product extension, which the caller's CPU has: this
        // only runs inside `run_dot`, entered for a backend that detected it.
        unsafe {
            let x = vreinterpretq_s8_s32(vld1q_dup_s32(x as *const i32));
            let mut acc = self.0;
            for (a, w) in acc.iter_mut().zip(w) {
                std::arch::asm!(
                    ".arch_extension dotprod",
                    "sdot {a:v}.4s, {w:v}.16b, {x:v}.16b",
                    a = inout(vreg) *a,
                    w = in(vreg) w,
                    x = in(vreg) x,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            NeonDot(acc)
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const i8) -> Self {
        // SAFETY: `p` is readable for 16 bytes (the caller's contract).
        unsafe {
            let v = vld1q_s8(p);
            let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
            NeonDot([
                vmovl_s16(vget_low_s16(lo)),
                vmovl_high_s16(lo),
                vmovl_s16(vget_low_s16(hi)),
                vmovl_high_s16(hi),
            ])
        }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        NeonDot(max4(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn requantize(self, scale: *const f32, requant: &Requant) -> Self {
        // SAFETY: the caller's contract.
        unsafe { NeonDot(requantize16(self.0, scale, requant)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i8) {
        // SAFETY: `p` is writable for 16 bytes (the caller's contract); the lanes hold int8
        // values, so the narrowing moves keep them.
        unsafe {
            let a = vcombine_s16(vmovn_s32(self.0[0]), vmovn_s32(self.0[1]));
            let b = vcombine_s16(vmovn_s32(self.0[2]), vmovn_s32(self.0[3]));
            vst1q_s8(p, vcombine_s8(vmovn_s16(a), vmovn_s16(b)));
        }
    }
}

impl Int8Vector for NeonI16 {
    type Elem = i16;
    type Weights = [int16x8_t; 2];
    const K: usize = 1;
    const TILE: usize = 6;

    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> Self {
        // SAFETY: the caller's contract.
        unsafe { NeonI16(load_i32x16(p)) }
    }
    #[inline(always)]
    unsafe fn weights(w: *const i16) -> Self::Weights {
        // SAFETY: `w` is readable for 16 int16 (the caller's contract).
        unsafe { [vld1q_s16(w), vld1q_s16(w.add(8))] }
    }
    #[inline(always)]
    unsafe fn dot(self, x: *const i16, w: Self::Weights) -> Self {
        // SAFETY: `x` is readable for one int16 (the caller's contract).
        unsafe {
            let x = vld1_dup_s16(x);
            NeonI16([
                vmlal_s16(self.0[0], vget_low_s16(w[0]), x),
                vmlal_s16(self.0[1], vget_high_s16(w[0]), x),
                vmlal_s16(self.0[2], vget_low_s16(w[1]), x),
                vmlal_s16(self.0[3], vget_high_s16(w[1]), x),
            ])
        }
    }
    #[inline(always)]
    unsafe fn load(p: *const i16) -> Self {
        // SAFETY: `p` is readable for 16 int16 (the caller's contract).
        unsafe {
            let (a, b) = (vld1q_s16(p), vld1q_s16(p.add(8)));
            NeonI16([
                vmovl_s16(vget_low_s16(a)),
                vmovl_high_s16(a),
                vmovl_s16(vget_low_s16(b)),
                vmovl_high_s16(b),
            ])
        }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        NeonI16(max4(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn requantize(self, scale: *const f32, requant: &Requant) -> Self {
        // SAFETY: the caller's contract.
        unsafe { NeonI16(requantize16(self.0, scale, requant)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i16) {
        // SAFETY: `p` is writable for 16 int16 (the caller's contract); the lanes hold int8
        // values, so the narrowing moves keep them.
        unsafe {
            vst1q_s16(p, vcombine_s16(vmovn_s32(self.0[0]), vmovn_s32(self.0[1])));
            vst1q_s16(
                p.add(8),
                vcombine_s16(vmovn_s32(self.0[2]), vmovn_s32(self.0[3])),
            );
        }
    }
}

/// # Safety
///
/// The CPU has the dot-product extension, and [`run_any`]'s contract holds.
#[target_feature(enable = "dotprod")]
pub(in crate::kernels) unsafe fn run_dot(
    chain: &QConvChain,
    input: &[i8],
    output: &mut [f32],
    src: &mut [i8],
    dst: &mut [i8],
) {
    // SAFETY: the dot-product extension is enabled here and the CPU has it; the rest is the
    // caller's contract.
    unsafe { run_any::<NeonDot>(chain, input, output, src, dst) }
}

/// # Safety
///
/// [`run_any`]'s contract holds.
pub(in crate::kernels) unsafe fn run_i16(
    chain: &QConvChain,
    input: &[i8],
    output: &mut [f32],
    src: &mut [i16],
    dst: &mut [i16],
) {
    // SAFETY: NEON is part of every aarch64 CPU; the rest is the caller's contract.
    unsafe { run_any::<NeonI16>(chain, input, output, src, dst) }
}
