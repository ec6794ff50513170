//! V4L2 cameras: [`V4l2Source`] streams MMAP buffers and survives the camera going away;
//! [`list_devices`] describes what each `/dev/video*` node offers.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde::Serialize;
use v4l::buffer::{Flags as BufferFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::format::{Format, FourCC};
use v4l::fraction::Fraction;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::Device;

use super::decode;
use super::devices::{video_nodes, DeviceInfo, FormatInfo, SizeInfo};
use super::negotiate::{
    fourcc_str, negotiate, Backoff, FormatCaps, Interval, IntervalRange, Mode, PixelFormat, Size,
    SizeCaps, SizeRange,
};
use super::CaptureOptions;
use crate::frame::{CaptureError, Frame, FrameSource};

/// The v4l crate panics on a few driver answers it does not expect (non-UTF-8 names, unknown
/// colorspace codes, a failed STREAMOFF on drop); a camera quirk must not take the process down.
fn guard<T>(what: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(io::Error::other(format!(
            "{what}: unexpected driver answer"
        )))
    })
}

fn to_fourcc(f: FourCC) -> [u8; 4] {
    f.repr
}

fn interval_of(f: Fraction) -> Interval {
    Interval::new(f.numerator, f.denominator)
}

fn intervals_at(dev: &Device, fourcc: FourCC, size: Size) -> Vec<IntervalRange> {
    // Drivers without frame-interval enumeration answer EINVAL: no rates listed, not an error.
    let Ok(list) = guard("VIDIOC_ENUM_FRAMEINTERVALS", || {
        dev.enum_frameintervals(fourcc, size.width, size.height)
    }) else {
        return Vec::new();
    };
    list.into_iter()
        .map(|i| match i.interval {
            FrameIntervalEnum::Discrete(f) => IntervalRange::Discrete(interval_of(f)),
            FrameIntervalEnum::Stepwise(s) => IntervalRange::Stepwise {
                min: interval_of(s.min),
                max: interval_of(s.max),
            },
        })
        .collect()
}

/// What the device offers, in the shape [`negotiate`] takes. Stepwise size ranges get the frame
/// rates at their size nearest `want` (rates depend on the size).
fn enumerate(dev: &Device, want: Size) -> io::Result<Vec<(FormatCaps, String)>> {
    let formats = guard("VIDIOC_ENUM_FMT", || dev.enum_formats())?;
    let mut out = Vec::with_capacity(formats.len());
    for f in formats {
        let sizes =
            guard("VIDIOC_ENUM_FRAMESIZES", || dev.enum_framesizes(f.fourcc)).unwrap_or_default();
        let sizes = sizes
            .into_iter()
            .map(|s| {
                let size = match s.size {
                    FrameSizeEnum::Discrete(d) => SizeRange::Discrete(Size::new(d.width, d.height)),
                    FrameSizeEnum::Stepwise(s) => SizeRange::Stepwise {
                        min: Size::new(s.min_width, s.min_height),
                        max: Size::new(s.max_width, s.max_height),
                        step: Size::new(s.step_width, s.step_height),
                    },
                };
                let intervals = intervals_at(dev, f.fourcc, size.nearest(want));
                SizeCaps { size, intervals }
            })
            .collect();
        out.push((
            FormatCaps {
                fourcc: to_fourcc(f.fourcc),
                sizes,
            },
            f.description,
        ));
    }
    Ok(out)
}

/// The format the driver actually set (it may differ from the one asked for).
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    format: PixelFormat,
    fourcc: [u8; 4],
    size: Size,
    stride: usize,
    fps: Option<f64>,
}

struct OpenCamera {
    // Declared first so that it is dropped first: it stops streaming and unmaps the buffers
    // before the device is closed.
    stream: MmapStream<'static>,
    _device: Device,
    format: Negotiated,
}

/// Drops a camera, containing the panic the v4l crate raises when STREAMOFF fails with anything
/// but ENODEV (e.g. EIO from a dying USB link); unwinding still unmaps the buffers.
fn close(camera: OpenCamera) {
    if catch_unwind(AssertUnwindSafe(move || drop(camera))).is_err() {
        warn!("camera: stopping the stream failed; buffers released anyway");
    }
}

