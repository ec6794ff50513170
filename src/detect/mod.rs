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

use crate::graph::ReusedTensor;
use crate::kernels::{Backend, ConvKernels};

mod decode;
pub mod tiles;

use decode::{decode, generate_anchors, weighted_nms, Anchor, Letterbox, RawDetection};
pub use tiles::Tiles;

/// Embedded folded graphs (see `models/blazeface/fetch.py`).
const SHORT_ONNX: &[u8] = include_bytes!("../../models/blazeface/blazeface_short_128.onnx");
const LONG_ONNX: &[u8] = include_bytes!("../../models/blazeface/blazeface_long_256.onnx");

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

    /// Whether `inner`, smaller than this box, has at least `fraction` of its area inside it.
    pub fn covers(&self, inner: &BBox, fraction: f32) -> bool {
        if inner.area() >= self.area() {
            return false;
        }
        let w = (self.x + self.w).min(inner.x + inner.w) - self.x.max(inner.x);
        let h = (self.y + self.h).min(inner.y + inner.h) - self.y.max(inner.y);
        w > 0.0 && h > 0.0 && w * h >= fraction * inner.area()
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
    /// Whether large frames are also searched tile by tile for small faces ([`tiles`]).
    pub tiles: Tiles,
    /// Whether a face scoring below [`CONFIDENT`] must be found again, at the same place and
    /// size, in two crops around it before it is reported (the second opinion).
    pub verify: bool,
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
            tiles: Tiles::Auto,
            verify: true,
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
    /// Who gives the second opinion when it is not this detector: the short model, for the
    /// long one. Two models that learnt differently rarely agree on the same texture: the long
    /// model re-checking itself keeps scikit-image's cat (0.79), the short one finds no face there.
    verifier: Option<Box<Detector>>,
}

