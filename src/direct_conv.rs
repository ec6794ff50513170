//! ferrite's own convolution kernels, run inside tract as custom operators that replace the
//! nodes they match: the ensemble's 3x3 convolution chains, and BlazeFace's first convolution,
//! depthwise 3x3 and 1x1 convolutions and 2x2 max-pools.
//!
//! Why: tract lowers every convolution to an im2col gather plus a matrix product. For the wide,
//! shallow layers of the ensemble's backbones (16 or 32 channels at 48x48 and 24x24) the gather
//! costs more than the arithmetic, and onnxruntime ran the fp32 ensemble 2.2-2.8x faster than tract
//! on the same CPU (README, "Where tract's time went"). Here each chain of
//! `Conv 3x3 (+ ReLU) (+ MaxPool 3x3/2)` nodes becomes one [`ConvChain`] that keeps its activations
//! in a channel-blocked layout (16 channels per vector, zero border included, so no Pad and no
//! gather) and computes every output vector as a sum of broadcast inputs times weight vectors.
//! In the detector, tract's depthwise convolution and max-pool took about 40 % of the graph's time
//! for 12 % of its multiply-adds, and its 1x1 convolutions (a packing step, a matrix product and a
//! separate add chain each) most of the rest: [`Depthwise3x3`], [`MaxPool2x2`], [`Pointwise`]
//! (bias, residual shortcut and ReLU fused) and [`ImageConv`] (the first layer, read from the NHWC
//! image) replace them. The heads, dense layers and softmax stay tract's.
//!
//! Each op keeps its output tensor in its per-session state (`ReusedOutput`) and overwrites it
//! on the next run, so a warm session allocates none of these activations.
//!
//! The replacements are exact up to float summation order and apply only to f32 nodes that match
//! the shapes implemented here; anything else keeps tract's kernels.

use std::cell::RefCell;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Max};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Channels per vector in the blocked layout.
const LANES: usize = 16;

/// Which implementation runs the chains' arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AVX-512F intrinsics (x86_64, detected at run time).
    Avx512,
    /// NEON intrinsics (every aarch64 CPU).
    Neon,
    /// Plain Rust over 16-float arrays; any CPU. Used for testing the chain logic everywhere and
    /// when forced; not faster than tract's own kernels.
    Portable,
}

impl Backend {
    /// The backend that beat tract on this CPU, if any. x86_64 with AVX-512F: timed (README,
    /// "Performance"). aarch64: NEON executed fewer instructions than tract's kernels on every
    /// core counted under emulation (`cross/insn_count.py --kernels tract,neon`: the ensemble
    /// 0.52x on the Cortex-A53, 0.81x on the A72 and A76; the detector 0.63-0.68x), an estimate,
    /// not a timing. Elsewhere (x86_64 without AVX-512, 32-bit Arm) tract's kernels run.
    pub fn detect() -> Option<Backend> {
        if cfg!(target_arch = "aarch64") {
            return Some(Backend::Neon);
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Backend::Avx512);
            }
        }
        None
    }

    /// Whether this CPU can run the backend at all.
    pub fn available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Avx512 => false,
            Backend::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx512 => "direct-avx512",
            Backend::Neon => "direct-neon",
            Backend::Portable => "direct-portable",
        }
    }
}

/// The environment variable that picks the convolution kernels (see [`ConvKernels`]). For
/// comparing kernels, and for working around a suspected kernel bug without a rebuild.
pub const CONV_ENV: &str = "FERRITE_CONV";

/// Who runs the convolutions ferrite has kernels for (`FERRITE_CONV`: auto, tract, avx512, neon,
/// portable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConvKernels {
    /// ferrite's direct kernels where they beat tract's ([`Backend::detect`]: x86_64 with
    /// AVX-512F, timed; aarch64, counted), tract's everywhere else.
    #[default]
    Auto,
    /// tract's own im2col + matrix-product kernels.
    Tract,
    /// ferrite's direct kernels on the given backend, even where not measured faster.
    Direct(Backend),
}

impl ConvKernels {
    /// From `FERRITE_CONV`; unset or empty is [`ConvKernels::Auto`].
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(CONV_ENV) {
            Ok(value) => value.parse().map_err(|e| format!("{CONV_ENV}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(ConvKernels::Auto),
            Err(e) => Err(format!("{CONV_ENV}: {e}")),
        }
    }

    /// The backend that will run, if any.
    pub fn resolve(self) -> Option<Backend> {
        match self {
            ConvKernels::Auto => Backend::detect(),
            ConvKernels::Tract => None,
            ConvKernels::Direct(backend) => Some(backend),
        }
    }
}

impl std::str::FromStr for ConvKernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let backend = match s {
            "" | "auto" => return Ok(ConvKernels::Auto),
            "tract" => return Ok(ConvKernels::Tract),
            "avx512" => Backend::Avx512,
            "neon" => Backend::Neon,
            "portable" => Backend::Portable,
            other => {
                return Err(format!(
                    "expected auto, tract, avx512, neon or portable, got {other:?}"
                ))
            }
        };
        if !backend.available() {
            return Err(format!("{s}: this CPU cannot run it"));
        }
        Ok(ConvKernels::Direct(backend))
    }
}

/// One 3x3, stride-1, pad-1 convolution with its bias, weights packed for the blocked layout.
#[derive(Clone, Debug, PartialEq)]
struct Conv3x3 {
    in_channels: usize,
    out_channels: usize,
    /// Channels per input vector: 1 for a single-channel input plane, else [`LANES`].
    in_lanes: usize,
    relu: bool,
    /// `[out block][in block][ky][kx][in lane][out lane]`, zero where a channel is padding.
    weights: Vec<f32>,
    /// One entry per output channel, padded with zeros to whole blocks.
    bias: Vec<f32>,
}

impl Conv3x3 {
    /// `kernel` is OIHW `[out, in, 3, 3]`; `bias` has one value per output channel.
    fn new(
        kernel: &[f32],
        bias: &[f32],
        in_channels: usize,
        out_channels: usize,
        relu: bool,
    ) -> Self {
        let in_lanes = if in_channels == 1 { 1 } else { LANES };
        let in_blocks = in_channels.div_ceil(in_lanes);
        let out_blocks = out_channels.div_ceil(LANES);
        let mut weights = vec![0.0; out_blocks * in_blocks * 9 * in_lanes * LANES];
        for o in 0..out_channels {
            let (ob, ol) = (o / LANES, o % LANES);
            for i in 0..in_channels {
                let (ib, il) = (i / in_lanes, i % in_lanes);
                for tap in 0..9 {
                    let at = (((ob * in_blocks + ib) * 9 + tap) * in_lanes + il) * LANES + ol;
                    weights[at] = kernel[(o * in_channels + i) * 9 + tap];
                }
            }
        }
        let mut padded_bias = vec![0.0; out_blocks * LANES];
        padded_bias[..out_channels].copy_from_slice(bias);
        Conv3x3 {
            in_channels,
            out_channels,
            in_lanes,
            relu,
            weights,
            bias: padded_bias,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Conv(Conv3x3),
    /// 3x3 window, stride 2, padding 1, only ever after a ReLU: its inputs are never negative, so
    /// the zero border gives the same maximum as tract's "ignore the padding".
    MaxPool,
}

/// A padded, channel-blocked activation: `[block][h + 2][w + 2][lanes]` with a zero border.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    blocks: usize,
    h: usize,
    w: usize,
    lanes: usize,
}

impl Layout {
    fn len(&self) -> usize {
        self.blocks * (self.h + 2) * (self.w + 2) * self.lanes
    }

    /// Offset of padded position (y, x) of block `b`.
    fn at(&self, b: usize, y: usize, x: usize) -> usize {
        ((b * (self.h + 2) + y) * (self.w + 2) + x) * self.lanes
    }

    fn zero_border(&self, buf: &mut [f32]) {
        let row = (self.w + 2) * self.lanes;
        for b in 0..self.blocks {
            let top = self.at(b, 0, 0);
            buf[top..top + row].fill(0.0);
            let bottom = self.at(b, self.h + 1, 0);
            buf[bottom..bottom + row].fill(0.0);
            for y in 1..=self.h {
                let left = self.at(b, y, 0);
                buf[left..left + self.lanes].fill(0.0);
                let right = self.at(b, y, self.w + 1);
                buf[right..right + self.lanes].fill(0.0);
            }
        }
    }

    fn after(&self, stage: &Stage) -> Layout {
        match stage {
            Stage::Conv(conv) => Layout {
                blocks: conv.out_channels.div_ceil(LANES),
                lanes: LANES,
                ..*self
            },
            Stage::MaxPool => Layout {
                h: pool_out(self.h),
                w: pool_out(self.w),
                ..*self
            },
        }
    }
}

fn pool_out(n: usize) -> usize {
    (n + 2 - 3) / 2 + 1
}

/// A chain of stages from an NCHW f32 input `[n, c, h, w]` to an NCHW f32 output, replacing the
/// tract nodes it was built from.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvChain {
    stages: Vec<Stage>,
    backend: Backend,
    input_channels: usize,
    output_channels: usize,
    /// The layout each stage reads, then the final one.
    layouts: Vec<Layout>,
}

// tract compares operators when it deduplicates nodes; weights are never NaN, so the derived
// comparison is an equivalence.
impl Eq for ConvChain {}

impl ConvChain {
    fn new(
        stages: Vec<Stage>,
        backend: Backend,
        input_channels: usize,
        h: usize,
        w: usize,
    ) -> Self {
        let first_lanes = match stages.first() {
            Some(Stage::Conv(conv)) => conv.in_lanes,
            _ => LANES,
        };
        let mut layouts = vec![Layout {
            blocks: input_channels.div_ceil(first_lanes),
            h,
            w,
            lanes: first_lanes,
        }];
        let mut output_channels = input_channels;
        for stage in &stages {
            let last = layouts[layouts.len() - 1];
            layouts.push(last.after(stage));
            if let Stage::Conv(conv) = stage {
                output_channels = conv.out_channels;
            }
        }
        ConvChain {
            stages,
            backend,
            input_channels,
            output_channels,
            layouts,
        }
    }

    fn output_hw(&self) -> (usize, usize) {
        let last = self.layouts[self.layouts.len() - 1];
        (last.h, last.w)
    }

