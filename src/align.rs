//! Preprocessing between the face detector and the ensemble: this module owns the geometry of
//! the face crop (how a detector box and its eye keypoints become a square, eye-levelled,
//! anti-aliased grayscale patch), the contrast normalisation the model was trained with
//! (OpenCV-compatible CLAHE, pinned to OpenCV by golden fixtures), the RGB-to-gray conversion
//! (OpenCV's fixed-point weights) and the final scaling of pixels into the input tensor.
//! Every function here is deterministic and pure so the runtime reproduces the Python training
//! pipeline bit for bit where it can. It does not find faces ([`crate::detect`]), choose the crop
//! parameters (they are calibrated offline and stored in the model manifest as a
//! [`CropGeometry`]), or know about tensors, models or channel layouts ([`crate::ensemble`]).

use crate::detect::Face;
use image::{GrayImage, RgbImage};

/// How a detector box becomes the square crop the model sees.
///
/// The framing must match the training crops, so these numbers are calibrated from data and
/// stored in the model manifest; missing fields fall back to [`CropGeometry::default`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CropGeometry {
    /// Crop side = `scale * max(bbox.w, bbox.h)`.
    pub scale: f32,
    /// Crop centre = bbox centre + `(shift_x, shift_y) * max(w, h)`, measured in the face's
    /// rotated frame (x along the eye line, y towards the chin).
    pub shift_x: f32,
    /// See [`CropGeometry::shift_x`]; positive moves the crop towards the chin.
    pub shift_y: f32,
    /// Level the eyes: rotate about the crop centre so the eye line is horizontal.
    pub rotate: bool,
}

impl Default for CropGeometry {
    /// A placeholder until calibration against the training crops replaces it: BlazeFace boxes
    /// are tight (roughly brows to chin), while FER2013/CK+ crops keep some forehead and both
    /// cheeks, so widen by 20% and nudge up a little. Levelling the eyes removes in-plane head
    /// roll, which the training augmentation (+-15 deg) only partly covers.
    fn default() -> Self {
        CropGeometry {
            scale: 1.2,
            shift_x: 0.0,
            shift_y: -0.05,
            rotate: true,
        }
    }
}

/// The similarity transform from crop coordinates to frame coordinates chosen by
/// [`crop_face`]; exposed so callers can map crop-space results (landmarks) back to the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropTransform {
    /// Crop centre in continuous frame coordinates (pixel `i` covers `[i, i + 1)`).
    pub centre_x: f32,
    pub centre_y: f32,
    /// Crop side length in frame pixels (0 for a degenerate box).
    pub side: f32,
    /// Rotation of the crop's x axis in the frame, radians (0 when not levelling).
    pub angle: f32,
}

impl CropTransform {
    /// Builds the transform for `face`; never fails: a non-finite size, shift or centre falls
    /// back to 0 and unusable eye keypoints to no rotation, so NaN never reaches the pixels.
    pub fn new(face: &Face, geometry: &CropGeometry) -> Self {
        let b = &face.bbox;
        let extent = finite_or(b.w.max(b.h), 0.0).max(0.0);
        let side = finite_or(geometry.scale * extent, 0.0).abs();
        let angle = if geometry.rotate {
            eye_angle(face).unwrap_or(0.0)
        } else {
            0.0
        };
        let (sin, cos) = angle.sin_cos();
        let sx = finite_or(geometry.shift_x, 0.0) * extent;
        let sy = finite_or(geometry.shift_y, 0.0) * extent;
        let centre_x = finite_or(b.x + b.w * 0.5 + sx * cos - sy * sin, 0.0);
        let centre_y = finite_or(b.y + b.h * 0.5 + sx * sin + sy * cos, 0.0);
        CropTransform {
            centre_x,
            centre_y,
            side,
            angle,
        }
    }

    /// Maps a point in normalised crop coordinates (`0..1` across the crop, y down) to frame
    /// coordinates.
    pub fn crop_to_frame(&self, u: f32, v: f32) -> (f32, f32) {
        let (sin, cos) = self.angle.sin_cos();
        let a = (u - 0.5) * self.side;
        let b = (v - 0.5) * self.side;
        (
            self.centre_x + a * cos - b * sin,
            self.centre_y + a * sin + b * cos,
        )
    }
}

