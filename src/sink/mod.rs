//! Outputs of the live pipeline. Each sink receives every tracker event and, after every frame,
//! the state of the reported tracks; it decides itself what to forward and how often.
//!
//! The wire format is shared: [`EventLine`] and [`StateLine`] are the JSON documents that the
//! JSON-lines sink prints and the MQTT sink publishes (docs/events.md; docs/events.schema.json,
//! which tests/it/events_schema.rs checks the output against).

pub mod json;
pub mod local;
pub mod mqtt;
pub mod ros2;
pub mod web;

use image::GrayImage;
use serde::Serialize;

use crate::classify::Scores;
use crate::track::{Event, EventKind, FrameUpdate, TrackState};

/// Version of the JSON documents below; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("mqtt: {0}")]
    Mqtt(String),
    #[error("ros2: {0}")]
    Ros2(String),
    #[error("web: {0}")]
    Web(String),
    #[error("{0}")]
    Config(String),
}

/// One output. Called from the inference thread, in stream order; a slow sink slows inference,
/// so network sinks hand their work to a background thread.
pub trait Sink: Send {
    /// Short name for logs ("json", "mqtt").
    fn name(&self) -> &str;
    /// A track appeared, changed its expression or left. Outputs that only mirror the current
    /// state (a display, GPIO lines) ignore events.
    fn on_event(&mut self, _event: &Event) -> Result<(), SinkError> {
        Ok(())
    }
    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError>;
    /// The frame `on_frame` just described, for outputs that show the picture (the web view);
    /// the others ignore it. Copy what is needed and return: encoding belongs on another thread.
    fn on_picture(&mut self, _picture: &Picture<'_>) -> Result<(), SinkError> {
        Ok(())
    }
    /// Flushes and leaves the output in its stopped state. Called once, at shutdown.
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A processed frame: its pixels (what the detector saw), its tracks, and the run's vitals.
pub struct Picture<'a> {
    pub image: &'a GrayImage,
    pub update: &'a FrameUpdate,
    /// Every face box this frame was classified at, reported or not: the detections (also those
    /// not yet confirmed by the tracker), or the tracker's predictions between detections.
    pub faces: &'a [[f32; 4]],
    pub vitals: &'a Vitals,
}

/// The run so far, for health pages: counts, and each stage's mean time in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Vitals {
    pub frames: u64,
    pub dropped: u64,
    pub capture_errors: u64,
    pub sink_errors: u64,
    pub tracks: u64,
    /// Per detection pass.
    pub detect_ms: f64,
    /// Per face.
    pub crop_ms: f64,
    /// Per face.
    pub ensemble_ms: f64,
    pub track_ms: f64,
    pub sinks_ms: f64,
    /// Everything after the frame arrived.
    pub frame_ms: f64,
}

fn round(v: f32, decimals: i32) -> f32 {
    let f = 10f32.powi(decimals);
    (v * f).round() / f
}

fn rounded_box(b: &[f32; 4]) -> [f32; 4] {
    b.map(|v| round(v, 1))
}

fn rounded_scores(s: &Scores) -> Scores {
    Scores(s.0.iter().map(|(l, p)| (l.clone(), round(*p, 4))).collect())
}

pub(crate) fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One face in a [`StateLine`] (and the retained per-track MQTT state).
#[derive(Debug, Clone, Serialize)]
pub struct FaceState {
    pub track: u64,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub label: String,
    pub confidence: f32,
    pub probabilities: Scores,
    /// Each part network's probabilities at the last detection; only the web view's event
    /// stream carries them (docs/web.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartScores>,
}

/// Part name -> that part network's probabilities, as a JSON object in the model's part order.
#[derive(Debug, Clone, PartialEq)]
pub struct PartScores(pub Vec<(String, Scores)>);

impl Serialize for PartScores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::classify::ordered_map(&self.0, serializer)
    }
}

impl From<&TrackState> for FaceState {
    fn from(s: &TrackState) -> Self {
        FaceState {
            track: s.track,
            bbox: rounded_box(&s.bbox),
            label: s.label.clone(),
            confidence: round(s.confidence, 4),
            probabilities: rounded_scores(&s.probabilities),
            parts: None,
        }
    }
}

impl FaceState {
    /// With the part networks' votes (rounded like the probabilities).
    pub fn with_parts(s: &TrackState) -> Self {
        FaceState {
            parts: Some(PartScores(
                s.parts
                    .iter()
                    .map(|(part, scores)| (part.clone(), rounded_scores(scores)))
                    .collect(),
            )),
            ..FaceState::from(s)
        }
    }
}

/// `appeared`, `expression_changed` and `left`.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Stream time in seconds (the frame's capture time relative to the first frame).
    pub time: f64,
    pub frame: u64,
    #[serde(flatten)]
    pub face: FaceState,
    /// `expression_changed` only: the previous label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `left` only: seconds from the track's first detection to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

impl From<&Event> for EventLine {
    fn from(e: &Event) -> Self {
        EventLine {
            schema: SCHEMA_VERSION,
            kind: e.name(),
            time: seconds(e.stamp.timestamp),
            frame: e.stamp.frame,
            face: FaceState::from(&e.state),
            from: match &e.kind {
                EventKind::ExpressionChanged { from } => Some(from.clone()),
                _ => None,
            },
            duration: match e.kind {
                EventKind::Left => Some(seconds(
                    e.stamp.timestamp.saturating_sub(e.state.first_seen),
                )),
                _ => None,
            },
        }
    }
}

/// The optional per-frame line: every reported track after the frame.
#[derive(Debug, Clone, Serialize)]
pub struct StateLine {
    pub schema: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: f64,
    pub frame: u64,
    /// Whether the detector ran on this frame (otherwise boxes are the tracker's predictions).
    pub detected: bool,
    pub faces: Vec<FaceState>,
}

impl From<&FrameUpdate> for StateLine {
    fn from(u: &FrameUpdate) -> Self {
        StateLine {
            schema: SCHEMA_VERSION,
            kind: "state",
            time: seconds(u.stamp.timestamp),
            frame: u.stamp.frame,
            detected: u.detected,
            faces: u.tracks.iter().map(FaceState::from).collect(),
        }
    }
}
