//! Per-stage latency of the live pipeline's frame path, for `ferrite bench`.
//!
//! [`run_threads`] times each stage separately on one image taken as a camera frame (decode to
//! luma, detect, crop and CLAHE, ensemble) and the whole chain, after a warm-up, with one or more
//! worker threads that each process whole frames with their own ensemble session, and reports
//! medians, 95th percentiles and the aggregate frame rate. [`run_graphs`] times the two tract
//! graphs alone (detector and ensemble) on fixed inputs, which is what another runtime can be
//! compared with. It measures; it does not tune anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use image::{GrayImage, RgbImage};
use serde::Serialize;

use crate::align::{self, CropGeometry};
use crate::classify::{Classifier, ClassifySession, StageTimes};
use crate::detect::Detector;
use crate::ensemble::{Ensemble, EnsembleError};

/// The bundled sample (scikit-image's public-domain astronaut), so a board can bench with no files.
pub const SAMPLE_JPEG: &[u8] = include_bytes!("../assets/astronaut.jpg");

/// Most worker threads `ferrite bench --threads` accepts.
pub const MAX_THREADS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot decode the benchmark image: {0}")]
    Decode(#[from] crate::capture::still::ImageFileError),
    #[error("no face found in the benchmark image")]
    NoFace,
    #[error("cannot decode the benchmark image as a camera frame: {0}")]
    Frame(#[source] crate::frame::CaptureError),
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
    #[error(transparent)]
    Classify(#[from] crate::classify::ClassifyError),
    #[error("a benchmark worker thread panicked")]
    WorkerPanicked,
    #[error("bench times detection too; drop --no-detect")]
    NoDetector,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageStats {
    /// Pipeline: decode (to luma), detect, crop+clahe (crop, CLAHE, normalise), ensemble,
    /// whole frame. Graphs alone ([`run_graphs`]): detect graph, ensemble graph.
    pub stage: &'static str,
    pub median_ms: f64,
    pub p95_ms: f64,
    /// Timed samples behind the statistics (runs x threads for a multi-threaded run).
    pub runs: usize,
}

/// The row of a pipeline run that times the whole frame (its frame rate is reported too).
pub const WHOLE_FRAME: &str = "whole frame";
/// The `--graphs-only` rows.
pub const DETECT_GRAPH: &str = "detect graph";
pub const ENSEMBLE_GRAPH: &str = "ensemble graph";

/// Stage names of a pipeline run, in row order.
pub const PIPELINE_STAGES: [&str; 5] = ["decode", "detect", "crop+clahe", "ensemble", WHOLE_FRAME];

/// One [`run_threads`] result.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRun {
    /// Worker threads that processed frames concurrently.
    pub threads: usize,
    /// One row per stage, in [`PIPELINE_STAGES`] order, over every timed frame of every worker.
    pub stages: Vec<StageStats>,
    /// Timed frames of all workers together divided by the wall time from the common start to
    /// the last worker's end: the throughput of `threads` concurrent streams.
    pub frames_per_s: f64,
}

/// Median and nearest-rank 95th percentile (index rounded from `(n - 1) q`) of `samples`.
fn stats(stage: &'static str, mut samples: Vec<Duration>) -> StageStats {
    samples.sort();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
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

/// A still's decode as `classify` runs it (strict, EXIF orientation applied).
fn decode(encoded: &[u8]) -> Result<RgbImage, BenchError> {
    // into_rgb8 moves an RGB image out as it is; to_rgb8 would copy it.
    Ok(crate::capture::still::decode_image(encoded)?.into_rgb8())
}

/// How the bench turns its image into the luma frame the live pipeline works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameDecode {
    /// As an MJPEG camera's frame: zune-jpeg straight to luma, no colour conversion.
    Mjpeg,
    /// A still's full decode (EXIF orientation applied), then luma: a PNG, or a JPEG whose
    /// camera-style decode is not the picture a viewer shows (an EXIF-rotated photo).
    Still,
}

impl FrameDecode {
    /// The MJPEG path wherever it gives the same picture as the still decoder: the same size and
    /// a mean difference under one grey level (the two round the colour conversion differently).
    fn choose(encoded: &[u8]) -> Result<FrameDecode, BenchError> {
        let still = decode(encoded)?;
        let Ok(mjpeg) = crate::capture::decode::mjpeg_to_gray(encoded) else {
            return Ok(FrameDecode::Still);
        };
        let reference = align::rgb_to_gray(&still);
        if mjpeg.dimensions() != reference.dimensions() {
            return Ok(FrameDecode::Still);
        }
        let total: u64 = mjpeg
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        let pixels = (mjpeg.as_raw().len() as u64).max(1);
        Ok(if total < pixels {
            FrameDecode::Mjpeg
        } else {
            FrameDecode::Still
        })
    }

    fn decode(self, encoded: &[u8]) -> Result<GrayImage, BenchError> {
        match self {
            FrameDecode::Mjpeg => {
                crate::capture::decode::mjpeg_to_gray(encoded).map_err(BenchError::Frame)
            }
            FrameDecode::Still => Ok(align::rgb_to_gray(&decode(encoded)?)),
        }
    }
}

/// One frame through the live pipeline's path ([`ClassifySession::classify_gray`], what `ferrite
/// run` does with each camera frame when it detects): decode to luma, then detect on the luma,
/// crop and CLAHE, and the ensemble once per detected face. Returns the time of each stage in
/// [`PIPELINE_STAGES`] order.
fn frame(
    encoded: &[u8],
    how: FrameDecode,
    session: &mut ClassifySession<'_>,
) -> Result<[Duration; 5], BenchError> {
    let total = Instant::now();
    let (gray, decode_time) = time(|| how.decode(encoded));
    let gray = gray?;
    let mut times = StageTimes::default();
    let faces = session.classify_gray(&gray, None, &mut times)?;
    if faces.is_empty() {
        return Err(BenchError::NoFace);
    }
    Ok([
        decode_time,
        times.detect,
        times.crop,
        times.ensemble,
        total.elapsed(),
    ])
}

/// Runs every stage `warmup + runs` times on `encoded` (any format `image` decodes) with one
/// thread and returns one row per stage, in [`PIPELINE_STAGES`] order.
pub fn run(
    encoded: &[u8],
    classifier: &Classifier,
    runs: usize,
    warmup: usize,
) -> Result<Vec<StageStats>, BenchError> {
    run_threads(encoded, classifier, runs, warmup, 1).map(|r| r.stages)
}

/// Like [`run`] with `threads` workers (at least one) processing frames concurrently, each with
/// its own session (the detector is shared; it takes `&self`). Every worker runs
/// `warmup` untimed frames, waits for the others, then times `runs` frames; the statistics pool
/// the frames of all workers.
pub fn run_threads(
    encoded: &[u8],
    classifier: &Classifier,
    runs: usize,
    warmup: usize,
    threads: usize,
) -> Result<PipelineRun, BenchError> {
    if classifier.detector().is_none() {
        return Err(BenchError::NoDetector);
    }
    let runs = runs.max(1);
    let threads = threads.max(1);
    // One untimed frame first, so that a faceless or undecodable image fails here rather
    // than in every worker.
    let how = FrameDecode::choose(encoded)?;
    frame(encoded, how, &mut classifier.session()?)?;

    // Workers always reach the start barrier, even after a failed warm-up, so that nobody
    // waits forever; `failed` then stops the timed loops early.
    let start = Barrier::new(threads + 1);
    let failed = AtomicBool::new(false);
    let (samples, wall) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (start, failed) = (&start, &failed);
                scope.spawn(move || -> Result<Vec<[Duration; 5]>, BenchError> {
                    let warmed =
                        classifier
                            .session()
                            .map_err(BenchError::from)
                            .and_then(|mut s| {
                                for _ in 0..warmup {
                                    frame(encoded, how, &mut s)?;
                                }
                                Ok(s)
                            });
                    if warmed.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    start.wait();
                    let mut session = warmed?;
                    let mut times = Vec::with_capacity(runs);
                    for _ in 0..runs {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        match frame(encoded, how, &mut session) {
                            Ok(t) => times.push(t),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(times)
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().map_err(|_| BenchError::WorkerPanicked)?)
            .collect();
        (results, began.elapsed())
    });
    let mut per_stage: [Vec<Duration>; 5] = Default::default();
    for worker in samples {
        for frame_times in worker? {
            for (bucket, t) in per_stage.iter_mut().zip(frame_times) {
                bucket.push(t);
            }
        }
    }
    let frames = per_stage[4].len();
    Ok(PipelineRun {
        threads,
        stages: PIPELINE_STAGES
            .iter()
            .zip(per_stage)
            .map(|(name, samples)| stats(name, samples))
            .collect(),
        frames_per_s: frames_per_second(frames, wall),
    })
}

/// Sets how many threads tract may split one graph run over (its intra-op threads: a rayon
/// pool that large matrix products are divided across), for every run after this call in the
/// whole process. 1 is tract's default, single-threaded execution. More than 1 needs the
/// `tract-threads` cargo feature.
pub fn set_tract_threads(threads: usize) -> Result<(), String> {
    #[cfg(feature = "tract-threads")]
    {
        use tract_onnx::prelude::tract_linalg::multithread::{set_default_executor, Executor};
        set_default_executor(if threads <= 1 {
            Executor::SingleThread
        } else {
            Executor::multithread(threads.min(MAX_THREADS))
        });
        Ok(())
    }
    #[cfg(not(feature = "tract-threads"))]
    {
        if threads <= 1 {
            Ok(())
        } else {
            Err(
                "this build has no tract intra-op threads: rebuild with --features tract-threads"
                    .to_string(),
            )
        }
    }
}

fn frames_per_second(frames: usize, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        frames as f64 / secs
    } else {
        0.0
    }
}

/// The exact inputs [`run_graphs`] feeds the two graphs, taken from one pass of the pipeline on
/// an image: the detector's letterboxed NHWC tensor, and the first face's CLAHE-normalised
/// crop (NCHW, one plane per model channel).
#[derive(Debug, Clone)]
pub struct GraphInputs {
    pub detector: Vec<f32>,
    pub detector_shape: [usize; 4],
    pub ensemble: Vec<f32>,
    pub ensemble_shape: [usize; 4],
}

/// Builds the [`GraphInputs`] of `encoded`. Fails if no face is found.
pub fn graph_inputs(
    encoded: &[u8],
    detector: &Detector,
    ensemble: &Ensemble,
    crop: &CropGeometry,
) -> Result<GraphInputs, BenchError> {
    let rgb = decode(encoded)?;
    let side = detector.config().model.input_size();
    let detector_input = detector.model_input(&rgb);
    let face = detector
        .detect(&rgb)?
        .into_iter()
        .next()
        .ok_or(BenchError::NoFace)?;
    let spec = &ensemble.manifest().input;
    let size = spec.width.max(spec.height) as u32;
    let cropped = align::crop_face(&align::rgb_to_gray(&rgb), &face, crop, size);
    let mut session = ensemble.session()?;
    session.prepare(&cropped)?;
    let plane = session.prepared_input().to_vec();
    let ensemble_input = std::iter::repeat_n(&plane, spec.channels)
        .flatten()
        .copied()
        .collect();
    Ok(GraphInputs {
        detector: detector_input,
        detector_shape: [1, side, side, 3],
        ensemble: ensemble_input,
        ensemble_shape: [1, spec.channels, spec.height, spec.width],
    })
}

/// Which graphs [`run_graphs`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graphs {
    Both,
    Detector,
    Ensemble,
}

impl std::str::FromStr for Graphs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(Graphs::Both),
            "detector" => Ok(Graphs::Detector),
            "ensemble" => Ok(Graphs::Ensemble),
            other => Err(format!(
                "expected both, detector or ensemble, not {other:?}"
            )),
        }
    }
}

