//! 16 int32 accumulators, the unit the int8 convolution chains compute in, over whichever integer
//! multiply the CPU has, and the portable implementation. Each backend chooses how activations and
//! weights sit in memory ([`Int8Vector::Elem`]) and how many input channels one multiply step
//! takes ([`Int8Vector::K`]): four bytes per dot product where the CPU has one (SDOT), pairs of
//! 16-bit values on x86 (`vpmaddwd`, which never saturates, unlike `vpmaddubsw`), one 16-bit value
//! per widening multiply-add on NEON without SDOT, and four unsigned bytes per dot product with
//! AVX512-VNNI (`vpdpbusd` multiplies unsigned by signed bytes, so activations are stored shifted
//! by +128 and the shift is folded into the bias).

use crate::kernels::LANES;

/// How a convolution's int32 sum becomes its int8 output, as onnxruntime's QLinearConv and the
/// DequantizeLinear -> Relu -> QuantizeLinear nodes after it define it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(in crate::kernels) struct Requant {
    /// The convolution's output zero point.
    pub y_zero: i32,
    /// The convolution's output scale (what DequantizeLinear multiplies by).
    pub y_scale: f32,
    /// The next QuantizeLinear's scale and zero point, after the ReLU; `None` when the chain ends
    /// here, the output staying in the convolution's own scale with the ReLU applied.
    pub next: Option<(f32, i32)>,
}

impl Requant {
    /// The zero point of what this stage writes, and so the value its border holds.
    pub fn out_zero(&self) -> i32 {
        self.next.map_or(self.y_zero, |(_, zero)| zero)
    }

    /// One lane: the reference every backend matches exactly. `acc` includes the bias.
    pub fn apply(&self, acc: i32, scale: f32) -> i32 {
        // QLinearConv (MlasRequantizeOutput): float scale, clamped, rounded half to even.
        let lo = (i8::MIN as i32 - self.y_zero) as f32;
        let hi = (i8::MAX as i32 - self.y_zero) as f32;
        let y = (acc as f32 * scale).clamp(lo, hi).round_ties_even() as i32 + self.y_zero;
        match self.next {
            // Relu on the dequantized value is a max with the zero point.
            None => y.max(self.y_zero),
            Some((next_scale, next_zero)) => {
                // DequantizeLinear, Relu, QuantizeLinear (which divides by its scale).
                let relu = ((y - self.y_zero) as f32 * self.y_scale).max(0.0);
                let lo = (i8::MIN as i32 - next_zero) as f32;
                let hi = (i8::MAX as i32 - next_zero) as f32;
                (relu / next_scale).clamp(lo, hi).round_ties_even() as i32 + next_zero
            }
        }
    }
}

/// A convolution's weights packed for one backend's [`Int8Vector::Elem`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::kernels) enum Packed {
    I8(Vec<i8>),
    I16(Vec<i16>),
    /// Signed weights stored as their bytes, for a backend whose activations are unsigned.
    U8(Vec<u8>),
}

/// How a backend keeps activations (and weights) in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::kernels) enum Storage {
    I8,
    /// Widened to 16 bits.
    I16,
    /// Activations as `value + 128` in an unsigned byte; weights as their signed bytes.
    U8,
}

impl Storage {
    /// What is added to every activation in memory. A convolution sums `(x + offset) * w`, so its
    /// bias carries `-offset * sum(w)` to give the signed sum back.
    pub fn activation_offset(self) -> i32 {
        match self {
            Storage::I8 | Storage::I16 => 0,
            Storage::U8 => 128,
        }
    }

    pub fn pack(self, weights: Vec<i16>) -> Packed {
        match self {
            Storage::I16 => Packed::I16(weights),
            Storage::I8 => Packed::I8(weights.into_iter().map(|v| v as i8).collect()),
            Storage::U8 => Packed::U8(weights.into_iter().map(|v| v as i8 as u8).collect()),
        }
    }
}

/// An activation or weight value in memory.
pub(in crate::kernels) trait Elem:
    Copy + Default + PartialEq + std::fmt::Debug
{
    fn from_i32(v: i32) -> Self;
    fn to_i32(self) -> i32;
    /// The weights, if they were packed for this element type.
    fn unpack(packed: &Packed) -> Option<&[Self]>;
}

impl Elem for i8 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i8
    }
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn unpack(packed: &Packed) -> Option<&[Self]> {
        match packed {
            Packed::I8(w) => Some(w),
            _ => None,
        }
    }
}

impl Elem for i16 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i16
    }
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn unpack(packed: &Packed) -> Option<&[Self]> {
        match packed {
            Packed::I16(w) => Some(w),
            _ => None,
        }
    }
}