/// What one detection needs besides the plan, kept between frames so that a warm detector
/// allocates neither a tract state nor an input tensor per frame.
struct DetectorSession {
    state: TypedSimpleState,
    input: ReusedTensor,
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
        let requested_kernels = kernels;
        let load_err = |reason: String| DetectError::ModelLoad {
            origin: origin.to_string(),
            reason,
        };
        let size = config.model.input_size();
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| load_err(format!("{e:#}")))?;
        // NHWC, one image.
        crate::graph::check_declared_input(&model, &[Some(1), Some(size), Some(size), Some(3)])
            .map_err(|e| load_err(format!("{e} (model {:?})", config.model)))?;
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
        let verifier = if config.verify && config.model != DetectorModel::Short {
            let short = DetectorConfig {
                tiles: Tiles::Off,
                verify: false,
                ..DetectorConfig::for_model(DetectorModel::Short)
            };
            Some(Box::new(Detector::from_bytes_with(
                DetectorModel::Short.embedded(),
                "(embedded Short, the second opinion)",
                short,
                requested_kernels,
            )?))
        } else {
            None
        };
        Ok(Detector {
            config,
            plan,
            anchors,
            layout,
            kernels,
            sessions: Mutex::new(Vec::new()),
            verifier,
        })
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
        let mut session = match pooled {
            Some(session) => session,
            None => DetectorSession {
                state: self.plan.spawn().map_err(inference)?,
                input: ReusedTensor::default(),
            },
        };
        let input = session
            .input
            .refill(&[1, size, size, 3], |values| {
                fill(values);
                Ok(())
            })
            .map_err(inference)?;
        let outputs = session.state.run(tvec!(input)).map_err(inference)?;
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
    /// `max_faces`, in frame pixels. An empty (0-pixel) frame has no faces. A large frame is also
    /// searched tile by tile when the configuration's [`Tiles`] asks for it.
    pub fn detect(&self, image: &image::RgbImage) -> Result<Vec<Face>, DetectError> {
        self.detect_image(image, Letterbox::fill)
    }

    /// [`Detector::detect`] on a gray frame (the live pipeline's luma): the same faces as
    /// detecting on the gray expanded to RGB, without building that RGB frame.
    pub fn detect_gray(&self, gray: &image::GrayImage) -> Result<Vec<Face>, DetectError> {
        self.detect_image(gray, Letterbox::fill_gray)
    }

    /// How many tile levels a `width x height` frame gets on top of the whole-frame pass.
    pub fn tile_levels(&self, width: u32, height: u32) -> u8 {
        tiles::levels(self.config.tiles, width, height, self.config.min_face_size)
    }

    fn detect_image<P>(
        &self,
        image: &image::ImageBuffer<P, Vec<u8>>,
        fill: fn(&Letterbox, &image::ImageBuffer<P, Vec<u8>>, &mut [f32]),
    ) -> Result<Vec<Face>, DetectError>
    where
        P: image::Pixel<Subpixel = u8> + 'static,
    {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let size = self.config.model.input_size() as u32;
        let letterbox = Letterbox::new(w, h, size);
        let outputs = self.run_with(|data| fill(&letterbox, image, data))?;
        let threshold = self.config.score_threshold;
        let levels = self.tile_levels(w, h);
        // The whole frame's detections, then all tiles'.
        let (mut whole, mut tiled) = (Vec::new(), Vec::new());
        self.decode_into(&outputs, &letterbox, None, threshold, (w, h), &mut whole)?;
        for tile in tiles::plan(w, h, levels) {
            self.detect_in(image, fill, tile, threshold, &mut tiled)?;
        }
        // The whole frame's faces are settled (second opinion included) before the tiles add
        // theirs: a rejected whole-frame box drawn around a small face must not hide the tiles'
        // good box of it.
        let mut faces = self.merge(whole, &[]);
        self.keep_verified(image, fill, &mut faces, Pass::WholeFrame)?;
        if levels > 0 {
            let mut added = self.merge(tiled, &faces);
            self.keep_verified(image, fill, &mut added, Pass::Tiles)?;
            faces.append(&mut added);
            // Stable: a whole-frame face stays ahead of a tile face of equal score.
            faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        faces.truncate(self.config.max_faces);
        Ok(faces)
    }

    /// Runs the model on `tile` of the frame and adds its detections (at least `threshold`, in
    /// frame pixels) to `out`.
    fn detect_in<P>(
        &self,
        image: &image::ImageBuffer<P, Vec<u8>>,
        fill: fn(&Letterbox, &image::ImageBuffer<P, Vec<u8>>, &mut [f32]),
        tile: tiles::Tile,
        threshold: f32,
        out: &mut Vec<RawDetection>,
    ) -> Result<(), DetectError>
    where
        P: image::Pixel<Subpixel = u8> + 'static,
    {
        // A view would save this copy, but the letterbox reads whole rows; a tile is at most a
        // quarter of the frame and the graph run costs far more.
        let part = image::imageops::crop_imm(image, tile.x, tile.y, tile.w, tile.h).to_image();
        let size = self.config.model.input_size() as u32;
        let letterbox = Letterbox::new(tile.w, tile.h, size);
        let outputs = self.run_with(|data| fill(&letterbox, &part, data))?;
        let frame = image.dimensions();
        self.decode_into(&outputs, &letterbox, Some(tile), threshold, frame, out)
    }

    /// Drops the faces the second opinion rejects, when it is on.
    fn keep_verified<P>(
        &self,
        image: &image::ImageBuffer<P, Vec<u8>>,
        fill: fn(&Letterbox, &image::ImageBuffer<P, Vec<u8>>, &mut [f32]),
        faces: &mut Vec<Face>,
        pass: Pass,
    ) -> Result<(), DetectError>
    where
        P: image::Pixel<Subpixel = u8> + 'static,
    {
        if !self.config.verify {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(faces.len());
        for face in faces.drain(..) {
            if face.score >= CONFIDENT {
                kept.push(face);
                continue;
            }
            let opinion = self.second_opinion(image, fill, &face)?;
            // The scores behind the thresholds, for tuning them on one's own frames.
            let verified = opinion >= pass.verified();
            log::debug!(
                "second opinion {opinion:.3} on a face scoring {:.3} at {:?} ({pass:?}): {}",
                face.score,
                face.bbox,
                if verified { "kept" } else { "rejected" }
            );
            if verified {
                kept.push(face);
            }
        }
        *faces = kept;
        Ok(())
    }

    /// The second opinion on a face the detector is not sure of: the mean of its score and the
    /// best scores of the short model's detections that find it again (box IoU at least
    /// [`AGREE_IOU`]) in square crops [`RECHECK_CROPS`] times its side, centred on it. A real
    /// face is found again at each scale; texture that happened to score in one tile or at one
    /// scale rarely is, and a box drawn around a much smaller face is found again at that
    /// face's size, not its own.
    fn second_opinion<P>(
        &self,
        image: &image::ImageBuffer<P, Vec<u8>>,
        fill: fn(&Letterbox, &image::ImageBuffer<P, Vec<u8>>, &mut [f32]),
        face: &Face,
    ) -> Result<f32, DetectError>
    where
        P: image::Pixel<Subpixel = u8> + 'static,
    {
        let checker = self.verifier.as_deref().unwrap_or(self);
        let (w, h) = image.dimensions();
        let b = face.bbox;
        let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
        let mut total = face.score;
        for factor in RECHECK_CROPS {
            let half = factor * b.w.max(b.h) / 2.0;
            // Cut to the frame; the letterbox keeps the scale as long as one side is whole.
            let x0 = (cx - half).max(0.0).min(w as f32 - 1.0) as u32;
            let y0 = (cy - half).max(0.0).min(h as f32 - 1.0) as u32;
            let x1 = ((cx + half).ceil().max(0.0) as u32).clamp(x0 + 1, w);
            let y1 = ((cy + half).ceil().max(0.0) as u32).clamp(y0 + 1, h);
            let tile = tiles::Tile {
                x: x0,
                y: y0,
                w: x1 - x0,
                h: y1 - y0,
                level: 0,
            };
            let mut again = Vec::new();
            checker.detect_in(image, fill, tile, RECHECK_FLOOR, &mut again)?;
            total += again
                .iter()
                .filter(|d| d.bbox().iou(&b) >= AGREE_IOU)
                .map(|d| d.score)
                .fold(0.0, f32::max);
        }
        Ok(total / (1 + RECHECK_CROPS.len()) as f32)
    }

    /// Decodes the graph's outputs for a letterboxed input (the whole frame, or `tile` of it)
    /// into detections in frame pixels. A tile's detections that its inner edges cut are left
    /// out: a neighbouring tile holds that face whole.
    fn decode_into(
        &self,
        outputs: &[TValue],
        letterbox: &Letterbox,
        tile: Option<tiles::Tile>,
        threshold: f32,
        frame: (u32, u32),
        dets: &mut Vec<RawDetection>,
    ) -> Result<(), DetectError> {
        let size = self.config.model.input_size();
        let mut raw = Vec::new();
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
            decode(scores, boxes, anchors, size as f32, threshold, &mut raw);
            offset += scores.len();
        }
        let (dx, dy) = tile.map_or((0.0, 0.0), |t| (t.x as f32, t.y as f32));
        for d in raw {
            let d = d.map(|x, y| {
                let (x, y) = letterbox.frame_from_input(x, y);
                (x + dx, y + dy)
            });
            if tile.is_some_and(|t| t.level > 0 && t.cuts(frame, d.xmin, d.ymin, d.xmax, d.ymax)) {
                continue;
            }
            dets.push(d);
        }
        Ok(())
    }

    /// Merges one pass's detections (the whole frame's, or all tiles' at every level, in frame
    /// pixels) into faces, best first, leaving out those `found` already holds: a tile face that
    /// overlaps a whole-frame face by more than `iou_threshold`, lies mostly inside one or holds
    /// one (faces do not nest: an eye region found in a small tile is part of a face found
    /// whole). So a face the whole-frame pass finds keeps that pass's box with tiles as without,
    /// and the crop calibrated on those boxes still fits. A face only tiles find gets the
    /// score-weighted mean of its tile levels' boxes: the coarsest of them sees it at the bottom
    /// of the model's range, where its box is least exact.
    fn merge(&self, dets: Vec<RawDetection>, found: &[Face]) -> Vec<Face> {
        let iou_threshold = self.config.iou_threshold;
        weighted_nms(dets, iou_threshold)
            .into_iter()
            .map(RawDetection::to_face)
            .filter(|face| face.bbox.w.max(face.bbox.h) >= self.config.min_face_size)
            .filter(|face| {
                !found.iter().any(|kept| {
                    kept.bbox.iou(&face.bbox) > iou_threshold
                        || kept.bbox.covers(&face.bbox, NESTED)
                        || face.bbox.covers(&kept.bbox, NESTED)
                })
            })
            .collect()
    }
}

