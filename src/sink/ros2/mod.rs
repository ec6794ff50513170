//! ROS 2 output: faces and expressions as REP-155 (ROS4HRI) messages over DDS, through the pure-Rust
//! `ros2-client`/`rustdds` stack, behind the `ros2` cargo feature. No ROS installation is needed on
//! the board; any ROS 2 machine on the same network and domain sees the topics.
//!
//! This file holds what every build has: the `[ros2]` configuration, the message types (their
//! fields in the order of the `.msg` files, which is their CDR wire order), the mapping from the
//! model's labels to REP-155's expression names with a valence/arousal estimate, and the plan of
//! what one frame publishes. [`node`] owns the DDS participant and its publishers.
//!
//! Topics (hri_msgs at ros4hri/hri_msgs 52bdab7, REP-155 at ros-infrastructure/rep 05621f7c):
//! - `/humans/faces/tracked` (`hri_msgs/IdsList`): the ids of the faces tracked now, published
//!   when the set changes and every `tracked_interval_ms` otherwise; reliable, transient-local,
//!   depth 1 (a late subscriber gets the current list at once). Empty once the last face left,
//!   and at shutdown.
//! - `/humans/faces/<id>/expression` (`hri_msgs/Expression`): one message per processed frame
//!   per face, the tracker's smoothed label; reliable, transient-local, depth 10.
//! - `/humans/faces/<id>/roi` (`hri_msgs/NormalizedRegionOfInterest2D`): the face box in [0, 1]
//!   image coordinates, with the detector's score; same QoS.
//!
//! `<id>` is `f` and the track id in five digits (`f00003`): ROS names may not start with a
//! digit. Header stamps are the frame's capture time on the wall clock (the stream's start
//! plus the frame's offset in it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::track::{FrameUpdate, TrackId, TrackState};

#[cfg(feature = "ros2")]
pub mod node;
#[cfg(feature = "ros2")]
pub use node::Ros2Sink;

/// Largest DDS domain id whose RTPS ports (7400 + 250 * domain + ...) stay below 65536.
pub const MAX_DOMAIN_ID: u16 = 232;

/// `[ros2]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ros2Config {
    /// Publish at all (`--ros2`). Default false.
    pub enabled: bool,
    /// DDS domain id, 0 to 232. Default `ROS_DOMAIN_ID` from the environment, else 0.
    pub domain_id: Option<u16>,
    /// The node's name, as `ros2 node list` shows it. Default `ferrite`.
    pub node_name: String,
    /// The node's namespace (absolute). Default `/`. Topics stay absolute (`/humans/...`).
    pub namespace: String,
    /// `frame_id` of every header: the camera's TF frame. Default `camera`.
    pub frame_id: String,
    /// Republish `/humans/faces/tracked` at least this often (ms) when nothing changes.
    /// Default 1000.
    pub tracked_interval_ms: u64,
    /// Keep discovery and traffic on this machine (127.0.0.1): ROS 2's `ROS_LOCALHOST_ONLY=1`,
    /// which also turns it on. Default false.
    pub localhost_only: bool,
}

impl Default for Ros2Config {
    fn default() -> Self {
        Ros2Config {
            enabled: false,
            domain_id: None,
            node_name: "ferrite".into(),
            namespace: "/".into(),
            frame_id: "camera".into(),
            tracked_interval_ms: 1000,
            localhost_only: false,
        }
    }
}

impl Ros2Config {
    /// The configured domain, else `ROS_DOMAIN_ID`, else 0.
    pub fn domain(&self) -> Result<u16, String> {
        let domain = match self.domain_id {
            Some(d) => d,
            None => match std::env::var("ROS_DOMAIN_ID") {
                Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
                    format!("ROS_DOMAIN_ID must be a number 0-{MAX_DOMAIN_ID}, not {v:?}")
                })?,
                _ => 0,
            },
        };
        if domain > MAX_DOMAIN_ID {
            return Err(format!(
                "ros2 domain id must be 0-{MAX_DOMAIN_ID}, not {domain}"
            ));
        }
        Ok(domain)
    }

    /// `localhost_only`, or ROS 2's `ROS_LOCALHOST_ONLY=1`.
    pub fn loopback_only(&self) -> bool {
        self.localhost_only || std::env::var("ROS_LOCALHOST_ONLY").is_ok_and(|v| v.trim() == "1")
    }

    /// Checks the names and ranges; the node would reject them later with a vaguer message.
    pub fn validate(&self) -> Result<(), String> {
        self.domain()?;
        if !is_ros_token(&self.node_name) {
            return Err(format!(
                "ros2 node_name must be letters, digits and single underscores, not starting with \
                 a digit: {:?}",
                self.node_name
            ));
        }
        let ns = self.namespace.as_str();
        if !ns.starts_with('/') || (ns != "/" && !ns[1..].split('/').all(is_ros_token)) {
            return Err(format!(
                "ros2 namespace must be absolute, e.g. \"/\" or \"/robot1\", with names like \
                 node_name's: {ns:?}"
            ));
        }
        if self.frame_id.is_empty() {
            return Err("ros2 frame_id must not be empty".into());
        }
        if self.tracked_interval_ms == 0 {
            return Err("ros2 tracked_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// One ROS name token: `[A-Za-z_][A-Za-z0-9_]*` without `__`, as ros2-client and rcl accept.
fn is_ros_token(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.contains("__")
}

/// REP-155 face id of a track.
pub fn face_id(track: TrackId) -> String {
    format!("f{track:05}")
}

/// `builtin_interfaces/Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    /// Seconds since the Unix epoch; times before it (a clock set wrong) become 0.
    pub fn from_system(t: SystemTime) -> Time {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Time {
            sec: i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
            nanosec: d.subsec_nanos(),
        }
    }
}

/// `std_msgs/Header`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

/// `hri_msgs/IdsList`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdsList {
    pub header: Header,
    pub ids: Vec<String>,
}

/// `hri_msgs/Expression`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expression {
    pub header: Header,
    pub expression: String,
    pub valence: f32,
    pub arousal: f32,
    pub confidence: f32,
}

