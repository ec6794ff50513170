//! The int8 ensemble's convolution chains: each chain of `QLinearConv 3x3 -> DequantizeLinear ->
//! Relu (-> MaxPool 3x3/2) -> QuantizeLinear -> QLinearConv ...` runs as one [`QConvChain`] in the
//! channel-blocked layout of the fp32 chains ([`Layout`]), with the zero point as the border.
//!
//! Every stage stays in integers. A convolution sums int8 products into int32 and requantises
//! ([`Requant`]) straight into the next convolution's input scale, with the dequantise, ReLU and
//! quantise nodes between them fused in. A max-pool compares quantised values: those nodes are
//! monotone, so pooling before or after them gives the same result. The chain ends where the
//! graph goes back to f32 (the ensemble's global average pool), writing dequantised values.
//!
//! The arithmetic is onnxruntime's QOperator arithmetic, lane for lane: float requantisation scale
//! `x_scale * w_scale / y_scale`, clamping, rounding half to even, and a QuantizeLinear that
//! divides by its scale. tract computes the same nodes with its own roundings (a multiply by the
//! inverse scale, fixed-point requantisation), so the two can differ by one step at a tie.

use std::cell::RefCell;

use super::conv_chain::{pool_out, Layout};
use super::vector::int8::{Elem, Int8Vector, Packed, PortableInt8, Requant};
#[cfg(target_arch = "x86_64")]
use super::vector::int8_avx2;
#[cfg(target_arch = "aarch64")]
use super::vector::int8_neon;
#[cfg(target_arch = "x86_64")]
use super::vector::int8_vnni;
use super::{Int8Backend, LANES};

/// One 3x3, stride-1, pad-1 QLinearConv with symmetric weights (zero point 0), packed for one
/// backend.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct QConv3x3 {
    in_channels: usize,
    out_channels: usize,
    /// Channels per input vector: the backend's step for a single-channel image, else [`LANES`].
    in_lanes: usize,
    /// `[out block][in block][ky][kx][step][out lane][k]`, `k < K` the input channels of a step;
    /// zero where either channel is padding.
    weights: Packed,
    /// The QLinearConv bias minus `(x_zero + offset) * sum of the channel's weights`, so that the
    /// border (which holds `x_zero`) and every input need no zero-point correction, and the
    /// backend's activation offset ([`Storage::activation_offset`]) cancels. Padded to blocks.
    bias: Vec<i32>,
    /// `x_scale * w_scale / y_scale` per output channel, padded to blocks.
    scale: Vec<f32>,
    pub(super) requant: Requant,
}

/// A QLinearConv's parameters, as the ONNX operator takes them (weight zero point 0).
pub(super) struct QConvParams<'a> {
    /// OIHW `[out, in, 3, 3]`.
    pub kernel: &'a [i8],
    pub bias: &'a [i32],
    pub in_channels: usize,
    pub out_channels: usize,
    pub x_scale: f32,
    pub x_zero: i32,
    /// One per output channel, or one for all.
    pub w_scale: &'a [f32],
    pub requant: Requant,
}

