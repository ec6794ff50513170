//! One vector of 16 floats, the unit every kernel computes in, over whichever SIMD the CPU
//! has. Each kernel is one generic body over [`Vector`], instantiated per backend.

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512;
pub(super) mod int8;
#[cfg(target_arch = "x86_64")]
pub(super) mod int8_avx2;
#[cfg(target_arch = "aarch64")]
pub(super) mod int8_neon;
#[cfg(target_arch = "x86_64")]
pub(super) mod int8_vnni;
#[cfg(target_arch = "aarch64")]
pub(super) mod neon;
mod portable;

pub(super) use portable::Portable;

/// [`LANES`](super::LANES) floats, one channel block of the blocked layout, and the few
/// operations the kernels need.
///
/// Every method is `unsafe` because an implementation may use instructions the CPU lacks: the
/// caller must run on a CPU that has the implementation's (AVX-512F for `Avx512`, checked through
/// [`Backend::available`](super::Backend::available); NEON, which every aarch64 CPU has; nothing
/// for [`Portable`]). The kernels call `Avx512`'s from inside the `#[target_feature]` entry points
/// of `avx512.rs` only, where they inline.
pub(super) trait Vector: Copy {
    /// Whether one vector fits one register (AVX-512), rather than four (NEON).
    const WIDE_REGISTERS: bool;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions.
    unsafe fn zero() -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions, and `p` is valid for reading `LANES`
    /// floats; it need not be aligned.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions.
    unsafe fn splat(v: f32) -> Self;
    /// `a * b + acc`
    ///
    /// # Safety
    ///
    /// The CPU has the implementation's instructions.
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions.
    unsafe fn max(a: Self, b: Self) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions, and `p` is valid for writing `LANES`
    /// floats; it need not be aligned.
    unsafe fn store(self, p: *mut f32);
}