/// `hri_msgs/NormalizedRegionOfInterest2D`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormalizedRegionOfInterest2D {
    pub header: Header,
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub c: f32,
}

/// REP-155's name for one of the model's labels, and its place on Russell's circumplex
/// (valence, arousal in [-1, 1]). The coordinates are the mean pleasure and arousal ratings of
/// Russell & Mehrabian (1977), "Evidence for a three-factor theory of emotions", J. Research in
/// Personality 11:273-294, as they are commonly reproduced; neutral is the origin by definition.
/// Russell (1980, Fig. 4) places happy, sad, angry and afraid within 0.1 of them. Labels the
/// table does not know keep their own name and count as the origin.
pub fn rep155_expression(label: &str) -> (&str, f32, f32) {
    match label.to_ascii_lowercase().as_str() {
        "neutral" => ("neutral", 0.0, 0.0),
        "happy" | "happiness" => ("happy", 0.81, 0.61),
        "sad" | "sadness" => ("sad", -0.63, -0.27),
        "angry" | "anger" => ("angry", -0.51, 0.59),
        "fear" | "scared" | "afraid" => ("scared", -0.64, 0.60),
        "disgust" | "disgusted" => ("disgusted", -0.60, 0.35),
        "surprise" | "surprised" => ("surprised", 0.40, 0.67),
        _ => (label, 0.0, 0.0),
    }
}

/// Valence and arousal of a face: the circumplex coordinates of every label weighted by its
/// smoothed probability. An estimate from a 7-class classifier, not a measurement.
pub fn valence_arousal(state: &TrackState) -> (f32, f32) {
    let (mut v, mut a) = (0.0f32, 0.0f32);
    for (label, p) in &state.probabilities.0 {
        let (_, lv, la) = rep155_expression(label);
        v += p * lv;
        a += p * la;
    }
    (v.clamp(-1.0, 1.0), a.clamp(-1.0, 1.0))
}

/// What one face publishes for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceMessages {
    pub track: TrackId,
    pub expression: Expression,
    pub roi: NormalizedRegionOfInterest2D,
}

/// Everything one frame publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePlan {
    /// The tracked list, when it changed or is due again.
    pub tracked: Option<IdsList>,
    pub faces: Vec<FaceMessages>,
}

/// Turns frame updates into messages: wall-clock stamps, the tracked list's schedule.
#[derive(Debug)]
pub struct Planner {
    frame_id: String,
    tracked_interval: Duration,
    /// Wall-clock time of the stream's start, set at its first frame.
    epoch: Option<SystemTime>,
    /// The last list published and its stream time.
    last_tracked: Option<(Vec<TrackId>, Duration)>,
}

impl Planner {
    pub fn new(config: &Ros2Config) -> Planner {
        Planner {
            frame_id: config.frame_id.clone(),
            tracked_interval: Duration::from_millis(config.tracked_interval_ms),
            epoch: None,
            last_tracked: None,
        }
    }

    fn header(&mut self, at: Duration) -> Header {
        let epoch = *self
            .epoch
            .get_or_insert_with(|| SystemTime::now().checked_sub(at).unwrap_or(UNIX_EPOCH));
        Header {
            stamp: Time::from_system(epoch + at),
            frame_id: self.frame_id.clone(),
        }
    }

    /// The messages of one frame.
    pub fn plan(&mut self, update: &FrameUpdate) -> FramePlan {
        let at = update.stamp.timestamp;
        let header = self.header(at);
        let ids: Vec<TrackId> = update.tracks.iter().map(|t| t.track).collect();
        let due = match &self.last_tracked {
            None => true,
            Some((last, when)) => {
                *last != ids || at.saturating_sub(*when) >= self.tracked_interval || at < *when
            }
        };
        let tracked = due.then(|| {
            self.last_tracked = Some((ids.clone(), at));
            IdsList {
                header: header.clone(),
                ids: ids.iter().map(|&t| face_id(t)).collect(),
            }
        });
        let [w, h] = update.frame_size.map(|s| s.max(1) as f32);
        let faces = update
            .tracks
            .iter()
            .map(|state| {
                let (name, _, _) = rep155_expression(&state.label);
                let (valence, arousal) = valence_arousal(state);
                let [x, y, bw, bh] = state.bbox;
                FaceMessages {
                    track: state.track,
                    expression: Expression {
                        header: header.clone(),
                        expression: name.to_string(),
                        valence,
                        arousal,
                        confidence: state.confidence.clamp(0.0, 1.0),
                    },
                    roi: NormalizedRegionOfInterest2D {
                        header: header.clone(),
                        xmin: (x / w).clamp(0.0, 1.0),
                        ymin: (y / h).clamp(0.0, 1.0),
                        xmax: ((x + bw) / w).clamp(0.0, 1.0),
                        ymax: ((y + bh) / h).clamp(0.0, 1.0),
                        c: state.score.clamp(0.0, 1.0),
                    },
                }
            })
            .collect();
        FramePlan { tracked, faces }
    }
}

#[cfg(test)]
mod tests;
