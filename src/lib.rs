//! ferrite: offline facial-expression recognition for edge boards.
//!
//! Data flows one way through the stages, one module each:
//! [`detect`] (BlazeFace) -> [`align`] (crop, level, CLAHE, normalise) -> [`ensemble`] (the
//! part-based model). [`classify`] ties them together for still images; [`models`] owns the
//! manifests and the embedded model files; [`calibrate`] measures the crop framing of a training
//! set so that runtime crops match it; [`evaluate`] counts accuracy on a labelled folder tree;
//! [`bench`] times each stage.
//!
//! The live pipeline ([`pipeline`]) adds capture behind [`frame::FrameSource`], tracking and
//! smoothing ([`track`]) and outputs ([`sink`]): capture -> detect -> crop -> ensemble -> track
//! -> sinks.

pub mod align;
pub mod bench;
pub mod calibrate;
pub mod classify;
pub mod detect;
pub mod ensemble;
pub mod evaluate;
pub mod frame;
pub mod models;
pub mod pipeline;
pub mod sink;
pub mod track;
