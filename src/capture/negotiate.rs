//! Choosing a camera mode and pacing reconnects: pure functions over what a device reports, so that
//! they are tested without a device.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The camera pixel formats ferrite decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// 8-bit luma (V4L2 `GREY`): already the gray image, a copy at most.
    Grey,
    /// Packed 4:2:2 `YUYV`: luma is every other byte.
    Yuyv,
    /// Packed 4:2:2 `UYVY`: luma is every other byte, the odd ones.
    Uyvy,
    /// Motion JPEG (`MJPG`, or `JPEG` on some drivers): a JPEG decode per frame.
    Mjpeg,
}

impl PixelFormat {
    /// The order in which formats are tried by default: cheapest to turn into gray first. GREY
    /// costs a copy, YUYV/UYVY a strided copy of every other byte (both well under a millisecond
    /// at 640x480), MJPEG an entropy decode and IDCT (a few milliseconds even luma-only, more on a
    /// Pi). MJPEG is still the fallback that matters: USB 2.0 webcams often offer large sizes or
    /// 30 fps only in MJPEG, which is why the frame rate weighs in before this order (see
    /// [`negotiate`]).
    pub const DEFAULT_PREFERENCE: [PixelFormat; 4] = [
        PixelFormat::Grey,
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Mjpeg,
    ];

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Uyvy => *b"UYVY",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<PixelFormat> {
        match &fourcc {
            b"GREY" => Some(PixelFormat::Grey),
            b"YUYV" => Some(PixelFormat::Yuyv),
            b"UYVY" => Some(PixelFormat::Uyvy),
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            _ => None,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fourcc_str(self.fourcc()))
    }
}

impl FromStr for PixelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "grey" | "gray" => Ok(PixelFormat::Grey),
            "yuyv" | "yuy2" => Ok(PixelFormat::Yuyv),
            "uyvy" => Ok(PixelFormat::Uyvy),
            "mjpeg" | "mjpg" | "jpeg" => Ok(PixelFormat::Mjpeg),
            _ => Err(format!(
                "unknown pixel format {s:?} (expected grey, yuyv, uyvy or mjpeg)"
            )),
        }
    }
}

/// A fourcc as text, with non-printable bytes escaped.
pub fn fourcc_str(fourcc: [u8; 4]) -> String {
    fourcc
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Width x height in pixels; written and parsed as "640x480" (on the command line and in TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    /// How far `self` is from `want`: the sum of the absolute differences of the sides.
    fn distance(self, want: Size) -> u64 {
        u64::from(self.width.abs_diff(want.width)) + u64::from(self.height.abs_diff(want.height))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected WIDTHxHEIGHT such as 640x480, got {s:?}");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        if width == 0 || height == 0 {
            return Err(bad());
        }
        let side = crate::limits::CAMERA_SIDE;
        side.check(width).map_err(|e| e.to_string())?;
        side.check(height).map_err(|e| e.to_string())?;
        Ok(Size { width, height })
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

/// A frame interval, seconds per frame as a fraction (V4L2's representation: 1/30 is 30 fps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub numerator: u32,
    pub denominator: u32,
}

impl Interval {
    pub const fn new(numerator: u32, denominator: u32) -> Interval {
        Interval {
            numerator,
            denominator,
        }
    }

    /// The interval closest to `fps` frames per second (exact for whole and half rates).
    pub fn from_fps(fps: f64) -> Interval {
        if fps.fract() == 0.0 && fps >= 1.0 && fps <= f64::from(u32::MAX) {
            Interval::new(1, fps as u32)
        } else {
            Interval::new(1000, (fps * 1000.0).round().max(1.0) as u32)
        }
    }

    pub fn fps(self) -> f64 {
        if self.numerator == 0 {
            0.0
        } else {
            f64::from(self.denominator) / f64::from(self.numerator)
        }
    }
}

/// The sizes a format offers, as V4L2 enumerates them.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeRange {
    Discrete(Size),
    /// Any size from `min` to `max` in steps (continuous when the steps are 1).
    Stepwise {
        min: Size,
        max: Size,
        step: Size,
    },
}

