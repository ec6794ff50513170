//! The range every size, rate and count must fall in, wherever it comes from: a command-line flag,
//! a config file, a board profile or a model manifest. One table, so that a value the command line
//! refuses is refused in a file too, with the same words; a device that runs unattended must not
//! allocate 14 GB because a config file says `width = 60000`.
//!
//! The bounds are generous (8K camera frames, 4K displays, a 1 kHz frame rate): they exist to stop
//! absurd values, not to second-guess unusual hardware. docs/configuration.md lists them.

use std::fmt;
use std::str::FromStr;

/// A closed range `min..=max` (or `(min, max]` when `min_exclusive`) for the value at `key`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// Where the value lives in the config file, e.g. `camera.fps`; errors name it.
    pub key: &'static str,
    pub min: f64,
    pub max: f64,
    /// true: `min` itself is refused (rates and scales must be positive).
    pub min_exclusive: bool,
}

/// A value outside its [`Bound`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key} = {value} is out of range (allowed: {allowed})")]
pub struct OutOfRange {
    pub key: &'static str,
    pub value: String,
    pub allowed: String,
}

impl Bound {
    const fn closed(key: &'static str, min: f64, max: f64) -> Bound {
        Bound {
            key,
            min,
            max,
            min_exclusive: false,
        }
    }

    const fn positive(key: &'static str, max: f64) -> Bound {
        Bound {
            key,
            min: 0.0,
            max,
            min_exclusive: true,
        }
    }

    fn allowed(&self) -> String {
        let open = if self.min_exclusive { "(" } else { "[" };
        format!("{open}{}, {}]", self.min, self.max)
    }

    fn contains(&self, value: f64) -> bool {
        let above_min = if self.min_exclusive {
            value > self.min
        } else {
            value >= self.min
        };
        value.is_finite() && above_min && value <= self.max
    }

    /// `value` if it lies within the bound.
    pub fn check<T: Copy + fmt::Display + ToF64>(&self, value: T) -> Result<T, OutOfRange> {
        if self.contains(value.to_f64()) {
            Ok(value)
        } else {
            Err(OutOfRange {
                key: self.key,
                value: value.to_string(),
                allowed: self.allowed(),
            })
        }
    }

    /// [`Bound::check`] for text, e.g. a command-line value (clap's `value_parser`).
    pub fn parse<T>(&self, text: &str) -> Result<T, String>
    where
        T: Copy + fmt::Display + ToF64 + FromStr,
    {
        let value: T = text
            .trim()
            .parse()
            .map_err(|_| format!("expected a number in {}, got {text:?}", self.allowed()))?;
        self.check(value).map_err(|e| e.to_string())
    }
}

/// Numbers a [`Bound`] can hold. Every bounded integer here is far below 2^53, where f64 is exact.
pub trait ToF64 {
    fn to_f64(self) -> f64;
}

macro_rules! to_f64 {
    ($($t:ty),*) => {$(
        impl ToF64 for $t {
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
to_f64!(u8, u16, u32, u64, usize, f32, f64);

/// Camera frame sides: up to 8K, above what any board here can process in real time.
pub const CAMERA_SIDE: Bound = Bound::closed("camera.size", 1.0, 8192.0);
/// Frames per second asked of a camera or used to pace a file.
pub const FPS: Bound = Bound::positive("camera.fps", 1000.0);
/// A frame that takes longer than this means the camera is gone.
pub const CAMERA_TIMEOUT_MS: Bound = Bound::closed("camera.timeout_ms", 1.0, 600_000.0);
/// The reconnect back-off, first and longest wait.
pub const RECONNECT_MS: Bound = Bound::closed("camera.reconnect_*_ms", 1.0, 3_600_000.0);
/// MMAP buffers in the driver's queue (each one a whole frame).
pub const CAMERA_BUFFERS: Bound = Bound::closed("camera.buffers", 1.0, 32.0);
/// Detect on every N-th frame.
pub const DETECT_EVERY: Bound = Bound::closed("pipeline.detect_every", 1.0, 1000.0);
/// Seconds between stats lines; 0 turns them off.
pub const STATS_INTERVAL_S: Bound = Bound::closed("pipeline.stats_interval_s", 0.0, 86_400.0);
/// Frames a track must be seen before it is reported.
pub const MIN_HITS: Bound = Bound::closed("tracker.min_hits", 1.0, 10_000.0);
/// Frames a track may go unseen before it is dropped.
pub const MAX_MISSES: Bound = Bound::closed("tracker.max_misses", 1.0, 10_000.0);
/// Frames a new label must lead before the track switches to it.
pub const SWITCH_FRAMES: Bound = Bound::closed("tracker.switch_frames", 1.0, 10_000.0);
/// Display sides (PNG and TFT panels): a 4K screen at most.
pub const DISPLAY_SIDE: Bound = Bound::closed("display.width/height", 1.0, 4096.0);
/// SPI clock of a TFT panel.
pub const SPI_HZ: Bound = Bound::closed("display.spi_hz", 1.0, 200_000_000.0);
/// Emit a JSON state line every N frames.
pub const JSON_STATE_EVERY: Bound = Bound::closed("json.state_every", 1.0, 1_000_000.0);
/// MQTT keep-alive.
pub const MQTT_KEEP_ALIVE_S: Bound = Bound::closed("mqtt.keep_alive_s", 1.0, 65_535.0);
/// The slowest MQTT state refresh.
pub const MQTT_STATE_INTERVAL_MS: Bound = Bound::closed("mqtt.state_interval_ms", 1.0, 3_600_000.0);
/// A manifest's crop side as a multiple of the detector's box.
pub const CROP_SCALE: Bound = Bound::closed("crop.scale", 0.25, 8.0);
/// A manifest's crop shift, in box sides.
pub const CROP_SHIFT: Bound = Bound::closed("crop.shift_x/shift_y", -2.0, 2.0);
/// A model file: the bundled ensemble is under 10 MB; nothing sensible is over a gigabyte.
pub const MODEL_FILE_BYTES: Bound = Bound::closed("model file size", 1.0, 1024.0 * 1024.0 * 1024.0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_the_ends_and_refuses_beyond_them() {
        assert_eq!(DISPLAY_SIDE.check(4096u32), Ok(4096));
        assert_eq!(DISPLAY_SIDE.check(1u32), Ok(1));
        let err = DISPLAY_SIDE.check(60_000u32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "display.width/height = 60000 is out of range (allowed: [1, 4096])"
        );
        assert!(DISPLAY_SIDE.check(0u32).is_err());
    }

    #[test]
    fn positive_bounds_refuse_zero_negative_and_non_finite() {
        assert_eq!(FPS.check(0.5f64), Ok(0.5));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e30] {
            assert!(FPS.check(bad).is_err(), "{bad}");
        }
        assert!(FPS.check(0.0f64).unwrap_err().allowed.starts_with('('));
    }

    #[test]
    fn parse_names_the_range_for_text_and_for_numbers() {
        assert_eq!(DETECT_EVERY.parse::<u32>("3"), Ok(3));
        let not_a_number = DETECT_EVERY.parse::<u32>("three").unwrap_err();
        assert!(not_a_number.contains("[1, 1000]"), "{not_a_number}");
        let too_big = DETECT_EVERY.parse::<u32>("5000").unwrap_err();
        assert!(
            too_big.starts_with("pipeline.detect_every = 5000"),
            "{too_big}"
        );
    }
}
