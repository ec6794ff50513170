//! Multi-face tracking, temporal smoothing and label hysteresis: per-frame face results in,
//! stable per-person tracks and events (`appeared`, `expression_changed`, `left`) out.
//!
//! Pure logic: no models, no I/O, no clocks; the caller passes frame indices and timestamps.
//!
//! - **Association**: greedy on intersection over union between each track's predicted box and
//!   the detections (highest IoU first, pairs below `iou_threshold` never match). Boxes are
//!   predicted with a constant velocity, so two faces that cross keep their identities.
//! - **Lifecycle**: a new track is *tentative* until it has been matched `min_hits` times in a row;
//!   only then it gets its public ID (IDs count up from 1 and are never reused in a run) and
//!   `appeared` is emitted. A tentative track that misses once is dropped silently. A confirmed
//!   track survives up to `max_misses` consecutive detection passes without a match (occlusion,
//!   a missed detection) and ends with `left` on the next one. Hits and misses count detection
//!   passes: with `detect_every = N` a track survives `max_misses * N` frames unseen.
//! - **Smoothing**: each track keeps an exponential moving average of the class probabilities,
//!   `s = alpha * p + (1 - alpha) * s`, with `alpha = smoothing` (1 disables smoothing).
//! - **Hysteresis**: the reported label changes only when another class's smoothed probability
//!   exceeds the current label's by more than `switch_margin` on `switch_frames` consecutive
//!   observations (the same challenger each time); then `expression_changed` is emitted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::Scores;
use crate::detect::{BBox, Face, Point};

/// Public track identifier: counts up from 1, never reused within a run.
pub type TrackId = u64;

/// Tracker settings (`[tracker]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Minimum IoU between a track's predicted box and a detection to match them. Default 0.2:
    /// low, because the prediction absorbs most motion and faces rarely overlap each other.
    pub iou_threshold: f32,
    /// Consecutive matched detection passes before a track is reported. Default 3.
    pub min_hits: u32,
    /// Detection passes a reported track may go unmatched before it ends. Default 5.
    pub max_misses: u32,
    /// EMA weight of the newest probabilities, in (0, 1]; 1 = no smoothing. Default 0.3.
    pub smoothing: f32,
    /// How much more probable (smoothed) a challenger label must be than the current one. Default 0.1.
    pub switch_margin: f32,
    /// Consecutive observations the challenger must lead by `switch_margin`. Default 3.
    pub switch_frames: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            iou_threshold: 0.2,
            min_hits: 3,
            max_misses: 5,
            smoothing: 0.3,
            switch_margin: 0.1,
            switch_frames: 3,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrackerConfigError {
    #[error("tracker: {0}")]
    Invalid(String),
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<(), TrackerConfigError> {
        let bad = |m: String| Err(TrackerConfigError::Invalid(m));
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return bad(format!(
                "iou_threshold must be within 0..1, got {}",
                self.iou_threshold
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad(format!(
                "smoothing must be within (0, 1], got {}",
                self.smoothing
            ));
        }
        if !(0.0..=1.0).contains(&self.switch_margin) {
            return bad(format!(
                "switch_margin must be within 0..1, got {}",
                self.switch_margin
            ));
        }
        if self.min_hits == 0 || self.switch_frames == 0 {
            return bad("min_hits and switch_frames must be at least 1".into());
        }
        Ok(())
    }
}

/// Where a frame sits in the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub frame: u64,
    pub timestamp: Duration,
}

/// One detected face with its class probabilities (in the model's label order).
#[derive(Debug, Clone)]
pub struct Observation {
    pub face: Face,
    pub probabilities: Vec<f32>,
    /// Each part network's own probabilities (for outputs that show which part decided).
    pub parts: Vec<(String, Scores)>,
}

/// Opaque handle of a track (tentative ones included) for frames between detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey(u64);