impl QConv3x3 {
    pub(super) fn new(p: &QConvParams, backend: Int8Backend) -> Self {
        let (k, storage) = backend.step();
        let in_lanes = if p.in_channels == 1 { k } else { LANES };
        let in_blocks = p.in_channels.div_ceil(in_lanes);
        let out_blocks = p.out_channels.div_ceil(LANES);
        let steps = in_lanes / k;
        let mut packed = vec![0i16; out_blocks * in_blocks * 9 * in_lanes * LANES];
        for o in 0..p.out_channels {
            let (ob, ol) = (o / LANES, o % LANES);
            for i in 0..p.in_channels {
                let (ib, il) = (i / in_lanes, i % in_lanes);
                let (step, kk) = (il / k, il % k);
                for tap in 0..9 {
                    let at =
                        ((((ob * in_blocks + ib) * 9 + tap) * steps + step) * LANES + ol) * k + kk;
                    packed[at] = p.kernel[(o * p.in_channels + i) * 9 + tap] as i16;
                }
            }
        }
        let weights = storage.pack(packed);
        let mut bias = vec![0; out_blocks * LANES];
        let mut scale = vec![0.0; out_blocks * LANES];
        for o in 0..p.out_channels {
            let sum: i32 = p.kernel[o * p.in_channels * 9..][..p.in_channels * 9]
                .iter()
                .map(|&w| w as i32)
                .sum();
            bias[o] = p.bias[o] - (p.x_zero + storage.activation_offset()) * sum;
            let w_scale = p.w_scale[if p.w_scale.len() == 1 { 0 } else { o }];
            // onnxruntime's order of operations, so the product rounds as it does there.
            scale[o] = p.x_scale * w_scale / p.requant.y_scale;
        }
        QConv3x3 {
            in_channels: p.in_channels,
            out_channels: p.out_channels,
            in_lanes,
            weights,
            bias,
            scale,
            requant: p.requant,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum QStage {
    Conv(QConv3x3),
    /// 3x3 window, stride 2, padding 1, after a ReLU: the border's zero point is the smallest
    /// value a ReLU leaves, so it never wins, as tract's "ignore the padding" has it.
    MaxPool,
}

/// A chain from an NCHW int8 input `[n, c, h, w]` (the first convolution's input scale and zero
/// point) to an NCHW f32 output, the last convolution's ReLU (and pool) output dequantised.
#[derive(Clone, Debug, PartialEq)]
pub struct QConvChain {
    pub(super) stages: Vec<QStage>,
    pub(super) backend: Int8Backend,
    pub(super) input_channels: usize,
    pub(super) output_channels: usize,
    pub(super) input_zero: i32,
    /// The layout each stage reads, then the final one.
    pub(super) layouts: Vec<Layout>,
}

// As `ConvChain`'s: the scales are never NaN.
impl Eq for QConvChain {}

impl QConvChain {
    /// `stages` must start with a convolution and end with one whose requantisation has no
    /// `next` (possibly followed by a pool); every other convolution's has one.
    pub(super) fn new(
        stages: Vec<QStage>,
        backend: Int8Backend,
        input_channels: usize,
        input_zero: i32,
        h: usize,
        w: usize,
    ) -> Self {
        let first_lanes = match stages.first() {
            Some(QStage::Conv(conv)) => conv.in_lanes,
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
            layouts.push(match stage {
                QStage::Conv(conv) => {
                    output_channels = conv.out_channels;
                    Layout {
                        blocks: conv.out_channels.div_ceil(LANES),
                        lanes: LANES,
                        ..last
                    }
                }
                QStage::MaxPool => Layout {
                    h: pool_out(last.h),
                    w: pool_out(last.w),
                    ..last
                },
            });
        }
        QConvChain {
            stages,
            backend,
            input_channels,
            output_channels,
            input_zero,
            layouts,
        }
    }

    pub(super) fn output_hw(&self) -> (usize, usize) {
        let last = self.layouts[self.layouts.len() - 1];
        (last.h, last.w)
    }

    pub(super) fn conv_count(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| matches!(s, QStage::Conv(_)))
            .count()
    }

    /// The last convolution's output scale and zero point: what the output is dequantised with.
    fn output_quant(&self) -> (f32, i32) {
        self.stages
            .iter()
            .rev()
            .find_map(|s| match s {
                QStage::Conv(conv) => Some((conv.requant.y_scale, conv.requant.y_zero)),
                QStage::MaxPool => None,
            })
            .unwrap_or((1.0, self.input_zero))
    }

    fn largest_layout(&self) -> usize {
        self.layouts.iter().map(Layout::len).max().unwrap_or(0)
    }

    /// Runs the chain on one image `[c][h][w]`, writing `[c'][h'][w']` to `output`.
    pub(super) fn run_image(&self, input: &[i8], output: &mut [f32]) {
        let first = self.layouts[0];
        let (h, w) = self.output_hw();
        assert!(input.len() == self.input_channels * first.h * first.w);
        assert!(output.len() == self.output_channels * h * w);
        let len = self.largest_layout();
        // Every arm: the assertions above are `run_any`'s contract and the scratch buffers hold
        // `len`; the backend is available (the module's invariant), so an entry point with a
        // target feature runs only on a CPU that has it, and the weights were packed for it.
        match self.backend {
            #[cfg(target_arch = "x86_64")]
            Int8Backend::Avx512Vnni => with_scratch(&SCRATCH_U8, len, |src, dst| {
                // SAFETY: see above; this CPU has AVX-512F and AVX512-VNNI.
                unsafe { int8_vnni::run(self, input, output, src, dst) }
            }),
            #[cfg(target_arch = "x86_64")]
            Int8Backend::Avx2 => with_scratch(&SCRATCH_I16, len, |src, dst| {
                // SAFETY: see above; this CPU has AVX2.
                unsafe { int8_avx2::run(self, input, output, src, dst) }
            }),
            #[cfg(target_arch = "aarch64")]
            Int8Backend::NeonDot => with_scratch(&SCRATCH_I8, len, |src, dst| {
                // SAFETY: see above; this CPU has the dot-product extension.
                unsafe { int8_neon::run_dot(self, input, output, src, dst) }
            }),
            #[cfg(target_arch = "aarch64")]
            Int8Backend::Neon => with_scratch(&SCRATCH_I16, len, |src, dst| {
                // SAFETY: see above; NEON is part of every aarch64 CPU.
                unsafe { int8_neon::run_i16(self, input, output, src, dst) }
            }),
            _ => with_scratch(&SCRATCH_I8, len, |src, dst| {
                // SAFETY: see above; the portable code needs no particular instructions.
                unsafe { run_any::<PortableInt8>(self, input, output, src, dst) }
            }),
        }
    }
}

type Buffers<T> = RefCell<(Vec<T>, Vec<T>)>;

thread_local! {
    /// Ping-pong activation buffers per thread and element type, grown once and then reused, so
    /// a warm pipeline allocates nothing here per frame.
    static SCRATCH_I8: Buffers<i8> = RefCell::default();
    static SCRATCH_I16: Buffers<i16> = RefCell::default();
    #[cfg(target_arch = "x86_64")]
    static SCRATCH_U8: Buffers<u8> = RefCell::default();
}

fn with_scratch<T: Elem + 'static>(
    key: &'static std::thread::LocalKey<Buffers<T>>,
    len: usize,
    f: impl FnOnce(&mut [T], &mut [T]),
) {
    key.with(|cell| {
        let mut buffers = cell.borrow_mut();
        let (a, b) = &mut *buffers;
        if a.len() < len {
            a.resize(len, T::default());
            b.resize(len, T::default());
        }
        f(&mut a[..len], &mut b[..len]);
    })
}

/// The whole chain on one image.
///
/// # Safety
///
/// The CPU has `V`'s instructions; `input` holds the chain's input image and `output` its output
/// image (as [`QConvChain::run_image`] asserts); `src` and `dst` hold at least the largest layout;
/// every convolution's weights are packed for `V` (the chain was built for `V`'s backend).
#[inline(always)]
pub(super) unsafe fn run_any<'a, V: Int8Vector>(
    chain: &QConvChain,
    input: &[i8],
    output: &mut [f32],
    mut src: &'a mut [V::Elem],
    mut dst: &'a mut [V::Elem],
) {
    let first = chain.layouts[0];
    let mut zero = chain.input_zero;
    // Whole first buffer: lanes past the last input channel must hold something finite; their
    // weights are zero.
    src[..first.len()].fill(V::Elem::from_i32(zero));
    let (h, w) = (first.h, first.w);
    for c in 0..chain.input_channels {
        let (b, l) = (c / first.lanes, c % first.lanes);
        for y in 0..h {
            let row = &input[(c * h + y) * w..][..w];
            let base = first.at(b, y + 1, 1) + l;
            for (x, v) in row.iter().enumerate() {
                src[base + x * first.lanes] = V::Elem::from_i32(*v as i32);
            }
        }
    }
    for (stage, pair) in chain.stages.iter().zip(chain.layouts.windows(2)) {
        let (from, to) = (pair[0], pair[1]);
        if let QStage::Conv(conv) = stage {
            zero = conv.requant.out_zero();
        }
        let out = &mut dst[..to.len()];
        to.fill_border(out, V::Elem::from_i32(zero));
        let inp = &src[..from.len()];
        // SAFETY: `from` and `to` are the stage's layouts (`QConvChain::new` built them from the
        // stages) and the slices hold them; the weights are packed for `V`.
        unsafe {
            match stage {
                QStage::Conv(conv) => conv_stage::<V>(conv, &from, inp, &to, out),
                QStage::MaxPool => maxpool_stage::<V>(&from, inp, &to, out),
            }
        }
        std::mem::swap(&mut src, &mut dst);
    }
    let (scale, out_zero) = chain.output_quant();
    let last = chain.layouts[chain.layouts.len() - 1];
    for c in 0..chain.output_channels {
        let (b, l) = (c / last.lanes, c % last.lanes);
        for y in 0..last.h {
            let base = last.at(b, y + 1, 1) + l;
            let row = &mut output[(c * last.h + y) * last.w..][..last.w];
            for (x, v) in row.iter_mut().enumerate() {
                // DequantizeLinear.
                *v = (src[base + x * last.lanes].to_i32() - out_zero) as f32 * scale;
            }
        }
    }
}

