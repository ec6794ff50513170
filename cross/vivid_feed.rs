//! Feeds a still image into the vivid test driver's video loopback, so that its capture node
//! delivers frames with a face in them. Used by `cross/emulated-board.sh` inside the emulated
//! board; it needs a kernel with the `vivid` module and both a capture and an output node.
//!
//! ```text
//! vivid_feed --capture /dev/video0 --output /dev/video1 --image astronaut.png \
//!            --crop 97,12,256,256 --size 640x480 --gray-out frame.pgm --ready /tmp/feeding
//! ```
//!
//! How vivid loops video (drivers/media/test-drivers/vivid, Documentation/admin-guide/media/
//! vivid.rst): the capture node copies the output node's oldest queued buffer instead of drawing
//! its test pattern when the capture node's "Loop Video" control is set, the capture input is an
//! HDMI (or S-Video) input, the output is an HDMI (or S-Video) output, and both sides have the same
//! pixel format, field order and frame size (for HDMI: the same DV timings). The overlay text vivid
//! draws on captured frames ("OSD Text Mode") is switched off, so a captured frame is a byte-exact
//! copy of the fed one. `--gray-out` writes that frame's luma as a PGM: the exact gray image the
//! capture path hands to the pipeline, for rendering a reference of the same state.
//!
//! The output side is fed with streaming I/O: `--buffers` MMAP buffers, all holding the same
//! frame, are queued once; then every buffer the driver is done with is queued again unchanged.
//! With many buffers in flight the loopback never runs dry (vivid would then capture its test
//! pattern) even when this process is not scheduled for a while on a busy emulated CPU.
//! Before reporting ready it captures a few frames itself and checks that one equals the fed frame.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{io, mem, ptr};

use anyhow::{bail, ensure, Context, Result};
use v4l::buffer::Type;
use v4l::control::{Control, Value};
use v4l::io::traits::CaptureStream;
use v4l::prelude::*;
use v4l::v4l_sys::*;
use v4l::video::{Capture, Output};
use v4l::{Format, FourCC, Memory};

/// `_IOWR('V', nr, T)` from <linux/videodev2.h>, for the ioctls the v4l crate does not name.
const fn iowr<T>(nr: u64) -> u64 {
    (3 << 30) | ((mem::size_of::<T>() as u64) << 16) | ((b'V' as u64) << 8) | nr
}
const VIDIOC_ENUMINPUT: u64 = iowr::<v4l2_input>(26);
const VIDIOC_S_INPUT: u64 = iowr::<libc::c_int>(39);
const VIDIOC_ENUMOUTPUT: u64 = iowr::<v4l2_output>(48);
const VIDIOC_S_OUTPUT: u64 = iowr::<libc::c_int>(47);
const VIDIOC_S_DV_TIMINGS: u64 = iowr::<v4l2_dv_timings>(87);
const VIDIOC_ENUM_DV_TIMINGS: u64 = iowr::<v4l2_enum_dv_timings>(98);
const VIDIOC_REQBUFS: u64 = iowr::<v4l2_requestbuffers>(8);
const VIDIOC_QUERYBUF: u64 = iowr::<v4l2_buffer>(9);
const VIDIOC_QBUF: u64 = iowr::<v4l2_buffer>(15);
const VIDIOC_DQBUF: u64 = iowr::<v4l2_buffer>(17);
const VIDIOC_STREAMON: u64 = (1 << 30) | (4 << 16) | ((b'V' as u64) << 8) | 18;

