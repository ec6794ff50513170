//! YUV4MPEG2 (`.y4m`) recordings: the uncompressed format `ffmpeg -f yuv4mpegpipe` writes. The
//! reader keeps the Y plane of each frame and skips the chroma; the writer stores gray frames (with
//! neutral chroma when the chroma mode has any), for tests and for recording.
//!
//! Layout: one header line `YUV4MPEG2 W<w> H<h> F<num>:<den> [I.. A.. C<chroma> X..]`, then per
//! frame a line `FRAME [params]` and the planes Y, Cb, Cr (8-bit samples).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use image::GrayImage;
use log::warn;

use super::{CaptureOptions, Pacer};
use crate::frame::{CaptureError, Frame, FrameSource};

/// The 8-bit chroma layouts: they differ only in how many chroma bytes follow the Y plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Y4mChroma {
    Mono,
    /// 4:2:0, any siting (`420jpeg`, `420mpeg2`, `420paldv`, `420`).
    C420,
    C422,
    C444,
    /// 4:4:4 plus an alpha plane.
    C444Alpha,
}

impl Y4mChroma {
    fn parse(tag: &str) -> Result<Y4mChroma, String> {
        match tag {
            "mono" => Ok(Y4mChroma::Mono),
            "420" | "420jpeg" | "420mpeg2" | "420paldv" => Ok(Y4mChroma::C420),
            "422" => Ok(Y4mChroma::C422),
            "444" => Ok(Y4mChroma::C444),
            "444alpha" => Ok(Y4mChroma::C444Alpha),
            other => Err(format!(
                "chroma mode C{other} is not supported (8-bit mono, 420*, 422, 444 and 444alpha \
                 are; re-record with ffmpeg -pix_fmt gray or yuv420p)"
            )),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Y4mChroma::Mono => "mono",
            Y4mChroma::C420 => "420jpeg",
            Y4mChroma::C422 => "422",
            Y4mChroma::C444 => "444",
            Y4mChroma::C444Alpha => "444alpha",
        }
    }

    /// Bytes after the Y plane in one frame.
    fn extra_bytes(self, w: usize, h: usize) -> usize {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match self {
            Y4mChroma::Mono => 0,
            Y4mChroma::C420 => 2 * cw * ch,
            Y4mChroma::C422 => 2 * cw * h,
            Y4mChroma::C444 => 2 * w * h,
            Y4mChroma::C444Alpha => 3 * w * h,
        }
    }
}

/// What a Y4M header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Y4mHeader {
    pub width: u32,
    pub height: u32,
    /// Frames per second as a fraction; `None` when the header has none (or `F0:0`).
    pub rate: Option<(u32, u32)>,
    pub chroma: Y4mChroma,
}

impl Y4mHeader {
    pub fn parse(line: &str) -> Result<Y4mHeader, String> {
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        if words.next() != Some("YUV4MPEG2") {
            return Err("not a YUV4MPEG2 file (no YUV4MPEG2 signature)".into());
        }
        let (mut width, mut height, mut rate) = (None, None, None);
        let mut chroma = Y4mChroma::C420;
        for word in words {
            // By character, not byte: a header is text from a file, and a multi-byte first
            // character must be an unknown tag, not a panic.
            let mut chars = word.chars();
            let tag = chars.next().map_or("", |c| &word[..c.len_utf8()]);
            let value = chars.as_str();
            let number = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("bad header field {word:?}"))
            };
            match tag {
                "W" => width = Some(number(value)?),
                "H" => height = Some(number(value)?),
                "F" => {
                    let (n, d) = value
                        .split_once(':')
                        .ok_or_else(|| format!("bad frame rate {word:?}"))?;
                    let (n, d) = (number(n)?, number(d)?);
                    rate = (n > 0 && d > 0).then_some((n, d));
                }
                "C" => chroma = Y4mChroma::parse(value)?,
                // Interlacing, aspect ratio, extensions (ffmpeg's XYSCSS, COLORRANGE): not needed
                // for the luma plane.
                _ => {}
            }
        }
        let width = width.ok_or("header has no width (W)")?;
        let height = height.ok_or("header has no height (H)")?;
        // The camera bounds: a header may not make each frame allocate gigabytes.
        let side = crate::limits::CAMERA_SIDE;
        if side.check(width).is_err() || side.check(height).is_err() {
            return Err(format!("implausible frame size {width}x{height}"));
        }
        Ok(Y4mHeader {
            width,
            height,
            rate,
            chroma,
        })
    }

    pub fn fps(&self) -> Option<f64> {
        self.rate.map(|(n, d)| f64::from(n) / f64::from(d))
    }
}