    fn conv_count(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| matches!(s, Stage::Conv(_)))
            .count()
    }

    /// Runs the chain on one image `[c][h][w]`, writing `[c'][h'][w']` to `output`.
    fn run_image(&self, input: &[f32], output: &mut [f32], scratch: &mut Scratch) {
        let biggest = self.layouts.iter().map(Layout::len).max().unwrap_or(0);
        let (mut src, mut dst) = scratch.pair(biggest);
        let first = self.layouts[0];
        // Whole first buffer, not just its border: lanes past the last input channel must be 0.
        src[..first.len()].fill(0.0);
        let (h, w) = (first.h, first.w);
        for c in 0..self.input_channels {
            let (b, l) = (c / first.lanes, c % first.lanes);
            for y in 0..h {
                let row = &input[(c * h + y) * w..][..w];
                let base = first.at(b, y + 1, 1) + l;
                for (x, v) in row.iter().enumerate() {
                    src[base + x * first.lanes] = *v;
                }
            }
        }
        for (stage, pair) in self.stages.iter().zip(self.layouts.windows(2)) {
            let (from, to) = (pair[0], pair[1]);
            let out = &mut dst[..to.len()];
            to.zero_border(out);
            let inp = &src[..from.len()];
            match stage {
                Stage::Conv(conv) => conv_forward(self.backend, conv, &from, inp, &to, out),
                Stage::MaxPool => maxpool_forward(self.backend, &from, inp, &to, out),
            }
            std::mem::swap(&mut src, &mut dst);
        }
        let last = self.layouts[self.layouts.len() - 1];
        for c in 0..self.output_channels {
            let (b, l) = (c / last.lanes, c % last.lanes);
            for y in 0..last.h {
                let base = last.at(b, y + 1, 1) + l;
                let row = &mut output[(c * last.h + y) * last.w..][..last.w];
                for (x, v) in row.iter_mut().enumerate() {
                    *v = src[base + x * last.lanes];
                }
            }
        }
    }
}

/// Two ping-pong activation buffers per thread, grown once to the largest stage and then reused,
/// so a warm pipeline allocates nothing here per frame.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Scratch {
    fn pair(&mut self, len: usize) -> (&mut [f32], &mut [f32]) {
        if self.a.len() < len {
            self.a.resize(len, 0.0);
            self.b.resize(len, 0.0);
        }
        (&mut self.a[..], &mut self.b[..])
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

// ---------------------------------------------------------------------------------------------
// Kernels. One generic body, instantiated per vector type; the AVX-512 entry points carry the
// target feature so the generic body and the intrinsics inline into them.

trait Vector: Copy {
    /// Whether one vector fits one register (AVX-512), rather than four (NEON).
    const WIDE_REGISTERS: bool;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn splat(v: f32) -> Self;
    /// `a * b + acc`
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self;
    unsafe fn max(a: Self, b: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
}

#[derive(Clone, Copy)]
struct Portable([f32; LANES]);

impl Vector for Portable {
    const WIDE_REGISTERS: bool = true;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; LANES]))
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
        std::ptr::write_unaligned(p as *mut [f32; LANES], self.0)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Vector for Avx512 {
        const WIDE_REGISTERS: bool = true;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
            Avx512(_mm512_fmadd_ps(a.0, b.0, acc.0))
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            Avx512(_mm512_max_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx512(_mm512_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
    }

    /// Safety: the CPU must have AVX-512F; slices must match their layouts.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv(
        conv: &Conv3x3,
        from: &Layout,
        src: &[f32],
        to: &Layout,
        dst: &mut [f32],
    ) {
        conv_any::<Avx512>(conv, from, src, to, dst)
    }

    /// Safety: as [`super::depthwise_any`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn depthwise(taps: &Taps, planes: &[f32], out: &mut [f32], ow: usize) {
        depthwise_any::<Avx512>(taps, planes, out, ow)
    }

    /// Safety: as [`super::pointwise_any`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pointwise(
        pw: &Pointwise,
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        pointwise_any::<Avx512, { Pointwise::WIDE_TILE.0 }, { Pointwise::WIDE_TILE.1 }>(
            pw, input, residual, out,
        )
    }

    /// Safety: as [`super::image_conv_any`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_conv(op: &ImageConv, planes: &[f32], out: &mut [f32]) {
        image_conv_any::<Avx512, { Pointwise::WIDE_TILE.0 }, { Pointwise::WIDE_TILE.1 }>(
            op, planes, out,
        )
    }

    /// Safety: as [`conv`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn maxpool(from: &Layout, src: &[f32], to: &Layout, dst: &mut [f32]) {
        maxpool_any::<Avx512>(from, src, to, dst)
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use std::arch::aarch64::*;

    /// 16 channels in four NEON registers. NEON is part of every aarch64 CPU, so no run-time check.
    #[derive(Clone, Copy)]
    pub(super) struct Neon([float32x4_t; 4]);

    impl Vector for Neon {
        const WIDE_REGISTERS: bool = false;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Neon([vdupq_n_f32(0.0); 4])
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Neon([
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ])
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Neon([vdupq_n_f32(v); 4])
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
            Neon([
                vfmaq_f32(acc.0[0], a.0[0], b.0[0]),
                vfmaq_f32(acc.0[1], a.0[1], b.0[1]),
                vfmaq_f32(acc.0[2], a.0[2], b.0[2]),
                vfmaq_f32(acc.0[3], a.0[3], b.0[3]),
            ])
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            Neon([
                vmaxq_f32(a.0[0], b.0[0]),
                vmaxq_f32(a.0[1], b.0[1]),
                vmaxq_f32(a.0[2], b.0[2]),
                vmaxq_f32(a.0[3], b.0[3]),
            ])
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Neon([
                vaddq_f32(a.0[0], b.0[0]),
                vaddq_f32(a.0[1], b.0[1]),
                vaddq_f32(a.0[2], b.0[2]),
                vaddq_f32(a.0[3], b.0[3]),
            ])
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            for (i, v) in self.0.iter().enumerate() {
                vst1q_f32(p.add(4 * i), *v);
            }
        }
    }
}

fn conv_forward(
    backend: Backend,
    conv: &Conv3x3,
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    assert!(src.len() >= from.len() && dst.len() >= to.len() && from.h == to.h && from.w == to.w);
    assert!(from.lanes == conv.in_lanes && from.blocks == conv.in_channels.div_ceil(conv.in_lanes));
    assert!(to.lanes == LANES && to.blocks == conv.out_channels.div_ceil(LANES));
    // Safety: the layouts bound every offset the kernels touch (checked above); the AVX-512 path is
    // only chosen when `Backend::available` said the CPU has it (checked when the chain was built).
    unsafe {
        match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => avx512::conv(conv, from, src, to, dst),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => conv_any::<neon::Neon>(conv, from, src, to, dst),
            _ => conv_any::<Portable>(conv, from, src, to, dst),
        }
    }
}

fn maxpool_forward(backend: Backend, from: &Layout, src: &[f32], to: &Layout, dst: &mut [f32]) {
    assert!(src.len() >= from.len() && dst.len() >= to.len() && from.lanes == LANES);
    assert!(to.h == pool_out(from.h) && to.w == pool_out(from.w) && to.blocks == from.blocks);
    // Safety: as in `conv_forward`.
    unsafe {
        match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => avx512::maxpool(from, src, to, dst),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => maxpool_any::<neon::Neon>(from, src, to, dst),
            _ => maxpool_any::<Portable>(from, src, to, dst),
        }
    }
}

/// Register tile for an output of `blocks` channel blocks and width `w`: (blocks, pixels) per tile.
/// With 32 wide registers (AVX-512), chosen from timings of 16->16@48 (1x16), 32->32@24 and
/// 64->64@12 (2x12), 128->128@6 (2x6). A 16-channel NEON vector takes four of the 32 registers,
/// so there a tile is 6 pixels of one block: 24 accumulators, 4 weight and 1 input register.
fn tile_shape(wide_registers: bool, blocks: usize, w: usize) -> (usize, usize) {
    if !wide_registers {
        return if w >= 6 { (1, 6) } else { (1, 1) };
    }
    let pair = if blocks.is_multiple_of(2) { 2 } else { 1 };
    if w.is_multiple_of(16) {
        (1, 16)
    } else if w >= 12 {
        (pair, 12)
    } else if w >= 6 {
        (pair, 6)
    } else {
        (pair, 1)
    }
}

#[inline(always)]
unsafe fn conv_any<V: Vector>(
    conv: &Conv3x3,
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    if conv.in_lanes == 1 {
        conv_lanes::<V, 1>(conv, from, src, to, dst)
    } else {
        conv_lanes::<V, LANES>(conv, from, src, to, dst)
    }
}

#[inline(always)]
unsafe fn conv_lanes<V: Vector, const IL: usize>(
    conv: &Conv3x3,
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    let (main_blocks, main_x) = tile_shape(V::WIDE_REGISTERS, to.blocks, to.w);
    let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
    for y in 0..to.h {
        let mut ob = 0;
        while ob < to.blocks {
            let blocks = if ob + main_blocks <= to.blocks {
                main_blocks
            } else {
                1
            };
            let mut x0 = 0;
            while x0 < to.w {
                let x = if x0 + main_x <= to.w { main_x } else { 1 };
                let at = TileAt { ob, y, x0 };
                match (blocks, x) {
                    (1, 16) => tile::<V, IL, 1, 16>(conv, from, src, to, dst, at),
                    (1, 12) => tile::<V, IL, 1, 12>(conv, from, src, to, dst, at),
                    (2, 12) => tile::<V, IL, 2, 12>(conv, from, src, to, dst, at),
                    (1, 6) => tile::<V, IL, 1, 6>(conv, from, src, to, dst, at),
                    (2, 6) => tile::<V, IL, 2, 6>(conv, from, src, to, dst, at),
                    (2, 1) => tile::<V, IL, 2, 1>(conv, from, src, to, dst, at),
                    _ => tile::<V, IL, 1, 1>(conv, from, src, to, dst, at),
                }
                x0 += x;
            }
            ob += blocks;
        }
    }
}

#[derive(Clone, Copy)]
struct TileAt {
    ob: usize,
    y: usize,
    x0: usize,
}

/// Output blocks `ob..ob + OB` of pixels `x0..x0 + X` in row `y`: `OB * X` vector accumulators,
/// each input value broadcast once per tap and multiplied by `OB` weight vectors.
// The accumulators are indexed [block][pixel] from two nested loops; iterators would hide that.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<V: Vector, const IL: usize, const OB: usize, const X: usize>(
    conv: &Conv3x3,
    from: &Layout,
    src: *const f32,
    to: &Layout,
    dst: *mut f32,
    at: TileAt,
) {
    let in_blocks = from.blocks;
    let block_stride = in_blocks * 9 * IL * LANES;
    let weights = conv.weights.as_ptr();
    let mut acc = [[V::zero(); X]; OB];
    for (c, row) in acc.iter_mut().enumerate() {
        let bias = V::load(conv.bias.as_ptr().add((at.ob + c) * LANES));
        row.fill(bias);
    }
    for ib in 0..in_blocks {
        for ky in 0..3 {
            let row = src.add(from.at(ib, at.y + ky, at.x0));
            for kx in 0..3 {
                let w = weights.add((((at.ob * in_blocks + ib) * 9 + ky * 3 + kx) * IL) * LANES);
                let input = row.add(kx * IL);
                for l in 0..IL {
                    let mut wv = [V::zero(); OB];
                    for (c, wv) in wv.iter_mut().enumerate() {
                        *wv = V::load(w.add(c * block_stride + l * LANES));
                    }
                    for n in 0..X {
                        let b = V::splat(*input.add(n * IL + l));
                        for c in 0..OB {
                            acc[c][n] = V::mul_add(b, wv[c], acc[c][n]);
                        }
                    }
                }
            }
        }
    }
    let zero = V::zero();
    for (c, row) in acc.iter().enumerate() {
        let out = dst.add(to.at(at.ob + c, at.y + 1, at.x0 + 1));
        for (n, v) in row.iter().enumerate() {
            let v = if conv.relu { V::max(*v, zero) } else { *v };
            v.store(out.add(n * LANES));
        }
    }
}