fn ioctl<T>(fd: i32, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request above is declared with the size of the `T` it is called with, and
    // `arg` is a valid, exclusively borrowed `T` for the duration of the call.
    unsafe { v4l::v4l2::ioctl(fd, request as _, arg as *mut T as *mut libc::c_void) }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the plain C structs of <linux/videodev2.h>, for which all-zero bytes
    // are a valid value (the kernel's own convention for these ioctls).
    unsafe { mem::zeroed() }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

struct Args {
    capture: PathBuf,
    output: PathBuf,
    image: PathBuf,
    crop: Option<[u32; 4]>,
    width: u32,
    height: u32,
    buffers: u32,
    gray_out: Option<PathBuf>,
    ready: Option<PathBuf>,
    seconds: f64,
}

fn usage() -> ! {
    eprintln!(
        "usage: vivid_feed --capture DEV --output DEV --image FILE [--crop X,Y,W,H] [--size WxH (640x480)] \
         [--buffers N (16)] [--gray-out FILE.pgm] [--ready FILE] [--seconds S (600)]"
    );
    std::process::exit(2);
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        capture: PathBuf::new(),
        output: PathBuf::new(),
        image: PathBuf::new(),
        crop: None,
        width: 640,
        height: 480,
        buffers: 16,
        gray_out: None,
        ready: None,
        seconds: 600.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--capture" => args.capture = value().into(),
            "--output" => args.output = value().into(),
            "--image" => args.image = value().into(),
            "--crop" => {
                let v: Vec<u32> = value()
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                args.crop = Some(v.try_into().unwrap_or_else(|_| usage()));
            }
            "--size" => {
                let v = value();
                let (w, h) = v.split_once('x').unwrap_or_else(|| usage());
                args.width = w.parse()?;
                args.height = h.parse()?;
            }
            "--buffers" => args.buffers = value().parse()?,
            "--gray-out" => args.gray_out = Some(value().into()),
            "--ready" => args.ready = Some(value().into()),
            "--seconds" => args.seconds = value().parse()?,
            _ => usage(),
        }
    }
    if args.capture.as_os_str().is_empty()
        || args.output.as_os_str().is_empty()
        || args.image.as_os_str().is_empty()
    {
        usage();
    }
    Ok(args)
}

/// The image letterboxed into `width` x `height` (aspect kept, mid-gray borders), as YUYV
/// (full-range BT.601) and as its luma plane.
fn frame_of(image: &image::RgbImage, width: u32, height: u32) -> (Vec<u8>, Vec<u8>) {
    let scale = f64::min(
        f64::from(width) / f64::from(image.width()),
        f64::from(height) / f64::from(image.height()),
    );
    let w = ((f64::from(image.width()) * scale).round() as u32).max(1);
    let h = ((f64::from(image.height()) * scale).round() as u32).max(1);
    let scaled = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([128, 128, 128]));
    image::imageops::overlay(
        &mut canvas,
        &scaled,
        i64::from((width - w) / 2),
        i64::from((height - h) / 2),
    );
    let mut yuyv = Vec::with_capacity((width * height * 2) as usize);
    let mut luma = Vec::with_capacity((width * height) as usize);
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    for row in canvas.rows() {
        let px: Vec<[f32; 3]> = row
            .map(|p| [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])])
            .collect();
        for pair in px.chunks(2) {
            let y: Vec<u8> = pair
                .iter()
                .map(|[r, g, b]| clamp(0.299 * r + 0.587 * g + 0.114 * b))
                .collect();
            // Chroma of the pair's mean colour.
            let n = pair.len() as f32;
            let [r, g, b] = pair.iter().fold([0.0; 3], |a, p| {
                [a[0] + p[0] / n, a[1] + p[1] / n, a[2] + p[2] / n]
            });
            let u = clamp(128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b);
            let v = clamp(128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b);
            yuyv.extend_from_slice(&[y[0], u, *y.get(1).unwrap_or(&y[0]), v]);
            luma.extend_from_slice(&y);
        }
    }
    (yuyv, luma)
}

/// Selects the first input (capture) or output with DV timings: vivid loops video only from an
/// HDMI output to an HDMI input (or S-Video to S-Video; HDMI is the one without TV standards).
fn select_hdmi(fd: i32, capture: bool) -> Result<String> {
    for index in 0..64 {
        let (name, has_dv) = if capture {
            let mut input: v4l2_input = zeroed();
            input.index = index;
            if ioctl(fd, VIDIOC_ENUMINPUT, &mut input).is_err() {
                break;
            }
            (
                cstr(&input.name),
                input.capabilities & V4L2_IN_CAP_DV_TIMINGS != 0,
            )
        } else {
            let mut output: v4l2_output = zeroed();
            output.index = index;
            if ioctl(fd, VIDIOC_ENUMOUTPUT, &mut output).is_err() {
                break;
            }
            (
                cstr(&output.name),
                output.capabilities & V4L2_OUT_CAP_DV_TIMINGS != 0,
            )
        };
        if has_dv {
            let mut i = index as libc::c_int;
            let request = if capture {
                VIDIOC_S_INPUT
            } else {
                VIDIOC_S_OUTPUT
            };
            ioctl(fd, request, &mut i).with_context(|| format!("selecting {name}"))?;
            return Ok(name);
        }
    }
    bail!(
        "no {} with DV timings (HDMI); load vivid with an HDMI input and output, e.g. \
         num_inputs=1 input_types=0x3 num_outputs=1 output_types=0x1",
        if capture { "input" } else { "output" }
    )
}

