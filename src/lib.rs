//! ferrite: offline facial-expression recognition for edge boards.
//!
//! Data flows one way through the stages, one module each:
//! [`detect`] (BlazeFace) -> [`align`] (crop, level, CLAHE, normalise) -> [`ensemble`] (the
//! part-based model). [`classify`] ties them together for still images; [`models`] owns the
//! manifests and the embedded model files (the input check every loaded graph passes is in
//! `graph`); [`calibrate`] measures the crop framing of a training
//! set so that runtime crops match it; [`evaluate`] counts accuracy on a labelled folder tree;
//! [`bench`] times each stage.
//!
//! The live pipeline ([`pipeline`]): capture ([`capture`], behind [`frame::FrameSource`]) ->
//! detect -> crop -> ensemble -> tracking and smoothing ([`track`]) -> outputs ([`sink`]: JSON
//! lines, MQTT; [`display`] draws on a screen, [`gpio`] switches lines; all of them read
//! [`output::OutputState`]), configured by [`config`] (board profile, file and flags, layered).
//! [`workers`] spreads still images over threads in order; [`check`] tests a configuration
//! against the machine.

pub mod align;
pub mod bench;
pub mod calibrate;
pub mod capture;
pub mod check;
pub mod classify;
pub mod config;
pub mod detect;
pub mod display;
pub mod ensemble;
pub mod evaluate;
pub mod frame;
pub mod gpio;
mod graph;
pub mod kernels;
pub mod limits;
pub mod models;
pub mod output;
pub mod pipeline;
pub mod profile;
pub mod sink;
pub mod track;
pub mod workers;
