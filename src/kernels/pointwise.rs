//! 1x1 convolutions, plain NCHW, for BlazeFace: `EinSum + Add(bias) + Add(residual) + Max(0)` in
//! one pass. tract ran them as a packing step, a matrix product and a separate add chain: about
//! 70 % of the detector graph's time once the depthwise convolutions were ferrite's.

#[cfg(target_arch = "aarch64")]
use super::vector::neon;
#[cfg(target_arch = "x86_64")]
use super::vector::{avx2, avx512};
use super::vector::{Portable, Vector};
use super::{Backend, LANES};

/// A 1x1, stride-1 convolution with bias over `[N, I, H, W]`, optionally adding a residual
/// `[N, R, H, W]` (R <= O: BlazeFace pads the shortcut's channels with zeros) into the first R
/// output channels, optionally followed by ReLU.
#[derive(Clone, Debug, PartialEq)]
pub struct Pointwise {
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) hw: (usize, usize),
    /// Output channels per register tile (the kernel's `R`).
    tile: usize,
    /// `[tile][input channel][r]`, the last tile padded with zero weights.
    weights: Vec<f32>,
    /// Per output channel, padded like the weights.
    bias: Vec<f32>,
    /// Channels of the residual input, when there is one.
    pub(super) residual_channels: Option<usize>,
    pub(super) relu: bool,
    pub(super) backend: Backend,
}

impl Eq for Pointwise {}

impl Pointwise {
    /// (output channels, pixel vectors) per tile with 32 wide registers: 24 accumulators, two
    /// input vectors, one broadcast weight.
    pub(super) const WIDE_TILE: (usize, usize) = (12, 2);
    /// With NEON a 16-lane vector takes four registers: 6 x 1 is 24 accumulator registers.
    pub(super) const NARROW_TILE: (usize, usize) = (6, 1);

    /// `weights` is `[O][I]` as ONNX stores a 1x1 kernel, `bias` `[O]`.
    pub(super) fn new(
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

    pub(super) fn pixels(&self) -> usize {
        self.hw.0 * self.hw.1
    }

    /// One image: `input` `[I][H*W]`, `residual` `[R][H*W]`, `out` `[O][H*W]`.
    pub(super) fn run_image(&self, input: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        let n = self.pixels();
        assert!(input.len() == self.in_channels * n && out.len() == self.out_channels * n);
        assert!(residual.map(<[f32]>::len) == self.residual_channels.map(|r| r * n));
        assert!(self
            .residual_channels
            .is_none_or(|r| r <= self.out_channels));
        // SAFETY: the assertions above are `pointwise_any`'s bounds. Each arm's `R` is the tile
        // `pack_channel_tiles` packed for that backend (narrow for NEON, wide otherwise): the
        // backend is available (the module's invariant), so a NEON op only reaches the NEON arm,
        // and the AVX-512 arm only runs on a CPU with AVX-512F.
        unsafe {
            match self.backend {
                #[cfg(target_arch = "x86_64")]
                Backend::Avx512 => avx512::pointwise(self, input, residual, out),
                #[cfg(target_arch = "x86_64")]
                Backend::Avx2 => avx2::pointwise(self, input, residual, out),
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
/// [`ImageConv`](super::ImageConv): the backend's tile height, the weights as `[tile][tap][r]` and
/// the bias, both padded with zeros to whole tiles.
pub(super) fn pack_channel_tiles(
    weights: &[f32],
    bias: &[f32],
    taps: usize,
    backend: Backend,
) -> (usize, Vec<f32>, Vec<f32>) {
    let tile = if matches!(backend, Backend::Neon | Backend::Avx2) {
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

/// Every output channel of one image: `P` vectors of pixels at a time, then one vector, then the
/// scalar path ([`Pointwise::pixel`]) for the last pixels.
///
/// # Safety
///
/// The CPU has `V`'s instructions and `R == pw.tile`. `input` holds at least
/// `pw.in_channels * pw.pixels()` values and `out` at least `pw.out_channels * pw.pixels()`; when
/// both `residual` and `pw.residual_channels` are present, `residual` holds at least that many
/// channels of `pw.pixels()` values. [`Pointwise::run_image`] asserts these.
#[inline(always)]
pub(super) unsafe fn pointwise_any<V: Vector, const R: usize, const P: usize>(
    pw: &Pointwise,
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    // Checked in release builds too: a tile other than the one the weights were packed for
    // would read past them. Once per image, not per pixel.
    assert_eq!(pw.tile, R);
    let n = pw.pixels();
    let tiles = pw.out_channels.div_ceil(R);
    let mut p0 = 0;
    while p0 + P * LANES <= n {
        for t in 0..tiles {
            // SAFETY: pixels `p0..p0 + P * LANES` lie in the image and `t` is one of its channel
            // tiles; the rest of `pointwise_tile`'s contract is this function's.
            unsafe { pointwise_tile::<V, R, P>(pw, t, p0, input, residual, out) };
        }
        p0 += P * LANES;
    }
    while p0 + LANES <= n {
        for t in 0..tiles {
            // SAFETY: as above, for one vector of pixels.
            unsafe { pointwise_tile::<V, R, 1>(pw, t, p0, input, residual, out) };
        }
        p0 += LANES;
    }
    for p in p0..n {
        pw.pixel(p, input, residual, out);
    }
}

/// Output channels `t * R..` of pixels `p0..p0 + P * LANES`: per input channel, `P` vector loads
/// and `R` broadcast weights feed `R * P` accumulators.
///
/// # Safety
///
/// As [`pointwise_any`], for a channel tile `t < pw.out_channels.div_ceil(R)` and pixels with
/// `p0 + P * LANES <= pw.pixels()`.
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
    // SAFETY: the weights and bias hold whole tiles of `R` channels ([`pack_channel_tiles`], with
    // `R == pw.tile`), so tile `t` reads inside them. Every vector load and store covers pixels
    // `p0..p0 + P * LANES` of an input channel `i < pw.in_channels`, an output channel
    // `o < pw.out_channels` or a residual channel `o < channels`: planes that the slices hold.
    unsafe {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{backends, values};

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
}