/// Finds the progressive DV timings preset of `width` x `height` the capture side offers.
fn find_timings(fd: i32, width: u32, height: u32) -> Result<v4l2_dv_timings> {
    for index in 0..256 {
        let mut e: v4l2_enum_dv_timings = zeroed();
        e.index = index;
        if ioctl(fd, VIDIOC_ENUM_DV_TIMINGS, &mut e).is_err() {
            break;
        }
        // SAFETY: the driver filled a BT.656/1120 timing (type 0), the only kind vivid offers.
        let bt = unsafe { e.timings.__bindgen_anon_1.bt };
        let (w, h, interlaced) = (bt.width, bt.height, bt.interlaced);
        if e.timings.type_ == V4L2_DV_BT_656_1120 && w == width && h == height && interlaced == 0 {
            return Ok(e.timings);
        }
    }
    bail!("no progressive {width}x{height} DV timings offered")
}

fn set_format(dev: &Device, capture: bool, width: u32, height: u32) -> Result<Format> {
    let want = Format::new(width, height, FourCC::new(b"YUYV"));
    let got = if capture {
        Capture::set_format(dev, &want)
    } else {
        Output::set_format(dev, &want)
    }
    .context("VIDIOC_S_FMT")?;
    ensure!(
        got.fourcc == want.fourcc && got.width == width && got.height == height,
        "{} format: asked for YUYV {width}x{height}, the driver set {} {}x{}",
        if capture { "capture" } else { "output" },
        got.fourcc,
        got.width,
        got.height
    );
    Ok(got)
}

/// Sets a control found by its name (vivid's private control ids are not in the uapi headers).
fn set_named_control(dev: &Device, name: &str, value: Value) -> Result<()> {
    let controls = dev.query_controls().context("querying controls")?;
    let desc = controls
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no control {name:?}"))?;
    dev.set_control(Control { id: desc.id, value })
        .with_context(|| format!("setting {name:?}"))
}

struct Mapped {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn out_buffer(index: u32) -> v4l2_buffer {
    let mut b: v4l2_buffer = zeroed();
    b.index = index;
    b.type_ = Type::VideoOutput as u32;
    b.memory = Memory::Mmap as u32;
    b
}

/// Queues `count` output buffers holding `frame`, starts streaming, and returns the mappings.
fn start_output(fd: i32, frame: &[u8], count: u32) -> Result<Vec<Mapped>> {
    let mut req: v4l2_requestbuffers = zeroed();
    req.count = count;
    req.type_ = Type::VideoOutput as u32;
    req.memory = Memory::Mmap as u32;
    ioctl(fd, VIDIOC_REQBUFS, &mut req).context("VIDIOC_REQBUFS (output)")?;
    ensure!(
        req.count >= 2,
        "the driver gave {} output buffers",
        req.count
    );
    let mut maps = Vec::new();
    for index in 0..req.count {
        let mut b = out_buffer(index);
        ioctl(fd, VIDIOC_QUERYBUF, &mut b).context("VIDIOC_QUERYBUF")?;
        let len = b.length as usize;
        ensure!(len >= frame.len(), "output buffer of {len} bytes < frame");
        // SAFETY: maps the buffer the driver just described, at the offset it gave.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                b.m.offset as libc::off_t,
            )
        };
        ensure!(
            ptr != libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        let map = Mapped {
            ptr: ptr.cast(),
            len,
        };
        // SAFETY: the mapping is `len` >= frame.len() bytes long and not aliased in Rust.
        unsafe { ptr::copy_nonoverlapping(frame.as_ptr(), map.ptr, frame.len()) };
        maps.push(map);
        b.bytesused = frame.len() as u32;
        b.field = v4l2_field_V4L2_FIELD_NONE;
        ioctl(fd, VIDIOC_QBUF, &mut b).context("VIDIOC_QBUF (output)")?;
    }
    let mut kind = Type::VideoOutput as libc::c_int;
    ioctl(fd, VIDIOC_STREAMON, &mut kind).context("VIDIOC_STREAMON (output)")?;
    Ok(maps)
}

