//! Still images to per-face expression results: detect -> align -> ensemble.
//!
//! This module wires the stages together for one image at a time and shapes the result that the
//! CLI prints. It owns no model logic of its own; reading files and printing belong to the binary.

use std::time::{Duration, Instant};

use image::{GrayImage, RgbImage};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::align::{self, CropGeometry, CropTransform};
use crate::detect::{BBox, DetectError, Detector, Face, Point};
use crate::ensemble::{Ensemble, EnsembleError, Prediction, Session};

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
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
        let gray = align::rgb_to_gray(image);
        let Some(detector) = &self.classifier.detector else {
            let whole = whole_image_face(&gray);
            let geometry = CropGeometry {
                scale: 1.0,
                shift_x: 0.0,
                shift_y: 0.0,
                rotate: false,
            };
            align::crop_face_into(&gray, &whole, &geometry, &mut self.crop);
            let prediction = self.model.predict(&self.crop)?;
            let transform = CropTransform::new(&whole, &geometry);
            return Ok(vec![self.result(0, &whole, None, &transform, prediction)]);
        };
        let faces = detector.detect(image)?;
        let mut results = Vec::with_capacity(faces.len());
        for (index, face) in faces.iter().enumerate() {
            align::crop_face_into(&gray, face, &self.classifier.crop, &mut self.crop);
            let prediction = self.model.predict(&self.crop)?;
            let transform = CropTransform::new(face, &self.classifier.crop);
            results.push(self.result(index, face, Some(face.score), &transform, prediction));
        }
        Ok(results)
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
        let (faces, geometry, detected) = match (faces, &self.classifier.detector) {
            (Some(faces), _) => (faces.to_vec(), self.classifier.crop, false),
            (None, Some(detector)) => {
                let start = Instant::now();
                let found = detector.detect_gray(gray)?;
                times.detect += start.elapsed();
                (found, self.classifier.crop, true)
            }
            (None, None) => (
                vec![whole_image_face(gray)],
                CropGeometry {
                    scale: 1.0,
                    shift_x: 0.0,
                    shift_y: 0.0,
                    rotate: false,
                },
                false,
            ),
        };
        let mut results = Vec::with_capacity(faces.len());
        for (index, face) in faces.into_iter().enumerate() {
            let start = Instant::now();
            align::crop_face_into(gray, &face, &geometry, &mut self.crop);
            times.crop += start.elapsed();
            let start = Instant::now();
            let prediction = self.model.predict(&self.crop)?;
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
            bbox: [face.bbox.x, face.bbox.y, face.bbox.w, face.bbox.h],
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
}

impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ordered_map(&self.0, serializer)
    }
}

fn ordered_map<S: Serializer, V: Serialize>(
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
