//! Per-stage latency of the still-image pipeline, for `ferrite bench`.
//!
//! Times each stage separately on one image (decode, detect, crop and CLAHE, ensemble) and the
//! whole chain, after a warm-up, and reports medians and 95th percentiles. It measures; it does
//! not tune anything.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::align::{self, CropGeometry};
use crate::detect::Detector;
use crate::ensemble::{Ensemble, EnsembleError};

/// The bundled sample (scikit-image's public-domain astronaut), so a board can bench with no files.
pub const SAMPLE_JPEG: &[u8] = include_bytes!("../assets/astronaut.jpg");

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot decode the benchmark image: {0}")]
    Decode(#[from] image::ImageError),
    #[error("no face found in the benchmark image")]
    NoFace,
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
}

#[derive(Debug, Clone, Serialize)]
pub struct StageStats {
    /// decode, detect, crop+clahe (frame to gray, crop, CLAHE, normalise), ensemble, whole frame.
    pub stage: &'static str,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub runs: usize,
}

fn stats(stage: &'static str, mut samples: Vec<Duration>) -> StageStats {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    StageStats {
        stage,
        median_ms: at(0.5),
        p95_ms: at(0.95),
        runs: samples.len(),
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Runs every stage `warmup + runs` times on `encoded` (any format `image` decodes) and returns
/// one row per stage; the ensemble runs once per detected face, as in `classify`.
pub fn run(
    encoded: &[u8],
    detector: &Detector,
    ensemble: &Ensemble,
    crop: &CropGeometry,
    runs: usize,
    warmup: usize,
) -> Result<Vec<StageStats>, BenchError> {
    let runs = runs.max(1);
    let mut session = ensemble.session()?;
    let (width, height) = ensemble.input_size();
    let mut samples: [Vec<Duration>; 5] = Default::default();
    for i in 0..warmup + runs {
        let total = Instant::now();
        let (rgb, decode) = time(|| image::load_from_memory(encoded).map(|i| i.to_rgb8()));
        let rgb = rgb?;
        let (faces, detect) = time(|| detector.detect(&rgb));
        let faces = faces?;
        if faces.is_empty() {
            return Err(BenchError::NoFace);
        }
        // The frame's gray conversion is part of cropping: it exists only to feed the crops.
        let (gray, mut crop_time) = time(|| align::rgb_to_gray(&rgb));
        let mut model_time = Duration::ZERO;
        for face in &faces {
            let (prepared, t) = time(|| {
                let cropped = align::crop_face(&gray, face, crop, width.max(height));
                session.prepare(&cropped)
            });
            prepared?;
            crop_time += t;
            let (prediction, t) = time(|| session.run_prepared());
            prediction?;
            model_time += t;
        }
        let whole = total.elapsed();
        if i >= warmup {
            for (bucket, t) in samples
                .iter_mut()
                .zip([decode, detect, crop_time, model_time, whole])
            {
                bucket.push(t);
            }
        }
    }
    let [decode, detect, crop_time, model_time, whole] = samples;
    Ok(vec![
        stats("decode", decode),
        stats("detect", detect),
        stats("crop+clahe", crop_time),
        stats("ensemble", model_time),
        stats("whole frame", whole),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::models;
    use std::path::Path;

    #[test]
    fn reports_every_stage_with_ordered_percentiles() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ensemble");
        let ensemble = Ensemble::load(&models::from_path(&dir).unwrap()).unwrap();
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let rows = run(
            SAMPLE_JPEG,
            &detector,
            &ensemble,
            &CropGeometry::default(),
            3,
            1,
        )
        .unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.stage).collect();
        assert_eq!(
            names,
            ["decode", "detect", "crop+clahe", "ensemble", "whole frame"]
        );
        for r in &rows {
            assert_eq!(r.runs, 3);
            assert!(r.median_ms > 0.0 && r.p95_ms >= r.median_ms, "{r:?}");
        }
        let whole = rows[4].median_ms;
        assert!(
            rows[..4].iter().all(|r| r.median_ms <= whole * 1.5),
            "{rows:?}"
        );
    }

    #[test]
    fn a_faceless_image_is_an_error() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ensemble");
        let ensemble = Ensemble::load(&models::from_path(&dir).unwrap()).unwrap();
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let mut png = Vec::new();
        image::RgbImage::from_pixel(64, 64, image::Rgb([90, 90, 90]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = run(&png, &detector, &ensemble, &CropGeometry::default(), 1, 0).unwrap_err();
        assert!(matches!(err, BenchError::NoFace));
    }
}
