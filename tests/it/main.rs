//! The integration tests, one binary: each module below was its own test binary, and every one
//! of them linked tract and the whole crate again (CI time, disk). `tests/alloc.rs` stays apart
//! because it installs a counting global allocator for its whole binary.

mod capture;
mod cli;
mod deploy;
mod detect;
#[cfg(feature = "display")]
mod display;
mod events_schema;
mod fuzz;
#[cfg(feature = "gpio")]
mod gpio_cdev;
#[cfg(feature = "mqtt")]
mod mqtt;
mod needs;
mod pipeline;
mod run_cli;
