//! Still images to per-face expression results: detect -> align -> ensemble.
//!
//! This module wires the stages together for one image at a time and shapes the result that the
//! CLI prints. It owns no model logic of its own; reading files and printing belong to the binary.

use std::time::{Duration, Instant};

use image::{GrayImage, RgbImage};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use std::path::PathBuf;

use crate::align::{self, CropGeometry, CropTransform};
use crate::config::ModelConfig;
use crate::detect::{
    BBox, DetectError, Detector, DetectorConfig, DetectorModel, Face, Point, Tiles,
};
use crate::ensemble::{Ensemble, EnsembleError, Precision, Prediction, Session};
use crate::models::{self, ModelError, ModelSource, Purpose};

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model {0} is a test fixture with random weights, not an expression classifier")]
    TestFixture(String),
}

/// Everything that chooses and configures the detector and the expression model: what the
/// command line's model options and the config file's `[model]` section describe.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierOptions {
    /// A bundled model name or a model directory.
    pub model: String,
    pub precision: Precision,
    pub detector: DetectorModel,
    /// A BlazeFace ONNX file to use instead of the bundled one of `detector`.
    pub detector_file: Option<PathBuf>,
    pub min_face: Option<f32>,
    pub max_faces: Option<usize>,
    pub score_threshold: Option<f32>,
    /// Whether large images are also searched tile by tile for small faces.
    pub tiles: Tiles,
    /// Whether unsure faces need the detector's second opinion; `None`: yes for still images,
    /// for live video only when it is tiled ([`ClassifierOptions::for_live_video`]).
    pub verify: Option<bool>,
    /// Every image is one already-cropped face: no detector.
    pub no_detect: bool,
    /// Crop side as a multiple of the detector's box, over the model's calibrated value.
    pub crop_scale: Option<f32>,
    /// Run `model` as named, never a faster sibling ([`prefer_faster_format`]).
    pub keep_model: bool,
    /// Accept a model whose manifest says it is a test fixture.
    pub allow_test_fixture: bool,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions::from_config(&ModelConfig::default())
    }
}

impl ClassifierOptions {
    /// The options a `[model]` section describes, defaults where it is silent.
    pub fn from_config(config: &ModelConfig) -> Self {
        ClassifierOptions {
            model: config
                .name
                .clone()
                .unwrap_or_else(|| models::default_model().to_string()),
            precision: config.precision.unwrap_or_default(),
            detector: config.detector.unwrap_or_default(),
            detector_file: None,
            min_face: None,
            max_faces: None,
            score_threshold: None,
            tiles: Tiles::default(),
            verify: None,
            no_detect: false,
            crop_scale: None,
            keep_model: config.keep.unwrap_or(false),
            allow_test_fixture: false,
        }
    }

    /// These options for a live camera or recording: `auto` tiles off (a frame's time budget
    /// cannot pay 37 or more detector runs) and, unless asked for, no second opinion on an
    /// untiled frame, where gray camera faces score below [`crate::detect::CONFIDENT`] and each
    /// would cost two more detector runs a pass. Tiled live video keeps it: tiles multiply the
    /// chances of a false face.
    pub fn for_live_video(self) -> Self {
        let tiles = self.tiles.for_live_video();
        ClassifierOptions {
            tiles,
            verify: Some(self.verify.unwrap_or(tiles != Tiles::Off)),
            ..self
        }
    }

    fn detector_config(&self) -> DetectorConfig {
        let mut config = DetectorConfig::for_model(self.detector);
        if let Some(v) = self.min_face {
            config.min_face_size = v;
        }
        if let Some(v) = self.max_faces {
            config.max_faces = v;
        }
        if let Some(v) = self.score_threshold {
            config.score_threshold = v;
        }
        config.tiles = self.tiles;
        config.verify = self.verify.unwrap_or(true);
        config
    }
}

/// The precision to load a model in: f16 only where the CPU has FP16 arithmetic. A board
/// profile's f16 tried on a desktop or an older board would run thousands of times slower than the
/// stored model, so it falls back (and the caller says so).
pub fn effective_precision(requested: Precision, native_f16: bool) -> Precision {
    if requested == Precision::F16 && !native_f16 {
        Precision::Stored
    } else {
        requested
    }
}

