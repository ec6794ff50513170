//! The web view: an HTTP server inside the binary (`ferrite run --web [ADDR]`, `[web]`) for
//! pointing a headless board's camera from a laptop and for kiosk screens. Behind the `web`
//! cargo feature; docs/web.md is the user's guide.
//!
//! - `/` the page (embedded; no JavaScript toolchain): the annotated stream, each face's label,
//!   its part networks' votes and a timeline, the frame rate and stage times; `/?kiosk=1` for a
//!   full-screen panel.
//! - `/stream.mjpg` (multipart MJPEG) and `/snapshot.jpg`: the frame the detector saw (grey),
//!   with boxes, track ids and labels drawn on it, faces pixelated with `blur_faces`.
//! - `/events`: Server-Sent Events carrying the event log's JSON lines (docs/events.md), state
//!   lines at the stream's rate, each face with its parts' votes.
//! - `/status`: JSON for fleet health checks.
//!
//! The pipeline is never made to wait: [`WebSink::on_picture`] copies the newest frame into a
//! one-frame slot only while a viewer is connected, at most `stream_fps` times a second, and an
//! encoder thread draws and encodes it; each client has its own thread, and a socket write that
//! blocks for `write_timeout_ms` drops that client. With no client the sink only keeps the
//! status numbers current.

#[cfg(feature = "web")]
mod hub;
#[cfg(feature = "web")]
mod render;
#[cfg(feature = "web")]
mod server;
#[cfg(all(test, feature = "web"))]
mod tests;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[cfg(feature = "web")]
pub use hub::WebSink;

/// The environment variable that sets (and overrides) `[web] token`, to keep it out of config
/// files and the process list.
pub const TOKEN_ENV: &str = "FERRITE_WEB_TOKEN";

/// Address of `--web` given without a value: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `[web]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    pub enabled: bool,
    /// Address and port to listen on. The default serves this machine only; `0.0.0.0:8080`
    /// serves the network (set `token` then).
    pub listen: String,
    /// Required on every request when set: `Authorization: Bearer <token>` or `?token=<token>`.
    pub token: Option<String>,
    /// Most frames per second encoded for the stream (and state lines sent on `/events`).
    pub stream_fps: f32,
    /// JPEG quality, 1-100.
    pub quality: u8,
    /// Pixelate the faces in the stream and snapshots; boxes and labels are still drawn.
    pub blur_faces: bool,
    /// Most streaming clients (`/stream.mjpg` and `/events` together); more get 503.
    pub max_clients: usize,
    /// A client whose socket accepts nothing for this long is dropped.
    pub write_timeout_ms: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: false,
            listen: DEFAULT_LISTEN.to_string(),
            token: None,
            stream_fps: 5.0,
            quality: 70,
            blur_faces: false,
            max_clients: 8,
            write_timeout_ms: 5000,
        }
    }
}

impl WebConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.address()?;
        if !(self.stream_fps > 0.0 && self.stream_fps <= 60.0) {
            return Err(format!(
                "stream_fps must be in (0, 60], not {}",
                self.stream_fps
            ));
        }
        if !(1..=100).contains(&self.quality) {
            return Err(format!("quality must be 1-100, not {}", self.quality));
        }
        if !(1..=64).contains(&self.max_clients) {
            return Err(format!(
                "max_clients must be 1-64, not {}",
                self.max_clients
            ));
        }
        if !(100..=600_000).contains(&self.write_timeout_ms) {
            return Err(format!(
                "write_timeout_ms must be 100-600000, not {}",
                self.write_timeout_ms
            ));
        }
        if let Some(token) = &self.token {
            let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            if token.is_empty() || !token.bytes().all(unreserved) {
                return Err(
                    "token must be letters, digits and - . _ ~ only (it travels in \
                     URLs unescaped), and not empty"
                        .into(),
                );
            }
        }
        Ok(())
    }

    pub fn address(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "listen must be an IP address and port such as {DEFAULT_LISTEN} or \
                 0.0.0.0:8080, not {:?}",
                self.listen
            )
        })
    }
}

/// What `/status` says about the run's set-up (the rest it measures).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub model: String,
    pub detector: String,
    pub camera: String,
    /// The other outputs of this run.
    pub sinks: Vec<String>,
}