/// Angle of the eye line (keypoint 0, the image-left eye, to keypoint 1), or `None` when the
/// keypoints cannot define one.
fn eye_angle(face: &Face) -> Option<f32> {
    let [right, left, ..] = &face.keypoints;
    let dx = left.x - right.x;
    let dy = left.y - right.y;
    if !(dx.is_finite() && dy.is_finite()) || (dx == 0.0 && dy == 0.0) {
        return None;
    }
    Some(dy.atan2(dx))
}

fn finite_or(v: f32, fallback: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        fallback
    }
}

/// Most sub-samples per axis per output pixel. Typical faces need 2-12 to average a box
/// footprint; the cap bounds the cost of absurd boxes (a 4K frame cropped to 48x48) at the price
/// of mild aliasing there.
const MAX_SUPERSAMPLE: u32 = 16;

/// Cuts the square, optionally eye-levelled crop described by `geometry` out of `gray` and
/// resamples it to `size` x `size`.
///
/// Each output pixel averages an `n` x `n` grid of bilinear samples spread over its footprint in
/// the frame, `n = ceil(footprint / 1 px)`: with no rotation and an integer ratio this is exactly
/// OpenCV's `INTER_AREA` box average, so big faces shrink to 48x48 without aliasing; when
/// upscaling `n = 1`, i.e. plain bilinear. Samples outside the frame replicate the border (like
/// `cv2.BORDER_REPLICATE`). Degenerate inputs give a well-defined image, never a panic: an empty
/// frame gives black, a zero-size box the colour under its centre.
pub fn crop_face(gray: &GrayImage, face: &Face, geometry: &CropGeometry, size: u32) -> GrayImage {
    let mut out = GrayImage::new(size, size);
    crop_face_into(gray, face, geometry, &mut out);
    out
}

/// [`crop_face`] into `out`, whose width is the crop's side (made square if it is not): no
/// allocation when `out` is reused, as the live pipeline does for every face.
pub fn crop_face_into(gray: &GrayImage, face: &Face, geometry: &CropGeometry, out: &mut GrayImage) {
    let size = out.width();
    if out.height() != size {
        *out = GrayImage::new(size, size);
    }
    let (w, h) = gray.dimensions();
    if size == 0 || w == 0 || h == 0 {
        out.fill(0);
        return;
    }
    let t = CropTransform::new(face, geometry);
    let (sin, cos) = t.angle.sin_cos();
    let step = t.side / size as f32;
    let n = ((step - 1e-3).ceil().clamp(1.0, MAX_SUPERSAMPLE as f32)) as u32;
    let sub = step / n as f32;
    let inv_count = 1.0 / (n * n) as f32;
    let src = Sampler::new(gray);
    let half = t.side * 0.5;
    // Offset (relative to the crop centre, crop frame) of sub-sample `k` of pixel `i`; the same
    // for x and y since the crop is square.
    let offset = |i: usize, k: u32| i as f32 * step + (k as f32 + 0.5) * sub - half;
    for (v, row) in out.rows_mut().enumerate() {
        for (u, px) in row.enumerate() {
            let mut acc = 0.0f32;
            for kb in 0..n {
                let b = offset(v, kb);
                let bx = t.centre_x - b * sin;
                let by = t.centre_y + b * cos;
                for ka in 0..n {
                    let a = offset(u, ka);
                    acc += src.bilinear(bx + a * cos, by + a * sin);
                }
            }
            px.0[0] = to_u8(acc * inv_count);
        }
    }
}

/// Bilinear reads with border replication from a non-empty gray image.
struct Sampler<'a> {
    data: &'a [u8],
    w: usize,
    h: usize,
}

impl<'a> Sampler<'a> {
    fn new(img: &'a GrayImage) -> Self {
        Sampler {
            data: img.as_raw(),
            w: img.width() as usize,
            h: img.height() as usize,
        }
    }

    /// `x`, `y` are continuous coordinates: pixel `i` has its centre at `i + 0.5`.
    fn bilinear(&self, x: f32, y: f32) -> f32 {
        let (x0, x1, ax) = Self::taps(x, self.w);
        let (y0, y1, ay) = Self::taps(y, self.h);
        let r0 = y0 * self.w;
        let r1 = y1 * self.w;
        let p = |i: usize| f32::from(self.data.get(i).copied().unwrap_or(0));
        let top = p(r0 + x0) + (p(r0 + x1) - p(r0 + x0)) * ax;
        let bottom = p(r1 + x0) + (p(r1 + x1) - p(r1 + x0)) * ax;
        top + (bottom - top) * ay
    }