/// A bundled int8 model is timed against its fp32 sibling, and the sibling runs instead where it
/// is clearly faster on this CPU (docs/models.md, "int8 or fp32: the start-up check"). The float
/// model is never less accurate, so the only cost of the switch is memory.
pub fn prefer_faster_format(
    source: ModelSource,
    ensemble: Ensemble,
) -> Result<(ModelSource, Ensemble), EnsembleError> {
    let Some(sibling) = models::float_sibling(&source) else {
        return Ok((source, ensemble));
    };
    let float = Ensemble::load(&sibling)?;
    const RUNS: usize = 5;
    let int8_time = ensemble.median_pass(RUNS)?;
    let float_time = float.median_pass(RUNS)?;
    let (int8_name, float_name) = (&source.manifest.name, &sibling.manifest.name);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if crate::ensemble::float_is_faster(int8_time, float_time) {
        log::warn!(
            "measured at start-up: {int8_name} {:.2} ms per face, {float_name} {:.2} ms on this \
             CPU; running {float_name} (--keep-model runs {int8_name} anyway)",
            ms(int8_time),
            ms(float_time)
        );
        Ok((sibling, float))
    } else {
        log::info!(
            "measured at start-up: {int8_name} {:.2} ms per face, {float_name} {:.2} ms on this \
             CPU; keeping {int8_name}",
            ms(int8_time),
            ms(float_time)
        );
        Ok((source, ensemble))
    }
}

/// The assembled still-image pipeline. `detector: None` means every image is one face that is
/// already cropped (as the FER2013 and CK+48 images are): detection and cropping are skipped,
/// CLAHE and normalisation are not.
#[derive(Debug)]
pub struct Classifier {
    detector: Option<Detector>,
    ensemble: Ensemble,
    crop: CropGeometry,
}

impl Classifier {
    /// Loads the model and the detector that `options` name, with the start-up decisions: a test
    /// fixture is refused unless allowed, f16 falls back where the CPU lacks it, and a bundled int8
    /// model yields to its faster float sibling unless `keep_model`.
    pub fn build(options: &ClassifierOptions) -> Result<Classifier, ClassifyError> {
        let source = models::resolve(&options.model)?;
        if source.manifest.purpose == Purpose::TestFixture && !options.allow_test_fixture {
            return Err(ClassifyError::TestFixture(source.origin.clone()));
        }
        let precision = effective_precision(options.precision, crate::ensemble::native_f16());
        if precision != options.precision {
            log::warn!(
                "precision f16: this CPU has no FP16 arithmetic (tract would emulate it, thousands \
                 of times slower); running {} as stored",
                source.manifest.name
            );
        }
        let ensemble = Ensemble::load_with(&source, precision)?;
        let (source, ensemble) = if options.keep_model {
            (source, ensemble)
        } else {
            prefer_faster_format(source, ensemble)?
        };
        let mut crop = source.manifest.crop_geometry();
        if let Some(scale) = options.crop_scale {
            crop.scale = scale;
        }
        let detector = if options.no_detect {
            None
        } else {
            let config = options.detector_config();
            Some(match &options.detector_file {
                Some(path) => Detector::from_onnx_file(path, config)?,
                None => Detector::new(config)?,
            })
        };
        Ok(Classifier::new(detector, ensemble, crop))
    }

    pub fn new(detector: Option<Detector>, ensemble: Ensemble, crop: CropGeometry) -> Self {
        Classifier {
            detector,
            ensemble,
            crop,
        }
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    pub fn crop(&self) -> &CropGeometry {
        &self.crop
    }

    /// Per-thread state; create one per worker thread and reuse it for every image.
    pub fn session(&self) -> Result<ClassifySession<'_>, ClassifyError> {
        let (w, h) = self.ensemble.input_size();
        Ok(ClassifySession {
            classifier: self,
            model: self.ensemble.session()?,
            crop: GrayImage::new(w.max(h), w.max(h)),
        })
    }
}

pub struct ClassifySession<'a> {
    classifier: &'a Classifier,
    model: Session<'a>,
    /// Each face's crop, overwritten face after face.
    crop: GrayImage,
}

