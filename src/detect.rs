//! Face detection with MediaPipe BlazeFace, run through tract.
//!
//! This module owns everything between an RGB frame and a list of [`Face`]s in frame pixels:
//! loading the two BlazeFace ONNX graphs (embedded from `models/blazeface/`, or a user file),
//! letterboxing the frame into the model's square input, SSD anchor generation, box and keypoint
//! decoding, score thresholding, MediaPipe's weighted non-maximum suppression, and the
//! minimum-size / maximum-count filters. It does not own face alignment, cropping or
//! normalisation for the expression model (that is [`crate::align`]), tracking across frames, or
//! frame capture and colour conversion: callers hand it an [`image::RgbImage`].
//!
//! Model facts (see `models/blazeface/README.md`): NHWC input `1xSxSx3`, RGB scaled to
//! `[-1, 1]`; four outputs, scores `[1,512,1]`, `[1,384,1]` and regressors `[1,512,16]`,
//! `[1,384,16]` for 896 anchors. Each regressor row is box centre offset x, y, box w, h, then six
//! keypoints (x, y), all in input pixels relative to the anchor centre.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use crate::kernels::{Backend, ConvKernels};

/// Embedded folded graphs (see `models/blazeface/fetch.py`).
const SHORT_ONNX: &[u8] = include_bytes!("../models/blazeface/blazeface_short_128.onnx");
const LONG_ONNX: &[u8] = include_bytes!("../models/blazeface/blazeface_long_256.onnx");

/// Values per anchor in the regressor outputs: 4 box + 6 keypoints x 2.
const COORDS: usize = 16;
/// Number of keypoints per face.
const KEYPOINTS: usize = 6;
/// MediaPipe's `score_clipping_thresh`: logits are clamped to +-100 before the sigmoid.
const SCORE_CLIP: f32 = 100.0;

/// Which BlazeFace graph to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorModel {
    /// 128x128 "front camera" model: faces filling a good part of the frame (within ~2 m).
    #[default]
    Short,
    /// 256x256 "back camera" model: smaller, more distant faces; about 4x the cost.
    Long,
}

impl std::str::FromStr for DetectorModel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "short" => Ok(DetectorModel::Short),
            "long" => Ok(DetectorModel::Long),
            other => Err(format!(
                "detector must be \"short\" or \"long\", not {other:?}"
            )),
        }
    }
}

impl DetectorModel {
    /// Every model, in the order the command line lists them.
    pub const ALL: [DetectorModel; 2] = [DetectorModel::Short, DetectorModel::Long];

    /// The name used on the command line, in config files and in `bench` output.
    pub fn name(self) -> &'static str {
        match self {
            DetectorModel::Short => "short",
            DetectorModel::Long => "long",
        }
    }

    /// The default minimum score. Above every faceless image's best score, as low as that
    /// allows: cameras give the detector gray frames (Y of YUYV, no colour conversion), where
    /// faces score lower than in colour (the astronaut in a 640x480 frame: 0.68 gray, 0.87 colour).
    /// Short: scikit-image's 20 faceless samples scored at most 0.58 and 40 faceless crops of the
    /// test photos stayed below 0.6 (one reached 0.5); `models/detector_threshold.py` measured 0.6 to
    /// find 77 % of 200 gray FER2013 faces in 640x480 frames where 0.75 found 59 %. Long: 0.68 on the faceless
    /// samples and 0.80 on the cat photo, so it keeps keijiro's 0.75.
    pub fn default_score_threshold(self) -> f32 {
        match self {
            DetectorModel::Short => 0.6,
            DetectorModel::Long => 0.75,
        }
    }

    /// Side of the square model input, in pixels.
    pub fn input_size(self) -> usize {
        match self {
            DetectorModel::Short => 128,
            DetectorModel::Long => 256,
        }
    }

    /// Anchor strides of MediaPipe's `SsdAnchorsCalculator` options for this model.
    fn strides(self) -> [usize; 4] {
        match self {
            DetectorModel::Short => [8, 16, 16, 16],
            DetectorModel::Long => [16, 32, 32, 32],
        }
    }

    fn embedded(self) -> &'static [u8] {
        match self {
            DetectorModel::Short => SHORT_ONNX,
            DetectorModel::Long => LONG_ONNX,
        }
    }
}

/// A point in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// An axis-aligned box in frame pixels: top-left corner and size. It is not clipped to the
/// frame: a face cut by the frame edge may extend past it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    /// From the `[x, y, w, h]` array that results and tracks carry.
    pub fn from_xywh([x, y, w, h]: [f32; 4]) -> Self {
        BBox { x, y, w, h }
    }

    pub fn xywh(&self) -> [f32; 4] {
        [self.x, self.y, self.w, self.h]
    }

    /// Area; zero for a degenerate box.
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union; zero when the boxes do not overlap or both are empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let w = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let h = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        if w <= 0.0 || h <= 0.0 {
            return 0.0;
        }
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// One detected face.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Face {
    pub bbox: BBox,
    /// Detector confidence in `[0, 1]` (the best score of the merged detections).
    pub score: f32,
    /// MediaPipe order: 0 right eye (the subject's right, image-left), 1 left eye, 2 nose tip,
    /// 3 mouth centre, 4 right ear tragion, 5 left ear tragion.
    pub keypoints: [Point; 6],
}

/// Detector settings. All sizes are in frame pixels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Which BlazeFace graph to run.
    pub model: DetectorModel,
    /// Minimum detector confidence, in `[0, 1]`. Default: the model's
    /// [`DetectorModel::default_score_threshold`] (MediaPipe uses 0.5, keijiro's
    /// BlazeFaceBarracuda 0.75).
    pub score_threshold: f32,
    /// Detections overlapping more than this (intersection over union) are merged, in `[0, 1]`.
    pub iou_threshold: f32,
    /// Faces whose box is smaller than this on its longer side are dropped (pixels, >= 0).
    pub min_face_size: f32,
    /// At most this many faces are returned, best first (>= 1).
    pub max_faces: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::for_model(DetectorModel::Short)
    }
}

impl DetectorConfig {
    /// Defaults for `model`, its own score threshold included.
    pub fn for_model(model: DetectorModel) -> Self {
        DetectorConfig {
            model,
            score_threshold: model.default_score_threshold(),
            iou_threshold: 0.3,
            min_face_size: 20.0,
            max_faces: 16,
        }
    }
}

