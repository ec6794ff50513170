//! Frame sources: V4L2 cameras, image files and directories, and Y4M recordings, all behind
//! [`FrameSource`]. [`open_source`] picks one from a device or path.
//!
//! - [`decode`] turns camera buffers (GREY, YUYV, UYVY, MJPEG) into gray images.
//! - [`negotiate`] chooses a camera mode and paces reconnects (pure, unit-tested).
//! - [`v4l2`] has [`V4l2Source`] and [`list_devices`].
//! - [`files`] has [`ImageFilesSource`] and the one directory walker every command uses.
//! - [`still`] decodes still image files (strictly, turned by their EXIF orientation).
//! - [`y4m`] has [`Y4mSource`] and [`Y4mWriter`].

pub mod decode;
pub mod devices;
#[cfg(test)]
pub(crate) mod exif_fixture;
pub mod files;
pub mod negotiate;
pub mod still;
#[cfg(feature = "v4l2")]
pub mod v4l2;
pub mod y4m;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[cfg(not(feature = "v4l2"))]
pub use devices::list_devices;
pub use devices::DeviceInfo;
pub use files::ImageFilesSource;
pub use negotiate::{Backoff, Interval, Mode, PixelFormat, Size};
#[cfg(feature = "v4l2")]
pub use v4l2::{list_devices, V4l2Source};

/// Why a camera cannot be opened by a build without the `v4l2` cargo feature.
#[cfg(not(feature = "v4l2"))]
pub const NO_V4L2: &str =
    "this ferrite was built without V4L2 support (cargo feature v4l2); files and .y4m recordings work";
pub use y4m::{Y4mChroma, Y4mSource, Y4mWriter};

use crate::frame::{CaptureError, FrameSource};

/// Where frames come from and how; deserialisable so that it can be a config file's `[camera]`
/// section. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureOptions {
    /// A V4L2 device (`/dev/video0`), a `.y4m` recording, an image file or a directory of images.
    pub device: String,
    /// Camera frame size to ask for; the nearest offered size is used. Files keep their own size.
    pub size: Size,
    /// Camera: frame rate to ask for (the slowest offered rate at least this; `None`: the fastest).
    /// Files: pace frames at this rate (`None`: as fast as they are read).
    pub fps: Option<f64>,
    /// Camera pixel formats in order of preference; formats left out are never used.
    pub formats: Vec<PixelFormat>,
    /// Files: start again from the first frame at the end instead of ending the stream.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// Camera: a frame that takes longer than this counts as the camera being gone (reopened).
    pub timeout_ms: u64,
    /// Camera: first wait before reopening a lost camera; doubles per failed attempt...
    pub reconnect_initial_ms: u64,
    /// ...up to this.
    pub reconnect_max_ms: u64,
    /// Camera: MMAP buffers in the driver's queue.
    pub buffers: u32,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        let backoff = Backoff::default();
        CaptureOptions {
            device: "/dev/video0".into(),
            size: Size::new(640, 480),
            fps: None,
            formats: PixelFormat::DEFAULT_PREFERENCE.to_vec(),
            looping: false,
            timeout_ms: 2000,
            reconnect_initial_ms: backoff.initial.as_millis() as u64,
            reconnect_max_ms: backoff.max.as_millis() as u64,
            buffers: 4,
        }
    }
}

impl CaptureOptions {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.reconnect_initial_ms.max(1)),
            max: Duration::from_millis(self.reconnect_max_ms.max(self.reconnect_initial_ms)),
        }
    }

    /// Opens `self.device` (see [`open_source`]).
    pub fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        open_source(&self.device, self)
    }
}