impl Graphs {
    pub fn detector(self) -> bool {
        self != Graphs::Ensemble
    }

    pub fn ensemble(self) -> bool {
        self != Graphs::Detector
    }
}

/// Times the detector graph and/or the ensemble graph alone on `inputs`, one thread, `warmup`
/// untimed runs each first: rows "detect graph" and "ensemble graph", as `which` asks. No
/// decoding, letterbox, anchor decoding, suppression, cropping or CLAHE, so the numbers compare
/// with another runtime running the same ONNX files on the same tensors.
pub fn run_graphs(
    inputs: &GraphInputs,
    detector: &Detector,
    ensemble: &Ensemble,
    which: Graphs,
    runs: usize,
    warmup: usize,
) -> Result<Vec<StageStats>, BenchError> {
    let runs = runs.max(1);
    let mut rows = Vec::new();
    if which.detector() {
        let mut detect = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let (out, t) = time(|| detector.run_model(&inputs.detector));
            out?;
            if i >= warmup {
                detect.push(t);
            }
        }
        rows.push(stats(DETECT_GRAPH, detect));
    }
    if which.ensemble() {
        let mut session = ensemble.session()?;
        // Loads the input buffer once; every timed run then reuses it, as the pipeline does.
        session.predict_normalised(&inputs.ensemble)?;
        let mut model = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let (out, t) = time(|| session.run_prepared());
            out?;
            if i >= warmup {
                model.push(t);
            }
        }
        rows.push(stats(ENSEMBLE_GRAPH, model));
    }
    Ok(rows)
}