/// A reported track as it stands after a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackState {
    pub track: TrackId,
    /// [x, y, w, h] in frame pixels: the last detection, or the prediction between detections.
    pub bbox: [f32; 4],
    /// The hysteresis-stable label.
    pub label: String,
    /// Smoothed probability of `label`.
    pub confidence: f32,
    /// Smoothed probabilities, in the model's label order.
    pub probabilities: Scores,
    /// Stream time of the track's first detection.
    pub first_seen: Duration,
    /// Consecutive detection passes without a match (0 = seen at the last one).
    pub misses: u32,
    /// The detector's score at the last matched detection.
    pub score: f32,
    /// The part networks' probabilities at the last detection (unsmoothed).
    pub parts: Vec<(String, Scores)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A track was confirmed (`min_hits` reached).
    Appeared,
    /// The stable label changed; `from` is the previous label, the new one is in the state.
    ExpressionChanged { from: String },
    /// The track ended (more than `max_misses` misses, or the stream ended).
    Left,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub stamp: Stamp,
    /// The track after the event (for `left`: as last seen).
    pub state: TrackState,
}

impl Event {
    /// The event's name in the JSON and MQTT outputs.
    pub fn name(&self) -> &'static str {
        match self.kind {
            EventKind::Appeared => "appeared",
            EventKind::ExpressionChanged { .. } => "expression_changed",
            EventKind::Left => "left",
        }
    }
}

/// Everything the outputs need after one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameUpdate {
    pub stamp: Stamp,
    /// Whether the detector ran on this frame (otherwise boxes are predictions).
    pub detected: bool,
    /// The frame's width and height in pixels, the space of every box.
    pub frame_size: [u32; 2],
    /// Reported tracks, oldest first.
    pub tracks: Vec<TrackState>,
}

#[derive(Debug, Clone)]
struct Track {
    key: u64,
    id: Option<TrackId>,
    /// Last matched box and the frame it was measured in; predictions extrapolate from it.
    anchor: [f32; 4],
    anchor_frame: u64,
    /// Per-frame change of [x, y, w, h].
    velocity: [f32; 4],
    /// Keypoints relative to the box ((p - xy) / wh), to rebuild a face at a predicted box.
    keypoints: [[f32; 2]; 6],
    score: f32,
    hits: u32,
    misses: u32,
    /// Box at the latest frame processed.
    bbox: [f32; 4],
    smoothed: Vec<f32>,
    parts: Vec<(String, Scores)>,
    label: usize,
    challenger: Option<(usize, u32)>,
    first_seen: Duration,
}

impl Track {
    fn box_at(&self, frame: u64) -> [f32; 4] {
        let dt = frame.saturating_sub(self.anchor_frame) as f32;
        let mut b = [0.0; 4];
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.anchor[i] + self.velocity[i] * dt;
        }
        b[2] = b[2].max(1.0);
        b[3] = b[3].max(1.0);
        b
    }

    fn face_at(&self, frame: u64) -> Face {
        let [x, y, w, h] = self.box_at(frame);
        let keypoints = self.keypoints.map(|[u, v]| Point {
            x: x + u * w,
            y: y + v * h,
        });
        Face {
            bbox: BBox { x, y, w, h },
            score: self.score,
            keypoints,
        }
    }
}

/// The tracker. One per stream.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    labels: Vec<String>,
    tracks: Vec<Track>,
    next_key: u64,
    next_id: TrackId,
}

fn face_box(face: &Face) -> [f32; 4] {
    face.bbox.xywh()
}

/// Intersection over union of two [x, y, w, h] boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    BBox::from_xywh(*a).iou(&BBox::from_xywh(*b))
}

fn argmax(values: &[f32]) -> usize {
    crate::ensemble::argmax(values).0
}