impl ClassifySession<'_> {
    pub fn classify(&mut self, image: &RgbImage) -> Result<Vec<FaceResult>, ClassifyError> {
        self.classify_timed(image, &mut StageTimes::default())
    }

    /// [`ClassifySession::classify`], with the time of each stage added to `times`: `ferrite
    /// bench` times this very path. The frame's gray conversion counts as cropping (it exists
    /// only to feed the crops); the detector sees the colour image.
    pub fn classify_timed(
        &mut self,
        image: &RgbImage,
        times: &mut StageTimes,
    ) -> Result<Vec<FaceResult>, ClassifyError> {
        let start = Instant::now();
        let gray = align::rgb_to_gray(image);
        times.crop += start.elapsed();
        let found = match &self.classifier.detector {
            Some(detector) => {
                let start = Instant::now();
                let faces = detector.detect(image)?;
                times.detect += start.elapsed();
                Some(faces)
            }
            None => None,
        };
        let results = match found {
            Some(faces) => self.classify_faces(&gray, faces, self.classifier.crop, true, times)?,
            None => self.classify_whole(&gray, times)?,
        };
        Ok(results.into_iter().map(|(_, result)| result).collect())
    }

    /// Faces in a gray frame (the live pipeline's input). `faces: None` runs the detector, on
    /// the luma in all three of BlazeFace's channels (or, without a detector,
    /// takes the whole frame as one face); `Some` classifies the given faces without detecting,
    /// e.g. a tracker's predicted boxes between detections. Returns each face with its result;
    /// `times` accumulates the time spent per stage.
    pub fn classify_gray(
        &mut self,
        gray: &GrayImage,
        faces: Option<&[Face]>,
        times: &mut StageTimes,
    ) -> Result<Vec<(Face, FaceResult)>, ClassifyError> {
        let geometry = self.classifier.crop;
        match (faces, &self.classifier.detector) {
            (Some(faces), _) => self.classify_faces(gray, faces.to_vec(), geometry, false, times),
            (None, Some(detector)) => {
                let start = Instant::now();
                let found = detector.detect_gray(gray)?;
                times.detect += start.elapsed();
                self.classify_faces(gray, found, geometry, true, times)
            }
            (None, None) => self.classify_whole(gray, times),
        }
    }

    /// Without a detector the whole image is the face, taken as it is: no margin, no levelling.
    fn classify_whole(
        &mut self,
        gray: &GrayImage,
        times: &mut StageTimes,
    ) -> Result<Vec<(Face, FaceResult)>, ClassifyError> {
        let geometry = CropGeometry {
            scale: 1.0,
            shift_x: 0.0,
            shift_y: 0.0,
            rotate: false,
        };
        self.classify_faces(gray, vec![whole_image_face(gray)], geometry, false, times)
    }

    /// The one crop -> CLAHE -> ensemble loop every entry point runs. Cropping, CLAHE and
    /// normalisation count as `crop`, the graph run as `ensemble`.
    fn classify_faces(
        &mut self,
        gray: &GrayImage,
        faces: Vec<Face>,
        geometry: CropGeometry,
        detected: bool,
        times: &mut StageTimes,
    ) -> Result<Vec<(Face, FaceResult)>, ClassifyError> {
        let mut results = Vec::with_capacity(faces.len());
        for (index, face) in faces.into_iter().enumerate() {
            let start = Instant::now();
            align::crop_face_into(gray, &face, &geometry, &mut self.crop);
            self.model.prepare(&self.crop)?;
            times.crop += start.elapsed();
            let start = Instant::now();
            let prediction = self.model.run_prepared()?;
            times.ensemble += start.elapsed();
            let transform = CropTransform::new(&face, &geometry);
            let score = detected.then_some(face.score);
            let result = self.result(index, &face, score, &transform, prediction);
            results.push((face, result));
        }
        Ok(results)
    }

    fn result(
        &self,
        index: usize,
        face: &Face,
        score: Option<f32>,
        transform: &CropTransform,
        prediction: Prediction,
    ) -> FaceResult {
        let manifest = self.classifier.ensemble.manifest();
        let (top, confidence) = prediction.top();
        FaceResult {
            face: index,
            bbox: face.bbox.xywh(),
            score,
            label: manifest.labels[top].clone(),
            confidence,
            probabilities: Scores::new(&manifest.labels, prediction.probabilities),
            parts: manifest
                .parts
                .iter()
                .cloned()
                .zip(
                    prediction
                        .part_probabilities
                        .into_iter()
                        .map(|p| Scores::new(&manifest.labels, p)),
                )
                .collect(),
            landmarks: prediction.landmarks.map(|points| {
                points
                    .iter()
                    .map(|&[u, v]| {
                        let (x, y) = transform.crop_to_frame(u, v);
                        [x, y]
                    })
                    .collect()
            }),
        }
    }
}

