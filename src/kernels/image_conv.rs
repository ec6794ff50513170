//! Dense KxK convolutions of an image input, for BlazeFace's first layer (5x5, stride 2, 3 -> 24
//! channels on the NHWC input). tract ran it as a transpose, an im2col gather and a matrix product:
//! about half of the detector graph's time once the other layers were ferrite's.

use super::pointwise::{pack_channel_tiles, Pointwise};
#[cfg(target_arch = "aarch64")]
use super::vector::neon;
#[cfg(target_arch = "x86_64")]
use super::vector::{avx2, avx512};
use super::vector::{Portable, Vector};
use super::{Backend, LANES};

/// A dense `k x k` convolution with bias (stride 1 or 2, explicit padding), optionally followed by
/// ReLU, from an NHWC or NCHW input to an NCHW output.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageConv {
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    /// Input height and width.
    pub(super) hw: (usize, usize),
    pad_before: (usize, usize),
    pad_after: (usize, usize),
    /// Whether the input is `[N, H, W, C]` (the graph's image) rather than `[N, C, H, W]`.
    pub(super) nhwc: bool,
    /// Output channels per register tile.
    tile: usize,
    /// `[tile][c][ky][kx][r]`, the last tile padded with zero weights.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Per tap `(c, ky, kx)`, where its value for output (0, 0) sits in the phase planes.
    offsets: Vec<usize>,
    pub(super) relu: bool,
    pub(super) backend: Backend,
}

impl Eq for ImageConv {}

impl ImageConv {
    /// `weights` is ONNX's `[O][C][k][k]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
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

    pub(super) fn padded_hw(&self) -> (usize, usize) {
        (
            self.hw.0 + self.pad_before.0 + self.pad_after.0,
            self.hw.1 + self.pad_before.1 + self.pad_after.1,
        )
    }

    pub(super) fn output_hw(&self) -> (usize, usize) {
        let (ph, pw) = self.padded_hw();
        (
            (ph - self.kernel) / self.stride + 1,
            (pw - self.kernel) / self.stride + 1,
        )
    }

    pub(super) fn input_shape(&self, batch: usize) -> [usize; 4] {
        let (h, w) = self.hw;
        if self.nhwc {
            [batch, h, w, self.in_channels]
        } else {
            [batch, self.in_channels, h, w]
        }
    }

    /// Geometry of the padded input split into column phases (as in
    /// [`Depthwise3x3`](super::Depthwise3x3)): the length of a phase row, and of one channel's
    /// `stride` phase planes.
    fn phase_geometry(&self) -> (usize, usize) {
        let (ph, pw) = self.padded_hw();
        let row = pw.div_ceil(self.stride);
        (row, self.stride * ph * row)
    }

    /// One image: `input` in the op's layout, `out` `[O][OH][OW]`; `planes` is scratch.
    pub(super) fn run_image(&self, input: &[f32], out: &mut [f32], planes: &mut Vec<f32>) {
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
        // SAFETY: the assertions above are `image_conv_any`'s bounds: the last column and row any
        // tap reads lie inside the phase planes just filled. `R` and the backend as in
        // `Pointwise::run_image`: the tile was packed for this backend, which is available.
        unsafe {
            match self.backend {
                #[cfg(target_arch = "x86_64")]
                Backend::Avx512 => avx512::image_conv(self, planes, out),
                #[cfg(target_arch = "x86_64")]
                Backend::Avx2 => avx2::image_conv(self, planes, out),
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

/// Every output channel of one image, row by row: `P` vectors of pixels at a time, then one
/// vector, then the scalar path ([`image_conv_pixel`]) for the row's last pixels.
///
/// # Safety
///
/// The CPU has `V`'s instructions and `R == op.tile`. `out` holds at least `op.out_channels`
/// output planes, and `planes` the phase planes of `op.in_channels` channels
/// (`op.phase_geometry()`), with the last column and row any tap reads inside a plane: what
/// [`ImageConv::run_image`] asserts.
#[inline(always)]
pub(super) unsafe fn image_conv_any<V: Vector, const R: usize, const P: usize>(
    op: &ImageConv,
    planes: &[f32],
    out: &mut [f32],
) {
    // Checked in release builds too: a tile other than the one the weights were packed for
    // would read past them. Once per image, not per pixel.
    assert_eq!(op.tile, R);
    let (oh, ow) = op.output_hw();
    let tiles = op.out_channels.div_ceil(R);
    for oy in 0..oh {
        let mut x0 = 0;
        while x0 + P * LANES <= ow {
            for t in 0..tiles {
                // SAFETY: outputs `x0..x0 + P * LANES` lie in row `oy` and `t` is one of the
                // channel tiles; the rest of `image_conv_tile`'s contract is this function's.
                unsafe { image_conv_tile::<V, R, P>(op, t, oy, x0, planes, out) };
            }
            x0 += P * LANES;
        }
        while x0 + LANES <= ow {
            for t in 0..tiles {
                // SAFETY: as above, for one vector of outputs.
                unsafe { image_conv_tile::<V, R, 1>(op, t, oy, x0, planes, out) };
            }
            x0 += LANES;
        }
        for x in x0..ow {
            image_conv_pixel(op, oy, x, planes, out);
        }
    }
}

/// Output channels `t * R..` of pixels `x0..x0 + P * LANES` of row `oy`.
///
/// # Safety
///
/// As [`image_conv_any`], for a channel tile `t < op.out_channels.div_ceil(R)`, an output row `oy`
/// and `x0 + P * LANES` no more than the output's width.
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
    // SAFETY: the weights and bias hold whole tiles of `R` channels ([`pack_channel_tiles`], with
    // `R == op.tile`), so tile `t` reads inside them. Each tap's loads cover outputs
    // `x0..x0 + P * LANES` of row `oy`, which the contract keeps inside the planes; the stores land
    // in row `oy` of an output channel `< op.out_channels`.
    unsafe {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{backends, values};

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
}