impl SizeRange {
    /// The offered size nearest to `want`.
    pub fn nearest(&self, want: Size) -> Size {
        match *self {
            SizeRange::Discrete(s) => s,
            SizeRange::Stepwise { min, max, step } => {
                let snap = |v: u32, lo: u32, hi: u32, step: u32| {
                    let step = step.max(1);
                    let v = v.clamp(lo, hi.max(lo));
                    let k = (v - lo + step / 2) / step;
                    (lo + k * step).min(hi.max(lo))
                };
                Size::new(
                    snap(want.width, min.width, max.width, step.width),
                    snap(want.height, min.height, max.height, step.height),
                )
            }
        }
    }
}

/// The frame rates a format offers at one size.
#[derive(Debug, Clone, PartialEq)]
pub enum IntervalRange {
    Discrete(Interval),
    /// Continuous or stepwise: any interval between `min` (fastest) and `max` (slowest).
    Stepwise {
        min: Interval,
        max: Interval,
    },
}

/// One size a format offers, with the frame rates it offers there. For a stepwise size range the
/// device layer lists the rates at the size nearest the request (they depend on the size).
#[derive(Debug, Clone, PartialEq)]
pub struct SizeCaps {
    pub size: SizeRange,
    pub intervals: Vec<IntervalRange>,
}

/// One format a device offers.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatCaps {
    pub fourcc: [u8; 4],
    pub sizes: Vec<SizeCaps>,
}

/// The mode to ask the driver for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    pub format: PixelFormat,
    pub fourcc: [u8; 4],
    pub size: Size,
    /// `None` when the device lists no frame rates (leave the driver's default).
    pub interval: Option<Interval>,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", fourcc_str(self.fourcc), self.size)?;
        if let Some(i) = self.interval {
            write!(f, " @{:.3}", i.fps())?;
        }
        Ok(())
    }
}

/// Picks the interval for `fps` among `intervals`: the slowest rate that is still at least `fps`
/// (so that the camera does not produce frames nobody asked for), else the fastest there is.
/// Without a requested rate, the fastest.
fn pick_interval(intervals: &[IntervalRange], fps: Option<f64>) -> Option<Interval> {
    // Rates within 1% count as equal: 30000/1001 is "30 fps" to a user.
    const SLACK: f64 = 0.99;
    let mut fastest: Option<Interval> = None;
    let mut best_at_least: Option<Interval> = None;
    let mut consider = |i: Interval| {
        if fastest.is_none_or(|f| i.fps() > f.fps()) {
            fastest = Some(i);
        }
        if let Some(want) = fps {
            if i.fps() >= want * SLACK && best_at_least.is_none_or(|b| i.fps() < b.fps()) {
                best_at_least = Some(i);
            }
        }
    };
    for range in intervals {
        match *range {
            IntervalRange::Discrete(i) => consider(i),
            IntervalRange::Stepwise { min, max } => {
                consider(min);
                consider(max);
                if let Some(want) = fps {
                    if want <= min.fps() && want >= max.fps() {
                        consider(Interval::from_fps(want));
                    }
                }
            }
        }
    }
    best_at_least.or(fastest)
}