fn whole_image_face(gray: &GrayImage) -> Face {
    let (w, h) = (gray.width() as f32, gray.height() as f32);
    // Eye keypoints on one row keep the crop level even if a caller turns rotation on.
    let point = |x: f32, y: f32| Point { x, y };
    Face {
        bbox: BBox {
            x: 0.0,
            y: 0.0,
            w,
            h,
        },
        score: 1.0,
        keypoints: [
            point(w * 0.3, h * 0.4),
            point(w * 0.7, h * 0.4),
            point(w * 0.5, h * 0.6),
            point(w * 0.5, h * 0.75),
            point(0.0, h * 0.5),
            point(w, h * 0.5),
        ],
    }
}

/// Time spent per stage, accumulated by [`ClassifySession::classify_gray`].
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StageTimes {
    pub detect: Duration,
    pub crop: Duration,
    pub ensemble: Duration,
}

/// One face's result, serialised as the CLI's JSON line (less the `file` key).
#[derive(Debug, Clone, Serialize)]
pub struct FaceResult {
    pub face: usize,
    /// [x, y, w, h] in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Detector score; `None` when detection was skipped.
    pub score: Option<f32>,
    pub label: String,
    pub confidence: f32,
    pub probabilities: Scores,
    #[serde(serialize_with = "ordered_map")]
    pub parts: Vec<(String, Scores)>,
    /// 68 landmarks (iBUG 300-W order) in frame pixels, when the model exports them.
    #[serde(skip)]
    pub landmarks: Option<Vec<[f32; 2]>>,
}

/// Label -> probability, serialised as a JSON object in the manifest's label order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores(pub Vec<(String, f32)>);

impl Scores {
    fn new(labels: &[String], values: Vec<f32>) -> Self {
        Scores(labels.iter().cloned().zip(values).collect())
    }

    pub fn get(&self, label: &str) -> Option<f32> {
        self.0.iter().find(|(l, _)| l == label).map(|(_, p)| *p)
    }

    /// The most probable label and its probability; `None` when empty.
    pub fn top(&self) -> Option<(&str, f32)> {
        let values: Vec<f32> = self.0.iter().map(|(_, p)| *p).collect();
        let (i, p) = crate::ensemble::argmax(&values);
        self.0.get(i).map(|(label, _)| (label.as_str(), p))
    }
}

impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ordered_map(&self.0, serializer)
    }
}