impl DetectorConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), DetectError> {
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(DetectError::InvalidConfig(format!(
                    "{name} must be in [0, 1], got {v}"
                )))
            }
        };
        unit("score_threshold", self.score_threshold)?;
        unit("iou_threshold", self.iou_threshold)?;
        if !(self.min_face_size.is_finite() && self.min_face_size >= 0.0) {
            return Err(DetectError::InvalidConfig(format!(
                "min_face_size must be a finite number >= 0, got {}",
                self.min_face_size
            )));
        }
        if self.max_faces == 0 {
            return Err(DetectError::InvalidConfig(
                "max_faces must be at least 1".to_string(),
            ));
        }
        Ok(())
    }
}

/// Errors of the face detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A [`DetectorConfig`] field is out of range.
    #[error("invalid detector configuration: {0}")]
    InvalidConfig(String),
    /// The model file could not be read.
    #[error("cannot read detector model {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model could not be parsed or optimised, or is not a BlazeFace graph of the
    /// configured size.
    #[error("cannot load detector model {origin}: {reason}")]
    ModelLoad { origin: String, reason: String },
    /// tract failed while running the model.
    #[error("face detector inference failed: {0}")]
    Inference(String),
}

/// An SSD anchor centre in normalised input coordinates (anchor size is fixed at 1x1).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Anchor {
    x: f32,
    y: f32,
}

/// MediaPipe `SsdAnchorsCalculator` with the BlazeFace options: `num_layers` = strides.len(),
/// aspect ratio 1.0 plus one interpolated-scale anchor per layer (2 per layer), consecutive
/// layers with the same stride share one grid, anchor offset 0.5, `fixed_anchor_size` (so only
/// centres matter). Order: grid, then row, column, anchor, as the model outputs them.
/// Returns the anchors and the number of anchors in each grid.
fn generate_anchors(input_size: usize, strides: &[usize]) -> (Vec<Anchor>, Vec<usize>) {
    let mut anchors = Vec::new();
    let mut groups = Vec::new();
    let mut layer = 0;
    while layer < strides.len() {
        let stride = strides[layer];
        let mut per_cell = 0;
        while layer < strides.len() && strides[layer] == stride {
            per_cell += 2;
            layer += 1;
        }
        let cells = input_size.div_ceil(stride.max(1));
        for row in 0..cells {
            for col in 0..cells {
                let a = Anchor {
                    x: (col as f32 + 0.5) / cells as f32,
                    y: (row as f32 + 0.5) / cells as f32,
                };
                anchors.extend(std::iter::repeat_n(a, per_cell));
            }
        }
        groups.push(cells * cells * per_cell);
    }
    (anchors, groups)
}

/// Placement of a frame inside the square model input: scaled to fit, aspect kept, centred,
/// padded with black. Coordinates here are input pixels (`0..size`) and frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Letterbox {
    size: u32,
    frame_w: u32,
    frame_h: u32,
    /// Size of the scaled frame inside the input (at least 1x1).
    scaled_w: u32,
    scaled_h: u32,
    pad_x: u32,
    pad_y: u32,
}

impl Letterbox {
    fn new(frame_w: u32, frame_h: u32, size: u32) -> Letterbox {
        let longest = frame_w.max(frame_h).max(1) as f64;
        let fit = |side: u32| {
            let s = (side as f64 * size as f64 / longest).round();
            (s as u32).clamp(1, size)
        };
        let scaled_w = fit(frame_w);
        let scaled_h = fit(frame_h);
        Letterbox {
            size,
            frame_w,
            frame_h,
            scaled_w,
            scaled_h,
            pad_x: (size - scaled_w) / 2,
            pad_y: (size - scaled_h) / 2,
        }
    }

    fn sx(&self) -> f32 {
        self.frame_w as f32 / self.scaled_w as f32
    }

    fn sy(&self) -> f32 {
        self.frame_h as f32 / self.scaled_h as f32
    }