    /// The two neighbouring pixel indices (clamped: border replication) and the weight of the
    /// second. Clamping the coordinate first keeps far-away or infinite coordinates from
    /// overflowing the integer conversion; beyond one pixel outside, replication makes every
    /// position equivalent anyway.
    fn taps(c: f32, len: usize) -> (usize, usize, f32) {
        let f = (c - 0.5).clamp(-1.0, len as f32);
        if f.is_nan() {
            return (0, 0, 0.0);
        }
        // floor() without SSE4.1 (the x86_64 baseline) is a libm call per tap: 16 taps per
        // crop pixel made it the crop's largest cost. Truncation, one down for negatives, is
        // the same floor for every f in [-1, len].
        let truncated = f as i64;
        let i = if (truncated as f32) > f {
            truncated - 1
        } else {
            truncated
        };
        let frac = f - i as f32;
        let last = len as i64 - 1;
        (
            i.clamp(0, last) as usize,
            (i + 1).clamp(0, last) as usize,
            frac,
        )
    }
}

fn to_u8(v: f32) -> u8 {
    // `as` saturates and maps NaN to 0, so this cannot wrap.
    (v + 0.5) as u8
}

/// More tiles than this per axis is never useful and would make the LUT table unbounded.
const MAX_TILES: u32 = 256;

/// Contrast-limited adaptive histogram equalisation, reproducing
/// `cv2.createCLAHE(clipLimit, tileGridSize).apply(image)` for 8-bit images. It is bit-exact
/// against OpenCV 5.0 on the golden fixtures in `tests/fixtures/clahe` (and was on 300 random
/// sizes, clip limits and tile grids); the algorithm is unchanged since OpenCV 3.
///
/// The replicated OpenCV behaviours, all of which shift output levels if done otherwise:
/// - if either side is not a multiple of the tile count, the histograms are taken over the image
///   padded bottom/right with `BORDER_REFLECT_101` by `tiles - side % tiles` on BOTH axes (a
///   whole extra tile on an axis that was already divisible);
/// - clip = `max(trunc(clip_limit * tile_area / 256), 1)`; the clipped excess is spread as
///   `excess / 256` per bin, then one extra count every `max(256 / residual, 1)` bins;
/// - LUT = `round(cdf * (255 / tile_area))` in f32, rounding half to even like `cvRound`;
/// - output = bilinear blend of the four surrounding tile LUTs with tile coordinate
///   `x / tile_w - 0.5`, clamped at the outer tiles, in f32.
///
/// `clip_limit <= 0` disables clipping (plain AHE), as in OpenCV. Tile counts of 0 are treated as
/// 1 and counts above 256 as 256.
pub fn clahe(image: &GrayImage, clip_limit: f32, tiles: (u32, u32)) -> GrayImage {
    let mut out = GrayImage::new(0, 0);
    clahe_into(
        image,
        clip_limit,
        tiles,
        &mut out,
        &mut ClaheScratch::default(),
    );
    out
}

/// The tables [`clahe_into`] builds per image, kept so that equalising one face per frame
/// allocates nothing once warm.
#[derive(Debug, Default)]
pub struct ClaheScratch {
    col_src: Vec<usize>,
    row_src: Vec<usize>,
    luts: Vec<u8>,
    cols: Vec<(usize, usize, f32, f32)>,
}

