//! Depthwise 3x3 convolutions, plain NCHW, for BlazeFace. tract's DepthWiseConv and OptMaxPool
//! took about 40 % of the detector graph's time for 12 % of its multiply-adds (the max-pools are
//! in `maxpool.rs`). Also the phase-plane scratch that the depthwise and first-layer
//! (`image_conv.rs`) kernels share.

use std::cell::RefCell;

#[cfg(target_arch = "aarch64")]
use super::vector::neon;
#[cfg(target_arch = "x86_64")]
use super::vector::{avx2, avx512};
use super::vector::{Portable, Vector};
use super::{Backend, LANES};

/// A depthwise (one filter per channel) 3x3 convolution with bias, stride 1 or 2, explicit padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Depthwise3x3 {
    pub(super) channels: usize,
    pub(super) stride: usize,
    /// Input height and width.
    pub(super) hw: (usize, usize),
    /// Padding before (top, left) and after (bottom, right).
    pub(super) pad_before: (usize, usize),
    pub(super) pad_after: (usize, usize),
    /// `[channel][ky][kx]`.
    pub(super) weights: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) backend: Backend,
}

impl Eq for Depthwise3x3 {}

impl Depthwise3x3 {
    pub(super) fn padded_hw(&self) -> (usize, usize) {
        (
            self.hw.0 + self.pad_before.0 + self.pad_after.0,
            self.hw.1 + self.pad_before.1 + self.pad_after.1,
        )
    }

    pub(super) fn output_hw(&self) -> (usize, usize) {
        let (ph, pw) = self.padded_hw();
        ((ph - 3) / self.stride + 1, (pw - 3) / self.stride + 1)
    }

    /// Whether [`depthwise_same_any`] runs this op: stride 1, one pixel of padding on every side,
    /// rows a whole number of vectors. That is every stride-1 depthwise layer of BlazeFace, and
    /// 96 % of the long detector's depthwise multiply-adds.
    fn reads_in_place(&self) -> bool {
        let (h, w) = self.hw;
        self.stride == 1
            && self.pad_before == (1, 1)
            && self.pad_after == (1, 1)
            && h > 0
            && w > 0
            && w % LANES == 0
    }

    /// `input` is `[c][h][w]` for one image, `output` `[c][oh][ow]`. `planes` is scratch.
    pub(super) fn run_image(&self, input: &[f32], output: &mut [f32], planes: &mut Vec<f32>) {
        let (h, w) = self.hw;
        if self.reads_in_place() {
            assert!(output.len() == self.channels * h * w && input.len() == self.channels * h * w);
            for c in 0..self.channels {
                let weights = &self.weights[c * 9..][..9];
                let input = &input[c * h * w..][..h * w];
                let out = &mut output[c * h * w..][..h * w];
                // SAFETY: `reads_in_place` holds and both slices are one channel of `h * w`; the
                // backend is available (the module's invariant).
                unsafe {
                    match self.backend {
                        #[cfg(target_arch = "x86_64")]
                        Backend::Avx512 => {
                            avx512::depthwise_same(weights, self.bias[c], input, out, w)
                        }
                        #[cfg(target_arch = "x86_64")]
                        Backend::Avx2 => avx2::depthwise_same(weights, self.bias[c], input, out, w),
                        #[cfg(target_arch = "aarch64")]
                        Backend::Neon => {
                            depthwise_same_any::<neon::Neon>(weights, self.bias[c], input, out, w)
                        }
                        _ => depthwise_same_any::<Portable>(weights, self.bias[c], input, out, w),
                    }
                }
            }
            return;
        }
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
            // SAFETY: the assertions above bound every read of `depthwise_any`: a vector of 16
            // outputs starts at most at `ow - 16`, so it reads no column past
            // `ow - 1 + 2 / stride`, and output row `oy` reads rows up to `stride * oy + 2` of a
            // phase plane. `out` is whole rows of `ow`. The backend is available (the module's
            // invariant).
            unsafe {
                match self.backend {
                    #[cfg(target_arch = "x86_64")]
                    Backend::Avx512 => avx512::depthwise(&taps, planes, out, ow),
                    #[cfg(target_arch = "x86_64")]
                    Backend::Avx2 => avx2::depthwise(&taps, planes, out, ow),
                    #[cfg(target_arch = "aarch64")]
                    Backend::Neon => depthwise_any::<neon::Neon>(&taps, planes, out, ow),
                    _ => depthwise_any::<Portable>(&taps, planes, out, ow),
                }
            }
        }
    }
}

/// One channel's filter and where its taps read in the phase planes ([`Depthwise3x3::run_image`]).
pub(super) struct Taps<'a> {
    weights: &'a [f32],
    bias: f32,
    /// Offset of tap `ky * 3 + kx`'s value for output (0, 0).
    offsets: [usize; 9],
    /// How far the taps move for one output row.
    rows_per_output: usize,
}