/// Reads a header or frame line (at most `limit` bytes, without the newline).
fn read_line<R: BufRead>(r: &mut R, limit: usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(limit as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or unterminated",
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "header is not text"))
}

/// Frames from a `.y4m` file. Timestamps follow the file's frame rate (or `--fps`), not the wall
/// clock, so a recording replays the same timeline however fast it is read.
pub struct Y4mSource {
    path: String,
    reader: BufReader<File>,
    header: Y4mHeader,
    data_start: u64,
    looping: bool,
    pacer: Pacer,
    /// Seconds per frame on the timeline.
    period: f64,
    index: u64,
    skip: Vec<u8>,
}

impl Y4mSource {
    pub fn open(path: &Path, opts: &CaptureOptions) -> Result<Y4mSource, CaptureError> {
        let fatal = |msg: String| CaptureError::Fatal(format!("{}: {msg}", path.display()));
        let file = File::open(path).map_err(|e| fatal(e.to_string()))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let line = read_line(&mut reader, 4096)
            .map_err(|e| fatal(e.to_string()))?
            .ok_or_else(|| fatal("empty file".into()))?;
        let header = Y4mHeader::parse(&line).map_err(fatal)?;
        let data_start = line.len() as u64 + 1;
        let fps = opts.fps.or(header.fps()).filter(|f| *f > 0.0);
        let extra = header
            .chroma
            .extra_bytes(header.width as usize, header.height as usize);
        Ok(Y4mSource {
            path: path.display().to_string(),
            reader,
            data_start,
            looping: opts.looping,
            pacer: Pacer::new(opts.fps),
            period: 1.0 / fps.unwrap_or(30.0),
            index: 0,
            skip: vec![0; extra],
            header,
        })
    }

    pub fn header(&self) -> &Y4mHeader {
        &self.header
    }

    fn read_frame(&mut self) -> Result<Option<GrayImage>, CaptureError> {
        let fatal = |msg: String| CaptureError::Fatal(format!("{}: {msg}", self.path));
        let line = match read_line(&mut self.reader, 4096) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(e) => return Err(fatal(format!("frame {}: {e}", self.index))),
        };
        if line != "FRAME" && !line.starts_with("FRAME ") {
            // Lost sync: the frame sizes in the header do not match the data.
            return Err(fatal(format!(
                "frame {}: expected a FRAME line, found {:?}",
                self.index,
                line.chars().take(20).collect::<String>()
            )));
        }
        let mut y = vec![0; self.header.width as usize * self.header.height as usize];
        let complete = self
            .reader
            .read_exact(&mut y)
            .and_then(|()| self.reader.read_exact(&mut self.skip));
        match complete {
            Ok(()) => Ok(GrayImage::from_raw(
                self.header.width,
                self.header.height,
                y,
            )),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // A recording cut short (the writer was killed): its end, not an error.
                warn!(
                    "{}: last frame {} is truncated; treating it as the end",
                    self.path, self.index
                );
                Ok(None)
            }
            Err(e) => Err(fatal(format!("frame {}: {e}", self.index))),
        }
    }
}

impl FrameSource for Y4mSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let mut image = self.read_frame()?;
        if image.is_none() && self.looping && self.index > 0 {
            self.reader
                .seek(SeekFrom::Start(self.data_start))
                .map_err(|e| CaptureError::Fatal(format!("{}: {e}", self.path)))?;
            image = self.read_frame()?;
        }
        let Some(image) = image else { return Ok(None) };
        self.pacer.wait();
        let index = self.index;
        self.index += 1;
        Ok(Some(Frame {
            index,
            timestamp: Duration::from_secs_f64(index as f64 * self.period),
            image,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "{} {}x{} C{}{}",
            self.path,
            self.header.width,
            self.header.height,
            self.header.chroma.tag(),
            self.header
                .fps()
                .map(|f| format!(" @{f:.3}"))
                .unwrap_or_default()
        )
    }
}