/// Where a face was found: the pass decides how sure the second opinion must be.
#[derive(Debug, Clone, Copy)]
enum Pass {
    WholeFrame,
    Tiles,
}

impl Pass {
    fn verified(self) -> f32 {
        match self {
            Pass::WholeFrame => VERIFIED_WHOLE_FRAME,
            Pass::Tiles => VERIFIED,
        }
    }
}

/// A face with at least this fraction of its area inside a larger one is part of it.
const NESTED: f32 = 0.6;

/// Faces scoring at least this need no second opinion. The whole-frame pass's faces of
/// tests/detection score 0.92 at the median; gray faces, small faces found in tiles and every
/// false face seen (at most 0.76, and the long model's 0.79 on scikit-image's cat) score below.
pub const CONFIDENT: f32 = 0.85;
/// Sides of the second opinion's crops, as multiples of the face's side: the face fills 62 % and
/// 42 % of what the model sees, inside its best range (docs/detection.md).
const RECHECK_CROPS: [f32; 2] = [1.6, 2.4];
/// A re-detection this much like the face (IoU) is the same face, at the same size.
const AGREE_IOU: f32 = 0.5;
/// The re-detections count from this score up: a real face re-checked scores far above it, and
/// the mean decides.
const RECHECK_FLOOR: f32 = 0.05;
/// The second opinion's mean score (the face's own and its two re-detections') a face the tiles
/// found needs. Tile faces of textures reach 0.68 (docs/detection.md).
pub const VERIFIED: f32 = 0.7;
/// The same for a face the whole-frame pass found. One window instead of dozens finds far fewer
/// false faces, and gray, upscaled camera faces re-detect at 0.6-0.7: on 2,000 camera-like frames
/// of FER2013 train faces the check dropped 85 whole-frame faces at 0.70 and 38 at 0.65, while
/// 1,500 faceless frames gained 3 false faces (a retina, a coffee cup, the Hubble deep field).
pub const VERIFIED_WHOLE_FRAME: f32 = 0.65;

#[cfg(test)]
mod tests;
