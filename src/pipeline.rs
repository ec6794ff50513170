//! The live pipeline: capture -> detect (every N frames) -> crop -> ensemble -> track -> sinks.
//!
//! Capture runs on its own thread and hands frames over through a one-frame slot. With
//! `drop_frames` (live cameras) the newest frame wins: a frame that inference has not taken yet is
//! replaced and counted as dropped, so inference never works on a stale frame. Without it (files),
//! capture waits until the slot is free and every frame is processed.
//!
//! Between detections the faces are classified at the boxes the tracker predicts, which skips the
//! detector on most frames and keeps track identities even when one detection is missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::GrayImage;
use serde::{Deserialize, Serialize};

use crate::classify::{Classifier, ClassifyError, StageTimes};
use crate::detect::Face;
use crate::frame::{CaptureError, Frame, FrameSource};
use crate::sink::{Picture, Sink, SinkError, Vitals};
use crate::track::{
    Event, FrameUpdate, Observation, Stamp, Tracker, TrackerConfig, TrackerConfigError,
};

/// `[pipeline]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Run the detector on every N-th processed frame (>= 1); in between, faces are classified
    /// at the tracker's predicted boxes. Default 3.
    pub detect_every: u32,
    /// Newest frame wins: replace a frame that inference has not taken yet (and count it as
    /// dropped) instead of making capture wait. Right for cameras; files want false. Default true.
    pub drop_frames: bool,
    /// Seconds between two `info` stats lines in the log; 0 turns them off. Default 10.
    pub stats_interval_s: f64,
    /// Stop after this many processed frames. Default none (until the stream ends or a signal).
    pub max_frames: Option<u64>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            detect_every: 3,
            drop_frames: true,
            stats_interval_s: 10.0,
            max_frames: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Tracker(#[from] TrackerConfigError),
    #[error("capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("pipeline: {0}")]
    Config(String),
    #[error("capture thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Accumulated time of one stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct StageStat {
    /// Calls that took part (frames, detection passes or faces, see [`RunStats`]).
    pub count: u64,
    #[serde(serialize_with = "millis")]
    pub total: Duration,
    #[serde(serialize_with = "millis")]
    pub max: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

impl StageStat {
    fn add(&mut self, d: Duration, count: u64) {
        self.count += count;
        self.total += d;
        self.max = self.max.max(d);
    }

    /// Mean milliseconds per counted call.
    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total.as_secs_f64() * 1e3 / self.count as f64
        }
    }
}

/// What a run did and how long each stage took.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// Frames processed by inference.
    pub frames: u64,
    /// Frames captured but replaced by a newer one before inference took them.
    pub dropped: u64,
    /// Frames the source could not decode, or capture errors it recovered from.
    pub capture_errors: u64,
    /// Sink calls that failed (a closed pipe is not one: it ends the run normally).
    pub sink_errors: u64,
    /// Tracks reported over the run.
    pub tracks: u64,
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
    /// Time inference waited for a frame (per frame).
    pub capture_wait: StageStat,
    /// Per detection pass.
    pub detect: StageStat,
    /// Per face.
    pub crop: StageStat,
    /// Per face.
    pub ensemble: StageStat,
    /// Per frame.
    pub track: StageStat,
    /// Per frame.
    pub sinks: StageStat,
    /// Per frame: everything after the frame arrived.
    pub frame: StageStat,
}