#[inline(always)]
unsafe fn maxpool_any<V: Vector>(from: &Layout, src: &[f32], to: &Layout, dst: &mut [f32]) {
    let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
    for b in 0..from.blocks {
        for oy in 0..to.h {
            for ox in 0..to.w {
                // Input pixel (2oy + ky - 1, 2ox + kx - 1) sits at padded (2oy + ky, 2ox + kx).
                let mut m = V::load(src.add(from.at(b, 2 * oy, 2 * ox)));
                for ky in 0..3 {
                    for kx in 0..3 {
                        m = V::max(m, V::load(src.add(from.at(b, 2 * oy + ky, 2 * ox + kx))));
                    }
                }
                m.store(dst.add(to.at(b, oy + 1, ox + 1)));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tract operator and the graph rewrite.

/// A ferrite op's arithmetic, apart from where its output lives, so that a planned run can
/// overwrite last turn's output ([`ReusedOutput`]) instead of allocating a tensor per node.
trait Kernel: Op + Sized {
    /// Checks the inputs against the shapes the op was built for; the output's shape.
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>>;
    /// Writes every element of `output`, shaped as [`Kernel::output_shape`] said.
    fn compute(&self, inputs: &[TValue], output: &mut [f32]) -> TractResult<()>;
}

fn single_input(inputs: &[TValue]) -> TractResult<&TValue> {
    match inputs {
        [only] => Ok(only),
        _ => bail!("expected one input, got {}", inputs.len()),
    }
}

/// Out of a plan (constant folding, tests): a fresh output tensor.
fn eval_fresh<K: Kernel>(op: &K, inputs: &[TValue]) -> TractResult<TVec<TValue>> {
    let mut output = Tensor::zero::<f32>(&op.output_shape(inputs)?)?;
    {
        let mut plain = output.try_as_plain_ram_mut()?;
        op.compute(inputs, plain.as_slice_mut::<f32>()?)?;
    }
    Ok(tvec!(output.into_tvalue()))
}

/// A ferrite op's state in one session (one `SimpleState`): its last output. When every reader of
/// that tensor has dropped it (tract flushes a value once its last consumer ran), the next turn
/// writes into it in place, so a warm session allocates none of these activations. While anyone
/// still holds it (a caller keeping a graph output), the op allocates a new one, as tract would.
#[derive(Debug)]
struct ReusedOutput<K> {
    last: Option<Arc<Tensor>>,
    kernel: std::marker::PhantomData<fn() -> K>,
}

impl<K> Default for ReusedOutput<K> {
    fn default() -> Self {
        ReusedOutput {
            last: None,
            kernel: std::marker::PhantomData,
        }
    }
}

/// A cloned state is another session: it starts without a buffer rather than share one.
impl<K> Clone for ReusedOutput<K> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<K: Kernel> OpState for ReusedOutput<K> {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let Some(op) = op.downcast_ref::<K>() else {
            bail!(
                "state of {} given a {}",
                std::any::type_name::<K>(),
                op.name()
            );
        };
        let shape = op.output_shape(&inputs)?;
        let reusable = self
            .last
            .as_mut()
            .and_then(Arc::get_mut)
            .is_some_and(|t| t.shape() == &*shape);
        if !reusable {
            self.last = Some(Arc::new(Tensor::zero::<f32>(&shape)?));
        }
        let Some(tensor) = self.last.as_mut().and_then(Arc::get_mut) else {
            bail!("{}: output buffer unexpectedly shared", op.name());
        };
        {
            let mut plain = tensor.try_as_plain_ram_mut()?;
            op.compute(&inputs, plain.as_slice_mut::<f32>()?)?;
        }
        let Some(last) = &self.last else {
            bail!("{}: output buffer missing", op.name());
        };
        Ok(tvec!(TValue::from_const(Arc::clone(last))))
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(())
    }
}

/// `EvalOp` for a [`Kernel`]: out of a plan a fresh output, in a session a reused one.
macro_rules! kernel_eval_op {
    ($op:ty) => {
        impl EvalOp for $op {
            op_out_of_plan!();

            fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
                eval_fresh(self, &inputs)
            }

            fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
                Ok(Some(Box::new(ReusedOutput::<Self>::default())))
            }
        }
    };
}

impl Op for ConvChain {
    fn name(&self) -> StaticName {
        "FerriteConvChain".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} convolutions, {} stages, {}",
            self.conv_count(),
            self.stages.len(),
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(ConvChain);

impl Kernel for ConvChain {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        let first = self.layouts[0];
        if shape.len() != 4
            || shape[1] != self.input_channels
            || shape[2] != first.h
            || shape[3] != first.w
        {
            bail!(
                "conv chain built for [N, {}, {}, {}], got {shape:?}",
                self.input_channels,
                first.h,
                first.w
            );
        }
        let (h, w) = self.output_hw();
        Ok(tvec![shape[0], self.output_channels, h, w])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let first = self.layouts[0];
        let (h, w) = self.output_hw();
        let in_image = self.input_channels * first.h * first.w;
        let out_image = self.output_channels * h * w;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for (input, out) in input
                .chunks_exact(in_image)
                .zip(out.chunks_exact_mut(out_image))
            {
                self.run_image(input, out, &mut scratch);
            }
        });
        Ok(())
    }
}

impl TypedOp for ConvChain {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (h, w) = self.output_hw();
        let batch = inputs[0].shape[0].clone();
        Ok(tvec!(f32::fact(&[
            batch,
            self.output_channels.into(),
            h.into(),
            w.into()
        ])))
    }

    as_op!();
}

/// Replaces every chain of supported `Conv (+ ReLU) (+ MaxPool)` nodes of a decluttered f32 graph
/// by one [`ConvChain`] and returns how many convolutions it took over. Nodes that do not match
/// exactly are left to tract.
pub fn replace_conv_chains(model: &mut TypedModel, backend: Backend) -> TractResult<usize> {
    if !backend.available() {
        bail!("{} is not available on this CPU", backend.name());
    }
    let mut chains = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for id in model.eval_order()? {
        if taken.contains(&id) {
            continue;
        }
        let Some(mut conv) = match_conv(model, id)? else {
            continue;
        };
        let start = model.node(id).inputs[0];
        let fact = model.outlet_fact(start)?;
        let Some(shape) = fact.shape.as_concrete() else {
            continue;
        };
        let (channels, h, w) = (shape[1], shape[2], shape[3]);
        let mut stages = Vec::new();
        let mut end;
        loop {
            taken.insert(conv.node);
            end = conv.node;
            if let Some(relu) = single_successor(model, end).filter(|&s| is_relu(model, s)) {
                conv.op.relu = true;
                end = relu;
                taken.insert(relu);
            }
            let relu = conv.op.relu;
            stages.push(Stage::Conv(conv.op));
            let mut next = single_successor(model, end);
            if let Some(pool) = next.filter(|&s| relu && is_maxpool_3x3_s2_p1(model, s)) {
                stages.push(Stage::MaxPool);
                end = pool;
                taken.insert(pool);
                next = single_successor(model, end);
            }
            // The next convolution must read this chain's output as its data, not as a weight.
            let next =
                next.filter(|&n| model.node(n).inputs.first() == Some(&OutletId::new(end, 0)));
            match next.map(|n| match_conv(model, n)).transpose()?.flatten() {
                Some(found) => conv = found,
                None => break,
            }
        }
        chains.push((
            start,
            OutletId::new(end, 0),
            ConvChain::new(stages, backend, channels, h, w),
        ));
    }
    let mut replaced = 0;
    for (start, end, chain) in chains {
        replaced += chain.conv_count();
        splice(model, &[start], end, chain)?;
    }
    Ok(replaced)
}

/// Wires `op` from `inputs` and makes everything that read `output` read the op instead; the
/// nodes it replaces are left unread, for tract's optimiser to prune.
fn splice(
    model: &mut TypedModel,
    inputs: &[OutletId],
    output: OutletId,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let taps = inputs
        .iter()
        .map(|&input| patch.tap_model(model, input))
        .collect::<TractResult<TVec<_>>>()?;
    let name = format!("{}.ferrite", model.node(output.node).name);
    let out = patch.wire_node(name, op, &taps)?;
    patch.shunt_outside(model, output, out[0])?;
    patch.apply(model)
}

/// Applies a `replace_*` rewrite with the kernels asked for; returns the backend that now runs
/// part of the graph, or `None` when tract runs all of it.
pub fn rewrite(
    model: &mut TypedModel,
    kernels: ConvKernels,
    replace: fn(&mut TypedModel, Backend) -> TractResult<usize>,
) -> TractResult<Option<Backend>> {
    let Some(backend) = kernels.resolve() else {
        return Ok(None);
    };
    let replaced = replace(model, backend)?;
    log::debug!("{replaced} operations run by {}", backend.name());
    Ok((replaced > 0).then_some(backend))
}

struct MatchedConv {
    node: usize,
    op: Conv3x3,
}

/// The one node reading `node`'s only output, if the output goes nowhere else.
fn single_successor(model: &TypedModel, node: usize) -> Option<usize> {
    let outlet = OutletId::new(node, 0);
    if model.node(node).outputs.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    match model.outlet_successors(outlet) {
        [only] => Some(only.node),
        _ => None,
    }
}

fn is_f32_rank4(model: &TypedModel, outlet: OutletId) -> bool {
    model
        .outlet_fact(outlet)
        .map(|f| {
            f.datum_type == f32::datum_type() && f.shape.as_concrete().is_some_and(|s| s.len() == 4)
        })
        .unwrap_or(false)
}

fn const_f32(model: &TypedModel, outlet: OutletId) -> Option<Vec<f32>> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    let plain = konst.try_as_plain_ram().ok()?;
    plain.as_slice::<f32>().ok().map(|s| s.to_vec())
}

/// `max(x, 0)` with a constant zero, as tract declutters ONNX's Relu.
fn is_relu(model: &TypedModel, node: usize) -> bool {
    let n = model.node(node);
    let Some(bin) = n.op_as::<TypedBinOp>() else {
        return false;
    };
    if !bin.0.is::<Max>() || n.inputs.len() != 2 || !is_f32_rank4(model, OutletId::new(node, 0)) {
        return false;
    }
    let shape_kept = model.outlet_fact(n.inputs[0]).ok().map(|f| f.shape.clone())
        == model
            .outlet_fact(OutletId::new(node, 0))
            .ok()
            .map(|f| f.shape.clone());
    shape_kept && const_f32(model, n.inputs[1]).is_some_and(|v| v.len() == 1 && v[0] == 0.0)
}

