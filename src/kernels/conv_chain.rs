//! The ensemble's 3x3 convolution chains. Each chain of `Conv 3x3 (+ ReLU) (+ MaxPool 3x3/2)`
//! nodes runs as one [`ConvChain`] that keeps its activations in a channel-blocked [`Layout`] (16
//! channels per vector, zero border included, so no Pad and no gather) and computes every output
//! vector as a sum of broadcast inputs times weight vectors.

use std::cell::RefCell;

#[cfg(target_arch = "aarch64")]
use super::vector::neon;
#[cfg(target_arch = "x86_64")]
use super::vector::{avx2, avx512};
use super::vector::{Portable, Vector};
use super::{Backend, LANES};

/// One 3x3, stride-1, pad-1 convolution with its bias, weights packed for the blocked layout.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Conv3x3 {
    in_channels: usize,
    out_channels: usize,
    /// Channels per input vector: 1 for a single-channel input plane, else [`LANES`].
    in_lanes: usize,
    pub(super) relu: bool,
    /// `[out block][in block][ky][kx][in lane][out lane]`, zero where a channel is padding.
    weights: Vec<f32>,
    /// One entry per output channel, padded with zeros to whole blocks.
    bias: Vec<f32>,
}

impl Conv3x3 {
    /// `kernel` is OIHW `[out, in, 3, 3]`; `bias` has one value per output channel.
    pub(super) fn new(
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
pub(super) enum Stage {
    Conv(Conv3x3),
    /// 3x3 window, stride 2, padding 1, only ever after a ReLU: its inputs are never negative, so
    /// the zero border gives the same maximum as tract's "ignore the padding".
    MaxPool,
}

/// A padded, channel-blocked activation: `[block][h + 2][w + 2][lanes]` with a zero border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Layout {
    pub(super) blocks: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) lanes: usize,
}

impl Layout {
    pub(super) fn len(&self) -> usize {
        self.blocks * (self.h + 2) * (self.w + 2) * self.lanes
    }

    /// Offset of padded position (y, x) of block `b`.
    pub(super) fn at(&self, b: usize, y: usize, x: usize) -> usize {
        ((b * (self.h + 2) + y) * (self.w + 2) + x) * self.lanes
    }

    fn zero_border(&self, buf: &mut [f32]) {
        self.fill_border(buf, 0.0);
    }

