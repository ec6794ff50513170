//! NEON: 16 channels in four 128-bit registers. NEON is part of every aarch64 CPU, so there is no
//! run-time check and no entry point with a target feature: the generic kernel bodies compile
//! with NEON everywhere on aarch64.

use std::arch::aarch64::*;

use super::Vector;

#[derive(Clone, Copy)]
pub(in crate::kernels) struct Neon([float32x4_t; 4]);

impl Vector for Neon {
    const WIDE_REGISTERS: bool = false;
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { Neon([vdupq_n_f32(0.0); 4]) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: NEON is part of every aarch64 CPU, and `p` is readable for 16 floats (the
        // caller's contract), four at a time; `vld1q` needs no more than `f32` alignment.
        unsafe {
            Neon([
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ])
        }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { Neon([vdupq_n_f32(v); 4]) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe {
            Neon([
                vfmaq_f32(acc.0[0], a.0[0], b.0[0]),
                vfmaq_f32(acc.0[1], a.0[1], b.0[1]),
                vfmaq_f32(acc.0[2], a.0[2], b.0[2]),
                vfmaq_f32(acc.0[3], a.0[3], b.0[3]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe {
            Neon([
                vmaxq_f32(a.0[0], b.0[0]),
                vmaxq_f32(a.0[1], b.0[1]),
                vmaxq_f32(a.0[2], b.0[2]),
                vmaxq_f32(a.0[3], b.0[3]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe {
            Neon([
                vaddq_f32(a.0[0], b.0[0]),
                vaddq_f32(a.0[1], b.0[1]),
                vaddq_f32(a.0[2], b.0[2]),
                vaddq_f32(a.0[3], b.0[3]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        for (i, v) in self.0.iter().enumerate() {
            // SAFETY: NEON is part of every aarch64 CPU, and `p` is writable for 16 floats (the
            // caller's contract) of which this writes `4 * i..4 * i + 4`, `i < 4`; `vst1q` needs no
            // more than `f32` alignment.
            unsafe { vst1q_f32(p.add(4 * i), *v) };
        }
    }
}