/// An int8 value plus 128 ([`Storage::U8`]).
impl Elem for u8 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        (v + 128) as u8
    }
    #[inline(always)]
    fn to_i32(self) -> i32 {
        self as i32 - 128
    }
    fn unpack(packed: &Packed) -> Option<&[Self]> {
        match packed {
            Packed::U8(w) => Some(w),
            _ => None,
        }
    }
}

/// [`LANES`] int32 accumulators, one output channel block, and the operations the int8 chains
/// need.
///
/// Every method is `unsafe` for the reason [`Vector`](super::Vector)'s are: an implementation may
/// use instructions the CPU lacks, and the caller must run on a CPU that has them.
pub(in crate::kernels) trait Int8Vector: Copy {
    type Elem: Elem;
    /// One step's weights (`LANES * K` values) in registers, loaded once per tile.
    type Weights: Copy;
    /// Input channels one [`Int8Vector::dot`] takes.
    const K: usize;
    /// Output pixels per register tile (at most 12).
    const TILE: usize;
    /// Output blocks per register tile (1 or 2), which share each input broadcast.
    const BLOCKS: usize = 1;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions and `p` is readable for `LANES` values.
    unsafe fn load_i32(p: *const i32) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions and `w` is readable for `LANES * K` values.
    unsafe fn weights(w: *const Self::Elem) -> Self::Weights;
    /// `self[o] + sum over k < K of x[k] * w[o * K + k]`, for each output lane `o`.
    ///
    /// # Safety
    ///
    /// The CPU has the implementation's instructions and `x` is readable for `K` values.
    unsafe fn dot(self, x: *const Self::Elem, w: Self::Weights) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions and `p` is readable for `LANES` values.
    unsafe fn load(p: *const Self::Elem) -> Self;
    /// # Safety
    ///
    /// The CPU has the implementation's instructions.
    unsafe fn max(a: Self, b: Self) -> Self;
    /// [`Requant::apply`] on every lane, with the lane's scale from `scale`.
    ///
    /// # Safety
    ///
    /// The CPU has the implementation's instructions and `scale` is readable for `LANES` floats.
    unsafe fn requantize(self, scale: *const f32, requant: &Requant) -> Self;
    /// Stores lanes that hold int8 values.
    ///
    /// # Safety
    ///
    /// The CPU has the implementation's instructions and `p` is writable for `LANES` values.
    unsafe fn store(self, p: *mut Self::Elem);
}

/// Plain Rust, four bytes per step, as a dot-product instruction takes them; any CPU.
#[derive(Clone, Copy)]
pub(in crate::kernels) struct PortableInt8([i32; LANES]);

impl Int8Vector for PortableInt8 {
    type Elem = i8;
    type Weights = [[i8; 4]; LANES];
    const K: usize = 4;
    const TILE: usize = 4;

    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> Self {
        // SAFETY: `p` is readable for LANES values (the caller's contract).
        unsafe { PortableInt8(std::ptr::read_unaligned(p as *const [i32; LANES])) }
    }
    #[inline(always)]
    unsafe fn weights(w: *const i8) -> Self::Weights {
        // SAFETY: `w` is readable for LANES * K values (the caller's contract).
        unsafe { std::ptr::read_unaligned(w as *const [[i8; 4]; LANES]) }
    }
    #[inline(always)]
    unsafe fn dot(mut self, x: *const i8, w: Self::Weights) -> Self {
        // SAFETY: `x` is readable for K values (the caller's contract).
        let x = unsafe { std::ptr::read_unaligned(x as *const [i8; 4]) };
        for (acc, w) in self.0.iter_mut().zip(w) {
            for k in 0..4 {
                *acc += x[k] as i32 * w[k] as i32;
            }
        }
        self
    }
    #[inline(always)]
    unsafe fn load(p: *const i8) -> Self {
        // SAFETY: `p` is readable for LANES values (the caller's contract).
        let v = unsafe { std::ptr::read_unaligned(p as *const [i8; LANES]) };
        PortableInt8(v.map(i32::from))
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        let mut out = a.0;
        for (o, b) in out.iter_mut().zip(b.0) {
            *o = (*o).max(b);
        }
        PortableInt8(out)
    }
    #[inline(always)]
    unsafe fn requantize(self, scale: *const f32, requant: &Requant) -> Self {
        // SAFETY: `scale` is readable for LANES floats (the caller's contract).
        let scale = unsafe { std::ptr::read_unaligned(scale as *const [f32; LANES]) };
        let mut out = self.0;
        for (v, s) in out.iter_mut().zip(scale) {
            *v = requant.apply(*v, s);
        }
        PortableInt8(out)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i8) {
        // SAFETY: `p` is writable for LANES values (the caller's contract).
        unsafe { std::ptr::write_unaligned(p as *mut [i8; LANES], self.0.map(|v| v as i8)) }
    }
}