    /// Writes `value` to the border only; the int8 chains' border is their zero point.
    pub(super) fn fill_border<T: Copy>(&self, buf: &mut [T], value: T) {
        let row = (self.w + 2) * self.lanes;
        for b in 0..self.blocks {
            let top = self.at(b, 0, 0);
            buf[top..top + row].fill(value);
            let bottom = self.at(b, self.h + 1, 0);
            buf[bottom..bottom + row].fill(value);
            for y in 1..=self.h {
                let left = self.at(b, y, 0);
                buf[left..left + self.lanes].fill(value);
                let right = self.at(b, y, self.w + 1);
                buf[right..right + self.lanes].fill(value);
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

pub(super) fn pool_out(n: usize) -> usize {
    (n + 2 - 3) / 2 + 1
}

/// A chain of stages from an NCHW f32 input `[n, c, h, w]` to an NCHW f32 output, replacing the
/// tract nodes it was built from.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvChain {
    pub(super) stages: Vec<Stage>,
    pub(super) backend: Backend,
    pub(super) input_channels: usize,
    pub(super) output_channels: usize,
    /// The layout each stage reads, then the final one.
    pub(super) layouts: Vec<Layout>,
}

// tract compares operators when it deduplicates nodes; weights are never NaN, so the derived
// comparison is an equivalence.
impl Eq for ConvChain {}

impl ConvChain {
    pub(super) fn new(
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

    pub(super) fn output_hw(&self) -> (usize, usize) {
        let last = self.layouts[self.layouts.len() - 1];
        (last.h, last.w)
    }

    pub(super) fn conv_count(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| matches!(s, Stage::Conv(_)))
            .count()
    }

    /// Runs the chain on one image `[c][h][w]`, writing `[c'][h'][w']` to `output`.
    pub(super) fn run_image(&self, input: &[f32], output: &mut [f32], scratch: &mut Scratch) {
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
pub(super) struct Scratch {
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
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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
    // SAFETY: the assertions above are `conv_any`'s contract: the layouts are the convolution's
    // input and output and bound both slices. The backend is available (the module's invariant),
    // so the AVX-512 path runs only on a CPU with AVX-512F.
    unsafe {
        match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => avx512::conv(conv, from, src, to, dst),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => avx2::conv(conv, from, src, to, dst),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => conv_any::<neon::Neon>(conv, from, src, to, dst),
            _ => conv_any::<Portable>(conv, from, src, to, dst),
        }
    }
}

fn maxpool_forward(backend: Backend, from: &Layout, src: &[f32], to: &Layout, dst: &mut [f32]) {
    assert!(src.len() >= from.len() && dst.len() >= to.len());
    assert!(from.lanes == LANES && to.lanes == LANES && to.blocks == from.blocks);
    assert!(to.h == pool_out(from.h) && to.w == pool_out(from.w));
    // SAFETY: the assertions above are `maxpool_any`'s contract. The backend is available, as in
    // `conv_forward`.
    unsafe {
        match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => avx512::maxpool(from, src, to, dst),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => avx2::maxpool(from, src, to, dst),
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

/// One convolution stage, with the input's lanes (1 for a single-channel image, else [`LANES`])
/// as a constant.
///
/// # Safety
///
/// The CPU has `V`'s instructions. `src` holds at least `from.len()` values and `dst` at least
/// `to.len()`. `from` is `conv`'s input layout (`conv.in_lanes` lanes, exactly the blocks its input
/// channels need) and `to` its output layout ([`LANES`] lanes, exactly the blocks of its output
/// channels), of the same height and width: what [`conv_forward`] asserts.
#[inline(always)]
pub(super) unsafe fn conv_any<V: Vector>(
    conv: &Conv3x3,
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    // SAFETY: this function's contract, with the input's lanes as `IL`.
    unsafe {
        if conv.in_lanes == 1 {
            conv_lanes::<V, 1>(conv, from, src, to, dst)
        } else {
            conv_lanes::<V, LANES>(conv, from, src, to, dst)
        }
    }
}

/// Walks the output in register tiles of [`tile_shape`], narrower at the right edge and on an odd
/// last block.
///
/// # Safety
///
/// As [`conv_any`], with `IL == conv.in_lanes`.
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
                // SAFETY: each arm's tile, `OB` blocks from `ob` by `X` pixels from `x0` of row
                // `y < to.h`, lies inside the output: `OB <= blocks` with
                // `ob + blocks <= to.blocks`, and `X <= x` with `x0 + x <= to.w`. The rest of
                // `tile`'s contract is this function's.
                unsafe {
                    match (blocks, x) {
                        (1, 16) => tile::<V, IL, 1, 16>(conv, from, src, to, dst, at),
                        (1, 12) => tile::<V, IL, 1, 12>(conv, from, src, to, dst, at),
                        (2, 12) => tile::<V, IL, 2, 12>(conv, from, src, to, dst, at),
                        (1, 6) => tile::<V, IL, 1, 6>(conv, from, src, to, dst, at),
                        (2, 6) => tile::<V, IL, 2, 6>(conv, from, src, to, dst, at),
                        (2, 1) => tile::<V, IL, 2, 1>(conv, from, src, to, dst, at),
                        _ => tile::<V, IL, 1, 1>(conv, from, src, to, dst, at),
                    }
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
///
/// # Safety
///
/// The CPU has `V`'s instructions. `src` points to `from.len()` readable values and `dst` to
/// `to.len()` writable ones; the layouts and `conv` are related as [`conv_any`] requires, with
/// `from.lanes == IL`; and the tile lies inside the output: `at.ob + OB <= to.blocks`,
/// `at.x0 + X <= to.w` and `at.y < to.h`.
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
    // SAFETY: with the tile inside the output, every access stays in its buffer. The input rows
    // `at.y..at.y + 3` and padded columns `at.x0..at.x0 + X + 2` exist in `from`, which has the
    // output's height and width plus the border, and a tap reads lanes `0..IL` of them. The weights
    // hold `to.blocks * from.blocks * 9 * IL` vectors and the bias `to.blocks`, so blocks
    // `at.ob..at.ob + OB` read inside them. The stores land in the interior of `to`.
    unsafe {
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
                    let w =
                        weights.add((((at.ob * in_blocks + ib) * 9 + ky * 3 + kx) * IL) * LANES);
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
}

/// The 3x3, stride-2 max-pool stage. It reads the zero border as the padding, which gives tract's
/// result only because its input follows a ReLU ([`Stage::MaxPool`]).
///
/// # Safety
///
/// The CPU has `V`'s instructions. `src` holds at least `from.len()` values and `dst` at least
/// `to.len()`; both layouts have [`LANES`] lanes and the same blocks, and `to` is `from` pooled:
/// `to.h == pool_out(from.h)` and `to.w == pool_out(from.w)`.
#[inline(always)]
pub(super) unsafe fn maxpool_any<V: Vector>(
    from: &Layout,
    src: &[f32],
    to: &Layout,
    dst: &mut [f32],
) {
    // SAFETY: output `(oy, ox)` reads padded rows `2 * oy..=2 * oy + 2` and columns
    // `2 * ox..=2 * ox + 2`, at most `from.h + 1` and `from.w + 1` since `oy <= (from.h - 1) / 2`
    // and `ox <= (from.w - 1) / 2`: inside `from`. It writes inside `to`.
    unsafe {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{backends, values};

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