/// # Safety
///
/// The CPU has `V`'s instructions; `from` is `conv`'s input layout and `to` its output layout,
/// `src` and `dst` hold them, and `conv`'s weights are packed for `V`.
#[inline(always)]
unsafe fn conv_stage<V: Int8Vector>(
    conv: &QConv3x3,
    from: &Layout,
    src: &[V::Elem],
    to: &Layout,
    dst: &mut [V::Elem],
) {
    assert!(src.len() >= from.len() && dst.len() >= to.len() && from.h == to.h && from.w == to.w);
    assert!(from.lanes == conv.in_lanes && from.blocks == conv.in_channels.div_ceil(conv.in_lanes));
    assert!(to.lanes == LANES && to.blocks == conv.out_channels.div_ceil(LANES));
    assert!(conv.in_lanes.is_multiple_of(V::K));
    let Some(weights) = V::Elem::unpack(&conv.weights) else {
        unreachable!("weights packed for another backend");
    };
    assert!(weights.len() == to.blocks * from.blocks * 9 * from.lanes * LANES);
    // The input's lanes as a constant, so that a tap's steps unroll and the accumulators stay in
    // registers: LANES, or one step's K for a single-channel image.
    // SAFETY: the assertions above are `conv_lanes`' contract, with `IL == from.lanes`.
    unsafe {
        match from.lanes {
            LANES => conv_lanes::<V, LANES>(conv, weights, from, src, to, dst),
            4 => conv_lanes::<V, 4>(conv, weights, from, src, to, dst),
            2 => conv_lanes::<V, 2>(conv, weights, from, src, to, dst),
            1 => conv_lanes::<V, 1>(conv, weights, from, src, to, dst),
            other => unreachable!("{other} input lanes"),
        }
    }
}