/// Parses a thread-count list: comma-separated counts or inclusive ranges, e.g. `1`, `1,2,4`,
/// `1-4`. Counts are 1..=[`MAX_THREADS`]; duplicates are dropped, the first order kept.
pub fn parse_thread_list(s: &str) -> Result<Vec<usize>, String> {
    let count = |t: &str| -> Result<usize, String> {
        match t.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
            _ => Err(format!(
                "expected a thread count in 1..={MAX_THREADS}, got {:?}",
                t.trim()
            )),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let counts = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (count(lo)?, count(hi)?);
                if lo > hi {
                    return Err(format!("empty thread range {:?}", part.trim()));
                }
                (lo..=hi).collect()
            }
            None => vec![count(part)?],
        };
        for n in counts {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::models;
    use std::path::Path;

    fn fixture_ensemble() -> Ensemble {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ensemble");
        Ensemble::load(&models::from_path(&dir).unwrap()).unwrap()
    }

    #[test]
    fn reports_every_stage_with_ordered_percentiles() {
        let ensemble = fixture_ensemble();
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let classifier = Classifier::new(Some(detector), ensemble, CropGeometry::default());
        let rows = run(SAMPLE_JPEG, &classifier, 3, 1).unwrap();
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
        let ensemble = fixture_ensemble();
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let mut png = Vec::new();
        image::RgbImage::from_pixel(64, 64, image::Rgb([90, 90, 90]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = graph_inputs(&png, &detector, &ensemble, &CropGeometry::default()).unwrap_err();
        assert!(matches!(err, BenchError::NoFace));
        let classifier = Classifier::new(Some(detector), ensemble, CropGeometry::default());
        let err = run(&png, &classifier, 1, 0).unwrap_err();
        assert!(matches!(err, BenchError::NoFace));
        for threads in [1, 3] {
            let err = run_threads(&png, &classifier, 2, 1, threads).unwrap_err();
            assert!(
                matches!(err, BenchError::NoFace),
                "{threads} threads: {err}"
            );
        }
    }

    #[test]
    fn a_jpeg_is_decoded_as_a_camera_frame_unless_its_exif_turns_it() {
        use crate::capture::exif_fixture::{exif_orientation, jpeg};
        assert_eq!(
            FrameDecode::choose(SAMPLE_JPEG).unwrap(),
            FrameDecode::Mjpeg
        );
        let wide =
            image::RgbImage::from_fn(64, 32, |x, y| image::Rgb([x as u8 * 4, y as u8 * 8, 90]));
        assert_eq!(
            FrameDecode::choose(&jpeg(&wide, None)).unwrap(),
            FrameDecode::Mjpeg
        );
        // Upside down (3) keeps the size, turned (6) swaps it: both differ from the raw frame.
        for orientation in [3, 6] {
            let turned = jpeg(&wide, Some(exif_orientation(orientation)));
            assert_eq!(FrameDecode::choose(&turned).unwrap(), FrameDecode::Still);
            let shown = FrameDecode::Still.decode(&turned).unwrap();
            let expected = if orientation == 6 { (32, 64) } else { (64, 32) };
            assert_eq!(shown.dimensions(), expected);
        }
        let mut png = Vec::new();
        wide.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(FrameDecode::choose(&png).unwrap(), FrameDecode::Still);
        assert_eq!(
            FrameDecode::Still.decode(&png).unwrap(),
            align::rgb_to_gray(&wide)
        );
    }

    #[test]
    fn bench_needs_a_detector() {
        let classifier = Classifier::new(None, fixture_ensemble(), CropGeometry::default());
        let err = run(SAMPLE_JPEG, &classifier, 1, 0).unwrap_err();
        assert!(matches!(err, BenchError::NoDetector), "{err}");
    }

    #[test]
    fn threaded_runs_pool_every_workers_frames() {
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let classifier =
            Classifier::new(Some(detector), fixture_ensemble(), CropGeometry::default());
        for threads in [1, 2, 3] {
            let r = run_threads(SAMPLE_JPEG, &classifier, 4, 1, threads).unwrap();
            assert_eq!(r.threads, threads);
            let names: Vec<&str> = r.stages.iter().map(|s| s.stage).collect();
            assert_eq!(names, PIPELINE_STAGES);
            for s in &r.stages {
                assert_eq!(s.runs, 4 * threads, "{s:?}");
                assert!(s.p95_ms >= s.median_ms, "{s:?}");
            }
            assert!(r.frames_per_s.is_finite() && r.frames_per_s > 0.0, "{r:?}");
        }
        // Zero threads or runs mean one.
        let r = run_threads(SAMPLE_JPEG, &classifier, 0, 0, 0).unwrap();
        assert_eq!((r.threads, r.stages[0].runs), (1, 1));
    }

    #[test]
    fn graph_inputs_are_what_the_pipeline_feeds() {
        let ensemble = fixture_ensemble();
        let detector = Detector::new(DetectorConfig::default()).unwrap();
        let crop = CropGeometry::default();
        let inputs = graph_inputs(SAMPLE_JPEG, &detector, &ensemble, &crop).unwrap();
        assert_eq!(inputs.detector_shape, [1, 128, 128, 3]);
        assert_eq!(inputs.detector.len(), 128 * 128 * 3);
        assert!(inputs.detector.iter().all(|v| (-1.0..=1.0).contains(v)));
        let spec = &ensemble.manifest().input;
        assert_eq!(
            inputs.ensemble_shape,
            [1, spec.channels, spec.height, spec.width]
        );
        assert_eq!(
            inputs.ensemble.len(),
            inputs.ensemble_shape.iter().product::<usize>()
        );
        // The same prediction as the pipeline's own path on the same image.
        let rgb = decode(SAMPLE_JPEG).unwrap();
        let face = detector.detect(&rgb).unwrap().remove(0);
        let size = spec.width.max(spec.height) as u32;
        let cropped = align::crop_face(&align::rgb_to_gray(&rgb), &face, &crop, size);
        let mut session = ensemble.session().unwrap();
        let want = session.predict(&cropped).unwrap();
        let got = session.predict_normalised(&inputs.ensemble).unwrap();
        assert_eq!(got, want);

        let rows = run_graphs(&inputs, &detector, &ensemble, Graphs::Both, 3, 1).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.stage).collect();
        assert_eq!(names, ["detect graph", "ensemble graph"]);
        assert!(rows
            .iter()
            .all(|r| r.runs == 3 && r.p95_ms >= r.median_ms && r.median_ms > 0.0));
        for (which, only) in [
            (Graphs::Detector, "detect graph"),
            (Graphs::Ensemble, "ensemble graph"),
        ] {
            let rows = run_graphs(&inputs, &detector, &ensemble, which, 2, 0).unwrap();
            let names: Vec<&str> = rows.iter().map(|r| r.stage).collect();
            assert_eq!(names, [only]);
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect();
        // 1..=20 shuffled: median index round(19 * 0.5) = 10 -> 11 ms; p95 round(18.05) = 18 -> 19.
        let s = stats(
            "x",
            ms(&[
                7, 20, 1, 13, 5, 19, 2, 8, 11, 3, 16, 4, 12, 6, 18, 9, 10, 14, 15, 17,
            ]),
        );
        assert_eq!((s.median_ms, s.p95_ms, s.runs), (11.0, 19.0, 20));
        let one = stats("y", ms(&[4]));
        assert_eq!((one.median_ms, one.p95_ms, one.runs), (4.0, 4.0, 1));
        let none = stats("z", Vec::new());
        assert_eq!((none.median_ms, none.p95_ms, none.runs), (0.0, 0.0, 0));
    }

    #[test]
    fn frame_rate_is_frames_over_wall_time() {
        assert_eq!(frames_per_second(120, Duration::from_secs(2)), 60.0);
        assert_eq!(frames_per_second(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn thread_lists_parse() {
        assert_eq!(parse_thread_list("1").unwrap(), [1]);
        assert_eq!(parse_thread_list("1,2, 4").unwrap(), [1, 2, 4]);
        assert_eq!(parse_thread_list("1-3").unwrap(), [1, 2, 3]);
        assert_eq!(parse_thread_list("2,1-3,2").unwrap(), [2, 1, 3]);
        for bad in ["", "0", "a", "1,", "3-1", "-2", "1-", "257", "1.5"] {
            assert!(parse_thread_list(bad).is_err(), "{bad:?} parsed");
        }
    }
}
