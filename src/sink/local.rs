//! Outputs on the board itself: the display, the GPIO lines, and systemd's readiness and watchdog.
//! They turn the tracker's per-frame state into the same [`OutputState`] a still image gives.

use std::time::{Duration, Instant};

#[cfg(feature = "gpio")]
use embedded_hal::digital::OutputPin;

use crate::classify::FaceResult;
#[cfg(feature = "display")]
use crate::display::Display;
#[cfg(feature = "gpio")]
use crate::gpio::GpioOutputs;
#[cfg(any(feature = "display", feature = "gpio"))]
use crate::output::OutputState;
use crate::sink::{Sink, SinkError};
use crate::track::FrameUpdate;

/// The reported tracks as face results, oldest track first.
pub fn faces_of(update: &FrameUpdate) -> Vec<FaceResult> {
    update
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| FaceResult {
            face: i,
            bbox: t.bbox,
            score: None,
            label: t.label.clone(),
            confidence: t.confidence,
            probabilities: t.probabilities.clone(),
            parts: t.parts.clone(),
            landmarks: None,
        })
        .collect()
}

/// Frames per second over a sliding second, from the stream's own timestamps.
#[cfg(feature = "display")]
#[derive(Default)]
struct FpsMeter {
    window: std::collections::VecDeque<Duration>,
}

#[cfg(feature = "display")]
impl FpsMeter {
    fn tick(&mut self, t: Duration) -> Option<f32> {
        self.window.push_back(t);
        while self
            .window
            .front()
            .is_some_and(|&f| t.saturating_sub(f) > Duration::from_secs(1))
        {
            self.window.pop_front();
        }
        let span = t.saturating_sub(*self.window.front()?).as_secs_f32();
        (self.window.len() > 1 && span > 0.0).then(|| (self.window.len() - 1) as f32 / span)
    }
}

/// Draws every frame's state on a display. A display that fails mid-run (a loose I2C cable) is
/// reported once and then left alone, so inference goes on.
#[cfg(feature = "display")]
pub struct DisplaySink {
    display: Display,
    fps: FpsMeter,
    failed: bool,
}

#[cfg(feature = "display")]
impl DisplaySink {
    pub fn new(display: Display) -> Self {
        DisplaySink {
            display,
            fps: FpsMeter::default(),
            failed: false,
        }
    }
}

#[cfg(feature = "display")]
impl Sink for DisplaySink {
    fn name(&self) -> &str {
        "display"
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        let fps = self.fps.tick(update.stamp.timestamp);
        if self.failed {
            return Ok(());
        }
        let faces = faces_of(update);
        if let Err(e) = self.display.update(&OutputState::new(&faces, fps)) {
            self.failed = true;
            log::warn!("{}: {e}; no more display updates", self.display.name());
        }
        Ok(())
    }
}

/// Switches GPIO lines from every frame's state; `close` returns them to their safe state.
#[cfg(feature = "gpio")]
pub struct GpioSink<P: OutputPin> {
    outputs: GpioOutputs<P>,
}

#[cfg(feature = "gpio")]
impl<P: OutputPin> GpioSink<P> {
    pub fn new(outputs: GpioOutputs<P>) -> Self {
        GpioSink { outputs }
    }
}

#[cfg(feature = "gpio")]
impl<P: OutputPin + Send> Sink for GpioSink<P> {
    fn name(&self) -> &str {
        "gpio"
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        let faces = faces_of(update);
        self.outputs
            .update(&OutputState::new(&faces, None))
            .map_err(|e| SinkError::Config(format!("gpio: {e}")))
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.outputs
            .safe_state()
            .map_err(|e| SinkError::Config(format!("gpio: {e}")))
    }
}

/// Tells systemd (Type=notify) that ferrite is ready, pets the watchdog from the frame loop and
/// announces the stop. Without NOTIFY_SOCKET (not under systemd) every call is a no-op.
pub struct SystemdSink {
    last_pet: Option<Instant>,
    every: Duration,
}

impl SystemdSink {
    /// Sends READY=1; pets the watchdog at half its interval (systemd's advice), once a second
    /// when none is set.
    pub fn ready() -> Self {
        let mut usec = 0;
        let every = if sd_notify::watchdog_enabled(false, &mut usec) {
            Duration::from_micros(usec) / 2
        } else {
            Duration::from_secs(1)
        };
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            log::warn!("systemd notify: {e}");
        }
        SystemdSink {
            last_pet: None,
            every,
        }
    }
}

impl Sink for SystemdSink {
    fn name(&self) -> &str {
        "systemd"
    }