fn is_unit(v: &Option<TVec<usize>>) -> bool {
    v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1))
}

fn pads_one(spec: &PoolSpec) -> bool {
    match &spec.padding {
        PaddingSpec::Explicit(before, after)
        | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
            before.iter().chain(after.iter()).all(|&p| p == 1)
        }
        _ => false,
    }
}

fn is_maxpool_3x3_s2_p1(model: &TypedModel, node: usize) -> bool {
    let n = model.node(node);
    let Some(pool) = n.op_as::<MaxPool>() else {
        return false;
    };
    let spec = &pool.pool_spec;
    pool.with_index_outputs.is_none()
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && spec
            .strides
            .as_ref()
            .is_some_and(|s| s.as_slice() == [2, 2])
        && is_unit(&spec.dilations)
        && pads_one(spec)
        && is_f32_rank4(model, n.inputs[0])
}

fn match_conv(model: &TypedModel, node: usize) -> TractResult<Option<MatchedConv>> {
    let n = model.node(node);
    let Some(conv) = n.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    let shape_ok = spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && is_unit(&spec.strides)
        && is_unit(&spec.dilations)
        && (pads_one(spec)
            || spec.padding == PaddingSpec::SameUpper
            || spec.padding == PaddingSpec::SameLower)
        && conv.group == 1
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 3
        && is_f32_rank4(model, n.inputs[0])
        && is_f32_rank4(model, OutletId::new(node, 0));
    if !shape_ok {
        return Ok(None);
    }
    let (ci, co) = (spec.input_channels, spec.output_channels);
    let (Some(kernel), Some(bias)) = (const_f32(model, n.inputs[1]), const_f32(model, n.inputs[2]))
    else {
        return Ok(None);
    };
    if kernel.len() != co * ci * 9 {
        return Ok(None);
    }
    let bias = match bias.len() {
        1 => vec![bias[0]; co],
        len if len == co => bias,
        _ => return Ok(None),
    };
    Ok(Some(MatchedConv {
        node,
        op: Conv3x3::new(&kernel, &bias, ci, co, false),
    }))
}

// ---------------------------------------------------------------------------------------------
// Depthwise 3x3 convolutions and 2x2 max-pools, plain NCHW, for BlazeFace. tract's DepthWiseConv
// and OptMaxPool took about 40 % of the detector graph's time for 12 % of its multiply-adds.

/// A depthwise (one filter per channel) 3x3 convolution with bias, stride 1 or 2, explicit padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Depthwise3x3 {
    channels: usize,
    stride: usize,
    /// Input height and width.
    hw: (usize, usize),
    /// Padding before (top, left) and after (bottom, right).
    pad_before: (usize, usize),
    pad_after: (usize, usize),
    /// `[channel][ky][kx]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    backend: Backend,
}

impl Eq for Depthwise3x3 {}

impl Depthwise3x3 {
    fn padded_hw(&self) -> (usize, usize) {
        (
            self.hw.0 + self.pad_before.0 + self.pad_after.0,
            self.hw.1 + self.pad_before.1 + self.pad_after.1,
        )
    }

    fn output_hw(&self) -> (usize, usize) {
        let (ph, pw) = self.padded_hw();
        ((ph - 3) / self.stride + 1, (pw - 3) / self.stride + 1)
    }

    /// `input` is `[c][h][w]` for one image, `output` `[c][oh][ow]`. `planes` is scratch.
    fn run_image(&self, input: &[f32], output: &mut [f32], planes: &mut Vec<f32>) {
        let (h, w) = self.hw;
        let (ph, pw) = self.padded_hw();
        let (oh, ow) = self.output_hw();
        let stride = self.stride;
        // The padded plane split into `stride` column phases (even and odd columns for stride
        // 2), so every tap reads consecutive values: tap kx of output x is column x + kx / stride
        // of phase kx % stride.
        let row = pw.div_ceil(stride);
        let plane = ph * row;
        // The last column a tap reads, and the last row, lie inside the planes.
        assert!(ow - 1 + 2 / stride < row && stride * (oh - 1) + 2 < ph);
        assert!(output.len() == self.channels * oh * ow && input.len() == self.channels * h * w);
        planes.clear();
        planes.resize(stride * plane, 0.0);
        // Offset of each tap's value for output (0, 0); output (oy, x) adds stride * oy rows and x.
        let offsets: [usize; 9] =
            std::array::from_fn(|t| (t % 3 % stride) * plane + (t / 3) * row + t % 3 / stride);
        for c in 0..self.channels {
            for y in 0..h {
                let start = (y + self.pad_before.0) * row;
                let values = &input[(c * h + y) * w..][..w];
                if stride == 1 {
                    let at = start + self.pad_before.1;
                    planes[at..at + w].copy_from_slice(values);
                } else {
                    for (x, v) in values.iter().enumerate() {
                        let px = x + self.pad_before.1;
                        planes[(px & 1) * plane + start + (px >> 1)] = *v;
                    }
                }
            }
            let taps = Taps {
                weights: &self.weights[c * 9..][..9],
                bias: self.bias[c],
                offsets,
                rows_per_output: stride * row,
            };
            let out = &mut output[c * oh * ow..][..oh * ow];
            // Safety: the assertions above bound every read (a vector of 16 outputs starts at most
            // at `ow - 16`, so it reads no column past `ow - 1 + 2 / stride`) and every write.
            unsafe {
                match self.backend {
                    #[cfg(target_arch = "x86_64")]
                    Backend::Avx512 => avx512::depthwise(&taps, planes, out, ow),
                    #[cfg(target_arch = "aarch64")]
                    Backend::Neon => depthwise_any::<neon::Neon>(&taps, planes, out, ow),
                    _ => depthwise_any::<Portable>(&taps, planes, out, ow),
                }
            }
        }
    }
}

/// One channel's filter and where its taps read in the phase planes ([`Depthwise3x3::run_image`]).
struct Taps<'a> {
    weights: &'a [f32],
    bias: f32,
    /// Offset of tap `ky * 3 + kx`'s value for output (0, 0).
    offsets: [usize; 9],
    /// How far the taps move for one output row.
    rows_per_output: usize,
}

/// One channel, 16 outputs of a row at a time in one vector accumulator; the row's tail in scalars.
#[inline(always)]
unsafe fn depthwise_any<V: Vector>(taps: &Taps, planes: &[f32], out: &mut [f32], ow: usize) {
    let weights: [V; 9] = std::array::from_fn(|i| V::splat(taps.weights[i]));
    let bias = V::splat(taps.bias);
    for (oy, row_out) in out.chunks_exact_mut(ow).enumerate() {
        let src = planes.as_ptr().add(oy * taps.rows_per_output);
        let mut x0 = 0;
        while x0 + LANES <= ow {
            let mut acc = bias;
            for (offset, weight) in taps.offsets.iter().zip(&weights) {
                acc = V::mul_add(V::load(src.add(offset + x0)), *weight, acc);
            }
            acc.store(row_out.as_mut_ptr().add(x0));
            x0 += LANES;
        }
        for (x, o) in row_out.iter_mut().enumerate().skip(x0) {
            let mut acc = taps.bias;
            for (offset, weight) in taps.offsets.iter().zip(taps.weights) {
                acc += weight * *src.add(offset + x);
            }
            *o = acc;
        }
    }
}

/// 2x2 max-pool, stride 2, no padding (odd trailing rows and columns are dropped, as ONNX does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPool2x2 {
    backend: Backend,
}

impl MaxPool2x2 {
    fn run_plane(&self, input: &[f32], w: usize, output: &mut [f32]) {
        let ow = w / 2;
        run_backend(self.backend, || {
            for (oy, out) in output.chunks_exact_mut(ow).enumerate() {
                let top = &input[2 * oy * w..][..w];
                let bottom = &input[(2 * oy + 1) * w..][..w];
                for (x, o) in out.iter_mut().enumerate() {
                    *o = top[2 * x]
                        .max(top[2 * x + 1])
                        .max(bottom[2 * x].max(bottom[2 * x + 1]));
                }
            }
        });
    }
}

/// Runs `body` compiled for the backend's vector width: inside an AVX-512 function for
/// [`Backend::Avx512`], as is elsewhere (NEON is the aarch64 baseline).
#[inline(always)]
fn run_backend(backend: Backend, body: impl FnOnce()) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => {
            #[target_feature(enable = "avx512f")]
            unsafe fn wide(body: impl FnOnce()) {
                body()
            }
            // Safety: the backend is only chosen after `Backend::available` found AVX-512F.
            unsafe { wide(body) }
        }
        _ => body(),
    }
}

thread_local! {
    static PHASE_PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `image` on each image of a batch (`in_image` and `out_image` values each) with this
/// thread's phase-plane scratch, which the depthwise and first-layer kernels share: a thread runs
/// one op at a time.
fn with_phase_planes(
    input: &[f32],
    in_image: usize,
    out: &mut [f32],
    out_image: usize,
    image: impl Fn(&[f32], &mut [f32], &mut Vec<f32>),
) {
    PHASE_PLANES.with(|planes| {
        let mut planes = planes.borrow_mut();
        for (input, out) in input
            .chunks_exact(in_image)
            .zip(out.chunks_exact_mut(out_image))
        {
            image(input, out, &mut planes);
        }
    });
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "FerriteDepthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "stride {}, {}",
            self.stride,
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(Depthwise3x3);

impl Kernel for Depthwise3x3 {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        if shape.len() != 4 || shape[1] != self.channels || (shape[2], shape[3]) != self.hw {
            bail!(
                "depthwise conv built for [N, {}, {:?}], got {shape:?}",
                self.channels,
                self.hw
            );
        }
        let (oh, ow) = self.output_hw();
        Ok(tvec![shape[0], self.channels, oh, ow])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let (oh, ow) = self.output_hw();
        let in_image = self.channels * self.hw.0 * self.hw.1;
        let out_image = self.channels * oh * ow;
        with_phase_planes(input, in_image, out, out_image, |input, out, planes| {
            self.run_image(input, out, planes)
        });
        Ok(())
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.output_hw();
        let batch = inputs[0].shape[0].clone();
        Ok(tvec!(f32::fact(&[
            batch,
            self.channels.into(),
            oh.into(),
            ow.into()
        ])))
    }

    as_op!();
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "FerriteMaxPool2x2".into()
    }

    op_as_typed_op!();
}

kernel_eval_op!(MaxPool2x2);

impl Kernel for MaxPool2x2 {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        if shape.len() != 4 || shape[2] < 2 || shape[3] < 2 {
            bail!("2x2 max-pool needs [N, C, H >= 2, W >= 2], got {shape:?}");
        }
        Ok(tvec![shape[0], shape[1], shape[2] / 2, shape[3] / 2])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let input = single_input(inputs)?;
        let (h, w) = (input.shape()[2], input.shape()[3]);
        let plain = input.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        for (plane, out) in input
            .chunks_exact(h * w)
            .zip(out.chunks_exact_mut((h / 2) * (w / 2)))
        {
            self.run_plane(plane, w, out);
        }
        Ok(())
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let half = |d: &TDim| -> TractResult<TDim> { Ok((d.to_usize()? / 2).into()) };
        Ok(tvec!(f32::fact(&[
            shape[0].clone(),
            shape[1].clone(),
            half(&shape[2])?,
            half(&shape[3])?
        ])))
    }

    as_op!();
}