    /// Input pixels -> frame pixels.
    fn frame_from_input(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.pad_x as f32) * self.sx(),
            (y - self.pad_y as f32) * self.sy(),
        )
    }

    /// Frame pixels -> input pixels.
    #[cfg(test)]
    fn input_from_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            x / self.sx() + self.pad_x as f32,
            y / self.sy() + self.pad_y as f32,
        )
    }

    /// The NHWC input tensor data: the frame scaled into place, RGB mapped to [-1, 1], padding
    /// black (-1). Shrinking by 2x or more averages whole source-pixel blocks (each source pixel
    /// is read once, and it antialiases); smaller ratios and enlarging use a triangle
    /// (bilinear) filter.
    #[cfg(test)]
    fn tensor_data(&self, image: &image::RgbImage) -> Vec<f32> {
        let mut data = vec![0.0; self.tensor_len()];
        self.fill(image, &mut data);
        data
    }

    #[cfg(test)]
    fn tensor_len(&self) -> usize {
        (self.size * self.size * 3) as usize
    }

    /// [`Letterbox::tensor_data`] written into `data` (`size * size * 3` values). Shrinking by
    /// 2x or more (any camera frame of 256 pixels or more into the short detector) allocates
    /// nothing; a smaller shrink or an enlargement allocates the scaled frame.
    fn fill(&self, image: &image::RgbImage, data: &mut [f32]) {
        if image.dimensions() == (self.scaled_w, self.scaled_h) {
            return self.place(image.as_raw(), 3, data);
        }
        if self.shrink() >= 2.0 {
            return self.shrink_into(image.as_raw(), 3, data);
        }
        self.place(self.scale(image).as_raw(), 3, data)
    }

    /// [`Letterbox::fill`] of a gray frame, equal to that of the gray expanded to RGB: the
    /// scaling works per channel, so it scales the one channel (a third of the work, and no RGB
    /// frame) and writes each value to all three.
    fn fill_gray(&self, gray: &image::GrayImage, data: &mut [f32]) {
        if gray.dimensions() == (self.scaled_w, self.scaled_h) {
            return self.place(gray.as_raw(), 1, data);
        }
        if self.shrink() >= 2.0 {
            return self.shrink_into(gray.as_raw(), 1, data);
        }
        self.place(self.scale(gray).as_raw(), 1, data)
    }

    #[cfg(test)]
    fn tensor_data_gray(&self, gray: &image::GrayImage) -> Vec<f32> {
        let mut data = vec![0.0; self.tensor_len()];
        self.fill_gray(gray, &mut data);
        data
    }

    /// How many frame pixels one input pixel spans, along the tighter axis.
    fn shrink(&self) -> f32 {
        (self.frame_w as f32 / self.scaled_w as f32).min(self.frame_h as f32 / self.scaled_h as f32)
    }

    /// [`Letterbox::place`] of `image::imageops::thumbnail(frame, scaled_w, scaled_h)`, for a
    /// frame of `channels` (1 or 3) interleaved bytes shrunk by 2x or more, without building the
    /// scaled frame. Each output pixel is the rounded integer mean of the same block of frame
    /// pixels that `thumbnail` averages (its block bounds come from the same f32 arithmetic), so
    /// the result is identical; the sums run over raw rows instead of a pixel at a time, about
    /// 5x faster for a 640x480 frame. At 2x or more every block is at least 2x2 pixels, the only
    /// case of `thumbnail` this reproduces.
    fn shrink_into(&self, src: &[u8], channels: usize, data: &mut [f32]) {
        let size = self.size as usize;
        data.fill(-1.0);
        let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / 127.5 - 1.0);
        let (width, height) = (self.frame_w, self.frame_h);
        let x_ratio = width as f32 / self.scaled_w as f32;
        let y_ratio = height as f32 / self.scaled_h as f32;
        let row_len = width as usize * channels;
        for out_y in 0..self.scaled_h {
            let bottom_f = out_y as f32 * y_ratio;
            let bottom = (bottom_f.ceil() as u32).clamp(0, height - 1);
            let top = ((bottom_f + y_ratio).ceil() as u32).clamp(bottom, height);
            let start = ((out_y + self.pad_y) as usize * size + self.pad_x as usize) * 3;
            for out_x in 0..self.scaled_w {
                let left_f = out_x as f32 * x_ratio;
                let left = (left_f.ceil() as u32).clamp(0, width - 1);
                let right = ((left_f + x_ratio).ceil() as u32).clamp(left, width);
                let mut sums = [0u32; 3];
                for y in bottom..top {
                    let row = &src[y as usize * row_len..][..row_len];
                    let block = &row[left as usize * channels..right as usize * channels];
                    for pixel in block.chunks_exact(channels) {
                        for (sum, &v) in sums.iter_mut().zip(pixel) {
                            *sum += u32::from(v);
                        }
                    }
                }
                let n = (right - left) * (top - bottom);
                let dst = &mut data[start + out_x as usize * 3..][..3];
                for (c, d) in dst.iter_mut().enumerate() {
                    let mean = (sums[c.min(channels - 1)] + n / 2) / n.max(1);
                    *d = lut[mean.min(255) as usize];
                }
            }
        }
    }

    /// The frame resized to the scaled size with a triangle (bilinear) filter: the letterbox of a
    /// frame that shrinks by less than 2x, or grows.
    fn scale<P: image::Pixel<Subpixel = u8> + 'static>(
        &self,
        frame: &image::ImageBuffer<P, Vec<u8>>,
    ) -> image::ImageBuffer<P, Vec<u8>> {
        image::imageops::resize(
            frame,
            self.scaled_w,
            self.scaled_h,
            image::imageops::FilterType::Triangle,
        )
    }

    /// Writes a `scaled_w x scaled_h` image of `channels` (1 or 3) interleaved bytes into the
    /// padded NHWC tensor `data`; one channel is replicated into R, G and B.
    fn place(&self, src: &[u8], channels: usize, data: &mut [f32]) {
        let size = self.size as usize;
        data.fill(-1.0);
        let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / 127.5 - 1.0);
        let width = self.scaled_w as usize;
        for (y, row) in src
            .chunks_exact(width * channels)
            .take(self.scaled_h as usize)
            .enumerate()
        {
            let start = ((y + self.pad_y as usize) * size + self.pad_x as usize) * 3;
            let dst = &mut data[start..start + width * 3];
            if channels == 3 {
                for (d, &v) in dst.iter_mut().zip(row) {
                    *d = lut[v as usize];
                }
            } else {
                for (d, &v) in dst.chunks_exact_mut(3).zip(row) {
                    d.fill(lut[v as usize]);
                }
            }
        }
    }
}

/// A decoded detection in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RawDetection {
    xmin: f32,
    ymin: f32,
    xmax: f32,
    ymax: f32,
    keypoints: [(f32, f32); KEYPOINTS],
    score: f32,
}

impl RawDetection {
    fn bbox(&self) -> BBox {
        BBox {
            x: self.xmin,
            y: self.ymin,
            w: self.xmax - self.xmin,
            h: self.ymax - self.ymin,
        }
    }

    fn iou(&self, other: &RawDetection) -> f32 {
        self.bbox().iou(&other.bbox())
    }

    fn is_finite(&self) -> bool {
        [self.xmin, self.ymin, self.xmax, self.ymax, self.score]
            .iter()
            .chain(self.keypoints.iter().flat_map(|(x, y)| [x, y]))
            .all(|v| v.is_finite())
    }
}

fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit.clamp(-SCORE_CLIP, SCORE_CLIP)).exp())
}

/// Decodes one output group (scores `[n]`, regressors `[n x 16]`) against its anchors, keeping
/// detections scoring at least `threshold`. MediaPipe's TensorsToDetections with
/// x/y/w/h scales = input size and unit anchors, so raw values are input pixels.
fn decode(
    scores: &[f32],
    boxes: &[f32],
    anchors: &[Anchor],
    input_size: f32,
    threshold: f32,
    out: &mut Vec<RawDetection>,
) {
    for ((&logit, raw), anchor) in scores.iter().zip(boxes.chunks_exact(COORDS)).zip(anchors) {
        let score = sigmoid(logit);
        if score.is_nan() || score < threshold {
            continue;
        }
        let ax = anchor.x * input_size;
        let ay = anchor.y * input_size;
        let (cx, cy, w, h) = (raw[0] + ax, raw[1] + ay, raw[2], raw[3]);
        let mut keypoints = [(0.0, 0.0); KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = (raw[4 + 2 * k] + ax, raw[5 + 2 * k] + ay);
        }
        let det = RawDetection {
            xmin: cx - w / 2.0,
            ymin: cy - h / 2.0,
            xmax: cx + w / 2.0,
            ymax: cy + h / 2.0,
            keypoints,
            score,
        };
        if det.is_finite() {
            out.push(det);
        }
    }
}