    fn on_frame(&mut self, _update: &FrameUpdate) -> Result<(), SinkError> {
        if self.last_pet.is_none_or(|t| t.elapsed() >= self.every) {
            self.last_pet = Some(Instant::now());
            // A lost notification only risks a watchdog restart, which is what it is for.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Scores;
    use crate::output::OutputState;
    use crate::track::{Stamp, TrackState};

    fn update(t_ms: u64, labels: &[&str]) -> FrameUpdate {
        FrameUpdate {
            stamp: Stamp {
                frame: t_ms,
                timestamp: Duration::from_millis(t_ms),
            },
            detected: true,
            frame_size: [640, 480],
            tracks: labels
                .iter()
                .enumerate()
                .map(|(i, l)| TrackState {
                    track: i as u64 + 1,
                    bbox: [10.0 * i as f32, 0.0, 40.0 + i as f32, 40.0],
                    label: l.to_string(),
                    confidence: 0.9,
                    probabilities: Scores(vec![(l.to_string(), 0.9)]),
                    first_seen: Duration::ZERO,
                    misses: 0,
                    score: 0.9,
                    parts: vec![("mouth".into(), Scores(vec![(l.to_string(), 0.95)]))],
                })
                .collect(),
        }
    }

    #[test]
    fn tracks_become_face_results_with_their_parts() {
        let faces = faces_of(&update(0, &["happy", "sad"]));
        assert_eq!(faces.len(), 2);
        assert_eq!((faces[1].face, faces[1].label.as_str()), (1, "sad"));
        assert_eq!(faces[1].parts[0].1.get("sad"), Some(0.95));
        assert_eq!(
            OutputState::new(&faces, None).primary,
            Some(1),
            "largest box"
        );
    }

    #[cfg(feature = "display")]
    #[test]
    fn fps_comes_from_stream_time() {
        let mut meter = FpsMeter::default();
        assert_eq!(meter.tick(Duration::ZERO), None);
        let mut fps = None;
        for i in 1..=20 {
            fps = meter.tick(Duration::from_millis(i * 100));
        }
        assert!((fps.unwrap() - 10.0).abs() < 0.01, "{fps:?}");
    }

    /// Records (line, level) writes; shared so the test can read it after the sink is closed.
    #[cfg(feature = "gpio")]
    struct Pin(u32, std::sync::Arc<std::sync::Mutex<Vec<(u32, bool)>>>);

    #[cfg(feature = "gpio")]
    impl embedded_hal::digital::ErrorType for Pin {
        type Error = std::convert::Infallible;
    }

    #[cfg(feature = "gpio")]
    impl OutputPin for Pin {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.1.lock().unwrap().push((self.0, false));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.1.lock().unwrap().push((self.0, true));
            Ok(())
        }
    }

    #[cfg(feature = "gpio")]
    #[test]
    fn the_gpio_sink_follows_the_primary_track_and_closes_safe() {
        let config: crate::gpio::GpioConfig = toml::from_str(
            "[face_present]\nline = 4\n[[outputs]]\nline = 17\nlabels = [\"happy\"]\n",
        )
        .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let outputs =
            GpioOutputs::with_pins(&config, |line, _| Ok(Pin(line, log.clone()))).unwrap();
        let mut sink = GpioSink::new(outputs);
        sink.on_frame(&update(0, &["happy"])).unwrap();
        let level = |line| {
            log.lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(l, _)| *l == line)
                .map(|e| e.1)
        };
        assert_eq!((level(4), level(17)), (Some(true), Some(true)));
        sink.on_frame(&update(100, &[])).unwrap();
        assert_eq!((level(4), level(17)), (Some(false), Some(false)));
        sink.on_frame(&update(200, &["happy"])).unwrap();
        sink.close().unwrap();
        assert_eq!(
            (level(4), level(17)),
            (Some(false), Some(false)),
            "safe state"
        );
    }

    #[cfg(feature = "display")]
    #[test]
    fn the_display_sink_renders_the_primary_track() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.png");
        let config: crate::display::DisplayConfig = toml::from_str(&format!(
            "driver = \"png\"\npath = {:?}\nwidth = 128\nheight = 64\n",
            path.display().to_string()
        ))
        .unwrap();
        let mut sink = DisplaySink::new(Display::open(&config).unwrap());
        sink.on_frame(&update(0, &["surprise"])).unwrap();
        let image = image::open(&path).unwrap();
        assert_eq!((image.width(), image.height()), (128, 64));
    }
}