/// Replaces every supported depthwise 3x3 convolution, 1x1 convolution and 2x2 max-pool of a
/// decluttered f32 graph (BlazeFace's) by [`Depthwise3x3`], [`Pointwise`] and [`MaxPool2x2`];
/// returns how many operations they took over (a fused bias, residual or ReLU counts as one).
pub fn replace_detector_ops(model: &mut TypedModel, backend: Backend) -> TractResult<usize> {
    if !backend.available() {
        bail!("{} is not available on this CPU", backend.name());
    }
    // One at a time, rescanning after each: a fused 1x1 convolution reads outputs that an earlier
    // splice may have moved to a new node.
    let mut count = 0;
    while let Some((inputs, last, op, nodes)) = model
        .eval_order()?
        .into_iter()
        .find_map(|id| match_detector_op(model, id, backend))
    {
        splice(model, &inputs, OutletId::new(last, 0), op)?;
        count += nodes;
    }
    Ok(count)
}

/// The op replacing `id` (and any nodes fused into it): its inputs, the last node it replaces,
/// the op, and how many nodes it replaces.
type DetectorOp = (TVec<OutletId>, usize, Box<dyn TypedOp>, usize);

fn match_detector_op(model: &TypedModel, id: usize, backend: Backend) -> Option<DetectorOp> {
    let input = tvec![model.node(id).inputs.first().copied()?];
    if let Some(op) = match_depthwise(model, id, backend) {
        Some((input, id, Box::new(op), 1))
    } else if is_maxpool_2x2(model, id) {
        Some((input, id, Box::new(MaxPool2x2 { backend }), 1))
    } else {
        match_pointwise(model, id, backend)
            .or_else(|| match_image_conv(model, id, backend))
            .map(|m| (m.inputs, m.last, m.op, m.nodes))
    }
}

fn match_depthwise(model: &TypedModel, node: usize, backend: Backend) -> Option<Depthwise3x3> {
    let n = model.node(node);
    let conv = n.op_as::<Conv>()?;
    let spec = &conv.pool_spec;
    let channels = spec.input_channels;
    let stride = match spec.strides.as_ref().map(|s| s.as_slice()) {
        None | Some([1, 1]) => 1,
        Some([2, 2]) => 2,
        _ => return None,
    };
    let (before, after) = match &spec.padding {
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false)
            if b.len() == 2 && a.len() == 2 =>
        {
            ((b[0], b[1]), (a[0], a[1]))
        }
        _ => return None,
    };
    let shape_ok = spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && is_unit(&spec.dilations)
        && conv.group == channels
        && spec.output_channels == channels
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 3
        && is_f32_rank4(model, n.inputs[0])
        && is_f32_rank4(model, OutletId::new(node, 0))
        && before.0 <= 2
        && before.1 <= 2
        && after.0 <= 2
        && after.1 <= 2;
    if !shape_ok {
        return None;
    }
    let shape = model
        .outlet_fact(n.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let weights = const_f32(model, n.inputs[1])?;
    let bias = const_f32(model, n.inputs[2])?;
    let bias = match bias.len() {
        1 => vec![bias[0]; channels],
        len if len == channels => bias,
        _ => return None,
    };
    let op = Depthwise3x3 {
        channels,
        stride,
        hw: (shape[2], shape[3]),
        pad_before: before,
        pad_after: after,
        weights,
        bias,
        backend,
    };
    let fits = shape[1] == channels
        && op.weights.len() == channels * 9
        && op.padded_hw().0 >= 3
        && op.padded_hw().1 >= 3
        && model
            .outlet_fact(OutletId::new(node, 0))
            .ok()?
            .shape
            .as_concrete()
            == Some(&[shape[0], channels, op.output_hw().0, op.output_hw().1][..]);
    fits.then_some(op)
}

fn is_maxpool_2x2(model: &TypedModel, node: usize) -> bool {
    let n = model.node(node);
    let Some(pool) = n.op_as::<MaxPool>() else {
        return false;
    };
    let spec = &pool.pool_spec;
    let no_padding = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false) => {
            b.iter().chain(a.iter()).all(|&p| p == 0)
        }
        _ => false,
    };
    pool.with_index_outputs.is_none()
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [2, 2]
        && spec
            .strides
            .as_ref()
            .is_some_and(|s| s.as_slice() == [2, 2])
        && is_unit(&spec.dilations)
        && no_padding
        && is_f32_rank4(model, n.inputs[0])
        && model
            .outlet_fact(n.inputs[0])
            .ok()
            .and_then(|f| f.shape.as_concrete().map(|s| s[2] >= 2 && s[3] >= 2))
            .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// 1x1 convolutions, plain NCHW, for BlazeFace: `EinSum + Add(bias) + Add(residual) + Max(0)` in one
// pass. tract ran them as a packing step, a matrix product and a separate add chain: about 70 % of
// the detector graph's time once the depthwise convolutions were ferrite's.

/// A 1x1, stride-1 convolution with bias over `[N, I, H, W]`, optionally adding a residual
/// `[N, R, H, W]` (R <= O: BlazeFace pads the shortcut's channels with zeros) into the first R
/// output channels, optionally followed by ReLU.
#[derive(Clone, Debug, PartialEq)]
pub struct Pointwise {
    in_channels: usize,
    out_channels: usize,
    hw: (usize, usize),
    /// Output channels per register tile (the kernel's `R`).
    tile: usize,
    /// `[tile][input channel][r]`, the last tile padded with zero weights.
    weights: Vec<f32>,
    /// Per output channel, padded like the weights.
    bias: Vec<f32>,
    /// Channels of the residual input, when there is one.
    residual_channels: Option<usize>,
    relu: bool,
    backend: Backend,
}

impl Eq for Pointwise {}

impl Pointwise {
    /// (output channels, pixel vectors) per tile with 32 wide registers: 24 accumulators, two
    /// input vectors, one broadcast weight.
    const WIDE_TILE: (usize, usize) = (12, 2);
    /// With NEON a 16-lane vector takes four registers: 6 x 1 is 24 accumulator registers.
    const NARROW_TILE: (usize, usize) = (6, 1);

    /// `weights` is `[O][I]` as ONNX stores a 1x1 kernel, `bias` `[O]`.
    fn new(
        (in_channels, out_channels): (usize, usize),
        hw: (usize, usize),
        weights: &[f32],
        bias: &[f32],
        residual_channels: Option<usize>,
        relu: bool,
        backend: Backend,
    ) -> Pointwise {
        assert!(weights.len() == in_channels * out_channels && bias.len() == out_channels);
        let (tile, packed, padded_bias) = pack_channel_tiles(weights, bias, in_channels, backend);
        Pointwise {
            in_channels,
            out_channels,
            hw,
            tile,
            weights: packed,
            bias: padded_bias,
            residual_channels,
            relu,
            backend,
        }
    }

    fn pixels(&self) -> usize {
        self.hw.0 * self.hw.1
    }

    /// One image: `input` `[I][H*W]`, `residual` `[R][H*W]`, `out` `[O][H*W]`.
    fn run_image(&self, input: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        let n = self.pixels();
        assert!(input.len() == self.in_channels * n && out.len() == self.out_channels * n);
        assert!(residual.map(<[f32]>::len) == self.residual_channels.map(|r| r * n));
        assert!(self
            .residual_channels
            .is_none_or(|r| r <= self.out_channels));
        // Safety: the assertions above bound every offset the kernel reads or writes; the backend
        // was checked available when the op was built.
        unsafe {
            match self.backend {
                #[cfg(target_arch = "x86_64")]
                Backend::Avx512 => avx512::pointwise(self, input, residual, out),
                #[cfg(target_arch = "aarch64")]
                Backend::Neon => pointwise_any::<
                    neon::Neon,
                    { Pointwise::NARROW_TILE.0 },
                    { Pointwise::NARROW_TILE.1 },
                >(self, input, residual, out),
                _ => {
                    pointwise_any::<Portable, { Pointwise::WIDE_TILE.0 }, { Pointwise::WIDE_TILE.1 }>(
                        self, input, residual, out,
                    )
                }
            }
        }
    }

    /// The scalar path, for pixels past the last whole vector.
    fn pixel(&self, p: usize, input: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        let n = self.pixels();
        for o in 0..self.out_channels {
            let (t, r) = (o / self.tile, o % self.tile);
            let mut acc = self.bias[o];
            for i in 0..self.in_channels {
                acc += self.weights[(t * self.in_channels + i) * self.tile + r] * input[i * n + p];
            }
            if let (Some(res), Some(channels)) = (residual, self.residual_channels) {
                if o < channels {
                    acc += res[o * n + p];
                }
            }
            out[o * n + p] = if self.relu { acc.max(0.0) } else { acc };
        }
    }
}

/// Packs `[O][taps]` weights for the output-channel register tiles of [`Pointwise`] and
/// [`ImageConv`]: the backend's tile height, the weights as `[tile][tap][r]` and the bias, both
/// padded with zeros to whole tiles.
fn pack_channel_tiles(
    weights: &[f32],
    bias: &[f32],
    taps: usize,
    backend: Backend,
) -> (usize, Vec<f32>, Vec<f32>) {
    let tile = if backend == Backend::Neon {
        Pointwise::NARROW_TILE.0
    } else {
        Pointwise::WIDE_TILE.0
    };
    let out_channels = bias.len();
    let padded = out_channels.div_ceil(tile) * tile;
    let mut packed = vec![0.0; padded * taps];
    for o in 0..out_channels {
        for tap in 0..taps {
            packed[((o / tile) * taps + tap) * tile + o % tile] = weights[o * taps + tap];
        }
    }
    let mut padded_bias = bias.to_vec();
    padded_bias.resize(padded, 0.0);
    (tile, packed, padded_bias)
}

/// Safety: slices as asserted in [`Pointwise::run_image`]; `R` must be the op's tile.
#[inline(always)]
unsafe fn pointwise_any<V: Vector, const R: usize, const P: usize>(
    pw: &Pointwise,
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    debug_assert_eq!(pw.tile, R);
    let n = pw.pixels();
    let tiles = pw.out_channels.div_ceil(R);
    let mut p0 = 0;
    while p0 + P * LANES <= n {
        for t in 0..tiles {
            pointwise_tile::<V, R, P>(pw, t, p0, input, residual, out);
        }
        p0 += P * LANES;
    }
    while p0 + LANES <= n {
        for t in 0..tiles {
            pointwise_tile::<V, R, 1>(pw, t, p0, input, residual, out);
        }
        p0 += LANES;
    }
    for p in p0..n {
        pw.pixel(p, input, residual, out);
    }
}