/// MediaPipe's weighted non-maximum suppression: take the best remaining detection, gather
/// every remaining detection overlapping it by more than `iou_threshold` (itself included),
/// and output their score-weighted average box and keypoints with the best score.
fn weighted_nms(mut dets: Vec<RawDetection>, iou_threshold: f32) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut taken = vec![false; dets.len()];
    let mut out = Vec::new();
    for i in 0..dets.len() {
        if taken[i] {
            continue;
        }
        taken[i] = true;
        let top = dets[i];
        let mut total = top.score;
        let mut acc = [0.0f32; 4 + 2 * KEYPOINTS];
        let mut add = |d: &RawDetection| {
            let vals = [d.xmin, d.ymin, d.xmax, d.ymax];
            for (a, v) in acc.iter_mut().zip(
                vals.iter()
                    .copied()
                    .chain(d.keypoints.iter().flat_map(|&(x, y)| [x, y])),
            ) {
                *a += v * d.score;
            }
        };
        add(&top);
        for j in i + 1..dets.len() {
            if !taken[j] && dets[j].iou(&top) > iou_threshold {
                taken[j] = true;
                total += dets[j].score;
                add(&dets[j]);
            }
        }
        if total <= 0.0 {
            // All weights zero (score threshold 0 and saturated logits): keep the top as is.
            out.push(top);
            continue;
        }
        let m: Vec<f32> = acc.iter().map(|a| a / total).collect();
        let mut keypoints = [(0.0, 0.0); KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = (m[4 + 2 * k], m[5 + 2 * k]);
        }
        out.push(RawDetection {
            xmin: m[0],
            ymin: m[1],
            xmax: m[2],
            ymax: m[3],
            keypoints,
            score: top.score,
        });
    }
    out
}

/// Indices of the model outputs (scores, regressors) for each anchor grid, in anchor order,
/// found by shape: `[1, n, 1]` and `[1, n, 16]`.
#[derive(Debug, Clone)]
struct OutputLayout {
    groups: Vec<(usize, usize)>,
}

/// BlazeFace face detector. Loads and optimises its model once; [`Detector::detect`] takes
/// `&self` and may be called from several threads at once.
pub struct Detector {
    config: DetectorConfig,
    plan: Arc<TypedSimplePlan>,
    anchors: Vec<Anchor>,
    layout: OutputLayout,
    /// Who runs the convolutions and 2x2 max-pools: ferrite's kernels, or tract (`None`).
    kernels: Option<Backend>,
    /// Idle sessions, one per thread that has detected concurrently so far.
    sessions: Mutex<Vec<DetectorSession>>,
}

/// What one detection needs besides the plan, kept between frames so that a warm detector
/// allocates neither a tract state nor an input tensor per frame.
struct DetectorSession {
    state: TypedSimpleState,
    input: Arc<Tensor>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("config", &self.config)
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector running the embedded model selected by `config.model`.
    pub fn new(config: DetectorConfig) -> Result<Self, DetectError> {
        let origin = format!("(embedded {:?})", config.model);
        Self::from_bytes(config.model.embedded(), &origin, config)
    }

    /// A detector running a user-supplied ONNX file in place of the embedded one. It must be a
    /// tract-loadable BlazeFace graph with the input size of `config.model` (NHWC `1xSxSx3`,
    /// range [-1, 1]) and the four outputs described in the module docs.
    pub fn from_onnx_file(path: &Path, config: DetectorConfig) -> Result<Self, DetectError> {
        let bytes = std::fs::read(path).map_err(|source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string(), config)
    }

    fn from_bytes(bytes: &[u8], origin: &str, config: DetectorConfig) -> Result<Self, DetectError> {
        let kernels = ConvKernels::from_env().map_err(|reason| DetectError::ModelLoad {
            origin: origin.to_string(),
            reason,
        })?;
        Self::from_bytes_with(bytes, origin, config, kernels)
    }

    /// [`Detector::new`] with the kernels given instead of taken from `FERRITE_CONV`.
    pub fn with_kernels(config: DetectorConfig, kernels: ConvKernels) -> Result<Self, DetectError> {
        let origin = format!("(embedded {:?})", config.model);
        Self::from_bytes_with(config.model.embedded(), &origin, config, kernels)
    }