/// Walks the output in register tiles: [`Int8Vector::BLOCKS`] output blocks where two remain,
/// and the widest of 12, 6, 4 or 1 pixels that [`Int8Vector::TILE`] allows and the row holds.
///
/// # Safety
///
/// As [`conv_stage`] checks, with `IL == from.lanes` and `weights` the packed weights it checked.
#[inline(always)]
unsafe fn conv_lanes<V: Int8Vector, const IL: usize>(
    conv: &QConv3x3,
    weights: &[V::Elem],
    from: &Layout,
    src: &[V::Elem],
    to: &Layout,
    dst: &mut [V::Elem],
) {
    let (weights, src, dst) = (weights.as_ptr(), src.as_ptr(), dst.as_mut_ptr());
    for y in 0..to.h {
        let mut ob = 0;
        while ob < to.blocks {
            let blocks = if V::BLOCKS >= 2 && ob + 2 <= to.blocks {
                2
            } else {
                1
            };
            let mut x0 = 0;
            while x0 < to.w {
                let left = to.w - x0;
                let x = if V::TILE >= 12 && left >= 12 {
                    12
                } else if V::TILE >= 6 && left >= 6 {
                    6
                } else if V::TILE >= 4 && left >= 4 {
                    4
                } else {
                    1
                };
                let at = TileAt { ob, y, x0 };
                // SAFETY: the tile, blocks `ob..ob + OB` of pixels `x0..x0 + X` in row `y`, lies
                // inside the output (`OB <= blocks`, `X <= x`), and the caller's contract bounds
                // every buffer `tile` reads.
                unsafe {
                    match (blocks, x) {
                        (2, 12) => tile::<V, IL, 2, 12>(conv, weights, from, src, to, dst, at),
                        (2, 6) => tile::<V, IL, 2, 6>(conv, weights, from, src, to, dst, at),
                        (2, _) => tile::<V, IL, 2, 1>(conv, weights, from, src, to, dst, at),
                        (_, 12) => tile::<V, IL, 1, 12>(conv, weights, from, src, to, dst, at),
                        (_, 6) => tile::<V, IL, 1, 6>(conv, weights, from, src, to, dst, at),
                        (_, 4) => tile::<V, IL, 1, 4>(conv, weights, from, src, to, dst, at),
                        _ => tile::<V, IL, 1, 1>(conv, weights, from, src, to, dst, at),
                    }
                }
                x0 += if blocks == 2 && x != 12 && x != 6 {
                    1
                } else {
                    x
                };
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

/// Output blocks `ob..ob + OB` of pixels `x0..x0 + X` in row `y`: `OB * X` accumulators, each
/// step's weights loaded once and used for every pixel, each input broadcast once for every
/// block.
///
/// # Safety
///
/// As [`conv_stage`], with `IL == from.lanes`, the tile inside the output (`at.x0 + X <= to.w`,
/// `at.y < to.h`, `at.ob + OB <= to.blocks`) and `weights` the packed weights [`conv_stage`]
/// checked.
// The accumulators are indexed [block][pixel] from two nested loops; iterators would hide that.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<V: Int8Vector, const IL: usize, const OB: usize, const X: usize>(
    conv: &QConv3x3,
    weights: *const V::Elem,
    from: &Layout,
    src: *const V::Elem,
    to: &Layout,
    dst: *mut V::Elem,
    at: TileAt,
) {
    // SAFETY: the input rows `y..y + 3` and padded columns `x0..x0 + X + 2` exist in `from`
    // (the output's size plus the border); a step reads lanes `s * K..(s + 1) * K` of them. The
    // weights hold `to.blocks * from.blocks * 9 * steps` steps of `LANES * K`, the bias and scale
    // `to.blocks * LANES`, so blocks `ob..ob + OB` read inside them. The stores land in the
    // interior of `to`.
    unsafe {
        let steps = IL / V::K;
        let step_len = LANES * V::K;
        let block_stride = from.blocks * 9 * steps * step_len;
        let mut acc: [[V; X]; OB] =
            std::array::from_fn(|c| [V::load_i32(conv.bias.as_ptr().add((at.ob + c) * LANES)); X]);
        for ib in 0..from.blocks {
            for ky in 0..3 {
                let row = src.add(from.at(ib, at.y + ky, at.x0));
                for kx in 0..3 {
                    let tap = weights
                        .add(((at.ob * from.blocks + ib) * 9 + ky * 3 + kx) * steps * step_len);
                    let input = row.add(kx * IL);
                    for s in 0..steps {
                        let w: [V::Weights; OB] = std::array::from_fn(|c| {
                            V::weights(tap.add(c * block_stride + s * step_len))
                        });
                        for n in 0..X {
                            let x = input.add(n * IL + s * V::K);
                            for c in 0..OB {
                                acc[c][n] = acc[c][n].dot(x, w[c]);
                            }
                        }
                    }
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            let scale = conv.scale.as_ptr().add((at.ob + c) * LANES);
            for (n, acc) in row.iter().enumerate() {
                acc.requantize(scale, &conv.requant).store(dst.add(to.at(
                    at.ob + c,
                    at.y + 1,
                    at.x0 + n + 1,
                )));
            }
        }
    }
}

/// # Safety
///
/// The CPU has `V`'s instructions; `to` is `from` pooled (same blocks, [`LANES`] lanes) and the
/// slices hold both.
#[inline(always)]
unsafe fn maxpool_stage<V: Int8Vector>(
    from: &Layout,
    src: &[V::Elem],
    to: &Layout,
    dst: &mut [V::Elem],
) {
    assert!(src.len() >= from.len() && dst.len() >= to.len());
    assert!(from.lanes == LANES && to.lanes == LANES && to.blocks == from.blocks);
    assert!(to.h == pool_out(from.h) && to.w == pool_out(from.w));
    // SAFETY: output `(oy, ox)` reads padded rows `2 * oy..=2 * oy + 2` and columns
    // `2 * ox..=2 * ox + 2`, inside `from` (see the fp32 chain's max-pool), and writes inside `to`.
    unsafe {
        let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
        for b in 0..from.blocks {
            for oy in 0..to.h {
                for ox in 0..to.w {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::values;

    fn int8_backends() -> Vec<Int8Backend> {
        [
            Int8Backend::Portable,
            Int8Backend::Avx512Vnni,
            Int8Backend::Avx2,
            Int8Backend::NeonDot,
            Int8Backend::Neon,
        ]
        .into_iter()
        .filter(|b| b.available())
        .collect()
    }

    fn to_i8(v: &[f32]) -> Vec<i8> {
        v.iter().map(|x| (x * 127.9).floor() as i8).collect()
    }

    /// onnxruntime's QuantizeLinear.
    fn quantize(f: f32, scale: f32, zero: i32) -> i32 {
        ((f / scale).round_ties_even() as i32 + zero).clamp(-128, 127)
    }

    struct Layer {
        out: usize,
        pool: bool,
    }

    /// The ONNX graph node by node: QLinearConv (input padded with its zero point), then
    /// DequantizeLinear, Relu, MaxPool in f32 (padding ignored), QuantizeLinear into the next
    /// convolution's input; the last layer's f32 output is the chain's.
    fn reference(
        input: &[i8],
        (c, h, w): (usize, usize, usize),
        convs: &[(Vec<i8>, Vec<i32>, QuantSpec)],
        layers: &[Layer],
    ) -> Vec<f32> {
        let (mut x, mut shape) = (
            input.iter().map(|&v| v as i32).collect::<Vec<_>>(),
            (c, h, w),
        );
        let mut out_f32 = Vec::new();
        for (ix, ((kernel, bias, q), layer)) in convs.iter().zip(layers).enumerate() {
            let (ci, hh, ww) = shape;
            let co = layer.out;
            let mut f = vec![0.0f32; co * hh * ww];
            for o in 0..co {
                let scale = q.x_scale * q.w_scale / q.y_scale;
                for y in 0..hh {
                    for xx in 0..ww {
                        let mut acc = bias[o];
                        for i in 0..ci {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y + ky, xx + kx);
                                    let v = if iy >= 1 && ix >= 1 && iy <= hh && ix <= ww {
                                        x[(i * hh + iy - 1) * ww + ix - 1]
                                    } else {
                                        q.x_zero
                                    };
                                    let k = kernel[((o * ci + i) * 3 + ky) * 3 + kx] as i32;
                                    acc += (v - q.x_zero) * k;
                                }
                            }
                        }
                        let lo = (-128 - q.y_zero) as f32;
                        let hi = (127 - q.y_zero) as f32;
                        let yq =
                            (acc as f32 * scale).clamp(lo, hi).round_ties_even() as i32 + q.y_zero;
                        f[(o * hh + y) * ww + xx] = ((yq - q.y_zero) as f32 * q.y_scale).max(0.0);
                    }
                }
            }
            shape = (co, hh, ww);
            if layer.pool {
                let (oh, ow) = (pool_out(hh), pool_out(ww));
                let mut pooled = vec![0.0f32; co * oh * ow];
                for ch in 0..co {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut m = f32::NEG_INFINITY;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (2 * oy + ky, 2 * ox + kx);
                                    if iy >= 1 && ix >= 1 && iy <= hh && ix <= ww {
                                        m = m.max(f[(ch * hh + iy - 1) * ww + ix - 1]);
                                    }
                                }
                            }
                            pooled[(ch * oh + oy) * ow + ox] = m;
                        }
                    }
                }
                f = pooled;
                shape = (co, oh, ow);
            }
            match convs.get(ix + 1) {
                Some((_, _, next)) => {
                    x = f
                        .iter()
                        .map(|&v| quantize(v, next.x_scale, next.x_zero))
                        .collect();
                }
                None => out_f32 = f,
            }
        }
        out_f32
    }

    #[derive(Clone, Copy)]
    struct QuantSpec {
        x_scale: f32,
        x_zero: i32,
        w_scale: f32,
        y_scale: f32,
        y_zero: i32,
    }

    /// Builds a chain on a `[c, h, w]` input and checks it against the node-by-node reference on
    /// every int8 backend this CPU has: equal to the last bit.
    fn check_chain(c: usize, h: usize, w: usize, layers: &[Layer], seed: u64) {
        let input = to_i8(&values(c * h * w, seed));
        let mut convs = Vec::new();
        let mut channels = c;
        for (ix, layer) in layers.iter().enumerate() {
            let s = seed + 10 * ix as u64;
            let kernel = to_i8(&values(layer.out * channels * 9, s + 1));
            let bias: Vec<i32> = values(layer.out, s + 2)
                .iter()
                .map(|v| (v * 3000.0) as i32)
                .collect();
            // Inputs span about [-2, 2] (the first) or [0, 4] (after a ReLU), weights about
            // +-2.5/sqrt(fan-in): outputs near 1, so most land inside the int8 range.
            let first = ix == 0;
            let spec = QuantSpec {
                x_scale: if first { 1.0 / 64.0 } else { 4.0 / 255.0 },
                x_zero: if first { 3 } else { -128 },
                // He-style: the ReLU halves the power, uniform weights have a third of it.
                w_scale: 2.5 / (127.0 * ((channels * 9) as f32).sqrt()),
                y_scale: 3.0 / 127.0,
                y_zero: (ix as i32 % 3) * 7 - 5,
            };
            convs.push((kernel, bias, spec));
            channels = layer.out;
        }
        let want = reference(&input, (c, h, w), &convs, layers);
        for backend in int8_backends() {
            let mut stages = Vec::new();
            for (ix, ((kernel, bias, q), layer)) in convs.iter().zip(layers).enumerate() {
                let in_channels = if ix == 0 { c } else { layers[ix - 1].out };
                let next = convs.get(ix + 1).map(|(_, _, n)| (n.x_scale, n.x_zero));
                let params = QConvParams {
                    kernel,
                    bias,
                    in_channels,
                    out_channels: layer.out,
                    x_scale: q.x_scale,
                    x_zero: q.x_zero,
                    w_scale: &[q.w_scale],
                    requant: Requant {
                        y_zero: q.y_zero,
                        y_scale: q.y_scale,
                        next,
                    },
                };
                stages.push(QStage::Conv(QConv3x3::new(&params, backend)));
                if layer.pool {
                    stages.push(QStage::MaxPool);
                }
            }
            let chain = QConvChain::new(stages, backend, c, convs[0].2.x_zero, h, w);
            let mut got = vec![f32::NAN; want.len()];
            // Twice: the second run reuses scratch buffers that hold the first run's values.
            for _ in 0..2 {
                chain.run_image(&input, &mut got);
                let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differing, 0,
                    "{backend:?} {c}x{h}x{w}: {differing} values differ"
                );
            }
            // The test means something only if values are neither all zero nor all saturated.
            let distinct: std::collections::BTreeSet<u32> =
                got.iter().map(|v| v.to_bits()).collect();
            let enough = (want.len() / 4).min(20);
            assert!(
                distinct.len() > enough,
                "{backend:?}: only {} distinct outputs",
                distinct.len()
            );
        }
    }

    #[test]
    fn the_ensembles_backbone_matches_the_onnx_nodes_exactly() {
        let layer = |out, pool| Layer { out, pool };
        check_chain(
            1,
            48,
            48,
            &[
                layer(16, false),
                layer(16, true),
                layer(32, false),
                layer(32, true),
                layer(64, false),
                layer(64, true),
                layer(128, false),
                layer(128, true),
            ],
            1,
        );
    }

    #[test]
    fn odd_channels_and_sizes_use_padding_lanes_and_remainder_tiles() {
        let layer = |out, pool| Layer { out, pool };
        check_chain(3, 7, 13, &[layer(20, true), layer(5, false)], 2);
        check_chain(2, 5, 26, &[layer(48, false), layer(17, true)], 3);
        check_chain(16, 1, 1, &[layer(16, true)], 4);
    }

    #[test]
    fn requantisation_rounds_half_to_even_and_saturates() {
        let r = Requant {
            y_zero: 0,
            y_scale: 1.0,
            next: None,
        };
        assert_eq!(r.apply(5, 0.5), 2);
        assert_eq!(r.apply(7, 0.5), 4);
        assert_eq!(r.apply(-5, 0.5), 0, "the ReLU keeps the zero point");
        assert_eq!(r.apply(1_000_000, 1.0), 127);
        let r = Requant {
            y_zero: 10,
            y_scale: 0.5,
            next: Some((0.25, -128)),
        };
        // y = 3 + 10; dequantised (13 - 10) * 0.5 = 1.5; / 0.25 = 6; + -128.
        assert_eq!(r.apply(3, 1.0), -122);
        assert_eq!(r.apply(-50, 1.0), -128);
        assert_eq!(r.out_zero(), -128);
    }
}