/// Output channels `t * R..` of pixels `p0..p0 + P * LANES`: per input channel, `P` vector loads
/// and `R` broadcast weights feed `R * P` accumulators.
// The accumulators are indexed [channel][vector] from two nested loops; iterators would hide that.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn pointwise_tile<V: Vector, const R: usize, const P: usize>(
    pw: &Pointwise,
    t: usize,
    p0: usize,
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let n = pw.pixels();
    let mut acc = [[V::zero(); P]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        row.fill(V::splat(*pw.bias.get_unchecked(t * R + r)));
    }
    let weights = pw.weights.as_ptr().add(t * pw.in_channels * R);
    let x = input.as_ptr().add(p0);
    for i in 0..pw.in_channels {
        let row = x.add(i * n);
        let xv: [V; P] = std::array::from_fn(|k| V::load(row.add(k * LANES)));
        let w = weights.add(i * R);
        for r in 0..R {
            let s = V::splat(*w.add(r));
            for k in 0..P {
                acc[r][k] = V::mul_add(xv[k], s, acc[r][k]);
            }
        }
    }
    let valid = R.min(pw.out_channels - t * R);
    let zero = V::zero();
    let dst = out.as_mut_ptr();
    for (r, row) in acc.iter().enumerate().take(valid) {
        let o = t * R + r;
        let shortcut = match (residual, pw.residual_channels) {
            (Some(res), Some(channels)) if o < channels => Some(res.as_ptr().add(o * n + p0)),
            _ => None,
        };
        for (k, v) in row.iter().enumerate() {
            let mut v = *v;
            if let Some(s) = shortcut {
                v = V::add(v, V::load(s.add(k * LANES)));
            }
            if pw.relu {
                v = V::max(v, zero);
            }
            v.store(dst.add(o * n + p0 + k * LANES));
        }
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "FerritePointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, residual {:?}, relu {}, {}",
            self.in_channels,
            self.out_channels,
            self.residual_channels,
            self.relu,
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(Pointwise);

impl Kernel for Pointwise {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let expected_inputs = 1 + usize::from(self.residual_channels.is_some());
        if inputs.len() != expected_inputs {
            bail!(
                "1x1 conv expects {expected_inputs} inputs, got {}",
                inputs.len()
            );
        }
        let (h, w) = self.hw;
        let shape = inputs[0].shape();
        if shape.len() != 4 || shape[1] != self.in_channels || (shape[2], shape[3]) != self.hw {
            bail!(
                "1x1 conv built for [N, {}, {h}, {w}], got {shape:?}",
                self.in_channels
            );
        }
        let batch = shape[0];
        if let (Some(res), Some(channels)) = (inputs.get(1), self.residual_channels) {
            if res.shape() != [batch, channels, h, w] {
                bail!(
                    "1x1 conv residual built for [{batch}, {channels}, {h}, {w}], got {:?}",
                    res.shape()
                );
            }
        }
        Ok(tvec![batch, self.out_channels, h, w])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = inputs[0].try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let residual_plain = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
        let residual = residual_plain
            .as_ref()
            .map(|r| r.as_slice::<f32>())
            .transpose()?;
        let n = self.pixels();
        let (in_image, out_image) = (self.in_channels * n, self.out_channels * n);
        let res_image = self.residual_channels.unwrap_or(0) * n;
        for (b, out) in out.chunks_exact_mut(out_image).enumerate() {
            self.run_image(
                &input[b * in_image..][..in_image],
                residual.map(|r| &r[b * res_image..][..res_image]),
                out,
            );
        }
        Ok(())
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&[
            inputs[0].shape[0].clone(),
            self.out_channels.into(),
            self.hw.0.into(),
            self.hw.1.into()
        ])))
    }

    as_op!();
}

/// A match that fuses several graph nodes into one op.
struct FusedMatch {
    /// The op's inputs (for a 1x1 convolution, the data then the residual if fused).
    inputs: TVec<OutletId>,
    /// The last node the op replaces.
    last: usize,
    /// How many graph nodes it replaces.
    nodes: usize,
    op: Box<dyn TypedOp>,
}

/// A two-input `Add` node reading `node`'s output: the other operand.
fn add_operand(model: &TypedModel, add: usize, node: usize) -> Option<OutletId> {
    let n = model.node(add);
    let bin = n.op_as::<TypedBinOp>()?;
    if !bin.0.is::<Add>() || n.inputs.len() != 2 {
        return None;
    }
    let ours = OutletId::new(node, 0);
    match (n.inputs[0] == ours, n.inputs[1] == ours) {
        (true, false) => Some(n.inputs[1]),
        (false, true) => Some(n.inputs[0]),
        _ => None,
    }
}

/// `EinSum NIHW,OI->NOHW` (tract's decluttered 1x1 convolution) with a constant kernel, then
/// optionally `Add` of a constant `[1, O, 1, 1]` bias, `Add` of a residual (the same shape, or a
/// channel concatenation of a tensor and constant zeros), and ReLU, in that order.
fn match_pointwise(model: &TypedModel, node: usize, backend: Backend) -> Option<FusedMatch> {
    let n = model.node(node);
    let einsum = n.op_as::<EinSum>()?;
    if einsum.axes.to_string() != "NIHW,OI->NOHW"
        || einsum.operating_dt != f32::datum_type()
        || einsum.q_params.is_some()
        || n.inputs.len() != 2
        || !is_f32_rank4(model, n.inputs[0])
        || !is_f32_rank4(model, OutletId::new(node, 0))
    {
        return None;
    }
    let shape = model
        .outlet_fact(n.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let out_shape = model
        .outlet_fact(OutletId::new(node, 0))
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let (in_channels, out_channels, hw) = (shape[1], out_shape[1], (shape[2], shape[3]));
    let weights = const_f32(model, n.inputs[1])?;
    if weights.len() != in_channels * out_channels || (out_shape[2], out_shape[3]) != hw {
        return None;
    }
    let mut last = node;
    let mut nodes = 1;
    let mut bias = vec![0.0; out_channels];
    if let Some(add) = single_successor(model, last) {
        let operand = add_operand(model, add, last);
        let konst = operand.and_then(|o| {
            let fact = model.outlet_fact(o).ok()?;
            let per_channel = fact.shape.as_concrete()? == [1, out_channels, 1, 1];
            per_channel.then(|| const_f32(model, o)).flatten()
        });
        if let Some(values) = konst {
            bias = values;
            last = add;
            nodes += 1;
        }
    }
    let mut inputs = tvec![n.inputs[0]];
    let mut residual_channels = None;
    if let Some(add) = single_successor(model, last) {
        if let Some(residual) =
            add_operand(model, add, last).and_then(|o| residual_source(model, o, &out_shape))
        {
            residual_channels = Some(residual.1);
            inputs.push(residual.0);
            last = add;
            nodes += 1;
        }
    }
    let mut relu = false;
    if let Some(max) = single_successor(model, last).filter(|&s| is_relu(model, s)) {
        relu = true;
        last = max;
        nodes += 1;
    }
    let op = Pointwise::new(
        (in_channels, out_channels),
        hw,
        &weights,
        &bias,
        residual_channels,
        relu,
        backend,
    );
    Some(FusedMatch {
        inputs,
        last,
        nodes,
        op: Box::new(op),
    })
}

/// Where a residual operand of shape `out_shape` comes from, and how many of its channels are
/// not constant zeros: itself, or the first input of a channel `Concat` whose second is zeros.
fn residual_source(
    model: &TypedModel,
    operand: OutletId,
    out_shape: &[usize],
) -> Option<(OutletId, usize)> {
    let fact = model.outlet_fact(operand).ok()?;
    if fact.datum_type != f32::datum_type()
        || fact.konst.is_some()
        || fact.shape.as_concrete()? != out_shape
    {
        return None;
    }
    let node = model.node(operand.node);
    let concat = node
        .op_as::<TypedConcat>()
        .filter(|c| c.axis == 1 && node.inputs.len() == 2);
    let Some(_) = concat else {
        return Some((operand, out_shape[1]));
    };
    let (data, zeros) = (node.inputs[0], node.inputs[1]);
    let data_shape = model.outlet_fact(data).ok()?.shape.as_concrete()?.to_vec();
    let all_zero = const_f32(model, zeros).is_some_and(|z| z.iter().all(|&v| v == 0.0));
    let fits = all_zero
        && model.outlet_fact(data).ok()?.datum_type == f32::datum_type()
        && data_shape.len() == 4
        && data_shape[0] == out_shape[0]
        && data_shape[2..] == out_shape[2..];
    if fits {
        Some((data, data_shape[1]))
    } else {
        Some((operand, out_shape[1]))
    }
}

// ---------------------------------------------------------------------------------------------
// Dense KxK convolutions of an image input, for BlazeFace's first layer (5x5, stride 2, 3 -> 24
// channels on the NHWC input). tract ran it as a transpose, an im2col gather and a matrix product:
// about half of the detector graph's time once the other layers were ferrite's.

/// A dense `k x k` convolution with bias (stride 1 or 2, explicit padding), optionally followed by
/// ReLU, from an NHWC or NCHW input to an NCHW output.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageConv {
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    /// Input height and width.
    hw: (usize, usize),
    pad_before: (usize, usize),
    pad_after: (usize, usize),
    /// Whether the input is `[N, H, W, C]` (the graph's image) rather than `[N, C, H, W]`.
    nhwc: bool,
    /// Output channels per register tile.
    tile: usize,
    /// `[tile][c][ky][kx][r]`, the last tile padded with zero weights.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Per tap `(c, ky, kx)`, where its value for output (0, 0) sits in the phase planes.
    offsets: Vec<usize>,
    relu: bool,
    backend: Backend,
}

impl Eq for ImageConv {}