/// Chooses format, size and frame rate from what the device offers.
///
/// Candidates are the formats of `preference` that the device offers, each at its size nearest to
/// `size`. They are ranked by, in order: distance to the requested size (the size is what the user
/// asked for), whether the requested frame rate is reached (a UVC camera that offers 640x480 at 30
/// fps only in MJPEG should stream MJPEG, not 5-fps YUYV), then position in `preference`.
/// `None` when the device offers none of the preferred formats.
pub fn negotiate(
    offered: &[FormatCaps],
    size: Size,
    fps: Option<f64>,
    preference: &[PixelFormat],
) -> Option<Mode> {
    let mut best: Option<((u64, u64, usize), Mode)> = None;
    for caps in offered {
        let Some(format) = PixelFormat::from_fourcc(caps.fourcc) else {
            continue;
        };
        let Some(rank) = preference.iter().position(|&p| p == format) else {
            continue;
        };
        for s in &caps.sizes {
            let candidate = s.size.nearest(size);
            let interval = pick_interval(&s.intervals, fps);
            // Shortfall in millihertz, 0 when the rate is reached or unknown.
            let shortfall = match (fps, interval) {
                (Some(want), Some(i)) if i.fps() < want * 0.99 => {
                    ((want - i.fps()) * 1000.0) as u64
                }
                _ => 0,
            };
            let key = (candidate.distance(size), shortfall, rank);
            // Ties between equally good sizes (e.g. 640x360 and 640x600 around 640x480) go to the
            // first listed, which is what the driver lists first.
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((
                    key,
                    Mode {
                        format,
                        fourcc: caps.fourcc,
                        size: candidate,
                        interval,
                    },
                ));
            }
        }
    }
    best.map(|(_, mode)| mode)
}