/// [`clahe`] into `out` (resized to the image's size if it differs), with reusable tables.
pub fn clahe_into(
    image: &GrayImage,
    clip_limit: f32,
    tiles: (u32, u32),
    out: &mut GrayImage,
    scratch: &mut ClaheScratch,
) {
    if out.dimensions() != image.dimensions() {
        *out = GrayImage::new(image.width(), image.height());
    }
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return;
    }
    let tiles_x = tiles.0.clamp(1, MAX_TILES) as usize;
    let tiles_y = tiles.1.clamp(1, MAX_TILES) as usize;
    let (w, h) = (w as usize, h as usize);
    let src = image.as_raw();

    let (padded_w, padded_h) = if w % tiles_x == 0 && h % tiles_y == 0 {
        (w, h)
    } else {
        (w + tiles_x - w % tiles_x, h + tiles_y - h % tiles_y)
    };
    let tile_w = padded_w / tiles_x;
    let tile_h = padded_h / tiles_y;
    let tile_area = tile_w * tile_h;
    // Index maps stand in for OpenCV's padded copy: same pixels, no allocation of the image.
    let ClaheScratch {
        col_src,
        row_src,
        luts,
        cols,
    } = scratch;
    col_src.clear();
    col_src.extend((0..padded_w).map(|x| reflect_101(x, w)));
    row_src.clear();
    row_src.extend((0..padded_h).map(|y| reflect_101(y, h)));

    let clip = if clip_limit > 0.0 {
        // OpenCV computes this in double and truncates.
        ((f64::from(clip_limit) * tile_area as f64 / 256.0) as u32).max(1)
    } else {
        0
    };
    let lut_scale = 255.0f32 / tile_area as f32;

    luts.clear();
    luts.resize(tiles_x * tiles_y * 256, 0);
    for (k, lut) in luts.chunks_exact_mut(256).enumerate() {
        let (ty, tx) = (k / tiles_x, k % tiles_x);
        let mut hist = [0u32; 256];
        for &sy in &row_src[ty * tile_h..(ty + 1) * tile_h] {
            let row = &src[sy * w..(sy + 1) * w];
            for &sx in &col_src[tx * tile_w..(tx + 1) * tile_w] {
                hist[usize::from(row[sx])] += 1;
            }
        }
        if clip > 0 {
            clip_histogram(&mut hist, clip);
        }
        let mut sum = 0u32;
        for (entry, &count) in lut.iter_mut().zip(hist.iter()) {
            sum += count;
            *entry = round_sat_u8(sum as f32 * lut_scale);
        }
    }

    // Per-column tile indices and weights, computed exactly as OpenCV does (f32 reciprocal).
    let inv_tw = 1.0f32 / tile_w as f32;
    cols.clear();
    cols.extend((0..w).map(|x| {
        let (t1, t2, a) = tile_neighbours(x as f32 * inv_tw - 0.5, tiles_x);
        (t1 * 256, t2 * 256, a, 1.0 - a)
    }));
    let inv_th = 1.0f32 / tile_h as f32;
    let out: &mut [u8] = out;
    for (y, (dst_row, src_row)) in out.chunks_exact_mut(w).zip(src.chunks_exact(w)).enumerate() {
        let (ty1, ty2, ya) = tile_neighbours(y as f32 * inv_th - 0.5, tiles_y);
        let ya1 = 1.0 - ya;
        let plane1 = &luts[ty1 * tiles_x * 256..(ty1 + 1) * tiles_x * 256];
        let plane2 = &luts[ty2 * tiles_x * 256..(ty2 + 1) * tiles_x * 256];
        for ((d, &s), &(i1, i2, xa, xa1)) in dst_row.iter_mut().zip(src_row).zip(cols.iter()) {
            let s = usize::from(s);
            let l = |plane: &[u8], i: usize| f32::from(plane[i + s]);
            // Same association order as OpenCV so f32 rounding agrees.
            let res = (l(plane1, i1) * xa1 + l(plane1, i2) * xa) * ya1
                + (l(plane2, i1) * xa1 + l(plane2, i2) * xa) * ya;
            *d = round_sat_u8(res);
        }
    }
}

/// OpenCV's clip-and-redistribute, integer for integer.
fn clip_histogram(hist: &mut [u32; 256], clip: u32) {
    let mut clipped = 0u32;
    for bin in hist.iter_mut() {
        if *bin > clip {
            clipped += *bin - clip;
            *bin = clip;
        }
    }
    let batch = clipped / 256;
    let mut residual = clipped - batch * 256;
    for bin in hist.iter_mut() {
        *bin += batch;
    }
    if let Some(step) = 256u32.checked_div(residual) {
        let step = step.max(1) as usize;
        let mut i = 0;
        while i < 256 && residual > 0 {
            hist[i] += 1;
            i += step;
            residual -= 1;
        }
    }
}

/// The two tiles whose LUTs blend at tile coordinate `t`, and the weight of the second.
fn tile_neighbours(t: f32, tiles: usize) -> (usize, usize, f32) {
    let t1 = t.floor();
    let a = t - t1;
    let t1 = t1 as i64;
    let last = tiles as i64 - 1;
    (
        t1.clamp(0, last) as usize,
        (t1 + 1).clamp(0, last) as usize,
        a,
    )
}

/// OpenCV's `borderInterpolate(p, len, BORDER_REFLECT_101)` for `p >= 0` (padding is only ever
/// added bottom/right), including its repeated reflection when the pad exceeds the image.
fn reflect_101(p: usize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let mut p = p as i64;
    let len = len as i64;
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * len - 2 - p };
    }
    p as usize
}

