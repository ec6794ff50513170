//! Plain Rust over 16-float arrays: runs on any CPU, for checking the kernels' logic everywhere
//! and when forced; not faster than tract's own kernels.

use super::Vector;
use crate::kernels::LANES;

#[derive(Clone, Copy)]
pub(in crate::kernels) struct Portable([f32; LANES]);

impl Vector for Portable {
    const WIDE_REGISTERS: bool = true;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `p` is readable for `LANES` floats (the caller's contract), and `read_unaligned`
        // needs no alignment.
        unsafe { Portable(std::ptr::read_unaligned(p as *const [f32; LANES])) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; LANES])
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        let mut r = acc.0;
        for ((r, a), b) in r.iter_mut().zip(a.0).zip(b.0) {
            *r += a * b;
        }
        Portable(r)
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        let mut r = a.0;
        for (r, b) in r.iter_mut().zip(b.0) {
            *r = r.max(b);
        }
        Portable(r)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        let mut r = a.0;
        for (r, b) in r.iter_mut().zip(b.0) {
            *r += b;
        }
        Portable(r)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: `p` is writable for `LANES` floats (the caller's contract), and
        // `write_unaligned` needs no alignment.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; LANES], self.0) }
    }
}