impl Tracker {
    /// `labels`: the model's class names, in the order of the probability vectors.
    pub fn new(config: TrackerConfig, labels: Vec<String>) -> Result<Self, TrackerConfigError> {
        config.validate()?;
        Ok(Tracker {
            config,
            labels,
            tracks: Vec::new(),
            next_key: 0,
            next_id: 1,
        })
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Faces to classify on a frame without detection: every track (tentative ones included)
    /// matched at the last detection pass, at its predicted box for `frame`.
    pub fn predicted(&self, frame: u64) -> Vec<(TrackKey, Face)> {
        self.tracks
            .iter()
            .filter(|t| t.misses == 0)
            .map(|t| (TrackKey(t.key), t.face_at(frame)))
            .collect()
    }

    /// A frame on which the detector ran: associates `detections` with the tracks.
    pub fn update(&mut self, stamp: Stamp, detections: Vec<Observation>) -> Vec<Event> {
        let mut events = Vec::new();
        let predicted: Vec<[f32; 4]> = self.tracks.iter().map(|t| t.box_at(stamp.frame)).collect();
        let mut pairs = Vec::new();
        for (ti, p) in predicted.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                let overlap = iou(p, &face_box(&d.face));
                if overlap >= self.config.iou_threshold && overlap > 0.0 {
                    pairs.push((overlap, ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_match: Vec<Option<usize>> = vec![None; self.tracks.len()];
        let mut detection_used = vec![false; detections.len()];
        for (_, ti, di) in pairs {
            if track_match[ti].is_none() && !detection_used[di] {
                track_match[ti] = Some(di);
                detection_used[di] = true;
            }
        }

        let mut detections: Vec<Option<Observation>> = detections.into_iter().map(Some).collect();
        let mut ended = Vec::new();
        for (ti, matched) in track_match.iter().enumerate() {
            match matched.and_then(|di| detections[di].take()) {
                Some(obs) => {
                    self.match_track(ti, stamp, obs, &mut events);
                }
                None => {
                    let t = &mut self.tracks[ti];
                    t.misses += 1;
                    t.bbox = predicted[ti];
                    if t.id.is_none() || t.misses > self.config.max_misses {
                        ended.push(ti);
                    }
                }
            }
        }
        for ti in ended.into_iter().rev() {
            let track = self.tracks.remove(ti);
            if track.id.is_some() {
                events.push(self.event(EventKind::Left, stamp, &track));
            }
        }
        for obs in detections.into_iter().flatten() {
            self.start_track(stamp, obs, &mut events);
        }
        events
    }

    /// A frame without detection: `observations` are the probabilities measured at the boxes that
    /// [`Tracker::predicted`] returned. Boxes move to their predictions; nothing is matched or missed.
    pub fn refresh(&mut self, stamp: Stamp, observations: Vec<(TrackKey, Vec<f32>)>) -> Vec<Event> {
        let mut events = Vec::new();
        for t in &mut self.tracks {
            t.bbox = t.box_at(stamp.frame);
        }
        for (key, probabilities) in observations {
            if let Some(ti) = self.tracks.iter().position(|t| t.key == key.0) {
                self.observe(ti, stamp, &probabilities, &mut events);
            }
        }
        events
    }

    /// End of stream: every reported track leaves.
    pub fn finish(&mut self, stamp: Stamp) -> Vec<Event> {
        let tracks = std::mem::take(&mut self.tracks);
        tracks
            .iter()
            .filter(|t| t.id.is_some())
            .map(|t| self.event(EventKind::Left, stamp, t))
            .collect()
    }

    /// Reported tracks, oldest first.
    pub fn states(&self) -> Vec<TrackState> {
        self.tracks
            .iter()
            .filter(|t| t.id.is_some())
            .map(|t| self.state(t))
            .collect()
    }

    fn start_track(&mut self, stamp: Stamp, obs: Observation, events: &mut Vec<Event>) {
        let b = face_box(&obs.face);
        let keypoints = obs
            .face
            .keypoints
            .map(|p| [(p.x - b[0]) / b[2].max(1e-3), (p.y - b[1]) / b[3].max(1e-3)]);
        let label = argmax(&obs.probabilities);
        self.tracks.push(Track {
            key: self.next_key,
            id: None,
            anchor: b,
            anchor_frame: stamp.frame,
            velocity: [0.0; 4],
            keypoints,
            score: obs.face.score,
            hits: 1,
            misses: 0,
            bbox: b,
            smoothed: obs.probabilities,
            parts: obs.parts,
            label,
            challenger: None,
            first_seen: stamp.timestamp,
        });
        self.next_key += 1;
        let ti = self.tracks.len() - 1;
        self.maybe_confirm(ti, stamp, events);
    }

    fn match_track(&mut self, ti: usize, stamp: Stamp, obs: Observation, events: &mut Vec<Event>) {
        let t = &mut self.tracks[ti];
        let b = face_box(&obs.face);
        let dt = stamp.frame.saturating_sub(t.anchor_frame).max(1) as f32;
        let first = t.hits <= 1;
        for ((v, &new), &old) in t.velocity.iter_mut().zip(&b).zip(&t.anchor) {
            let measured = (new - old) / dt;
            // The first measured velocity is taken as is; later ones are blended with the
            // estimate so one jittery box does not throw the prediction off.
            *v = if first {
                measured
            } else {
                0.5 * *v + 0.5 * measured
            };
        }
        t.anchor = b;
        t.anchor_frame = stamp.frame;
        t.bbox = b;
        t.keypoints = obs
            .face
            .keypoints
            .map(|p| [(p.x - b[0]) / b[2].max(1e-3), (p.y - b[1]) / b[3].max(1e-3)]);
        t.score = obs.face.score;
        t.hits += 1;
        t.misses = 0;
        t.parts = obs.parts;
        self.observe(ti, stamp, &obs.probabilities, events);
        self.maybe_confirm(ti, stamp, events);
    }

    fn maybe_confirm(&mut self, ti: usize, stamp: Stamp, events: &mut Vec<Event>) {
        let t = &mut self.tracks[ti];
        if t.id.is_none() && t.hits >= self.config.min_hits {
            t.id = Some(self.next_id);
            self.next_id += 1;
            t.label = argmax(&t.smoothed);
            t.challenger = None;
            let t = &self.tracks[ti];
            events.push(self.event(EventKind::Appeared, stamp, t));
        }
    }

    /// Smoothing and hysteresis for one probability observation.
    fn observe(&mut self, ti: usize, stamp: Stamp, probabilities: &[f32], events: &mut Vec<Event>) {
        let alpha = self.config.smoothing;
        let t = &mut self.tracks[ti];
        if probabilities.len() != t.smoothed.len() {
            log::warn!(
                "tracker: ignoring {} probabilities for a {}-class track",
                probabilities.len(),
                t.smoothed.len()
            );
            return;
        }
        for (s, &p) in t.smoothed.iter_mut().zip(probabilities) {
            *s = alpha * p + (1.0 - alpha) * *s;
        }
        let best = argmax(&t.smoothed);
        if t.id.is_none() {
            t.label = best;
            return;
        }
        if best == t.label || t.smoothed[best] - t.smoothed[t.label] <= self.config.switch_margin {
            t.challenger = None;
            return;
        }
        let count = match t.challenger {
            Some((c, n)) if c == best => n + 1,
            _ => 1,
        };
        if count < self.config.switch_frames {
            t.challenger = Some((best, count));
            return;
        }
        let from = self.labels.get(t.label).cloned().unwrap_or_default();
        t.label = best;
        t.challenger = None;
        let t = &self.tracks[ti];
        events.push(self.event(EventKind::ExpressionChanged { from }, stamp, t));
    }

    fn state(&self, t: &Track) -> TrackState {
        TrackState {
            track: t.id.unwrap_or(0),
            bbox: t.bbox,
            label: self.labels.get(t.label).cloned().unwrap_or_default(),
            confidence: t.smoothed.get(t.label).copied().unwrap_or(0.0),
            probabilities: Scores(
                self.labels
                    .iter()
                    .cloned()
                    .zip(t.smoothed.iter().copied())
                    .collect(),
            ),
            first_seen: t.first_seen,
            misses: t.misses,
            score: t.score,
            parts: t.parts.clone(),
        }
    }

    fn event(&self, kind: EventKind, stamp: Stamp, t: &Track) -> Event {
        Event {
            kind,
            stamp,
            state: self.state(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [&str; 3] = ["happy", "neutral", "sad"];

    fn tracker(config: TrackerConfig) -> Tracker {
        Tracker::new(config, LABELS.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn stamp(frame: u64) -> Stamp {
        Stamp {
            frame,
            timestamp: Duration::from_millis(frame * 100),
        }
    }

    fn obs(x: f32, y: f32, side: f32, probabilities: &[f32]) -> Observation {
        let p = |u: f32, v: f32| Point {
            x: x + u * side,
            y: y + v * side,
        };
        Observation {
            face: Face {
                bbox: BBox {
                    x,
                    y,
                    w: side,
                    h: side,
                },
                score: 0.9,
                keypoints: [
                    p(0.3, 0.4),
                    p(0.7, 0.4),
                    p(0.5, 0.6),
                    p(0.5, 0.8),
                    p(0.0, 0.5),
                    p(1.0, 0.5),
                ],
            },
            probabilities: probabilities.to_vec(),
            parts: Vec::new(),
        }
    }

    const HAPPY: [f32; 3] = [0.8, 0.15, 0.05];
    const SAD: [f32; 3] = [0.05, 0.15, 0.8];

    fn appeared(events: &[Event]) -> Vec<TrackId> {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Appeared)
            .map(|e| e.state.track)
            .collect()
    }

    fn left(events: &[Event]) -> Vec<TrackId> {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Left)
            .map(|e| e.state.track)
            .collect()
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[20.0, 0.0, 10.0, 10.0]), 0.0);
        let half = iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0]);
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn a_track_is_reported_after_min_hits() {
        let mut t = tracker(TrackerConfig {
            min_hits: 3,
            ..TrackerConfig::default()
        });
        assert!(t
            .update(stamp(0), vec![obs(10.0, 10.0, 50.0, &HAPPY)])
            .is_empty());
        assert!(t.states().is_empty());
        assert!(t
            .update(stamp(1), vec![obs(12.0, 10.0, 50.0, &HAPPY)])
            .is_empty());
        let events = t.update(stamp(2), vec![obs(14.0, 10.0, 50.0, &HAPPY)]);
        assert_eq!(appeared(&events), vec![1]);
        assert_eq!(events[0].state.label, "happy");
        assert_eq!(t.states().len(), 1);
    }

    #[test]
    fn a_tentative_track_that_misses_is_dropped_silently_and_ids_stay_dense() {
        let mut t = tracker(TrackerConfig {
            min_hits: 2,
            ..TrackerConfig::default()
        });
        // A one-frame false positive never becomes a track and does not use up an ID.
        t.update(stamp(0), vec![obs(300.0, 10.0, 40.0, &HAPPY)]);
        let events = t.update(stamp(1), vec![]);
        assert!(events.is_empty());
        t.update(stamp(2), vec![obs(10.0, 10.0, 50.0, &HAPPY)]);
        let events = t.update(stamp(3), vec![obs(10.0, 10.0, 50.0, &HAPPY)]);
        assert_eq!(appeared(&events), vec![1]);
    }

    #[test]
    fn ids_survive_a_short_occlusion_and_a_long_absence_gets_a_new_id() {
        let config = TrackerConfig {
            min_hits: 2,
            max_misses: 3,
            ..TrackerConfig::default()
        };
        let mut t = tracker(config);
        let mut events = Vec::new();
        let mut frame = 0;
        for _ in 0..3 {
            events.extend(t.update(stamp(frame), vec![obs(100.0, 50.0, 60.0, &HAPPY)]));
            frame += 1;
        }
        // Occluded for max_misses passes: still the same track.
        for _ in 0..3 {
            events.extend(t.update(stamp(frame), vec![]));
            frame += 1;
        }
        events.extend(t.update(stamp(frame), vec![obs(101.0, 50.0, 60.0, &HAPPY)]));
        frame += 1;
        assert_eq!(appeared(&events), vec![1]);
        assert!(left(&events).is_empty());
        assert_eq!(t.states()[0].track, 1);
        // Gone for max_misses + 1 passes: the track ends; the same face coming back is a new track.
        for _ in 0..4 {
            events.extend(t.update(stamp(frame), vec![]));
            frame += 1;
        }
        assert_eq!(left(&events), vec![1]);
        assert!(t.states().is_empty());
        for _ in 0..2 {
            events.extend(t.update(stamp(frame), vec![obs(100.0, 50.0, 60.0, &HAPPY)]));
            frame += 1;
        }
        assert_eq!(appeared(&events), vec![1, 2]);
        let names: Vec<&str> = events.iter().map(Event::name).collect();
        assert_eq!(names, ["appeared", "left", "appeared"]);
    }

    #[test]
    fn crossing_faces_keep_their_ids() {
        // Two faces walk towards each other along the same line, overlap, and cross; for three
        // frames around the crossing the detector merges them into one box.
        let mut t = tracker(TrackerConfig {
            min_hits: 2,
            max_misses: 4,
            ..TrackerConfig::default()
        });
        let mut id_of_left_walker = None;
        for frame in 0..40u64 {
            let a = 20.0 + 10.0 * frame as f32; // left to right
            let b = 420.0 - 10.0 * frame as f32; // right to left
            let detections = if (19..=21).contains(&frame) {
                vec![obs((a + b) / 2.0, 100.0, 60.0, &HAPPY)]
            } else {
                vec![obs(a, 100.0, 60.0, &HAPPY), obs(b, 101.0, 60.0, &SAD)]
            };
            let events = t.update(stamp(frame), detections);
            assert!(left(&events).is_empty(), "frame {frame}: {events:?}");
            if frame == 5 {
                let states = t.states();
                assert_eq!(states.len(), 2);
                id_of_left_walker = states.iter().find(|s| s.bbox[0] < 200.0).map(|s| s.track);
            }
        }
        let states = t.states();
        assert_eq!(states.len(), 2, "{states:?}");
        // After crossing, the left walker is on the right.
        let right = states.iter().max_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
        assert_eq!(right.map(|s| s.track), id_of_left_walker);
        assert!(states.iter().all(|s| s.track <= 2));
    }

    #[test]
    fn predictions_follow_the_velocity_between_detections() {
        let mut t = tracker(TrackerConfig {
            min_hits: 1,
            ..TrackerConfig::default()
        });
        t.update(stamp(0), vec![obs(100.0, 50.0, 60.0, &HAPPY)]);
        t.update(stamp(2), vec![obs(110.0, 50.0, 60.0, &HAPPY)]);
        let predicted = t.predicted(4);
        assert_eq!(predicted.len(), 1);
        let b = predicted[0].1.bbox;
        assert!((b.x - 120.0).abs() < 1e-3, "{b:?}");
        // Keypoints move with the box.
        assert!((predicted[0].1.keypoints[0].x - (120.0 + 0.3 * 60.0)).abs() < 1e-3);
        t.refresh(stamp(4), vec![(predicted[0].0, HAPPY.to_vec())]);
        assert!((t.states()[0].bbox[0] - 120.0).abs() < 1e-3);
        // The next detection matches the prediction.
        let events = t.update(stamp(6), vec![obs(130.0, 50.0, 60.0, &HAPPY)]);
        assert!(events.is_empty());
        assert_eq!(t.states()[0].track, 1);
    }

    /// Raw argmax alternates between happy and neutral every frame (twice neutral in a row every
    /// 7th frame); happy is slightly more likely on average.
    fn noisy(frame: u64) -> [f32; 3] {
        if frame % 2 == 1 || frame.is_multiple_of(7) {
            [0.4, 0.55, 0.05]
        } else {
            [0.6, 0.35, 0.05]
        }
    }

    fn label_changes(config: TrackerConfig) -> usize {
        let mut t = tracker(TrackerConfig {
            min_hits: 1,
            ..config
        });
        (0..300u64)
            .flat_map(|frame| t.update(stamp(frame), vec![obs(100.0, 50.0, 60.0, &noisy(frame))]))
            .filter(|e| matches!(e.kind, EventKind::ExpressionChanged { .. }))
            .count()
    }

    #[test]
    fn alternating_noisy_probabilities_never_flicker_the_label() {
        assert_eq!(label_changes(TrackerConfig::default()), 0);
        // Hysteresis alone (no smoothing) holds the label too: one frame's lead is not enough.
        assert_eq!(
            label_changes(TrackerConfig {
                smoothing: 1.0,
                ..TrackerConfig::default()
            }),
            0
        );
        // Without smoothing and hysteresis the same input flips the label all the time.
        let raw = label_changes(TrackerConfig {
            smoothing: 1.0,
            switch_margin: 0.0,
            switch_frames: 1,
            ..TrackerConfig::default()
        });
        assert!(raw > 100, "{raw}");
    }

    #[test]
    fn a_lasting_change_switches_the_label_once_after_switch_frames() {
        let mut t = tracker(TrackerConfig {
            min_hits: 1,
            smoothing: 0.5,
            switch_margin: 0.1,
            switch_frames: 3,
            ..TrackerConfig::default()
        });
        let mut events = t.update(stamp(0), vec![obs(100.0, 50.0, 60.0, &HAPPY)]);
        let mut switched_at = None;
        for frame in 1..30u64 {
            let e = t.update(stamp(frame), vec![obs(100.0, 50.0, 60.0, &SAD)]);
            if switched_at.is_none() && !e.is_empty() {
                switched_at = Some(frame);
            }
            events.extend(e);
        }
        let changes: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ExpressionChanged { .. }))
            .collect();
        assert_eq!(changes.len(), 1, "{events:?}");
        assert_eq!(
            changes[0].kind,
            EventKind::ExpressionChanged {
                from: "happy".into()
            }
        );
        assert_eq!(changes[0].state.label, "sad");
        // EMA 0.5: sad leads by more than 0.1 from frame 2 on; three such frames -> frame 4.
        assert_eq!(switched_at, Some(4));
    }

    #[test]
    fn smoothing_is_an_exponential_moving_average() {
        let mut t = tracker(TrackerConfig {
            min_hits: 1,
            smoothing: 0.25,
            ..TrackerConfig::default()
        });
        t.update(stamp(0), vec![obs(100.0, 50.0, 60.0, &[1.0, 0.0, 0.0])]);
        t.update(stamp(1), vec![obs(100.0, 50.0, 60.0, &[0.0, 1.0, 0.0])]);
        let s = &t.states()[0].probabilities;
        assert_eq!(s.get("happy"), Some(0.75));
        assert_eq!(s.get("neutral"), Some(0.25));
    }

    #[test]
    fn finish_ends_every_reported_track() {
        let mut t = tracker(TrackerConfig {
            min_hits: 1,
            ..TrackerConfig::default()
        });
        t.update(
            stamp(0),
            vec![obs(0.0, 0.0, 50.0, &HAPPY), obs(200.0, 0.0, 50.0, &SAD)],
        );
        let events = t.finish(stamp(1));
        assert_eq!(left(&events), vec![1, 2]);
        assert!(t.states().is_empty());
    }

    #[test]
    fn config_is_validated_and_deserialised_with_defaults() {
        assert!(TrackerConfig {
            smoothing: 0.0,
            ..TrackerConfig::default()
        }
        .validate()
        .is_err());
        let c: TrackerConfig = serde_json::from_str(r#"{"min_hits": 1}"#).unwrap();
        assert_eq!(c.min_hits, 1);
        assert_eq!(c.max_misses, TrackerConfig::default().max_misses);
        assert!(serde_json::from_str::<TrackerConfig>(r#"{"min_hit": 1}"#).is_err());
    }
}
