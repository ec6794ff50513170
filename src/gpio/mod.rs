//! What the board switches: GPIO lines driven from the primary face's expression (an LED per
//! label or group of labels), a face-present line and a pulse when the expression changes.
//! Lines are character-device lines (`/dev/gpiochipN`), found by chip label or path; every line
//! goes back to its configured safe state when [`GpioOutputs`] is dropped or
//! [`GpioOutputs::safe_state`] is called; `ferrite run` turns SIGTERM, SIGINT and SIGHUP into a
//! normal stop so that this happens (`sink::local::GpioSink::close`).

use serde::Deserialize;

#[cfg(feature = "gpio")]
mod lines;
#[cfg(feature = "gpio")]
pub use lines::{open_chip, output_pin, GpioOutputs};

/// Why GPIO lines cannot be used by a build without the `gpio` cargo feature.
#[cfg(not(feature = "gpio"))]
pub const NO_GPIO: &str = "this ferrite was built without GPIO support (cargo feature gpio)";

/// Label groups accepted in `labels`, so that one LED can stand for several classes.
pub const GROUPS: &[(&str, &[&str])] = &[
    ("negative", &["angry", "disgust", "fear", "sad", "contempt"]),
    ("positive", &["happy"]),
    ("any", &[]),
];

fn default_chip() -> String {
    "gpiochip0".to_string()
}

/// The `[gpio]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// A gpiochip label (`pinctrl-rp1` on a Pi 5) or path (`/dev/gpiochip0`).
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Default polarity of every line: `true` when a line is active (LED on) at low level.
    #[serde(default)]
    pub active_low: bool,
    /// Below this confidence the expression counts as unknown: no label line is active.
    #[serde(default)]
    pub min_confidence: f32,
    /// Active while at least one face is seen.
    #[serde(default)]
    pub face_present: Option<LineConfig>,
    /// Pulsed whenever the primary face's label changes (a face appearing included).
    #[serde(default)]
    pub change: Option<LineConfig>,
    /// One entry per line driven by labels.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub line: u32,
    /// Labels (`happy`) or groups (`negative`, `positive`, `any`) that make the line active.
    pub labels: Vec<String>,
    #[serde(default)]
    pub active_low: Option<bool>,
    /// Pulse for this long when one of the labels appears, instead of staying active.
    #[serde(default)]
    pub pulse_ms: Option<u64>,
    /// The state on start and on exit: active (`true`) or inactive (`false`, the default).
    #[serde(default)]
    pub safe_active: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub line: u32,
    #[serde(default)]
    pub active_low: Option<bool>,
    /// For `face_present`: pulse when a face appears instead of staying active. For `change`:
    /// the pulse length (200 ms when unset).
    #[serde(default)]
    pub pulse_ms: Option<u64>,
    #[serde(default)]
    pub safe_active: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("gpiochip {0:?} not found (present: {1})")]
    ChipNotFound(String, String),
    #[error("gpiochip {chip}: {reason}")]
    Chip { chip: String, reason: String },
    #[error("GPIO line {line}: {reason}")]
    Line { line: u32, reason: String },
    #[error("GPIO configuration: {0}")]
    Config(String),
}