/// Milliseconds rounded to the microsecond.
fn micros(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

impl RunStats {
    pub fn vitals(&self) -> Vitals {
        Vitals {
            frames: self.frames,
            dropped: self.dropped,
            capture_errors: self.capture_errors,
            sink_errors: self.sink_errors,
            tracks: self.tracks,
            detect_ms: micros(self.detect.mean_ms()),
            crop_ms: micros(self.crop.mean_ms()),
            ensemble_ms: micros(self.ensemble.mean_ms()),
            track_ms: micros(self.track.mean_ms()),
            sinks_ms: micros(self.sinks.mean_ms()),
            frame_ms: micros(self.frame.mean_ms()),
        }
    }

    pub fn fps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.frames as f64 / s
        } else {
            0.0
        }
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "{:.1} fps, {} frames, {} dropped, {} capture errors; ms: wait {:.1}, detect {:.1}, crop {:.2}/face, ensemble {:.1}/face, track {:.2}, sinks {:.2}, frame {:.1}",
            self.fps(),
            self.frames,
            self.dropped,
            self.capture_errors,
            self.capture_wait.mean_ms(),
            self.detect.mean_ms(),
            self.crop.mean_ms(),
            self.ensemble.mean_ms(),
            self.track.mean_ms(),
            self.sinks.mean_ms(),
            self.frame.mean_ms(),
        )
    }

    /// The `--stats` table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "frames {}  dropped {}  capture errors {}  sink errors {}  tracks {}  elapsed {:.1} s  {:.1} fps\n",
            self.frames,
            self.dropped,
            self.capture_errors,
            self.sink_errors,
            self.tracks,
            self.elapsed.as_secs_f64(),
            self.fps()
        );
        out.push_str(&format!(
            "{:<14} {:>8} {:>10} {:>10}  per\n",
            "STAGE", "COUNT", "MEAN ms", "MAX ms"
        ));
        for (name, stat, per) in [
            ("capture wait", &self.capture_wait, "frame"),
            ("detect", &self.detect, "detection"),
            ("crop+CLAHE", &self.crop, "face"),
            ("ensemble", &self.ensemble, "face"),
            ("track", &self.track, "frame"),
            ("sinks", &self.sinks, "frame"),
            ("whole frame", &self.frame, "frame"),
        ] {
            out.push_str(&format!(
                "{:<14} {:>8} {:>10.2} {:>10.2}  {per}\n",
                name,
                stat.count,
                stat.mean_ms(),
                stat.max.as_secs_f64() * 1e3
            ));
        }
        out
    }
}

enum End {
    Finished,
    Failed(CaptureError),
}

#[derive(Default)]
struct SlotState {
    frame: Option<Frame>,
    end: Option<End>,
    dropped: u64,
    errors: u64,
}

/// The one-frame hand-over between capture and inference.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock leaves only plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    slot: &Slot,
    stop: &AtomicBool,
    drop_frames: bool,
) {
    let mut consecutive_errors = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let result = source.next_frame();
        let mut state = slot.lock();
        match result {
            Ok(Some(frame)) => {
                consecutive_errors = 0;
                if !drop_frames {
                    while state.frame.is_some() && !stop.load(Ordering::Relaxed) {
                        state = slot
                            .changed
                            .wait_timeout(state, Duration::from_millis(100))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    // Inference has finished; this frame was never going to be processed.
                    return;
                }
                if state.frame.replace(frame).is_some() {
                    state.dropped += 1;
                }
            }
            Ok(None) => {
                state.end = Some(End::Finished);
                slot.changed.notify_all();
                return;
            }
            Err(e) if e.is_transient() => {
                state.errors += 1;
                consecutive_errors += 1;
                if consecutive_errors == 1 || consecutive_errors.is_power_of_two() {
                    log::warn!("{}: {e} ({consecutive_errors} in a row)", source.describe());
                }
                drop(state);
                if matches!(e, CaptureError::Unavailable(_)) {
                    // The device may come back; poll it gently rather than spin.
                    std::thread::sleep(Duration::from_millis(500));
                }
                continue;
            }
            Err(e) => {
                state.end = Some(End::Failed(e));
                slot.changed.notify_all();
                return;
            }
        }
        slot.changed.notify_all();
    }
}

/// Consumer side: the next frame, or the reason there is none.
enum Next {
    Frame(Frame),
    End(End),
    Stopped,
}