/// Writes gray frames as a `.y4m` stream (`ffplay`, `ffmpeg -i` and [`Y4mSource`] read it).
pub struct Y4mWriter<W: Write> {
    out: W,
    width: u32,
    height: u32,
    neutral_chroma: Vec<u8>,
}

impl Y4mWriter<BufWriter<File>> {
    /// Creates (truncates) `path`. `fps` is a fraction such as `(30, 1)` or `(30000, 1001)`.
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        fps: (u32, u32),
        chroma: Y4mChroma,
    ) -> io::Result<Self> {
        let file = File::create(path)?;
        Y4mWriter::new(BufWriter::new(file), width, height, fps, chroma)
    }
}

impl<W: Write> Y4mWriter<W> {
    pub fn new(
        mut out: W,
        width: u32,
        height: u32,
        fps: (u32, u32),
        chroma: Y4mChroma,
    ) -> io::Result<Self> {
        if width == 0 || height == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame size must be positive",
            ));
        }
        writeln!(
            out,
            "YUV4MPEG2 W{width} H{height} F{}:{} Ip A1:1 C{}",
            fps.0,
            fps.1,
            chroma.tag()
        )?;
        let mut neutral_chroma = vec![128; chroma.extra_bytes(width as usize, height as usize)];
        if chroma == Y4mChroma::C444Alpha {
            // The alpha plane comes last: opaque.
            let n = width as usize * height as usize;
            let len = neutral_chroma.len();
            neutral_chroma[len - n..].fill(255);
        }
        Ok(Y4mWriter {
            out,
            width,
            height,
            neutral_chroma,
        })
    }

    pub fn write_frame(&mut self, frame: &GrayImage) -> io::Result<()> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame is {}x{}, the stream is {}x{}",
                    frame.width(),
                    frame.height(),
                    self.width,
                    self.height
                ),
            ));
        }
        self.out.write_all(b"FRAME\n")?;
        self.out.write_all(frame.as_raw())?;
        self.out.write_all(&self.neutral_chroma)
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_ffmpeg_writes() {
        let h = Y4mHeader::parse(
            "YUV4MPEG2 W640 H480 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED",
        )
        .unwrap();
        assert_eq!((h.width, h.height), (640, 480));
        assert_eq!(h.rate, Some((30000, 1001)));
        assert_eq!(h.chroma, Y4mChroma::C420);
        let h = Y4mHeader::parse("YUV4MPEG2 W3 H3 F0:0 Cmono").unwrap();
        assert_eq!(h.rate, None);
        assert_eq!(h.chroma, Y4mChroma::Mono);
        // No C tag means 4:2:0.
        assert_eq!(
            Y4mHeader::parse("YUV4MPEG2 W2 H2").unwrap().chroma,
            Y4mChroma::C420
        );
    }

    #[test]
    fn rejects_bad_headers() {
        for bad in [
            "YUV4MPEG W2 H2",
            "YUV4MPEG2 H2",
            "YUV4MPEG2 W2 H0",
            "YUV4MPEG2 Wx H2",
            "YUV4MPEG2 W2 H2 C420p10",
            // Beyond the camera bounds (limits.rs): each frame would allocate gigabytes.
            "YUV4MPEG2 W100000 H2",
            "YUV4MPEG2 W8193 H8193",
        ] {
            assert!(Y4mHeader::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tag_that_is_not_ascii_is_ignored_not_a_panic() {
        let h = Y4mHeader::parse("YUV4MPEG2 W4 H2 \u{e9}W9 \u{1f600}").unwrap();
        assert_eq!((h.width, h.height), (4, 2));
    }

    #[test]
    fn chroma_sizes_round_odd_sides_up() {
        assert_eq!(Y4mChroma::C420.extra_bytes(3, 3), 8);
        assert_eq!(Y4mChroma::C422.extra_bytes(3, 3), 12);
        assert_eq!(Y4mChroma::C444.extra_bytes(3, 3), 18);
        assert_eq!(Y4mChroma::C444Alpha.extra_bytes(3, 3), 27);
    }
}