/// `cv::saturate_cast<uchar>(float)`: round half to even (cvRound), then clamp.
fn round_sat_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// Writes `pixel * scale + offset` for every pixel, row-major, into `out` (cleared first; its
/// allocation is reused when large enough, so a per-face buffer costs nothing after warm-up).
/// With `scale = 1 / 127.5`, `offset = -1` this gives the model's `[-1, 1]` input.
pub fn normalise_into(image: &GrayImage, scale: f32, offset: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        image
            .as_raw()
            .iter()
            .map(|&p| f32::from(p) * scale + offset),
    );
}

/// RGB to gray with OpenCV's `COLOR_RGB2GRAY` arithmetic, so the runtime sees the same gray
/// levels as the Python training pipeline: weights 0.299/0.587/0.114 as 15-bit fixed point
/// (9798, 19235, 3735) with round-half-up. That is what OpenCV 5.0 computes for 8-bit input
/// (checked against it on 2.4M colours); the 14-bit weights of OpenCV's generic path
/// (4899, 9617, 1868) disagree by one level on about 0.3% of colours.
pub fn rgb_to_gray(image: &RgbImage) -> GrayImage {
    const R: u32 = 9798;
    const G: u32 = 19235;
    const B: u32 = 3735;
    const SHIFT: u32 = 15;
    let data: Vec<u8> = image
        .as_raw()
        .chunks_exact(3)
        .map(|p| {
            let y = u32::from(p[0]) * R + u32::from(p[1]) * G + u32::from(p[2]) * B;
            // The weights sum to 1 << SHIFT, so the result is at most 255.
            ((y + (1 << (SHIFT - 1))) >> SHIFT) as u8
        })
        .collect();
    GrayImage::from_raw(image.width(), image.height(), data)
        .unwrap_or_else(|| GrayImage::new(image.width(), image.height()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{BBox, Point};
    use std::path::{Path, PathBuf};

    fn gray_fn(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
    }

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clahe")
    }

    fn manifest() -> serde_json::Value {
        let text = std::fs::read_to_string(fixture_dir().join("manifest.json"))
            .expect("fixture manifest; regenerate with tests/fixtures/make_clahe_fixtures.py");
        serde_json::from_str(&text).expect("manifest.json is valid JSON")
    }

    fn load(name: &str) -> image::DynamicImage {
        image::open(fixture_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    fn max_abs_diff(a: &GrayImage, b: &GrayImage) -> u8 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| x.abs_diff(y))
            .max()
            .unwrap_or(0)
    }

    fn face(bbox: (f32, f32, f32, f32), eyes: [(f32, f32); 2]) -> Face {
        let p = |(x, y): (f32, f32)| Point { x, y };
        let (cx, cy) = (bbox.0 + bbox.2 / 2.0, bbox.1 + bbox.3 / 2.0);
        Face {
            bbox: BBox {
                x: bbox.0,
                y: bbox.1,
                w: bbox.2,
                h: bbox.3,
            },
            score: 0.9,
            keypoints: [
                p(eyes[0]),
                p(eyes[1]),
                p((cx, cy)),
                p((cx, cy + bbox.3 * 0.25)),
                p((bbox.0, cy)),
                p((bbox.0 + bbox.2, cy)),
            ],
        }
    }

    fn plain(scale: f32, rotate: bool) -> CropGeometry {
        CropGeometry {
            scale,
            shift_x: 0.0,
            shift_y: 0.0,
            rotate,
        }
    }

    #[test]
    fn clahe_matches_opencv_fixtures() {
        let m = manifest();
        let cases = m["clahe"].as_array().expect("clahe cases");
        assert!(cases.len() >= 10, "too few fixtures");
        let mut worst = 0;
        for case in cases {
            let input = load(case["input"].as_str().expect("input")).to_luma8();
            let expected = load(case["output"].as_str().expect("output")).to_luma8();
            let clip = case["clip_limit"].as_f64().expect("clip") as f32;
            let tiles = (
                case["tiles"][0].as_u64().expect("tiles") as u32,
                case["tiles"][1].as_u64().expect("tiles") as u32,
            );
            let got = clahe(&input, clip, tiles);
            let diff = max_abs_diff(&got, &expected);
            let off = got
                .as_raw()
                .iter()
                .zip(expected.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            eprintln!(
                "{:<45} max diff {diff}, {off} pixels differ",
                case["output"].as_str().unwrap_or("?")
            );
            assert!(diff <= 1, "{case}: max diff {diff}");
            worst = worst.max(diff);
        }
        eprintln!("CLAHE vs OpenCV {}: worst {worst}", m["opencv"]);
    }

    #[test]
    fn rgb_to_gray_matches_opencv_fixtures() {
        let m = manifest();
        for case in m["rgb_to_gray"].as_array().expect("rgb cases") {
            let input = load(case["input"].as_str().expect("input")).to_rgb8();
            let expected = load(case["output"].as_str().expect("output")).to_luma8();
            let diff = max_abs_diff(&rgb_to_gray(&input), &expected);
            assert_eq!(diff, 0, "{case}");
        }
    }

    #[test]
    fn clahe_handles_tiny_and_odd_inputs() {
        for (w, h) in [(1, 1), (1, 9), (9, 1), (3, 2), (7, 7)] {
            let img = gray_fn(w, h, |x, y| ((x * 37 + y * 91) % 256) as u8);
            assert_eq!(clahe(&img, 2.0, (8, 8)).dimensions(), (w, h));
        }
        let img = gray_fn(20, 20, |x, y| (x * 10 + y) as u8);
        assert_eq!(clahe(&img, 2.0, (0, 0)).dimensions(), (20, 20));
        assert_eq!(clahe(&img, 0.0, (u32::MAX, 3)).dimensions(), (20, 20));
        assert_eq!(
            clahe(&GrayImage::new(0, 0), 2.0, (8, 8)).dimensions(),
            (0, 0)
        );
    }

    #[test]
    fn reflect_101_matches_opencv_border_interpolate() {
        // OpenCV: gfedcb|abcdefgh|gfedcba
        let got: Vec<usize> = (8..12).map(|p| reflect_101(p, 8)).collect();
        assert_eq!(got, vec![6, 5, 4, 3]);
        // Pads longer than the image keep reflecting: len 3 -> 0 1 2 1 0 1 2 1 ...
        let got: Vec<usize> = (0..9).map(|p| reflect_101(p, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 1, 0, 1, 2, 1, 0]);
        assert_eq!(reflect_101(5, 1), 0);
    }

    /// Two bright dots on a black frame where the eye keypoints are; returns the crop and the
    /// centroids of its left and right bright blobs.
    fn eye_dots_crop(angle_deg: f32, rotate: bool) -> ((f32, f32), (f32, f32)) {
        let (cx, cy) = (120.0f32, 100.0f32);
        let (s, c) = angle_deg.to_radians().sin_cos();
        let half = 30.0;
        // The eyes sit 15 px above the box centre along the face's own up axis.
        let (mx, my) = (cx + 15.0 * s, cy - 15.0 * c);
        let e0 = (mx - half * c, my - half * s);
        let e1 = (mx + half * c, my + half * s);
        let mut img = GrayImage::new(240, 200);
        for (ex, ey) in [e0, e1] {
            for y in 0..200u32 {
                for x in 0..240u32 {
                    let d2 = (x as f32 + 0.5 - ex).powi(2) + (y as f32 + 0.5 - ey).powi(2);
                    if d2 <= 9.0 {
                        img.put_pixel(x, y, image::Luma([255]));
                    }
                }
            }
        }
        let f = face((cx - 50.0, cy - 50.0, 100.0, 100.0), [e0, e1]);
        let crop = crop_face(&img, &f, &plain(1.2, rotate), 64);
        let centroid = |x_range: std::ops::Range<u32>| {
            let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
            for y in 0..64 {
                for x in x_range.clone() {
                    let v = f32::from(crop.get_pixel(x, y).0[0]);
                    sx += v * (x as f32 + 0.5);
                    sy += v * (y as f32 + 0.5);
                    sw += v;
                }
            }
            assert!(sw > 0.0, "eye dot missing from crop");
            (sx / sw, sy / sw)
        };
        (centroid(0..32), centroid(32..64))
    }

    #[test]
    fn crop_face_levels_tilted_eyes() {
        for angle in [30.0f32, -30.0] {
            let (l, r) = eye_dots_crop(angle, true);
            assert!(
                (l.1 - r.1).abs() < 0.5,
                "{angle}: eyes at rows {} and {}",
                l.1,
                r.1
            );
            // 60 px between eyes in the frame, crop side 120 px -> 32 px in a 64 px crop.
            assert!(((r.0 - l.0) - 32.0).abs() < 0.5, "{angle}: {l:?} {r:?}");
            // Eyes sit 15 px above the box centre: 8 px above the crop centre.
            assert!((l.1 - 24.0).abs() < 0.5, "{angle}: {l:?}");
        }
        // Without levelling, the same face stays tilted: the check above is not vacuous.
        let (l, r) = eye_dots_crop(30.0, false);
        assert!(r.1 - l.1 > 10.0, "{l:?} {r:?}");
    }

    #[test]
    fn crop_face_shift_follows_rotated_frame() {
        // shift_y moves along the face's own down axis: with the face rolled 90 degrees
        // (eye line pointing down the frame), "down" is the frame's -x.
        let f = face((50.0, 50.0, 100.0, 100.0), [(100.0, 80.0), (100.0, 120.0)]);
        let g = CropGeometry {
            scale: 1.0,
            shift_x: 0.0,
            shift_y: 0.1,
            rotate: true,
        };
        let t = CropTransform::new(&f, &g);
        assert!(
            (t.centre_x - 90.0).abs() < 1e-3 && (t.centre_y - 100.0).abs() < 1e-3,
            "{t:?}"
        );
        let (x, y) = t.crop_to_frame(0.5, 0.5);
        assert!((x - 90.0).abs() < 1e-3 && (y - 100.0).abs() < 1e-3);
    }

    #[test]
    fn crop_face_replicates_border() {
        // Rows carry a gradient, columns are constant: replication continues each row's
        // value, black fill or wrap-around would not.
        let img = gray_fn(60, 60, |x, y| if x < 10 { (4 * y) as u8 } else { 255 });
        // Box from x=-30 to 10: 3/4 outside the left edge, 1 px per output pixel.
        let f = face((-30.0, 10.0, 40.0, 40.0), [(-20.0, 20.0), (0.0, 20.0)]);
        let crop = crop_face(&img, &f, &plain(1.0, true), 40);
        for (x, y, p) in crop.enumerate_pixels() {
            assert_eq!(p.0[0], (4 * (10 + y)) as u8, "at ({x}, {y})");
        }
        // A box entirely below-right of the frame sees only the corner pixel.
        let f = face((500.0, 900.0, 30.0, 30.0), [(505.0, 910.0), (525.0, 910.0)]);
        let crop = crop_face(&img, &f, &plain(1.0, true), 8);
        assert!(crop.pixels().all(|p| p.0[0] == 255));
        let f = face((-500.0, 59.5, 30.0, 30.0), [(-495.0, 70.0), (-475.0, 70.0)]);
        let crop = crop_face(&img, &f, &plain(1.0, false), 8);
        assert!(crop.pixels().all(|p| p.0[0] == 236));
    }

    #[test]
    fn crop_face_downscale_does_not_alias() {
        // A one-pixel checkerboard: point sampling would give 0 or 255 (or moire); an area
        // average gives mid-gray everywhere.
        let img = gray_fn(480, 480, |x, y| if (x + y) % 2 == 0 { 0 } else { 255 });
        // An even footprint (4x4 px) so the exact box average is 127.5 everywhere. The eyes are
        // rolled by about 20 degrees to exercise the rotated path too, where a tilted footprint
        // cuts the checkerboard unevenly: a few levels off, where one bilinear sample per
        // pixel would be up to 127 off.
        let f = face(
            (144.0, 144.0, 192.0, 192.0),
            [(180.0, 200.0), (300.0, 244.0)],
        );
        for (rotate, tolerance) in [(false, 1), (true, 10)] {
            let crop = crop_face(&img, &f, &plain(1.0, rotate), 48);
            let worst = crop
                .pixels()
                .map(|p| p.0[0].abs_diff(128))
                .max()
                .unwrap_or(0);
            assert!(worst <= tolerance, "rotate={rotate}: off by {worst}");
        }
        // Integer ratio, no rotation: exactly OpenCV's INTER_AREA box average.
        let img = gray_fn(96, 96, |x, y| ((x * 7 + y * 13) % 251) as u8);
        let f = face((0.0, 0.0, 96.0, 96.0), [(30.0, 40.0), (66.0, 40.0)]);
        let crop = crop_face(&img, &f, &plain(1.0, false), 48);
        for (x, y, p) in crop.enumerate_pixels() {
            let sum: u32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                .iter()
                .map(|(dx, dy)| u32::from(img.get_pixel(2 * x + dx, 2 * y + dy).0[0]))
                .sum();
            assert!(p.0[0].abs_diff(((sum + 2) / 4) as u8) <= 1, "at ({x}, {y})");
        }
    }

    #[test]
    fn crop_face_upscale_is_bilinear() {
        let img = gray_fn(8, 8, |x, _| (x * 32) as u8);
        let f = face((2.0, 2.0, 4.0, 4.0), [(3.0, 3.0), (5.0, 3.0)]);
        let crop = crop_face(&img, &f, &plain(1.0, false), 16);
        // Source x = 2 + (u + 0.5) / 4, so the value is 32 * (x - 0.5) wherever interpolating.
        for (u, _, p) in crop.enumerate_pixels() {
            let expected = 32.0 * (2.0 + (u as f32 + 0.5) / 4.0 - 0.5);
            assert!(
                (f32::from(p.0[0]) - expected).abs() <= 0.51,
                "u={u}: {}",
                p.0[0]
            );
        }
    }

    #[test]
    fn crop_face_degenerate_inputs_do_not_panic() {
        let img = gray_fn(64, 48, |x, y| (x + y) as u8);
        let one = GrayImage::from_pixel(1, 1, image::Luma([42]));
        let empty = GrayImage::new(0, 0);
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        let faces = [
            face((10.0, 10.0, 0.0, 0.0), [(10.0, 10.0), (10.0, 10.0)]),
            face((-1000.0, -1000.0, 20.0, 20.0), [(0.0, 0.0), (1.0, 0.0)]),
            face((1e30, -1e30, 1e30, 1e30), [(0.0, 0.0), (1.0, 1.0)]),
            face((10.0, 10.0, 20.0, 20.0), [(nan, 1.0), (2.0, nan)]),
            face((nan, nan, nan, nan), [(nan, nan), (nan, nan)]),
            face((inf, -inf, inf, inf), [(inf, 0.0), (-inf, 0.0)]),
            face((10.0, 10.0, -20.0, -20.0), [(20.0, 15.0), (10.0, 15.0)]),
        ];
        let geometries = [
            CropGeometry::default(),
            CropGeometry {
                scale: nan,
                shift_x: inf,
                shift_y: nan,
                rotate: true,
            },
            plain(0.0, true),
            plain(-2.0, false),
            plain(1e20, true),
        ];
        for f in &faces {
            for g in &geometries {
                for frame in [&img, &one, &empty] {
                    for size in [0, 1, 48] {
                        let crop = crop_face(frame, f, g, size);
                        assert_eq!(crop.dimensions(), (size, size));
                    }
                }
            }
        }
        // A 1x1 frame replicates its only pixel everywhere.
        let crop = crop_face(&one, &faces[1], &CropGeometry::default(), 8);
        assert!(crop.pixels().all(|p| p.0[0] == 42));
        // NaN keypoints fall back to an unrotated crop.
        let a = crop_face(&img, &faces[3], &plain(1.0, true), 16);
        let b = crop_face(&img, &faces[3], &plain(1.0, false), 16);
        assert_eq!(a, b);
    }

    #[test]
    fn normalise_into_maps_to_unit_range_and_reuses_buffer() {
        let img = GrayImage::from_raw(3, 1, vec![0, 255, 128]).expect("3 pixels");
        let mut out = Vec::with_capacity(16);
        let ptr = out.as_ptr();
        normalise_into(&img, 1.0 / 127.5, -1.0, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], -1.0);
        assert!((out[1] - 1.0).abs() < 1e-6, "{}", out[1]);
        assert!((out[2] - 0.003_921_6).abs() < 1e-6, "{}", out[2]);
        // Cleared and refilled: a second call does not append, nor reallocate.
        normalise_into(&img, 1.0 / 127.5, -1.0, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out.capacity(), 16);
        // Row-major order.
        let img = GrayImage::from_raw(2, 2, vec![1, 2, 3, 4]).expect("4 pixels");
        normalise_into(&img, 1.0, 0.0, &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn crop_geometry_serde_defaults_missing_fields() {
        let g: CropGeometry = serde_json::from_str(r#"{"scale": 1.5}"#).expect("partial geometry");
        assert_eq!(
            g,
            CropGeometry {
                scale: 1.5,
                ..CropGeometry::default()
            }
        );
        let text = serde_json::to_string(&CropGeometry::default()).expect("serialise");
        let back: CropGeometry = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, CropGeometry::default());
    }
}