fn next_frame(slot: &Slot, stop: &AtomicBool) -> Next {
    let mut state = slot.lock();
    loop {
        if let Some(frame) = state.frame.take() {
            slot.changed.notify_all();
            return Next::Frame(frame);
        }
        if let Some(end) = state.end.take() {
            return Next::End(end);
        }
        if stop.load(Ordering::Relaxed) {
            return Next::Stopped;
        }
        state = slot
            .changed
            .wait_timeout(state, Duration::from_millis(100))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Fraction of a box's area inside the frame.
fn visible_fraction(face: &Face, width: u32, height: u32) -> f32 {
    let b = &face.bbox;
    let w = (b.x + b.w).min(width as f32) - b.x.max(0.0);
    let h = (b.y + b.h).min(height as f32) - b.y.max(0.0);
    if w <= 0.0 || h <= 0.0 || b.w <= 0.0 || b.h <= 0.0 {
        0.0
    } else {
        w * h / (b.w * b.h)
    }
}

/// Runs the pipeline until the source ends, `max_frames` is reached or `stop` is set (signals).
/// Every sink is closed before returning, also after an error.
pub fn run(
    source: Box<dyn FrameSource>,
    classifier: &Classifier,
    tracker_config: &TrackerConfig,
    config: &PipelineConfig,
    sinks: &mut [Box<dyn Sink>],
    stop: Arc<AtomicBool>,
) -> Result<RunStats, PipelineError> {
    if config.detect_every == 0 {
        return Err(PipelineError::Config(
            "detect_every must be at least 1".into(),
        ));
    }
    let labels = classifier.ensemble().manifest().labels.clone();
    let mut tracker = Tracker::new(tracker_config.clone(), labels)?;
    let mut session = classifier.session()?;
    log::info!("pipeline: reading {}", source.describe());

    let slot = Arc::new(Slot::default());
    // A separate flag from `stop`: ending inference for any reason must stop capture too, while
    // a caller's flag is only ever set by the caller.
    let capture_stop = Arc::new(AtomicBool::new(false));
    let capture = {
        let slot = slot.clone();
        let capture_stop = capture_stop.clone();
        let drop_frames = config.drop_frames;
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_loop(source, &slot, &capture_stop, drop_frames))?
    };

    let mut stats = RunStats::default();
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut last_stamp = Stamp {
        frame: 0,
        timestamp: Duration::ZERO,
    };
    let mut last_size = [0, 0];
    let mut face_boxes = Vec::new();
    let mut result = Ok(());
    loop {
        if config.max_frames.is_some_and(|m| stats.frames >= m) || stop.load(Ordering::Relaxed) {
            break;
        }
        let wait = Instant::now();
        let frame = match next_frame(&slot, &stop) {
            Next::Frame(frame) => frame,
            Next::End(End::Finished) | Next::Stopped => break,
            Next::End(End::Failed(e)) => {
                result = Err(PipelineError::Capture(e));
                break;
            }
        };
        stats.capture_wait.add(wait.elapsed(), 1);
        let start = Instant::now();
        let stamp = Stamp {
            frame: frame.index,
            timestamp: frame.timestamp,
        };
        last_stamp = stamp;
        last_size = [frame.image.width(), frame.image.height()];
        let detect = stats.frames % u64::from(config.detect_every) == 0;
        let outcome = process(
            &mut session,
            &mut tracker,
            &frame.image,
            stamp,
            detect,
            &mut stats,
            &mut face_boxes,
        );
        let events = match outcome {
            Ok(events) => events,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let update = FrameUpdate {
            stamp,
            detected: detect,
            frame_size: last_size,
            tracks: tracker.states(),
        };
        let sink_start = Instant::now();
        stats.tracks += events
            .iter()
            .filter(|e| e.kind == crate::track::EventKind::Appeared)
            .count() as u64;
        collect_capture_counts(&slot, &mut stats);
        let vitals = stats.vitals();
        let picture = Picture {
            image: &frame.image,
            update: &update,
            faces: &face_boxes,
            vitals: &vitals,
        };
        let alive = deliver(sinks, &events, &update, Some(&picture), &mut stats);
        stats.sinks.add(sink_start.elapsed(), 1);
        stats.frame.add(start.elapsed(), 1);
        stats.frames += 1;
        if config.stats_interval_s > 0.0
            && last_log.elapsed().as_secs_f64() >= config.stats_interval_s
        {
            collect_capture_counts(&slot, &mut stats);
            stats.elapsed = started.elapsed();
            log::info!("{}; {} tracks now", stats.line(), update.tracks.len());
            last_log = Instant::now();
        }
        if !alive {
            break;
        }
    }

    capture_stop.store(true, Ordering::Relaxed);
    slot.changed.notify_all();
    let events = tracker.finish(last_stamp);
    let update = FrameUpdate {
        stamp: last_stamp,
        detected: false,
        frame_size: last_size,
        tracks: Vec::new(),
    };
    let _ = deliver(sinks, &events, &update, None, &mut stats);
    for sink in sinks.iter_mut() {
        if let Err(e) = sink.close() {
            stats.sink_errors += 1;
            log::warn!("{}: {e}", sink.name());
        }
    }
    // A camera blocked in a read may take a while to notice; do not hang shutdown on it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !capture.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if capture.is_finished() {
        let _ = capture.join();
    } else {
        log::warn!("capture thread still blocked at shutdown; leaving it");
    }
    collect_capture_counts(&slot, &mut stats);
    stats.elapsed = started.elapsed();
    result.map(|()| stats)
}

fn collect_capture_counts(slot: &Slot, stats: &mut RunStats) {
    let state = slot.lock();
    stats.dropped = state.dropped;
    stats.capture_errors = state.errors;
}

/// Hands events, the frame's state and its picture (none for the final, empty update) to every
/// sink. Returns false when an output is gone for good (the reader of a pipe exited): then the
/// run should end, as `ferrite run | head` expects.
fn deliver(
    sinks: &mut [Box<dyn Sink>],
    events: &[Event],
    update: &FrameUpdate,
    picture: Option<&Picture<'_>>,
    stats: &mut RunStats,
) -> bool {
    let mut alive = true;
    for sink in sinks.iter_mut() {
        for event in events {
            if let Err(e) = sink.on_event(event) {
                alive &= report_sink_error(sink.name(), &e, stats);
            }
        }
        if let Err(e) = sink.on_frame(update) {
            alive &= report_sink_error(sink.name(), &e, stats);
        }
        if let Some(picture) = picture {
            if let Err(e) = sink.on_picture(picture) {
                alive &= report_sink_error(sink.name(), &e, stats);
            }
        }
    }
    alive
}

/// Counts and logs a sink error; false when it is a closed pipe.
fn report_sink_error(name: &str, e: &SinkError, stats: &mut RunStats) -> bool {
    if let SinkError::Io(_, io) = e {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            log::info!("{name}: {e}; stopping");
            return false;
        }
    }
    stats.sink_errors += 1;
    // A broken output should not flood the log at frame rate.
    if stats.sink_errors.is_power_of_two() {
        log::warn!("{name}: {e} ({} sink errors so far)", stats.sink_errors);
    }
    true
}