fn io_error(path: &Path, what: &str, e: &io::Error) -> String {
    format!("{}: {what}: {e}", path.display())
}

/// Opens, negotiates and starts streaming. Errors that a retry may fix are `Unavailable`; a path
/// that is not a camera, or a camera without a usable format, is `Fatal`.
fn open_camera(path: &Path, opts: &CaptureOptions) -> Result<OpenCamera, CaptureError> {
    let device = Device::with_path(path).map_err(|e| {
        let msg = io_error(path, "open", &e);
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => CaptureError::Fatal(msg),
            _ => CaptureError::Unavailable(msg),
        }
    })?;
    let unavailable =
        |what: &str, e: io::Error| CaptureError::Unavailable(io_error(path, what, &e));
    let caps = guard("VIDIOC_QUERYCAP", || device.query_caps()).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTTY) {
            CaptureError::Fatal(format!("{}: not a V4L2 device", path.display()))
        } else {
            unavailable("VIDIOC_QUERYCAP", e)
        }
    })?;
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
        return Err(CaptureError::Fatal(format!(
            "{}: {} ({}) is not a video capture node (UVC cameras also create metadata nodes; \
             `ferrite devices` lists the capture ones)",
            path.display(),
            caps.card,
            caps.driver
        )));
    }
    if !caps.capabilities.contains(CapFlags::STREAMING) {
        return Err(CaptureError::Fatal(format!(
            "{}: {} does not support streaming I/O",
            path.display(),
            caps.card
        )));
    }
    let offered = enumerate(&device, opts.size).map_err(|e| unavailable("VIDIOC_ENUM_FMT", e))?;
    let caps_only: Vec<FormatCaps> = offered.iter().map(|(c, _)| c.clone()).collect();
    let mode = negotiate(&caps_only, opts.size, opts.fps, &opts.formats).ok_or_else(|| {
        let offered: Vec<String> = caps_only.iter().map(|c| fourcc_str(c.fourcc)).collect();
        let wanted: Vec<String> = opts.formats.iter().map(|f| f.to_string()).collect();
        CaptureError::Fatal(format!(
            "{}: offers {} but none of the formats allowed ({}); a Pi Camera Module on a \
             libcamera system delivers raw Bayer here and needs libcamera",
            path.display(),
            if offered.is_empty() {
                "no formats".to_string()
            } else {
                offered.join(", ")
            },
            wanted.join(", ")
        ))
    })?;
    debug!("{}: negotiated {mode}", path.display());
    let format = apply_mode(&device, path, &mode, opts)?;
    let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, opts.buffers.max(2))
        .map_err(|e| unavailable("VIDIOC_REQBUFS/mmap", e))?;
    stream.set_timeout(Duration::from_millis(
        opts.timeout_ms.clamp(1, i32::MAX as u64),
    ));
    info!(
        "{}: {} ({}) streaming {} {}{}",
        path.display(),
        caps.card,
        caps.driver,
        fourcc_str(format.fourcc),
        format.size,
        format.fps.map(|f| format!(" @{f:.2}")).unwrap_or_default()
    );
    Ok(OpenCamera {
        stream,
        _device: device,
        format,
    })
}

/// Sets format and frame rate; returns what the driver actually chose, which it is free to change.
fn apply_mode(
    device: &Device,
    path: &Path,
    mode: &Mode,
    opts: &CaptureOptions,
) -> Result<Negotiated, CaptureError> {
    let request = Format::new(mode.size.width, mode.size.height, FourCC::new(&mode.fourcc));
    let actual = guard("VIDIOC_S_FMT", || device.set_format(&request))
        .map_err(|e| CaptureError::Unavailable(io_error(path, "VIDIOC_S_FMT", &e)))?;
    let fourcc = to_fourcc(actual.fourcc);
    let format = PixelFormat::from_fourcc(fourcc)
        .filter(|f| opts.formats.contains(f))
        .ok_or_else(|| {
            CaptureError::Fatal(format!(
                "{}: asked for {} but the driver set {}",
                path.display(),
                mode,
                fourcc_str(fourcc)
            ))
        })?;
    let size = Size::new(actual.width, actual.height);
    if fourcc != mode.fourcc || size != mode.size {
        warn!(
            "{}: asked for {} {}, the driver set {} {size}",
            path.display(),
            fourcc_str(mode.fourcc),
            mode.size,
            fourcc_str(fourcc)
        );
    }
    let mut fps = None;
    if let Some(i) = mode.interval {
        let params = Parameters::new(Fraction::new(i.numerator, i.denominator));
        match guard("VIDIOC_S_PARM", || device.set_params(&params)) {
            Ok(p) => fps = Some(interval_of(p.interval).fps()),
            // Some drivers fix the rate; streaming at their rate is fine.
            Err(e) => warn!("{}: cannot set the frame rate: {e}", path.display()),
        }
    }
    Ok(Negotiated {
        format,
        fourcc,
        size,
        stride: actual.stride as usize,
        fps,
    })
}