/// Exponential backoff between reopen attempts: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discrete(w: u32, h: u32, fps: &[u32]) -> SizeCaps {
        SizeCaps {
            size: SizeRange::Discrete(Size::new(w, h)),
            intervals: fps
                .iter()
                .map(|&f| IntervalRange::Discrete(Interval::new(1, f)))
                .collect(),
        }
    }

    /// A typical USB 2.0 webcam: YUYV is bandwidth-limited at large sizes, MJPEG is not.
    fn webcam() -> Vec<FormatCaps> {
        vec![
            FormatCaps {
                fourcc: *b"MJPG",
                sizes: vec![
                    discrete(1280, 720, &[30, 15]),
                    discrete(640, 480, &[30, 15]),
                    discrete(320, 240, &[30]),
                ],
            },
            FormatCaps {
                fourcc: *b"YUYV",
                sizes: vec![
                    discrete(1280, 720, &[10, 5]),
                    discrete(640, 480, &[30, 15]),
                    discrete(320, 240, &[30]),
                ],
            },
        ]
    }

    const PREF: [PixelFormat; 4] = PixelFormat::DEFAULT_PREFERENCE;

    #[test]
    fn prefers_the_cheapest_format_that_meets_size_and_rate() {
        let m = negotiate(&webcam(), Size::new(640, 480), Some(30.0), &PREF).unwrap();
        assert_eq!(m.format, PixelFormat::Yuyv);
        assert_eq!(m.size, Size::new(640, 480));
        assert_eq!(m.interval, Some(Interval::new(1, 30)));
    }

    #[test]
    fn frame_rate_outweighs_format_preference() {
        let m = negotiate(&webcam(), Size::new(1280, 720), Some(30.0), &PREF).unwrap();
        assert_eq!(m.format, PixelFormat::Mjpeg);
        // Asking for 10 fps is met by YUYV, which is cheaper.
        let m = negotiate(&webcam(), Size::new(1280, 720), Some(10.0), &PREF).unwrap();
        assert_eq!(m.format, PixelFormat::Yuyv);
        assert_eq!(m.interval, Some(Interval::new(1, 10)));
    }

    #[test]
    fn user_preference_order_is_honoured() {
        let pref = [PixelFormat::Mjpeg, PixelFormat::Yuyv];
        let m = negotiate(&webcam(), Size::new(640, 480), Some(30.0), &pref).unwrap();
        assert_eq!(m.format, PixelFormat::Mjpeg);
        // A format left out of the preference is never chosen.
        let m = negotiate(&webcam(), Size::new(640, 480), None, &[PixelFormat::Mjpeg]).unwrap();
        assert_eq!(m.format, PixelFormat::Mjpeg);
        assert!(negotiate(&webcam(), Size::new(640, 480), None, &[PixelFormat::Grey]).is_none());
    }

    #[test]
    fn falls_back_to_the_nearest_size() {
        let m = negotiate(&webcam(), Size::new(800, 600), Some(30.0), &PREF).unwrap();
        assert_eq!(m.size, Size::new(640, 480));
        assert_eq!(m.format, PixelFormat::Yuyv);
        let m = negotiate(&webcam(), Size::new(100, 100), None, &PREF).unwrap();
        assert_eq!(m.size, Size::new(320, 240));
    }

    #[test]
    fn picks_the_slowest_rate_that_still_meets_the_request() {
        let m = negotiate(&webcam(), Size::new(640, 480), Some(12.0), &PREF).unwrap();
        assert_eq!(m.interval, Some(Interval::new(1, 15)));
        // No rate requested: the fastest.
        let m = negotiate(&webcam(), Size::new(640, 480), None, &PREF).unwrap();
        assert_eq!(m.interval, Some(Interval::new(1, 30)));
        // 29.97 meets 30.
        let ntsc = vec![FormatCaps {
            fourcc: *b"YUYV",
            sizes: vec![SizeCaps {
                size: SizeRange::Discrete(Size::new(640, 480)),
                intervals: vec![IntervalRange::Discrete(Interval::new(1001, 30000))],
            }],
        }];
        let m = negotiate(&ntsc, Size::new(640, 480), Some(30.0), &PREF).unwrap();
        assert_eq!(m.interval, Some(Interval::new(1001, 30000)));
    }

    #[test]
    fn grey_wins_when_it_is_as_good() {
        let mut caps = webcam();
        caps.push(FormatCaps {
            fourcc: *b"GREY",
            sizes: vec![discrete(640, 480, &[60, 30])],
        });
        let m = negotiate(&caps, Size::new(640, 480), Some(30.0), &PREF).unwrap();
        assert_eq!(m.format, PixelFormat::Grey);
        assert_eq!(m.interval, Some(Interval::new(1, 30)));
    }

    #[test]
    fn stepwise_sizes_and_rates_snap_to_the_request() {
        let caps = vec![FormatCaps {
            fourcc: *b"YUYV",
            sizes: vec![SizeCaps {
                size: SizeRange::Stepwise {
                    min: Size::new(16, 16),
                    max: Size::new(1920, 1080),
                    step: Size::new(8, 8),
                },
                intervals: vec![IntervalRange::Stepwise {
                    min: Interval::new(1, 60),
                    max: Interval::new(1, 1),
                }],
            }],
        }];
        let m = negotiate(&caps, Size::new(643, 3000), Some(25.0), &PREF).unwrap();
        assert_eq!(m.size, Size::new(640, 1080));
        assert_eq!(m.interval, Some(Interval::new(1, 25)));
    }

    #[test]
    fn unknown_formats_are_ignored_and_jpeg_counts_as_mjpeg() {
        let caps = vec![
            FormatCaps {
                fourcc: *b"RGGB",
                sizes: vec![discrete(640, 480, &[30])],
            },
            FormatCaps {
                fourcc: *b"JPEG",
                sizes: vec![discrete(640, 480, &[])],
            },
        ];
        let m = negotiate(&caps, Size::new(640, 480), Some(30.0), &PREF).unwrap();
        assert_eq!(m.format, PixelFormat::Mjpeg);
        assert_eq!(m.fourcc, *b"JPEG");
        assert_eq!(m.interval, None);
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_eight() {
        let b = Backoff::default();
        let secs: Vec<f64> = (0..8).map(|a| b.delay(a).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn sizes_and_formats_parse() {
        assert_eq!("640x480".parse::<Size>().unwrap(), Size::new(640, 480));
        assert!("640".parse::<Size>().is_err());
        assert!("0x480".parse::<Size>().is_err());
        assert_eq!("MJPG".parse::<PixelFormat>().unwrap(), PixelFormat::Mjpeg);
        assert_eq!(PixelFormat::Yuyv.to_string(), "YUYV");
        assert_eq!(fourcc_str(*b"Y8  "), "Y8");
    }
}