/// One channel, 16 outputs of a row at a time in one vector accumulator; the row's tail in scalars.
///
/// # Safety
///
/// The CPU has `V`'s instructions, and every value a tap reads lies in `planes`: for each row `oy`
/// of `out` (rows of `ow` outputs), each of `taps.offsets` and each `x < ow`,
/// `oy * taps.rows_per_output + offset + x < planes.len()`.
#[inline(always)]
pub(super) unsafe fn depthwise_any<V: Vector>(
    taps: &Taps,
    planes: &[f32],
    out: &mut [f32],
    ow: usize,
) {
    // SAFETY: the contract bounds every read; a vector store writes `row_out[x0..x0 + LANES]` with
    // `x0 + LANES <= ow`.
    unsafe {
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
}

/// One channel of a stride-1 depthwise convolution with one pixel of zero padding on every side,
/// read in place: no padded copy of the channel is made (that copy cost as much as the
/// convolution on the long detector's 128x128 layers), and two output rows per pass share the
/// input rows they both read.
///
/// # Safety
///
/// The CPU has `V`'s instructions; `weights` holds 9 values; `input` and `out` hold the same whole
/// number of rows of `w` values, and `w` is a non-zero multiple of `LANES`.
#[inline(always)]
pub(super) unsafe fn depthwise_same_any<V: Vector>(
    weights: &[f32],
    bias: f32,
    input: &[f32],
    out: &mut [f32],
    w: usize,
) {
    let h = input.len() / w;
    // SAFETY: the weights and the geometry are the caller's contract.
    unsafe {
        let weights: [V; 9] = std::array::from_fn(|i| V::splat(weights[i]));
        let bias = V::splat(bias);
        let mut oy = 0;
        while oy + 2 <= h {
            same_rows::<V, 2>(&weights, bias, input, out, w, oy);
            oy += 2;
        }
        if oy < h {
            same_rows::<V, 1>(&weights, bias, input, out, w, oy);
        }
    }
}

/// Output rows `oy..oy + R` of [`depthwise_same_any`].
///
/// # Safety
///
/// [`depthwise_same_any`]'s contract, and `oy + R <= h`.
#[inline(always)]
unsafe fn same_rows<V: Vector, const R: usize>(
    weights: &[V; 9],
    bias: V,
    input: &[f32],
    out: &mut [f32],
    w: usize,
    oy: usize,
) {
    let h = input.len() / w;
    // SAFETY: every read is within input row `y < h` at columns `x0 - 1 .. x0 + LANES + 1`
    // clipped to `0..w` (the ends go through a zeroed copy), every store within output row
    // `oy + r < h` at `x0..x0 + LANES <= w`.
    unsafe {
        let mut x0 = 0;
        while x0 < w {
            let mut acc = [bias; R];
            // Input rows oy - 1 ..= oy + R: output row oy + r reads rows oy + r - 1 ..= oy + r + 1.
            for iy in 0..R + 2 {
                let Some(y) = (oy + iy).checked_sub(1).filter(|&y| y < h) else {
                    continue;
                };
                let p = input.as_ptr().add(y * w + x0);
                let left = if x0 == 0 {
                    let mut padded = [0.0f32; LANES];
                    std::ptr::copy_nonoverlapping(p, padded.as_mut_ptr().add(1), LANES - 1);
                    V::load(padded.as_ptr())
                } else {
                    V::load(p.sub(1))
                };
                let right = if x0 + LANES == w {
                    let mut padded = [0.0f32; LANES];
                    std::ptr::copy_nonoverlapping(p.add(1), padded.as_mut_ptr(), LANES - 1);
                    V::load(padded.as_ptr())
                } else {
                    V::load(p.add(1))
                };
                let columns = [left, V::load(p), right];
                for (r, acc) in acc.iter_mut().enumerate() {
                    if iy >= r && iy - r < 3 {
                        let ky = iy - r;
                        for (kx, column) in columns.iter().enumerate() {
                            *acc = V::mul_add(*column, weights[ky * 3 + kx], *acc);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                acc.store(out.as_mut_ptr().add((oy + r) * w + x0));
            }
            x0 += LANES;
        }
    }
}

thread_local! {
    static PHASE_PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `image` on each image of a batch (`in_image` and `out_image` values each) with this
/// thread's phase-plane scratch, which the depthwise and first-layer kernels share: a thread runs
/// one op at a time.
pub(super) fn with_phase_planes(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{backends, values};

    #[test]
    fn depthwise_matches_a_plain_reference_for_both_strides_and_paddings() {
        for (stride, before, after, h, w) in [
            (1, (1, 1), (1, 1), 9, 21),
            (2, (0, 0), (1, 1), 16, 33),
            (2, (1, 0), (0, 2), 7, 5),
            // read in place: whole vectors per row, odd and even row counts, one row
            (1, (1, 1), (1, 1), 5, 32),
            (1, (1, 1), (1, 1), 4, 16),
            (1, (1, 1), (1, 1), 1, 48),
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
}
