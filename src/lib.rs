//! ferrite: offline facial-expression recognition for edge boards.
//!
//! Data flows one way through the stages, one module each:
//! [`detect`] (BlazeFace) -> [`align`] (crop, level, CLAHE, normalise) -> [`ensemble`] (the
//! part-based model). [`classify`] ties them together for still images; [`models`] owns the
//! manifests and the embedded model files; [`calibrate`] measures the crop framing of a training
//! set so that runtime crops match it; [`evaluate`] counts accuracy on a labelled folder tree;
//! [`bench`] times each stage. [`capture`] provides the frames of cameras, image folders and
//! recordings through [`frame::FrameSource`]. The outputs: [`display`] draws the result on a
//! screen, [`gpio`] switches lines, both configured by [`config`].

pub mod align;
pub mod bench;
pub mod calibrate;
pub mod capture;
pub mod classify;
pub mod config;
pub mod detect;
pub mod display;
pub mod ensemble;
pub mod evaluate;
pub mod frame;
pub mod gpio;
pub mod models;