/// Counters for a camera source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaptureStats {
    /// Frames returned.
    pub frames: u64,
    /// Frames dropped because they could not be decoded (or the driver flagged them bad).
    pub corrupt: u64,
    /// Frames the driver dropped (gaps in its sequence numbers).
    pub driver_drops: u64,
    /// Times the camera was lost.
    pub lost: u64,
}

/// A V4L2 camera streamed through MMAP buffers.
///
/// When the camera goes away (unplugged, EIO, no frame within `timeout_ms`), `next_frame` returns
/// [`CaptureError::Unavailable`] and later calls try to reopen it, each call sleeping until its
/// attempt is due (0.5 s, 1 s, 2 s ... 8 s by default), so a caller that simply calls again on
/// transient errors neither spins nor gives up. A frame that does not decode is
/// [`CaptureError::CorruptFrame`]: counted, logged, and the stream goes on.
pub struct V4l2Source {
    path: PathBuf,
    opts: CaptureOptions,
    backoff: Backoff,
    camera: Option<OpenCamera>,
    /// The mode last streamed, for `describe` while the camera is away.
    last_format: Option<Negotiated>,
    /// Failed reopen attempts since the camera was lost.
    attempt: u32,
    retry_at: Option<Instant>,
    start: Option<Instant>,
    next_index: u64,
    last_sequence: Option<u32>,
    stats: CaptureStats,
}

impl V4l2Source {
    /// Opens the camera. A missing node, a node that is not a camera or a camera without a usable
    /// format is an error; a camera that is busy or failing is returned anyway, disconnected, and
    /// retried by `next_frame` (a service may start before its camera is ready).
    pub fn open(path: &Path, opts: &CaptureOptions) -> Result<V4l2Source, CaptureError> {
        let mut source = V4l2Source::closed(path, opts);
        match open_camera(path, opts) {
            Ok(camera) => {
                source.last_format = Some(camera.format);
                source.camera = Some(camera);
            }
            Err(CaptureError::Unavailable(msg)) => {
                let delay = source.backoff.delay(0);
                warn!("{msg}; retrying in {}", secs(delay));
                source.retry_at = Some(Instant::now() + delay);
            }
            Err(e) => return Err(e),
        }
        Ok(source)
    }

    fn closed(path: &Path, opts: &CaptureOptions) -> V4l2Source {
        V4l2Source {
            path: path.to_path_buf(),
            opts: opts.clone(),
            backoff: opts.backoff(),
            camera: None,
            last_format: None,
            attempt: 0,
            retry_at: None,
            start: None,
            next_index: 0,
            last_sequence: None,
            stats: CaptureStats::default(),
        }
    }

    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// Whether the camera is open right now.
    pub fn is_connected(&self) -> bool {
        self.camera.is_some()
    }

    fn lose(&mut self, reason: String) -> CaptureError {
        if let Some(camera) = self.camera.take() {
            close(camera);
        }
        self.stats.lost += 1;
        self.attempt = 0;
        self.last_sequence = None;
        let delay = self.backoff.delay(0);
        self.retry_at = Some(Instant::now() + delay);
        warn!(
            "{}: camera lost ({reason}); reopening in {}",
            self.path.display(),
            secs(delay)
        );
        CaptureError::Unavailable(reason)
    }