impl ImageConv {
    /// `weights` is ONNX's `[O][C][k][k]`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        (in_channels, out_channels): (usize, usize),
        (kernel, stride): (usize, usize),
        hw: (usize, usize),
        (pad_before, pad_after): ((usize, usize), (usize, usize)),
        nhwc: bool,
        weights: &[f32],
        bias: &[f32],
        backend: Backend,
    ) -> ImageConv {
        let taps = in_channels * kernel * kernel;
        assert!(weights.len() == out_channels * taps && bias.len() == out_channels);
        let (tile, packed, padded_bias) = pack_channel_tiles(weights, bias, taps, backend);
        let mut op = ImageConv {
            in_channels,
            out_channels,
            kernel,
            stride,
            hw,
            pad_before,
            pad_after,
            nhwc,
            tile,
            weights: packed,
            bias: padded_bias,
            offsets: Vec::new(),
            relu: false,
            backend,
        };
        let (row, channel_planes) = op.phase_geometry();
        let plane = op.padded_hw().0 * row;
        op.offsets = (0..taps)
            .map(|tap| {
                let (c, ky, kx) = (tap / (kernel * kernel), tap / kernel % kernel, tap % kernel);
                c * channel_planes + (kx % stride) * plane + ky * row + kx / stride
            })
            .collect();
        op
    }

    fn padded_hw(&self) -> (usize, usize) {
        (
            self.hw.0 + self.pad_before.0 + self.pad_after.0,
            self.hw.1 + self.pad_before.1 + self.pad_after.1,
        )
    }

    fn output_hw(&self) -> (usize, usize) {
        let (ph, pw) = self.padded_hw();
        (
            (ph - self.kernel) / self.stride + 1,
            (pw - self.kernel) / self.stride + 1,
        )
    }

    fn input_shape(&self, batch: usize) -> [usize; 4] {
        let (h, w) = self.hw;
        if self.nhwc {
            [batch, h, w, self.in_channels]
        } else {
            [batch, self.in_channels, h, w]
        }
    }

    /// Geometry of the padded input split into column phases (as in [`Depthwise3x3`]): the
    /// length of a phase row, and of one channel's `stride` phase planes.
    fn phase_geometry(&self) -> (usize, usize) {
        let (ph, pw) = self.padded_hw();
        let row = pw.div_ceil(self.stride);
        (row, self.stride * ph * row)
    }

    /// One image: `input` in the op's layout, `out` `[O][OH][OW]`; `planes` is scratch.
    fn run_image(&self, input: &[f32], out: &mut [f32], planes: &mut Vec<f32>) {
        let (h, w) = self.hw;
        let (ph, _) = self.padded_hw();
        let (oh, ow) = self.output_hw();
        let (row, channel_planes) = self.phase_geometry();
        let plane = ph * row;
        let (c_count, s, k) = (self.in_channels, self.stride, self.kernel);
        assert!(input.len() == c_count * h * w && out.len() == self.out_channels * oh * ow);
        // The last column and row any tap reads lie inside the planes.
        assert!(ow - 1 + (k - 1) / s < row && s * (oh - 1) + k - 1 < ph);
        planes.clear();
        planes.resize(c_count * channel_planes, 0.0);
        for y in 0..h {
            let start = (y + self.pad_before.0) * row;
            for x in 0..w {
                let px = x + self.pad_before.1;
                let at = (px % s) * plane + start + px / s;
                for c in 0..c_count {
                    let value = if self.nhwc {
                        input[(y * w + x) * c_count + c]
                    } else {
                        input[(c * h + y) * w + x]
                    };
                    planes[c * channel_planes + at] = value;
                }
            }
        }
        // Safety: the assertions above bound every read and write of the kernel.
        unsafe {
            match self.backend {
                #[cfg(target_arch = "x86_64")]
                Backend::Avx512 => avx512::image_conv(self, planes, out),
                #[cfg(target_arch = "aarch64")]
                Backend::Neon => image_conv_any::<
                    neon::Neon,
                    { Pointwise::NARROW_TILE.0 },
                    { Pointwise::NARROW_TILE.1 },
                >(self, planes, out),
                _ => {
                    image_conv_any::<Portable, { Pointwise::WIDE_TILE.0 }, { Pointwise::WIDE_TILE.1 }>(
                        self, planes, out,
                    )
                }
            }
        }
    }
}

/// Safety: as asserted in [`ImageConv::run_image`]; `R` must be the op's tile.
#[inline(always)]
unsafe fn image_conv_any<V: Vector, const R: usize, const P: usize>(
    op: &ImageConv,
    planes: &[f32],
    out: &mut [f32],
) {
    debug_assert_eq!(op.tile, R);
    let (oh, ow) = op.output_hw();
    let tiles = op.out_channels.div_ceil(R);
    for oy in 0..oh {
        let mut x0 = 0;
        while x0 + P * LANES <= ow {
            for t in 0..tiles {
                image_conv_tile::<V, R, P>(op, t, oy, x0, planes, out);
            }
            x0 += P * LANES;
        }
        while x0 + LANES <= ow {
            for t in 0..tiles {
                image_conv_tile::<V, R, 1>(op, t, oy, x0, planes, out);
            }
            x0 += LANES;
        }
        for x in x0..ow {
            image_conv_pixel(op, oy, x, planes, out);
        }
    }
}

/// Output channels `t * R..` of pixels `x0..x0 + P * LANES` of row `oy`.
// The accumulators are indexed [channel][vector] from two nested loops; iterators would hide that.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn image_conv_tile<V: Vector, const R: usize, const P: usize>(
    op: &ImageConv,
    t: usize,
    oy: usize,
    x0: usize,
    planes: &[f32],
    out: &mut [f32],
) {
    let (oh, ow) = op.output_hw();
    let (row, _) = op.phase_geometry();
    let k = op.kernel;
    let taps = op.in_channels * k * k;
    let mut acc = [[V::zero(); P]; R];
    for (r, lane) in acc.iter_mut().enumerate() {
        lane.fill(V::splat(*op.bias.get_unchecked(t * R + r)));
    }
    let weights = op.weights.as_ptr().add(t * taps * R);
    let base = planes.as_ptr().add(oy * op.stride * row + x0);
    for (tap, &offset) in op.offsets.iter().enumerate() {
        let src = base.add(offset);
        let xv: [V; P] = std::array::from_fn(|p| V::load(src.add(p * LANES)));
        let w = weights.add(tap * R);
        for r in 0..R {
            let s = V::splat(*w.add(r));
            for p in 0..P {
                acc[r][p] = V::mul_add(xv[p], s, acc[r][p]);
            }
        }
    }
    let valid = R.min(op.out_channels - t * R);
    let zero = V::zero();
    let dst = out.as_mut_ptr();
    for (r, lane) in acc.iter().enumerate().take(valid) {
        let at = ((t * R + r) * oh + oy) * ow + x0;
        for (p, v) in lane.iter().enumerate() {
            let v = if op.relu { V::max(*v, zero) } else { *v };
            v.store(dst.add(at + p * LANES));
        }
    }
}

/// The scalar path, for pixels past the last whole vector of a row.
fn image_conv_pixel(op: &ImageConv, oy: usize, x: usize, planes: &[f32], out: &mut [f32]) {
    let (oh, ow) = op.output_hw();
    let (row, _) = op.phase_geometry();
    let k = op.kernel;
    let taps = op.in_channels * k * k;
    let base = oy * op.stride * row + x;
    for o in 0..op.out_channels {
        let (t, r) = (o / op.tile, o % op.tile);
        let mut acc = op.bias[o];
        for (tap, &offset) in op.offsets.iter().enumerate() {
            acc += op.weights[(t * taps + tap) * op.tile + r] * planes[base + offset];
        }
        out[(o * oh + oy) * ow + x] = if op.relu { acc.max(0.0) } else { acc };
    }
}

impl Op for ImageConv {
    fn name(&self) -> StaticName {
        "FerriteImageConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{} stride {}, {} -> {} channels, {}, relu {}, {}",
            self.kernel,
            self.kernel,
            self.stride,
            self.in_channels,
            self.out_channels,
            if self.nhwc { "NHWC" } else { "NCHW" },
            self.relu,
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(ImageConv);

impl Kernel for ImageConv {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        let batch = shape.first().copied().unwrap_or(0);
        if shape != self.input_shape(batch) {
            bail!(
                "image conv built for {:?}, got {shape:?}",
                self.input_shape(batch)
            );
        }
        let (oh, ow) = self.output_hw();
        Ok(tvec![batch, self.out_channels, oh, ow])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let (oh, ow) = self.output_hw();
        let in_image = self.in_channels * self.hw.0 * self.hw.1;
        let out_image = self.out_channels * oh * ow;
        with_phase_planes(input, in_image, out, out_image, |input, out, planes| {
            self.run_image(input, out, planes)
        });
        Ok(())
    }
}

impl TypedOp for ImageConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.output_hw();
        Ok(tvec!(f32::fact(&[
            inputs[0].shape[0].clone(),
            self.out_channels.into(),
            oh.into(),
            ow.into()
        ])))
    }

    as_op!();
}