/// Captures up to `tries` frames and returns how many came before one equal to `frame`.
fn verify_loopback(dev: &Device, frame: &[u8], stride: usize, width: usize) -> Result<usize> {
    let mut stream = MmapStream::with_buffers(dev, Type::VideoCapture, 4)
        .context("capture VIDIOC_REQBUFS/mmap")?;
    stream.set_timeout(Duration::from_secs(10));
    let row = width * 2;
    let rows = frame.len() / row;
    for n in 0..30 {
        let (buf, _meta) = CaptureStream::next(&mut stream).context("capturing")?;
        let same = (0..rows)
            .all(|y| buf.get(y * stride..y * stride + row) == Some(&frame[y * row..(y + 1) * row]));
        if same {
            return Ok(n);
        }
    }
    bail!(
        "30 captured frames and none equals the fed frame: vivid is not looping the output back \
         (Loop Video, HDMI input and output, same format and timings?)"
    )
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut rgb = image::open(&args.image)
        .with_context(|| format!("reading {}", args.image.display()))?
        .into_rgb8();
    // A crop around the face makes it large enough for the short-range detector after the
    // frame is scaled down to the detector's input.
    if let Some([x, y, w, h]) = args.crop {
        ensure!(
            x + w <= rgb.width() && y + h <= rgb.height() && w > 0 && h > 0,
            "--crop {x},{y},{w},{h} is outside the {}x{} image",
            rgb.width(),
            rgb.height()
        );
        rgb = image::imageops::crop_imm(&rgb, x, y, w, h).to_image();
    }
    let (yuyv, luma) = frame_of(&rgb, args.width, args.height);

    let cap = Device::with_path(&args.capture)
        .with_context(|| format!("opening {}", args.capture.display()))?;
    let out = Device::with_path(&args.output)
        .with_context(|| format!("opening {}", args.output.display()))?;
    let (cfd, ofd) = (cap.handle().fd(), out.handle().fd());
    let input = select_hdmi(cfd, true)?;
    let output = select_hdmi(ofd, false)?;
    let mut timings = find_timings(cfd, args.width, args.height)?;
    ioctl(cfd, VIDIOC_S_DV_TIMINGS, &mut timings).context("capture VIDIOC_S_DV_TIMINGS")?;
    ioctl(ofd, VIDIOC_S_DV_TIMINGS, &mut timings).context("output VIDIOC_S_DV_TIMINGS")?;
    let out_fmt = set_format(&out, false, args.width, args.height)?;
    let cap_fmt = set_format(&cap, true, args.width, args.height)?;
    ensure!(
        out_fmt.stride == args.width * 2,
        "output rows are {} bytes, expected {} (padded output rows are not supported)",
        out_fmt.stride,
        args.width * 2
    );
    set_named_control(&cap, "Loop Video", Value::Boolean(true))?;
    // 2 = "None": no timestamp or settings text drawn over the captured frames.
    set_named_control(&cap, "OSD Text Mode", Value::Integer(2))?;
    eprintln!(
        "vivid_feed: {} -> {}: {input} <- {output}, YUYV {}x{}, {} output buffers",
        args.output.display(),
        args.capture.display(),
        args.width,
        args.height,
        args.buffers
    );

    let maps = start_output(ofd, &yuyv, args.buffers)?;
    let skipped = verify_loopback(&cap, &yuyv, cap_fmt.stride as usize, args.width as usize)?;
    eprintln!(
        "vivid_feed: loopback verified: captured frame {skipped} equals the fed frame byte for byte"
    );
    drop(cap);

    if let Some(path) = &args.gray_out {
        let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        write!(f, "P5\n{} {}\n255\n", args.width, args.height)?;
        f.write_all(&luma)?;
    }
    if let Some(path) = &args.ready {
        File::create(path).with_context(|| format!("creating {}", path.display()))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let start = Instant::now();
    let mut cycled = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed().as_secs_f64() < args.seconds {
        let mut pfd = libc::pollfd {
            fd: ofd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 200) };
        if ready <= 0 {
            continue;
        }
        let mut b = out_buffer(0);
        match ioctl(ofd, VIDIOC_DQBUF, &mut b) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e).context("VIDIOC_DQBUF (output)"),
        }
        // The buffer still holds the frame: queue it again as it is.
        b.bytesused = yuyv.len() as u32;
        b.field = v4l2_field_V4L2_FIELD_NONE;
        ioctl(ofd, VIDIOC_QBUF, &mut b).context("VIDIOC_QBUF (output)")?;
        cycled += 1;
    }
    eprintln!(
        "vivid_feed: stopped after {:.1} s, {cycled} output buffers recycled",
        start.elapsed().as_secs_f64()
    );
    drop(maps);
    Ok(())
}