    fn from_bytes_with(
        bytes: &[u8],
        origin: &str,
        config: DetectorConfig,
        kernels: ConvKernels,
    ) -> Result<Self, DetectError> {
        config.validate()?;
        let load_err = |reason: String| DetectError::ModelLoad {
            origin: origin.to_string(),
            reason,
        };
        let size = config.model.input_size();
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| load_err(format!("{e:#}")))?;
        Self::check_declared_input(&model, config.model).map_err(load_err)?;
        let shape_err = |e: TractError| {
            load_err(format!(
                "{e:#} (model {:?} expects input 1x{size}x{size}x3)",
                config.model
            ))
        };
        let mut typed = model
            .with_input_fact(0, f32::fact([1, size, size, 3]).into())
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(shape_err)?;
        let kernels =
            crate::kernels::rewrite(&mut typed, kernels, crate::kernels::replace_detector_ops)
                .map_err(|e| load_err(format!("{e:#}")))?;
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(shape_err)?;
        let (anchors, group_sizes) = generate_anchors(size, &config.model.strides());
        let layout = Self::output_layout(&plan, &group_sizes).map_err(load_err)?;
        Ok(Detector {
            config,
            plan,
            anchors,
            layout,
            kernels,
            sessions: Mutex::new(Vec::new()),
        })
    }

    /// Refuses a graph whose declared input shape is fixed and differs from `1xSxSx3`.
    fn check_declared_input(model: &InferenceModel, which: DetectorModel) -> Result<(), String> {
        use tract_onnx::tract_hir::infer::Factoid;
        let inputs = model.input_outlets().map_err(|e| format!("{e:#}"))?;
        if inputs.len() != 1 {
            return Err(format!(
                "expected one input, the graph has {}",
                inputs.len()
            ));
        }
        let fact = model.input_fact(0).map_err(|e| format!("{e:#}"))?;
        let size = which.input_size() as i64;
        if let Some(dims) = fact.shape.concretize() {
            let dims: Vec<Option<i64>> = dims.iter().map(|d| d.to_i64().ok()).collect();
            let fits = dims.len() == 4
                && [Some(1), Some(size), Some(size), Some(3)]
                    .iter()
                    .zip(&dims)
                    .all(|(want, got)| got.is_none() || got == want);
            if !fits {
                let shown: Vec<String> = dims
                    .iter()
                    .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                    .collect();
                return Err(format!(
                    "input shape is {}, but model {which:?} expects 1x{size}x{size}x3 (NHWC)",
                    shown.join("x")
                ));
            }
        }
        Ok(())
    }

    /// Finds the score and regressor outputs of both anchor groups by their shapes.
    fn output_layout(
        plan: &TypedSimplePlan,
        group_sizes: &[usize],
    ) -> Result<OutputLayout, String> {
        let model = plan.model();
        let outlets = model.output_outlets().map_err(|e| format!("{e:#}"))?;
        let mut shapes = Vec::with_capacity(outlets.len());
        for outlet in outlets {
            let fact = model.outlet_fact(*outlet).map_err(|e| format!("{e:#}"))?;
            let shape = fact
                .shape
                .as_concrete()
                .map(|s| s.to_vec())
                .ok_or_else(|| format!("output shape {:?} is not fixed", fact.shape))?;
            if fact.datum_type != f32::datum_type() {
                return Err(format!("output type {:?}, expected f32", fact.datum_type));
            }
            shapes.push(shape);
        }
        let find = |n: usize, width: usize| {
            shapes
                .iter()
                .position(|s| s.as_slice() == [1, n, width])
                .ok_or_else(|| {
                    format!(
                        "not a BlazeFace graph for this input size: expected an output of shape \
                         [1, {n}, {width}], outputs are {shapes:?}"
                    )
                })
        };
        let groups = group_sizes
            .iter()
            .map(|&n| Ok((find(n, 1)?, find(n, COORDS)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(OutputLayout { groups })
    }

    /// The configuration this detector was built with.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Who runs the convolutions and 2x2 max-pools (all but the heads): "direct-avx512", "direct-neon",
    /// "direct-portable" or "tract".
    pub fn kernels(&self) -> &'static str {
        self.kernels.map_or("tract", Backend::name)
    }

    /// Runs the model on an NHWC input that `fill` writes (`1 x S x S x 3` values) and returns
    /// its raw outputs. A warm caller reuses a session from the pool: its tract state, its ferrite
    /// kernels' activations and its input tensor, so the run allocates only tract's own nodes'
    /// outputs.
    fn run_with(&self, fill: impl FnOnce(&mut [f32])) -> Result<TVec<TValue>, DetectError> {
        let inference = |e: TractError| DetectError::Inference(format!("{e:#}"));
        let pooled = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let size = self.config.model.input_size();
        let fresh_input = || Tensor::zero::<f32>(&[1, size, size, 3]).map(Arc::new);
        let mut session = match pooled {
            Some(session) => session,
            None => DetectorSession {
                state: self.plan.spawn().map_err(inference)?,
                input: fresh_input().map_err(inference)?,
            },
        };
        // tract drops its inputs at the end of a run, so the tensor is normally ours alone again;
        // should anything still hold it, the frame gets a new one rather than overwrite it.
        if Arc::get_mut(&mut session.input).is_none() {
            session.input = fresh_input().map_err(inference)?;
        }
        if let Some(input) = Arc::get_mut(&mut session.input) {
            let mut plain = input.try_as_plain_ram_mut().map_err(inference)?;
            fill(plain.as_slice_mut::<f32>().map_err(inference)?);
        }
        let outputs = session
            .state
            .run(tvec!(TValue::from_const(Arc::clone(&session.input))))
            .map_err(inference)?;
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
        Ok(outputs)
    }

    /// The NHWC graph input that [`Detector::detect`] builds from `image` (letterboxed into the
    /// model's square, RGB mapped to [-1, 1]), for timing or comparing the graph alone.
    pub fn model_input(&self, image: &image::RgbImage) -> Vec<f32> {
        let size = self.config.model.input_size() as u32;
        let mut data = vec![-1.0; (size * size * 3) as usize];
        let (w, h) = image.dimensions();
        if w > 0 && h > 0 {
            Letterbox::new(w, h, size).fill(image, &mut data);
        }
        data
    }

    /// Where the graph's time goes on a [`Detector::model_input`]: each tract operator kind's
    /// median time over `runs` runs, slowest first.
    pub fn profile(
        &self,
        input: &[f32],
        runs: usize,
    ) -> Result<Vec<crate::profile::OpTime>, DetectError> {
        let size = self.config.model.input_size();
        let inference = |e: TractError| DetectError::Inference(format!("{e:#}"));
        let input = Tensor::from_shape(&[1, size, size, 3], input).map_err(inference)?;
        let mut state = self.plan.spawn().map_err(inference)?;
        crate::profile::per_operator(&mut state, input, runs).map_err(inference)
    }

    /// Runs the graph alone on a [`Detector::model_input`] (`1 x S x S x 3` values) and drops
    /// its outputs: no anchor decoding, no suppression. For benchmarks.
    pub fn run_model(&self, input: &[f32]) -> Result<(), DetectError> {
        let size = self.config.model.input_size();
        if input.len() != size * size * 3 {
            return Err(DetectError::Inference(format!(
                "expected 1x{size}x{size}x3 = {} input values, got {}",
                size * size * 3,
                input.len()
            )));
        }
        self.run_with(|data| data.copy_from_slice(input)).map(drop)
    }

    /// Finds faces in an RGB frame of any size. Returns them best first, at most
    /// `max_faces`, in frame pixels. An empty (0-pixel) frame has no faces.
    pub fn detect(&self, image: &image::RgbImage) -> Result<Vec<Face>, DetectError> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let letterbox = Letterbox::new(w, h, self.config.model.input_size() as u32);
        let outputs = self.run_with(|data| letterbox.fill(image, data))?;
        self.faces(&outputs, &letterbox)
    }

    /// [`Detector::detect`] on a gray frame (the live pipeline's luma): the same faces as
    /// detecting on the gray expanded to RGB, without building that RGB frame.
    pub fn detect_gray(&self, gray: &image::GrayImage) -> Result<Vec<Face>, DetectError> {
        let (w, h) = gray.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let letterbox = Letterbox::new(w, h, self.config.model.input_size() as u32);
        let outputs = self.run_with(|data| letterbox.fill_gray(gray, data))?;
        self.faces(&outputs, &letterbox)
    }

    /// Turns the graph's outputs for a letterboxed input into faces in frame pixels.
    fn faces(&self, outputs: &[TValue], letterbox: &Letterbox) -> Result<Vec<Face>, DetectError> {
        let size = self.config.model.input_size();
        let mut dets = Vec::new();
        let mut offset = 0;
        for &(scores_ix, boxes_ix) in &self.layout.groups {
            let slice = |ix: usize| -> Result<&[f32], DetectError> {
                outputs
                    .get(ix)
                    .ok_or_else(|| DetectError::Inference(format!("missing output {ix}")))?
                    .try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>())
                    .map_err(|e| DetectError::Inference(format!("{e:#}")))
            };
            let scores = slice(scores_ix)?;
            let boxes = slice(boxes_ix)?;
            let anchors = self
                .anchors
                .get(offset..offset + scores.len())
                .ok_or_else(|| {
                    DetectError::Inference("model outputs more boxes than anchors".to_string())
                })?;
            decode(
                scores,
                boxes,
                anchors,
                size as f32,
                self.config.score_threshold,
                &mut dets,
            );
            offset += scores.len();
        }

        let faces = weighted_nms(dets, self.config.iou_threshold)
            .into_iter()
            .map(|d| to_face(&d, letterbox))
            .filter(|f| f.bbox.w.max(f.bbox.h) >= self.config.min_face_size)
            .take(self.config.max_faces)
            .collect();
        Ok(faces)
    }
}