/// A dense (one group) convolution of 2 to 7 taps a side, stride 1 or 2, with a constant kernel
/// and bias, then optionally ReLU. When its input is a `MoveAxis` from NHWC, the op reads the
/// NHWC tensor itself and the transpose goes.
fn match_image_conv(model: &TypedModel, node: usize, backend: Backend) -> Option<FusedMatch> {
    let n = model.node(node);
    let conv = n.op_as::<Conv>()?;
    let spec = &conv.pool_spec;
    let kernel = match spec.kernel_shape.as_slice() {
        [a, b] if a == b && (2..=7).contains(a) => *a,
        _ => return None,
    };
    let stride = match spec.strides.as_ref().map(|s| s.as_slice()) {
        None | Some([1, 1]) => 1,
        Some([2, 2]) => 2,
        _ => return None,
    };
    let (before, after) = match &spec.padding {
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false)
            if b.len() == 2 && a.len() == 2 =>
        {
            ((b[0], b[1]), (a[0], a[1]))
        }
        _ => return None,
    };
    let fits = spec.data_format == DataFormat::NCHW
        && is_unit(&spec.dilations)
        && conv.group == 1
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 3
        && is_f32_rank4(model, n.inputs[0])
        && is_f32_rank4(model, OutletId::new(node, 0))
        && before.0.max(before.1).max(after.0).max(after.1) < kernel;
    if !fits {
        return None;
    }
    let nchw = model
        .outlet_fact(n.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let (in_channels, out_channels) = (spec.input_channels, spec.output_channels);
    let weights = const_f32(model, n.inputs[1])?;
    let bias = const_f32(model, n.inputs[2])?;
    let bias = match bias.len() {
        1 => vec![bias[0]; out_channels],
        len if len == out_channels => bias,
        _ => return None,
    };
    if nchw[1] != in_channels || weights.len() != out_channels * in_channels * kernel * kernel {
        return None;
    }
    // Reading the image before tract's transpose, when the transpose has no other reader.
    let producer = model.node(n.inputs[0].node);
    let transposed = producer.op_as::<AxisOp>() == Some(&AxisOp::Move(3, 1))
        && single_successor(model, producer.id) == Some(node)
        && producer.inputs.len() == 1
        && is_f32_rank4(model, producer.inputs[0]);
    let input = if transposed {
        producer.inputs[0]
    } else {
        n.inputs[0]
    };
    let mut op = ImageConv::new(
        (in_channels, out_channels),
        (kernel, stride),
        (nchw[2], nchw[3]),
        (before, after),
        transposed,
        &weights,
        &bias,
        backend,
    );
    let (ph, pw) = op.padded_hw();
    if ph < kernel || pw < kernel {
        return None;
    }
    let (oh, ow) = op.output_hw();
    let declared = model
        .outlet_fact(OutletId::new(node, 0))
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    if declared != [nchw[0], out_channels, oh, ow] {
        return None;
    }
    let mut last = node;
    let mut nodes = 1 + usize::from(transposed);
    if let Some(max) = single_successor(model, last).filter(|&s| is_relu(model, s)) {
        op.relu = true;
        last = max;
        nodes += 1;
    }
    Some(FusedMatch {
        inputs: tvec![input],
        last,
        nodes,
        op: Box::new(op),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) without a random-number crate.
    fn values(n: usize, seed: u64) -> Vec<f32> {
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

    /// Plain NCHW convolution, padding 1, as the ONNX operator defines it.
    fn conv_reference(
        x: &[f32],
        (c, h, w): (usize, usize, usize),
        k: &[f32],
        b: &[f32],
        co: usize,
        relu: bool,
    ) -> Vec<f32> {
        let mut out = vec![0.0; co * h * w];
        for o in 0..co {
            for y in 0..h {
                for xx in 0..w {
                    let mut sum = b[o];
                    for i in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) =
                                    (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    sum += x[(i * h + iy as usize) * w + ix as usize]
                                        * k[((o * c + i) * 3 + ky) * 3 + kx];
                                }
                            }
                        }
                    }
                    out[(o * h + y) * w + xx] = if relu { sum.max(0.0) } else { sum };
                }
            }
        }
        out
    }

    /// 3x3 max-pool, stride 2, padding 1; padded positions are ignored (not zeros).
    fn pool_reference(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = (pool_out(h), pool_out(w));
        let mut out = vec![0.0; c * oh * ow];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                m = m.max(x[(ch * h + iy as usize) * w + ix as usize]);
                            }
                        }
                    }
                    out[(ch * oh + oy) * ow + ox] = m;
                }
            }
        }
        out
    }

    fn backends() -> Vec<Backend> {
        [Backend::Portable, Backend::Avx512, Backend::Neon]
            .into_iter()
            .filter(|b| b.available())
            .collect()
    }

    /// Builds a chain of `(out channels, relu, pool after)` convolutions on a `[c, h, w]` input and
    /// checks it against the reference on every backend this CPU has.
    fn check_chain(c: usize, h: usize, w: usize, layers: &[(usize, bool, bool)], seed: u64) {
        let input = values(c * h * w, seed);
        let (mut want, mut shape) = (input.clone(), (c, h, w));
        let mut stages = Vec::new();
        for (ix, &(co, relu, pool)) in layers.iter().enumerate() {
            // Scaled by fan-in so activations stay near 1 and an absolute tolerance means something.
            let scale = 1.0 / (3.0 * (shape.0 as f32).sqrt());
            let k: Vec<f32> = values(co * shape.0 * 9, seed + 10 + ix as u64)
                .iter()
                .map(|v| v * scale)
                .collect();
            let b = values(co, seed + 100 + ix as u64);
            want = conv_reference(&want, shape, &k, &b, co, relu);
            stages.push(Stage::Conv(Conv3x3::new(&k, &b, shape.0, co, relu)));
            shape.0 = co;
            if pool {
                want = pool_reference(&want, co, shape.1, shape.2);
                stages.push(Stage::MaxPool);
                shape = (co, pool_out(shape.1), pool_out(shape.2));
            }
        }
        for backend in backends() {
            let chain = ConvChain::new(stages.clone(), backend, c, h, w);
            assert_eq!(chain.output_hw(), (shape.1, shape.2));
            let mut got = vec![f32::NAN; want.len()];
            let mut scratch = Scratch::default();
            // Twice: the second run reuses scratch buffers that hold the first run's values.
            for _ in 0..2 {
                chain.run_image(&input, &mut got, &mut scratch);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "{backend:?} {c}x{h}x{w} {layers:?}: max error {worst}"
                );
            }
        }
    }

    #[test]
    fn single_channel_input_then_the_ensembles_tile_shapes() {
        // 1 -> 16 at width 48 (1x16 tiles), pool, 16 -> 32 at 24 (2x12), pool, 32 -> 64 at 12,
        // pool, 64 -> 128 at 6 (2x6): the shipped backbone's shapes.
        check_chain(
            1,
            48,
            48,
            &[
                (16, true, false),
                (16, true, true),
                (32, true, true),
                (64, true, true),
                (128, true, true),
            ],
            1,
        );
    }

    #[test]
    fn odd_channels_and_sizes_use_padding_lanes_and_remainder_tiles() {
        // 3 and 20 channels (partial blocks), widths that leave remainders, no ReLU on the last.
        check_chain(3, 7, 13, &[(20, true, true), (5, false, false)], 2);
        check_chain(2, 5, 26, &[(48, true, false), (17, true, true)], 3);
        check_chain(16, 1, 1, &[(16, true, true)], 4);
    }

    #[test]
    fn depthwise_matches_a_plain_reference_for_both_strides_and_paddings() {
        for (stride, before, after, h, w) in [
            (1, (1, 1), (1, 1), 9, 21),
            (2, (0, 0), (1, 1), 16, 33),
            (2, (1, 0), (0, 2), 7, 5),
        ] {
            let channels = 3;
            let input = values(channels * h * w, 7);
            let weights = values(channels * 9, 8);
            let bias = values(channels, 9);
            for backend in backends() {
                let op = Depthwise3x3 {
                    channels,
                    stride,
                    hw: (h, w),
                    pad_before: before,
                    pad_after: after,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    backend,
                };
                let (oh, ow) = op.output_hw();
                let mut got = vec![f32::NAN; channels * oh * ow];
                op.run_image(&input, &mut got, &mut Vec::new());
                for c in 0..channels {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut want = bias[c];
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (oy * stride + ky) as isize - before.0 as isize;
                                    let ix = (ox * stride + kx) as isize - before.1 as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        want += weights[c * 9 + ky * 3 + kx]
                                            * input[(c * h + iy as usize) * w + ix as usize];
                                    }
                                }
                            }
                            let g = got[(c * oh + oy) * ow + ox];
                            assert!(
                                (g - want).abs() < 1e-5,
                                "{backend:?} stride {stride} ({c},{oy},{ox}): {g} != {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_2x2_drops_odd_edges() {
        let (h, w) = (5, 7);
        let input = values(h * w, 11);
        for backend in backends() {
            let mut got = vec![f32::NAN; (h / 2) * (w / 2)];
            MaxPool2x2 { backend }.run_plane(&input, w, &mut got);
            for oy in 0..h / 2 {
                for ox in 0..w / 2 {
                    let at = |y: usize, x: usize| input[y * w + x];
                    let want = at(2 * oy, 2 * ox)
                        .max(at(2 * oy, 2 * ox + 1))
                        .max(at(2 * oy + 1, 2 * ox))
                        .max(at(2 * oy + 1, 2 * ox + 1));
                    assert_eq!(got[oy * (w / 2) + ox], want, "{backend:?}");
                }
            }
        }
    }

    #[test]
    fn pointwise_matches_a_plain_reference_with_residual_relu_and_tails() {
        // (in, out, h, w, residual channels, relu): whole tiles, a partial channel tile, pixel
        // counts that leave a one-vector tile and a scalar tail, a shortcut narrower than the
        // output (BlazeFace's zero-padded channels) and none at all.
        for (i, o, h, w, residual, relu) in [
            (24, 28, 8, 8, Some(24), true),
            (5, 13, 5, 7, Some(13), false),
            (3, 30, 4, 5, None, true),
            (16, 7, 1, 3, Some(2), true),
        ] {
            let n = h * w;
            let input = values(i * n, 21);
            let weights = values(o * i, 22);
            let bias = values(o, 23);
            let shortcut = residual.map(|r| values(r * n, 24));
            for backend in backends() {
                let op = Pointwise::new((i, o), (h, w), &weights, &bias, residual, relu, backend);
                let mut got = vec![f32::NAN; o * n];
                op.run_image(&input, shortcut.as_deref(), &mut got);
                for c in 0..o {
                    for p in 0..n {
                        let mut want = bias[c];
                        for k in 0..i {
                            want += weights[c * i + k] * input[k * n + p];
                        }
                        if let (Some(r), Some(s)) = (residual, &shortcut) {
                            if c < r {
                                want += s[c * n + p];
                            }
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let g = got[c * n + p];
                        assert!(
                            (g - want).abs() < 1e-5,
                            "{backend:?} {i}->{o} {h}x{w} ({c},{p}): {g} != {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn image_conv_matches_a_plain_reference_in_both_layouts() {
        // (c, o, k, stride, h, w, before, after): BlazeFace's first layer, a stride-1 case with a
        // pixel tail, and odd sizes with asymmetric padding and a partial channel tile.
        for (c, o, k, stride, h, w, before, after) in [
            (3, 24, 5, 2, 64, 64, (1, 1), (2, 2)),
            (2, 5, 3, 1, 6, 37, (1, 1), (1, 1)),
            (3, 13, 4, 2, 9, 11, (0, 2), (3, 1)),
        ] {
            let nchw = values(c * h * w, 31);
            let mut nhwc = vec![0.0; c * h * w];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        nhwc[(y * w + x) * c + ch] = nchw[(ch * h + y) * w + x];
                    }
                }
            }
            let weights = values(o * c * k * k, 32);
            let bias = values(o, 33);
            for backend in backends() {
                for (layout_nhwc, input) in [(false, &nchw), (true, &nhwc)] {
                    for relu in [false, true] {
                        let mut op = ImageConv::new(
                            (c, o),
                            (k, stride),
                            (h, w),
                            (before, after),
                            layout_nhwc,
                            &weights,
                            &bias,
                            backend,
                        );
                        op.relu = relu;
                        let (oh, ow) = op.output_hw();
                        let mut got = vec![f32::NAN; o * oh * ow];
                        op.run_image(input, &mut got, &mut Vec::new());
                        for oc in 0..o {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let mut want = bias[oc];
                                    for ch in 0..c {
                                        for ky in 0..k {
                                            for kx in 0..k {
                                                let iy =
                                                    (oy * stride + ky) as isize - before.0 as isize;
                                                let ix =
                                                    (ox * stride + kx) as isize - before.1 as isize;
                                                if iy < 0 || ix < 0 {
                                                    continue;
                                                }
                                                let (iy, ix) = (iy as usize, ix as usize);
                                                if iy < h && ix < w {
                                                    want += weights
                                                        [((oc * c + ch) * k + ky) * k + kx]
                                                        * nchw[(ch * h + iy) * w + ix];
                                                }
                                            }
                                        }
                                    }
                                    if relu {
                                        want = want.max(0.0);
                                    }
                                    let g = got[(oc * oh + oy) * ow + ox];
                                    assert!(
                                        (g - want).abs() < 1e-4,
                                        "{backend:?} nhwc {layout_nhwc} {k}x{k}/{stride} \
                                         ({oc},{oy},{ox}): {g} != {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn layouts_zero_their_border_only() {
        let layout = Layout {
            blocks: 2,
            h: 3,
            w: 4,
            lanes: LANES,
        };
        let mut buf = vec![1.0; layout.len()];
        layout.zero_border(&mut buf);
        let zeros = buf.iter().filter(|&&v| v == 0.0).count();
        // Per block: (h + 2) x (w + 2) positions, h x w of them interior.
        assert_eq!(zeros, 2 * (5 * 6 - 3 * 4) * LANES);
        assert_eq!(buf[layout.at(1, 2, 3)], 1.0);
    }
}