    /// One reopen attempt, after sleeping until it is due.
    fn reopen(&mut self) -> Result<(), CaptureError> {
        if let Some(due) = self.retry_at {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        self.attempt += 1;
        // Every failure while reopening is worth retrying: the node vanishes while unplugged
        // (ENOENT) and may come back as another camera that needs negotiating again.
        match open_camera(&self.path, &self.opts) {
            Ok(camera) => {
                info!(
                    "{}: camera back after {} attempt{}",
                    self.path.display(),
                    self.attempt,
                    if self.attempt == 1 { "" } else { "s" }
                );
                self.last_format = Some(camera.format);
                self.camera = Some(camera);
                self.attempt = 0;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                let delay = self.backoff.delay(self.attempt);
                self.retry_at = Some(Instant::now() + delay);
                warn!(
                    "{}: reopen attempt {} failed ({e}); next in {}",
                    self.path.display(),
                    self.attempt,
                    secs(delay)
                );
                Err(CaptureError::Unavailable(e.to_string()))
            }
        }
    }

    fn corrupt(&mut self, index: u64, err: CaptureError) -> CaptureError {
        self.stats.corrupt += 1;
        let n = self.stats.corrupt;
        // The first few in full, then a reminder every 100: a flaky cable must not flood the log.
        if n <= 3 || n.is_multiple_of(100) {
            warn!(
                "{}: frame {index} dropped ({err}); {n} corrupt so far",
                self.path.display()
            );
        } else {
            debug!("{}: frame {index} dropped ({err})", self.path.display());
        }
        err
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn decode_buffer(format: &Negotiated, buf: &[u8]) -> Result<image::GrayImage, CaptureError> {
    let Size { width, height } = format.size;
    let image = match format.format {
        PixelFormat::Grey => decode::grey_to_gray(buf, width, height, format.stride)?,
        PixelFormat::Yuyv => decode::yuyv_to_gray(buf, width, height, format.stride)?,
        PixelFormat::Uyvy => decode::uyvy_to_gray(buf, width, height, format.stride)?,
        PixelFormat::Mjpeg => decode::mjpeg_to_gray(buf)?,
    };
    if image.dimensions() != (width, height) {
        return Err(CaptureError::CorruptFrame(format!(
            "frame is {}x{}, the stream is {width}x{height}",
            image.width(),
            image.height()
        )));
    }
    Ok(image)
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.camera.is_none() {
            self.reopen()?;
        }
        let Some(camera) = self.camera.as_mut() else {
            return Err(CaptureError::Unavailable("camera not open".into()));
        };
        let decoded = match camera.stream.next() {
            Ok((buf, meta)) => {
                let used = (meta.bytesused as usize).min(buf.len());
                let sequence = meta.sequence;
                let result = if meta.flags.contains(BufferFlags::ERROR) {
                    Err(CaptureError::CorruptFrame(
                        "the driver flagged the buffer as bad".into(),
                    ))
                } else if used == 0 {
                    Err(CaptureError::CorruptFrame("empty buffer".into()))
                } else {
                    decode_buffer(&camera.format, &buf[..used])
                };
                Ok((sequence, result))
            }
            Err(e) => Err(e),
        };
        let (sequence, result) = match decoded {
            Ok(v) => v,
            Err(e) => {
                let reason = if e.kind() == io::ErrorKind::TimedOut {
                    format!("no frame within {} ms", self.opts.timeout_ms)
                } else {
                    e.to_string()
                };
                return Err(self.lose(reason));
            }
        };
        // Gaps in the driver's sequence are frames it dropped (we were too slow).
        let gap = self
            .last_sequence
            .and_then(|last| sequence.checked_sub(last))
            .map_or(0, |d| u64::from(d.saturating_sub(1)));
        self.stats.driver_drops += gap;
        self.next_index += gap;
        self.last_sequence = Some(sequence);
        let index = self.next_index;
        self.next_index += 1;
        let start = *self.start.get_or_insert_with(Instant::now);
        match result {
            Ok(image) => {
                self.stats.frames += 1;
                Ok(Some(Frame {
                    index,
                    timestamp: start.elapsed(),
                    image,
                }))
            }
            Err(CaptureError::Fatal(msg)) => {
                // A buffer layout we cannot read will not get better by itself.
                Err(CaptureError::Fatal(format!(
                    "{}: {msg}",
                    self.path.display()
                )))
            }
            Err(e) => Err(self.corrupt(index, e)),
        }
    }

    fn describe(&self) -> String {
        match self.last_format {
            Some(f) => format!(
                "{} {} {}{}{}",
                self.path.display(),
                f.size,
                fourcc_str(f.fourcc),
                f.fps.map(|fps| format!(" @{fps:.0}")).unwrap_or_default(),
                if self.camera.is_some() {
                    ""
                } else {
                    " (disconnected)"
                }
            ),
            None => format!("{} (not opened yet)", self.path.display()),
        }
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        if let Some(camera) = self.camera.take() {
            close(camera);
        }
    }
}

fn round_fps(f: f64) -> f64 {
    (f * 100.0).round() / 100.0
}

/// Describes every `/dev/video*` node: driver, card, whether it captures, and for capture nodes
/// each format with its sizes and frame rates. Nodes that cannot be opened are listed with the
/// error. Empty when there are none.
pub fn list_devices() -> Vec<DeviceInfo> {
    video_nodes().iter().map(|p| describe_node(p)).collect()
}

fn describe_node(path: &Path) -> DeviceInfo {
    let mut info = DeviceInfo {
        path: path.display().to_string(),
        driver: String::new(),
        card: String::new(),
        bus: String::new(),
        capture: false,
        formats: Vec::new(),
        error: None,
    };
    let device = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) => {
            info.error = Some(e.to_string());
            return info;
        }
    };
    match guard("VIDIOC_QUERYCAP", || device.query_caps()) {
        Ok(caps) => {
            info.driver = caps.driver;
            info.card = caps.card;
            info.bus = caps.bus;
            info.capture = caps.capabilities.contains(CapFlags::VIDEO_CAPTURE);
        }
        Err(e) => {
            info.error = Some(e.to_string());
            return info;
        }
    }
    if !info.capture {
        return info;
    }
    let offered = match enumerate(&device, Size::new(u32::MAX, u32::MAX)) {
        Ok(o) => o,
        Err(e) => {
            info.error = Some(e.to_string());
            return info;
        }
    };
    for (caps, description) in offered {
        let sizes = caps
            .sizes
            .iter()
            .map(|s| {
                let size = match s.size {
                    SizeRange::Discrete(d) => d.to_string(),
                    SizeRange::Stepwise { min, max, step } => format!("{min}-{max} step {step}"),
                };
                let mut fps: Vec<f64> = s
                    .intervals
                    .iter()
                    .flat_map(|i| match *i {
                        IntervalRange::Discrete(i) => vec![round_fps(i.fps())],
                        IntervalRange::Stepwise { min, max } => {
                            vec![round_fps(min.fps()), round_fps(max.fps())]
                        }
                    })
                    .collect();
                fps.sort_by(|a, b| b.total_cmp(a));
                fps.dedup();
                SizeInfo { size, fps }
            })
            .collect();
        info.formats.push(FormatInfo {
            fourcc: fourcc_str(caps.fourcc),
            description,
            supported: PixelFormat::from_fourcc(caps.fourcc).is_some(),
            sizes,
        });
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_camera_is_retried_with_backoff_and_never_fatal() {
        let opts = CaptureOptions {
            reconnect_initial_ms: 10,
            reconnect_max_ms: 40,
            ..CaptureOptions::default()
        };
        // The node of an unplugged camera is gone: while reconnecting that is not fatal.
        let mut source = V4l2Source::closed(Path::new("/dev/video-unplugged"), &opts);
        let err = source.lose("EIO".into());
        assert!(matches!(err, CaptureError::Unavailable(_)));
        let t = Instant::now();
        for attempt in 1..=4 {
            let err = source.next_frame().err().unwrap();
            assert!(matches!(err, CaptureError::Unavailable(_)), "{err}");
            assert_eq!(source.attempt, attempt);
        }
        // Waits of 10, 20, 40 and 40 ms (capped) before the four attempts.
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(110), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(source.stats().lost, 1);
        assert!(!source.is_connected());
    }

    #[test]
    fn a_character_device_that_is_not_a_camera_is_fatal() {
        let err = V4l2Source::open(Path::new("/dev/null"), &CaptureOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::Fatal(_)), "{err}");
        assert!(err.to_string().contains("not a V4L2 device"), "{err}");
    }

    #[test]
    fn missing_device_is_fatal() {
        let err = V4l2Source::open(Path::new("/dev/video-none"), &CaptureOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::Fatal(_)), "{err}");
    }
}