fn process(
    session: &mut crate::classify::ClassifySession<'_>,
    tracker: &mut Tracker,
    image: &GrayImage,
    stamp: Stamp,
    detect: bool,
    stats: &mut RunStats,
    face_boxes: &mut Vec<[f32; 4]>,
) -> Result<Vec<Event>, PipelineError> {
    let mut times = StageTimes::default();
    face_boxes.clear();
    let events = if detect {
        let found = session.classify_gray(image, None, &mut times)?;
        face_boxes.extend(found.iter().map(|(face, _)| face.bbox.xywh()));
        let faces = found.len() as u64;
        stats.detect.add(times.detect, 1);
        if faces > 0 {
            stats.crop.add(times.crop, faces);
            stats.ensemble.add(times.ensemble, faces);
        }
        let start = Instant::now();
        let observations = found
            .into_iter()
            .map(|(face, result)| Observation {
                face,
                probabilities: result.probabilities.0.into_iter().map(|(_, p)| p).collect(),
                parts: result.parts,
            })
            .collect();
        let events = tracker.update(stamp, observations);
        stats.track.add(start.elapsed(), 1);
        events
    } else {
        // A box mostly outside the frame would be classified from replicated border pixels;
        // such a face keeps its smoothed probabilities until the next detection.
        let (keys, faces): (Vec<_>, Vec<_>) = tracker
            .predicted(stamp.frame)
            .into_iter()
            .filter(|(_, f)| visible_fraction(f, image.width(), image.height()) >= 0.6)
            .unzip();
        let found = session.classify_gray(image, Some(&faces), &mut times)?;
        face_boxes.extend(faces.iter().map(|face| face.bbox.xywh()));
        if !faces.is_empty() {
            stats.crop.add(times.crop, faces.len() as u64);
            stats.ensemble.add(times.ensemble, faces.len() as u64);
        }
        let start = Instant::now();
        let observations = keys
            .into_iter()
            .zip(found)
            .map(|(key, (_, result))| {
                (
                    key,
                    result.probabilities.0.into_iter().map(|(_, p)| p).collect(),
                )
            })
            .collect();
        let events = tracker.refresh(stamp, observations);
        stats.track.add(start.elapsed(), 1);
        events
    };
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `n` blank frames as fast as asked.
    struct Blank {
        n: u64,
        next: u64,
    }

    impl FrameSource for Blank {
        fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
            if self.next >= self.n {
                return Ok(None);
            }
            self.next += 1;
            if self.next == 3 {
                return Err(CaptureError::CorruptFrame("bad".into()));
            }
            Ok(Some(Frame {
                index: self.next - 1,
                timestamp: Duration::from_millis(self.next * 33),
                image: GrayImage::new(8, 8),
            }))
        }
        fn describe(&self) -> String {
            "blank".into()
        }
    }

    fn drain(slot: &Slot, stop: &AtomicBool, delay: Duration) -> (Vec<u64>, bool) {
        let mut seen = Vec::new();
        loop {
            match next_frame(slot, stop) {
                Next::Frame(f) => {
                    seen.push(f.index);
                    std::thread::sleep(delay);
                }
                Next::End(End::Finished) => return (seen, true),
                Next::End(End::Failed(_)) | Next::Stopped => return (seen, false),
            }
        }
    }

    #[test]
    fn without_dropping_every_frame_arrives_in_order() {
        let slot = Arc::new(Slot::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (slot.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            capture_loop(Box::new(Blank { n: 20, next: 0 }), &s, &st, false)
        });
        let (seen, finished) = drain(&slot, &stop, Duration::from_millis(1));
        t.join().unwrap();
        assert!(finished);
        // Frame 2 was corrupt: skipped and counted, not fatal.
        let expected: Vec<u64> = (0..20).filter(|&i| i != 2).collect();
        assert_eq!(seen, expected);
        assert_eq!(slot.lock().dropped, 0);
        assert_eq!(slot.lock().errors, 1);
    }

    #[test]
    fn with_dropping_a_slow_consumer_gets_the_newest_frames_and_drops_are_counted() {
        let slot = Arc::new(Slot::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (slot.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            capture_loop(Box::new(Blank { n: 200, next: 0 }), &s, &st, true)
        });
        let (seen, finished) = drain(&slot, &stop, Duration::from_millis(5));
        t.join().unwrap();
        assert!(finished);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        let dropped = slot.lock().dropped;
        assert!(dropped > 0);
        // Every frame is either seen or dropped (one was corrupt); the last one always arrives.
        assert_eq!(seen.len() as u64 + dropped, 199);
        assert_eq!(seen.last(), Some(&199));
    }

    #[test]
    fn config_deserialises_with_defaults_and_rejects_unknown_keys() {
        let c: PipelineConfig = serde_json::from_str(r#"{"detect_every": 1}"#).unwrap();
        assert_eq!(c.detect_every, 1);
        assert!(c.drop_frames);
        assert!(serde_json::from_str::<PipelineConfig>(r#"{"detect_evry": 1}"#).is_err());
    }

    #[test]
    fn visible_fraction_of_boxes() {
        let face = |x: f32| Face {
            bbox: crate::detect::BBox {
                x,
                y: 0.0,
                w: 10.0,
                h: 10.0,
            },
            score: 1.0,
            keypoints: [crate::detect::Point { x: 0.0, y: 0.0 }; 6],
        };
        assert_eq!(visible_fraction(&face(0.0), 100, 100), 1.0);
        assert_eq!(visible_fraction(&face(95.0), 100, 100), 0.5);
        assert_eq!(visible_fraction(&face(-20.0), 100, 100), 0.0);
    }
}