/// Opens the frame source that `spec` names: a V4L2 device (`/dev/video*` or any character
/// device), a `.y4m` file, a directory of images or one image file. `opts.device` is ignored.
pub fn open_source(
    spec: &str,
    opts: &CaptureOptions,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    let path = Path::new(spec);
    if is_v4l2_path(path) {
        refuse_other_devices(path)?;
        #[cfg(feature = "v4l2")]
        return Ok(Box::new(V4l2Source::open(path, opts)?));
        #[cfg(not(feature = "v4l2"))]
        return Err(CaptureError::Fatal(format!(
            "{}: {NO_V4L2}",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| CaptureError::Fatal(format!("{}: {e}", path.display())))?;
    let is_y4m = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("y4m"));
    if meta.is_file() && is_y4m {
        Ok(Box::new(Y4mSource::open(path, opts)?))
    } else {
        Ok(Box::new(ImageFilesSource::open(path, opts)?))
    }
}

/// Whether `open_source` treats `path` as a V4L2 camera (a character device, or a path under
/// /dev that does not exist yet) rather than a file source (recordings in /dev/shm are files).
pub fn is_v4l2_path(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(meta) => meta.file_type().is_char_device(),
        Err(_) => path.starts_with("/dev"),
    }
}

/// Every V4L2 node is a character device of this major number (Linux's devices.txt).
const V4L2_MAJOR: u32 = 81;

/// A character device that is not a V4L2 node (`/dev/urandom`, a serial port) can never become
/// a camera: refuse it at start-up instead of retrying it as if a camera were busy.
fn refuse_other_devices(path: &Path) -> Result<(), CaptureError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() && libc::major(meta.rdev()) != V4L2_MAJOR => {
            Err(CaptureError::Fatal(format!(
                "{}: not a camera (a character device of major number {}; V4L2 devices are {V4L2_MAJOR})",
                path.display(),
                libc::major(meta.rdev())
            )))
        }
        _ => Ok(()),
    }
}

/// Sleeps so that frame `n` is returned no earlier than `n / fps` after the first; without a rate,
/// never sleeps. Frames that are late are not made later (no catch-up bursts either: a late frame
/// moves the schedule).
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(fps: Option<f64>) -> Pacer {
        let period = fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| Duration::from_secs_f64(1.0 / f));
        Pacer { period, next: None }
    }

    pub(crate) fn wait(&mut self) {
        let Some(period) = self.period else { return };
        let now = Instant::now();
        match self.next {
            Some(due) if due > now => {
                std::thread::sleep(due - now);
                self.next = Some(due + period);
            }
            _ => self.next = Some(now + period),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "v4l2"))]
    #[test]
    fn without_v4l2_a_camera_is_a_clear_fatal_error() {
        let err = open_source("/dev/video0", &CaptureOptions::default())
            .err()
            .expect("no camera without v4l2");
        assert!(matches!(err, CaptureError::Fatal(_)), "{err}");
        assert!(err.to_string().contains("cargo feature v4l2"), "{err}");
    }

    #[test]
    fn options_deserialise_with_defaults_and_reject_unknown_keys() {
        let o: CaptureOptions =
            serde_json::from_str(r#"{"device": "clip.y4m", "size": "320x240", "loop": true}"#)
                .unwrap();
        assert_eq!(o.device, "clip.y4m");
        assert_eq!(o.size, Size::new(320, 240));
        assert!(o.looping);
        assert_eq!(o.formats, PixelFormat::DEFAULT_PREFERENCE);
        assert_eq!(o.timeout_ms, 2000);
        let o: CaptureOptions =
            serde_json::from_str(r#"{"formats": ["mjpeg", "yuyv"], "fps": 15}"#).unwrap();
        assert_eq!(o.formats, [PixelFormat::Mjpeg, PixelFormat::Yuyv]);
        assert_eq!(o.fps, Some(15.0));
        assert!(serde_json::from_str::<CaptureOptions>(r#"{"sise": "1x1"}"#).is_err());
        assert!(serde_json::from_str::<CaptureOptions>(r#"{"size": "big"}"#).is_err());
    }

    #[test]
    fn missing_paths_are_fatal() {
        let err = open_source("/nonexistent/clip.y4m", &CaptureOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::Fatal(_)));
    }

    #[test]
    fn pacer_spaces_frames() {
        let mut p = Pacer::new(Some(100.0));
        let t = Instant::now();
        for _ in 0..4 {
            p.wait();
        }
        assert!(t.elapsed() >= Duration::from_millis(29));
        let mut p = Pacer::new(None);
        let t = Instant::now();
        for _ in 0..100 {
            p.wait();
        }
        assert!(t.elapsed() < Duration::from_millis(20));
    }
}