pub(crate) fn ordered_map<S: Serializer, V: Serialize>(
    entries: &[(String, V)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(entries.len()))?;
    for (k, v) in entries {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models;
    use std::path::Path;

    fn fixture_classifier() -> Classifier {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ensemble");
        let ensemble = Ensemble::load(&models::from_path(&dir).unwrap()).unwrap();
        Classifier::new(None, ensemble, CropGeometry::default())
    }

    #[test]
    fn build_refuses_a_test_fixture_unless_allowed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ensemble");
        let mut options = ClassifierOptions {
            model: dir.display().to_string(),
            no_detect: true,
            ..ClassifierOptions::default()
        };
        let err = Classifier::build(&options).expect_err("a fixture is refused");
        assert!(matches!(err, ClassifyError::TestFixture(_)), "{err}");
        options.allow_test_fixture = true;
        let classifier = Classifier::build(&options).expect("allowed");
        assert!(classifier.detector().is_none());
    }

    #[test]
    fn build_applies_detector_and_crop_options() {
        let options = ClassifierOptions {
            detector: DetectorModel::Long,
            score_threshold: Some(0.42),
            max_faces: Some(3),
            crop_scale: Some(1.5),
            keep_model: true,
            ..ClassifierOptions::default()
        };
        let classifier = Classifier::build(&options).expect("bundled default model");
        let detector = classifier.detector().expect("detector");
        assert_eq!(detector.config().model, DetectorModel::Long);
        assert_eq!(detector.config().score_threshold, 0.42);
        assert_eq!(detector.config().max_faces, 3);
        assert_eq!(classifier.crop().scale, 1.5);
    }

    #[test]
    fn options_follow_the_model_section() {
        let config = ModelConfig {
            name: Some("fer2013-48-int8".into()),
            detector: Some(DetectorModel::Long),
            precision: Some(Precision::F16),
            keep: Some(true),
        };
        let options = ClassifierOptions::from_config(&config);
        assert_eq!(options.model, "fer2013-48-int8");
        assert_eq!(options.detector, DetectorModel::Long);
        assert_eq!(options.precision, Precision::F16);
        assert!(options.keep_model);
        let defaults = ClassifierOptions::default();
        assert_eq!(defaults.model, models::default_model());
        assert_eq!(defaults.detector, DetectorModel::Short);
        assert!(!defaults.keep_model);
    }

    #[test]
    fn f16_falls_back_only_without_native_f16() {
        assert_eq!(
            effective_precision(Precision::F16, false),
            Precision::Stored
        );
        assert_eq!(effective_precision(Precision::F16, true), Precision::F16);
        assert_eq!(
            effective_precision(Precision::Stored, false),
            Precision::Stored
        );
    }

    #[test]
    fn no_detect_gives_one_face_covering_the_image() {
        let classifier = fixture_classifier();
        let image = RgbImage::from_fn(48, 48, |x, y| image::Rgb([x as u8 * 5, y as u8 * 5, 90]));
        let results = classifier.session().unwrap().classify(&image).unwrap();
        assert_eq!(results.len(), 1);
        let r = &results[0];
        assert_eq!(r.bbox, [0.0, 0.0, 48.0, 48.0]);
        assert_eq!(r.score, None);
        assert_eq!(Some(r.confidence), r.probabilities.get(&r.label));
        // Landmarks come back in frame pixels: the crop is the whole 48x48 image, unrotated, so
        // each frame coordinate is the model's normalised output times 48.
        let gray = align::rgb_to_gray(&image);
        let raw = classifier
            .ensemble()
            .session()
            .unwrap()
            .predict(&gray)
            .unwrap()
            .landmarks
            .unwrap();
        let landmarks = r.landmarks.as_ref().unwrap();
        assert_eq!(landmarks.len(), 68);
        for (frame, normalised) in landmarks.iter().zip(&raw) {
            assert!(
                (frame[0] - normalised[0] * 48.0).abs() < 1e-3,
                "{frame:?} {normalised:?}"
            );
            assert!(
                (frame[1] - normalised[1] * 48.0).abs() < 1e-3,
                "{frame:?} {normalised:?}"
            );
        }
    }

    #[test]
    fn classify_gray_classifies_the_given_faces_without_detecting() {
        let classifier = fixture_classifier();
        let gray = GrayImage::from_fn(120, 80, |x, y| image::Luma([(x * 2 + y) as u8]));
        let mut times = StageTimes::default();
        let mut session = classifier.session().unwrap();
        let whole = session.classify_gray(&gray, None, &mut times).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].1.bbox, [0.0, 0.0, 120.0, 80.0]);
        let mut face = whole[0].0.clone();
        face.bbox = BBox {
            x: 10.0,
            y: 10.0,
            w: 40.0,
            h: 40.0,
        };
        let given = session
            .classify_gray(&gray, Some(&[face.clone(), face]), &mut times)
            .unwrap();
        assert_eq!(given.len(), 2);
        assert_eq!(given[1].1.face, 1);
        assert_eq!(given[0].1.bbox, [10.0, 10.0, 40.0, 40.0]);
        // Given boxes were not detected here: no detector score.
        assert_eq!(given[0].1.score, None);
        assert!(times.ensemble > Duration::ZERO && times.detect == Duration::ZERO);
    }

    #[test]
    fn json_keeps_label_and_part_order() {
        let classifier = fixture_classifier();
        let image = RgbImage::from_pixel(60, 40, image::Rgb([120, 100, 80]));
        let results = classifier.session().unwrap().classify(&image).unwrap();
        let json = serde_json::to_string(&results[0]).unwrap();
        let manifest = classifier.ensemble().manifest();
        let probabilities = &json[json.find("\"probabilities\"").unwrap()..];
        let positions: Vec<usize> = manifest
            .labels
            .iter()
            .map(|l| probabilities.find(&format!("\"{l}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
        for key in [
            "\"face\"",
            "\"box\"",
            "\"score\"",
            "\"label\"",
            "\"confidence\"",
            "\"parts\"",
        ] {
            assert!(json.contains(key), "{key} missing in {json}");
        }
        for part in &manifest.parts {
            assert!(json.contains(&format!("\"{part}\":{{")), "{json}");
        }
    }
}