fn to_face(d: &RawDetection, letterbox: &Letterbox) -> Face {
    let (x0, y0) = letterbox.frame_from_input(d.xmin, d.ymin);
    let (x1, y1) = letterbox.frame_from_input(d.xmax, d.ymax);
    let keypoints = d.keypoints.map(|(x, y)| {
        let (x, y) = letterbox.frame_from_input(x, y);
        Point { x, y }
    });
    Face {
        bbox: BBox {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        },
        score: d.score,
        keypoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(xmin: f32, ymin: f32, size: f32, score: f32) -> RawDetection {
        RawDetection {
            xmin,
            ymin,
            xmax: xmin + size,
            ymax: ymin + size,
            keypoints: [(xmin, ymin); KEYPOINTS],
            score,
        }
    }

    #[test]
    fn anchors_match_the_output_shapes() {
        for model in [DetectorModel::Short, DetectorModel::Long] {
            let (anchors, groups) = generate_anchors(model.input_size(), &model.strides());
            assert_eq!(anchors.len(), 896, "{model:?}");
            assert_eq!(groups, vec![512, 384], "{model:?}");
            // 16x16 grid, two anchors per cell, then 8x8 grid, six per cell.
            assert_eq!(
                anchors[0],
                Anchor {
                    x: 0.5 / 16.0,
                    y: 0.5 / 16.0
                }
            );
            assert_eq!(anchors[1], anchors[0]);
            assert_eq!(
                anchors[2],
                Anchor {
                    x: 1.5 / 16.0,
                    y: 0.5 / 16.0
                }
            );
            assert_eq!(
                anchors[32],
                Anchor {
                    x: 0.5 / 16.0,
                    y: 1.5 / 16.0
                }
            );
            assert_eq!(
                anchors[511],
                Anchor {
                    x: 15.5 / 16.0,
                    y: 15.5 / 16.0
                }
            );
            assert_eq!(
                anchors[512],
                Anchor {
                    x: 0.5 / 8.0,
                    y: 0.5 / 8.0
                }
            );
            assert_eq!(anchors[517], anchors[512]);
            assert_eq!(
                anchors[518],
                Anchor {
                    x: 1.5 / 8.0,
                    y: 0.5 / 8.0
                }
            );
            assert_eq!(
                anchors[895],
                Anchor {
                    x: 7.5 / 8.0,
                    y: 7.5 / 8.0
                }
            );
        }
    }

    #[test]
    fn sigmoid_is_clipped_and_finite() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1e30), sigmoid(100.0));
        assert!(sigmoid(-1e30) >= 0.0 && sigmoid(-1e30) < 1e-40);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn decode_offsets_from_the_anchor_in_input_pixels() {
        let anchors = [Anchor { x: 0.25, y: 0.75 }];
        let mut raw = [0.0f32; COORDS];
        raw[..4].copy_from_slice(&[2.0, -4.0, 20.0, 10.0]);
        raw[4] = 1.0; // right eye x
        raw[5] = -1.0; // right eye y
        let mut out = Vec::new();
        decode(&[3.0], &raw, &anchors, 128.0, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let d = out[0];
        // anchor centre (32, 96) in input pixels
        assert_eq!((d.xmin, d.ymin, d.xmax, d.ymax), (24.0, 87.0, 44.0, 97.0));
        assert_eq!(d.keypoints[0], (33.0, 95.0));
        assert_eq!(d.keypoints[1], (32.0, 96.0));
        assert!((d.score - sigmoid(3.0)).abs() < 1e-7);
        // Below threshold, NaN scores and non-finite boxes are dropped.
        out.clear();
        decode(&[-3.0], &raw, &anchors, 128.0, 0.5, &mut out);
        decode(&[f32::NAN], &raw, &anchors, 128.0, 0.0, &mut out);
        raw[2] = f32::INFINITY;
        decode(&[3.0], &raw, &anchors, 128.0, 0.5, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn nms_merges_overlapping_boxes_weighted_by_score() {
        // IoU of these two: 90x90 / (2 * 100^2 - 90x90) ~ 0.68
        let a = det(0.0, 0.0, 100.0, 0.9);
        let b = det(10.0, 10.0, 100.0, 0.6);
        let out = weighted_nms(vec![b, a], 0.3);
        assert_eq!(out.len(), 1);
        let m = out[0];
        assert_eq!(m.score, 0.9);
        let expect = (0.9 * 0.0 + 0.6 * 10.0) / 1.5;
        assert!((m.xmin - expect).abs() < 1e-4, "{m:?}");
        assert!((m.ymin - expect).abs() < 1e-4);
        assert!((m.xmax - (100.0 + expect)).abs() < 1e-4);
        assert!((m.keypoints[3].0 - expect).abs() < 1e-4);
    }

    #[test]
    fn nms_keeps_distant_boxes_best_first() {
        let a = det(0.0, 0.0, 50.0, 0.8);
        let b = det(200.0, 0.0, 50.0, 0.95);
        // Overlapping a, but below the IoU threshold: 10x50 / (2 * 2500 - 500) = 0.11.
        let c = det(40.0, 0.0, 50.0, 0.7);
        let out = weighted_nms(vec![a, b, c], 0.3);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], b);
        assert_eq!(out[1], a);
        assert_eq!(out[2], c);
    }

    #[test]
    fn nms_terminates_on_degenerate_boxes() {
        let z = det(5.0, 5.0, 0.0, 0.9);
        let out = weighted_nms(vec![z, z, z], 0.3);
        assert_eq!(out.len(), 3);
        assert!(weighted_nms(Vec::new(), 0.3).is_empty());
        // Zero scores (threshold 0 with saturated logits) keep the box unchanged.
        let out = weighted_nms(
            vec![det(0.0, 0.0, 10.0, 0.0), det(1.0, 1.0, 10.0, 0.0)],
            0.3,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].xmin, 0.0);
    }

    #[test]
    fn letterbox_round_trip_and_centring() {
        let sizes = [
            (640, 480),
            (480, 640),
            (512, 512),
            (1, 1),
            (10_000, 3),
            (3, 10_000),
            (1920, 1080),
            (7, 5),
        ];
        for &(w, h) in &sizes {
            for size in [128u32, 256] {
                let lb = Letterbox::new(w, h, size);
                assert!(lb.scaled_w >= 1 && lb.scaled_w <= size, "{lb:?}");
                assert!(lb.scaled_h >= 1 && lb.scaled_h <= size, "{lb:?}");
                assert!(lb.scaled_w == size || lb.scaled_h == size, "{lb:?}");
                assert!(
                    lb.pad_x * 2 + lb.scaled_w <= size && size - (lb.pad_x * 2 + lb.scaled_w) <= 1
                );
                assert!(
                    lb.pad_y * 2 + lb.scaled_h <= size && size - (lb.pad_y * 2 + lb.scaled_h) <= 1
                );
                // Frame corners land on the scaled area's corners.
                assert_eq!(
                    lb.input_from_frame(0.0, 0.0),
                    (lb.pad_x as f32, lb.pad_y as f32)
                );
                let (x, y) = lb.input_from_frame(w as f32, h as f32);
                assert!((x - (lb.pad_x + lb.scaled_w) as f32).abs() < 1e-3, "{lb:?}");
                assert!((y - (lb.pad_y + lb.scaled_h) as f32).abs() < 1e-3, "{lb:?}");
                for &(px, py) in &[(0.0, 0.0), (0.3, 0.7), (0.5, 0.5), (1.0, 1.0)] {
                    let (fx, fy) = (px * w as f32, py * h as f32);
                    let (ix, iy) = lb.input_from_frame(fx, fy);
                    let (bx, by) = lb.frame_from_input(ix, iy);
                    let tol = 1e-3 * (w.max(h) as f32);
                    assert!(
                        (bx - fx).abs() <= tol && (by - fy).abs() <= tol,
                        "{lb:?} {fx},{fy}"
                    );
                }
            }
        }
        let lb = Letterbox::new(640, 480, 128);
        assert_eq!(
            (lb.scaled_w, lb.scaled_h, lb.pad_x, lb.pad_y),
            (128, 96, 0, 16)
        );
    }

    #[test]
    fn shrinking_equals_the_image_crates_thumbnail() {
        // Integer and fractional ratios, both orientations, a 4K frame, and exactly 2x.
        let mut noise = 7u32;
        let mut next = move || {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            (noise % 256) as u8
        };
        for (w, h, size) in [
            (640, 480, 128),
            (1280, 720, 128),
            (1000, 700, 128),
            (333, 1001, 128),
            (3840, 2160, 256),
            (256, 256, 128),
        ] {
            let lb = Letterbox::new(w, h, size);
            assert!(lb.shrink() >= 2.0, "{w}x{h}");
            let gray = image::GrayImage::from_fn(w, h, |_, _| image::Luma([next()]));
            let rgb = image::RgbImage::from_fn(w, h, |_, _| image::Rgb([next(), next(), next()]));
            let want = |raw: &[u8], channels: usize| {
                let mut data = vec![0.0; lb.tensor_len()];
                lb.place(raw, channels, &mut data);
                data
            };
            let thumb_gray = image::imageops::thumbnail(&gray, lb.scaled_w, lb.scaled_h);
            let thumb_rgb = image::imageops::thumbnail(&rgb, lb.scaled_w, lb.scaled_h);
            assert!(
                lb.tensor_data_gray(&gray) == want(thumb_gray.as_raw(), 1),
                "gray {w}x{h}"
            );
            assert!(
                lb.tensor_data(&rgb) == want(thumb_rgb.as_raw(), 3),
                "rgb {w}x{h}"
            );
        }
    }

    #[test]
    fn letterbox_tensor_pads_black_and_scales_to_unit_range() {
        // A white 4x2 frame in a 128 input: 128x64 white band centred vertically.
        let white = image::RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
        let lb = Letterbox::new(4, 2, 128);
        assert_eq!(
            (lb.scaled_w, lb.scaled_h, lb.pad_x, lb.pad_y),
            (128, 64, 0, 32)
        );
        let data = lb.tensor_data(&white);
        assert_eq!(data.len(), 128 * 128 * 3);
        let at = |x: usize, y: usize, c: usize| data[(y * 128 + x) * 3 + c];
        assert_eq!(at(0, 0, 0), -1.0);
        assert_eq!(at(127, 31, 2), -1.0);
        assert_eq!(at(0, 32, 0), 1.0);
        assert_eq!(at(127, 95, 2), 1.0);
        assert_eq!(at(64, 96, 1), -1.0);
        // Channel order is RGB.
        let red = image::RgbImage::from_pixel(128, 128, image::Rgb([255, 0, 0]));
        let data = Letterbox::new(128, 128, 128).tensor_data(&red);
        assert_eq!(&data[..3], &[1.0, -1.0, -1.0]);
    }

    #[test]
    fn gray_frames_give_the_tensor_and_faces_of_their_rgb_expansion() {
        let astronaut = image::load_from_memory(crate::bench::SAMPLE_JPEG)
            .unwrap()
            .into_rgb8();
        let gray = image::imageops::grayscale(&astronaut);
        // Equal size, block shrink (>= 2x), triangle shrink (< 2x), enlarging; odd sizes pad.
        for (w, h) in [
            (128, 128),
            (512, 512),
            (640, 480),
            (200, 150),
            (101, 77),
            (60, 90),
        ] {
            let g = image::imageops::resize(&gray, w, h, image::imageops::FilterType::Triangle);
            let rgb = image::DynamicImage::ImageLuma8(g.clone()).into_rgb8();
            let lb = Letterbox::new(w, h, 128);
            assert!(
                lb.tensor_data_gray(&g) == lb.tensor_data(&rgb),
                "{w}x{h}: tensors differ"
            );
        }
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let rgb = image::DynamicImage::ImageLuma8(gray.clone()).into_rgb8();
        let want = detector.detect(&rgb).unwrap();
        assert_eq!(want.len(), 1);
        assert_eq!(detector.detect_gray(&gray).unwrap(), want);
        assert!(detector
            .detect_gray(&image::GrayImage::new(0, 5))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn config_is_validated() {
        assert!(DetectorConfig::default().validate().is_ok());
        let bad = [
            DetectorConfig {
                score_threshold: 1.5,
                ..Default::default()
            },
            DetectorConfig {
                score_threshold: f32::NAN,
                ..Default::default()
            },
            DetectorConfig {
                iou_threshold: -0.1,
                ..Default::default()
            },
            DetectorConfig {
                min_face_size: -1.0,
                ..Default::default()
            },
            DetectorConfig {
                min_face_size: f32::INFINITY,
                ..Default::default()
            },
            DetectorConfig {
                max_faces: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            let err = Detector::new(config.clone()).expect_err("bad config accepted");
            assert!(
                matches!(err, DetectError::InvalidConfig(_)),
                "{config:?}: {err}"
            );
        }
    }

    #[test]
    fn config_deserialises_with_defaults() {
        let c: DetectorConfig =
            serde_json::from_str(r#"{"model": "long", "max_faces": 2}"#).expect("valid json");
        assert_eq!(c.model, DetectorModel::Long);
        assert_eq!(c.max_faces, 2);
        assert_eq!(c.score_threshold, DetectorConfig::default().score_threshold);
        assert!(serde_json::from_str::<DetectorConfig>(r#"{"modle": "long"}"#).is_err());
    }

    #[test]
    fn embedded_models_match_sha256sums() {
        use sha2::{Digest, Sha256};
        let sums = include_str!("../models/blazeface/SHA256SUMS");
        for (name, bytes) in [
            ("blazeface_short_128.onnx", SHORT_ONNX),
            ("blazeface_long_256.onnx", LONG_ONNX),
        ] {
            let digest: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let line = format!("{digest}  {name}");
            assert!(
                sums.lines().any(|l| l == line),
                "{name}: {digest} not in SHA256SUMS"
            );
        }
    }

    /// tract on the fixture input vs onnxruntime's outputs (models/blazeface/reference.py).
    /// Tolerance 1e-4, relative for values above 1: the long model's saturated logits reach
    /// about -290, where tract and onnxruntime differ by ~5e-4 (f32 summation order).
    fn parity(model: DetectorModel, name: &str) {
        let size = model.input_size();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let input = image::open(dir.join(format!("blazeface_input_{size}.png")))
            .expect("fixture input")
            .to_rgb8();
        assert_eq!(input.dimensions(), (size as u32, size as u32));
        let data: Vec<f32> = input
            .as_raw()
            .iter()
            .map(|&v| v as f32 / 127.5 - 1.0)
            .collect();
        let bytes = std::fs::read(dir.join(format!("blazeface_{name}_ort.f32"))).expect("fixture");
        let expected: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut kernels = vec![ConvKernels::Tract, ConvKernels::Direct(Backend::Portable)];
        kernels.extend(
            [Backend::Avx512, Backend::Neon]
                .into_iter()
                .filter(|b| b.available())
                .map(ConvKernels::Direct),
        );
        for k in kernels {
            let config = DetectorConfig {
                model,
                ..Default::default()
            };
            let detector = Detector::with_kernels(config, k).expect("load");
            let want = match k {
                ConvKernels::Direct(backend) => backend.name(),
                _ => "tract",
            };
            assert_eq!(detector.kernels(), want);
            if let ConvKernels::Direct(_) = k {
                // The first convolution (reading the NHWC image) and every backbone block's
                // depthwise and 1x1 convolution run on ferrite's kernels, except the long model's
                // last 1x1, which tract declutters without its batch axis (`NIHW,OI->OHW`) and
                // keeps. The heads stay tract's.
                let count = |op: &str| {
                    let graph = detector.plan.model();
                    graph.nodes().iter().filter(|n| n.op().name() == op).count()
                };
                let (depthwise, pointwise) = match model {
                    DetectorModel::Short => (16, 16),
                    DetectorModel::Long => (32, 31),
                };
                assert_eq!(count("FerriteDepthwise3x3"), depthwise, "{name}");
                assert_eq!(count("FerritePointwise"), pointwise, "{name}");
                assert_eq!(count("FerriteImageConv"), 1, "{name}");
                assert_eq!(count("MoveAxis"), 0, "{name}: the image is read as NHWC");
            }
            parity_of(&detector, &data, &expected, name);
        }
    }

    fn parity_of(detector: &Detector, data: &[f32], expected: &[f32], name: &str) {
        let outputs = detector
            .run_with(|input| input.copy_from_slice(data))
            .expect("run");
        assert_eq!(outputs.len(), 4);
        let mut offset = 0;
        let mut worst = 0.0f32;
        for (i, shape) in [[1, 512, 1], [1, 384, 1], [1, 512, 16], [1, 384, 16]]
            .iter()
            .enumerate()
        {
            assert_eq!(outputs[i].shape(), shape, "output {i}");
            let got = outputs[i]
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .expect("f32");
            let want = &expected[offset..offset + got.len()];
            let (mut abs, mut mag) = (0.0f32, 0.0f32);
            for (g, w) in got.iter().zip(want) {
                abs = abs.max((g - w).abs());
                mag = mag.max(w.abs());
                worst = worst.max((g - w).abs() / w.abs().max(1.0));
            }
            eprintln!("{name} output {i}: max |diff| {abs:e}, max |value| {mag}");
            offset += got.len();
        }
        assert_eq!(offset, expected.len());
        assert!(
            worst <= 1e-4,
            "{name}: max difference {worst} (relative above 1)"
        );
    }

    #[test]
    fn parity_with_onnxruntime_short() {
        parity(DetectorModel::Short, "short_128");
    }

    #[test]
    fn parity_with_onnxruntime_long() {
        parity(DetectorModel::Long, "long_256");
    }

    #[test]
    fn detector_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Detector>();
    }
}
