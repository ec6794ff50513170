//! The lines themselves, through the character device (linux-embedded-hal, `gpio` feature).

use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;

use super::{GpioConfig, GpioError, GROUPS};
use crate::output::OutputState;

/// A `change` line's pulse when its `pulse_ms` is unset.
const DEFAULT_PULSE_MS: u64 = 200;

/// Opens a gpiochip by path (`/dev/gpiochip4`), by name (`gpiochip4`) or by label
/// (`pinctrl-rp1`): labels are stable across kernels and boards where chip numbers are not.
pub fn open_chip(spec: &str) -> Result<Chip, GpioError> {
    let chip_error = |e: &dyn std::fmt::Display| GpioError::Chip {
        chip: spec.to_string(),
        reason: e.to_string(),
    };
    if spec.starts_with('/') {
        return Chip::new(spec).map_err(|e| chip_error(&e));
    }
    let mut present = Vec::new();
    if let Ok(chips) = linux_embedded_hal::gpio_cdev::chips() {
        for chip in chips.flatten() {
            if chip.label() == spec || chip.name() == spec {
                return Ok(chip);
            }
            present.push(format!("{} ({})", chip.name(), chip.label()));
        }
    }
    let present = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(", ")
    };
    Err(GpioError::ChipNotFound(spec.to_string(), present))
}

/// Requests `offset` as an output at physical level `high`.
pub fn output_pin(
    chip: &Chip,
    offset: u32,
    high: bool,
    consumer: &str,
) -> Result<CdevPin, GpioError> {
    let line_error = |e: &dyn std::fmt::Display| GpioError::Line {
        line: offset,
        reason: e.to_string(),
    };
    // `Chip::get_line` needs `&mut`; a second handle to the same chip is cheap.
    let mut chip = Chip::new(chip.path()).map_err(|e| line_error(&e))?;
    let handle = chip
        .get_line(offset)
        .and_then(|l| l.request(LineRequestFlags::OUTPUT, u8::from(high), consumer))
        .map_err(|e| line_error(&e))?;
    CdevPin::new(handle).map_err(|e| line_error(&e))
}

#[derive(Debug, Clone, PartialEq)]
enum Role {
    Labels(Vec<String>),
    FacePresent,
    Change,
}

struct Output<P> {
    line: u32,
    pin: P,
    role: Role,
    active_low: bool,
    safe_active: bool,
    pulse: Option<Duration>,
    pulse_until: Option<Instant>,
    matched: bool,
    /// Logical state last written; pins are written only when it changes.
    written: Option<bool>,
}

impl<P: OutputPin> Output<P> {
    fn write(&mut self, active: bool) -> Result<(), GpioError> {
        if self.written == Some(active) {
            return Ok(());
        }
        let high = active != self.active_low;
        let result = if high {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        };
        result.map_err(|e| GpioError::Line {
            line: self.line,
            reason: format!("{e:?}"),
        })?;
        self.written = Some(active);
        Ok(())
    }
}

/// The GPIO outputs; call [`GpioOutputs::update`] once per frame.
pub struct GpioOutputs<P: OutputPin> {
    outputs: Vec<Output<P>>,
    min_confidence: f32,
    last_label: Option<String>,
}

impl GpioOutputs<CdevPin> {
    /// Opens the chip and requests every configured line at its safe state.
    pub fn new(config: &GpioConfig) -> Result<Self, GpioError> {
        let chip = open_chip(&config.chip)?;
        log::info!("GPIO: {} ({})", chip.name(), chip.label());
        GpioOutputs::with_pins(config, |line, high| {
            output_pin(&chip, line, high, "ferrite")
        })
    }
}

impl<P: OutputPin> GpioOutputs<P> {
    /// Builds the outputs with pins from `open(line, initial_physical_level)`; tests pass
    /// recording pins.
    pub fn with_pins(
        config: &GpioConfig,
        mut open: impl FnMut(u32, bool) -> Result<P, GpioError>,
    ) -> Result<Self, GpioError> {
        let mut specs = Vec::new();
        if let Some(l) = &config.face_present {
            specs.push((
                l.line,
                Role::FacePresent,
                l.active_low,
                l.pulse_ms,
                l.safe_active,
            ));
        }
        if let Some(l) = &config.change {
            let pulse = Some(l.pulse_ms.filter(|ms| *ms > 0).unwrap_or(DEFAULT_PULSE_MS));
            specs.push((l.line, Role::Change, l.active_low, pulse, l.safe_active));
        }
        for o in &config.outputs {
            if o.labels.is_empty() {
                return Err(GpioError::Config(format!(
                    "line {}: labels is empty",
                    o.line
                )));
            }
            let labels = expand_labels(&o.labels);
            specs.push((
                o.line,
                Role::Labels(labels),
                o.active_low,
                o.pulse_ms,
                o.safe_active,
            ));
        }
        let mut outputs: Vec<Output<P>> = Vec::new();
        for (line, role, active_low, pulse_ms, safe_active) in specs {
            if outputs.iter().any(|o| o.line == line) {
                return Err(GpioError::Config(format!(
                    "line {line} is configured twice"
                )));
            }
            let active_low = active_low.unwrap_or(config.active_low);
            let pin = open(line, safe_active != active_low)?;
            outputs.push(Output {
                line,
                pin,
                role,
                active_low,
                safe_active,
                pulse: pulse_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
                pulse_until: None,
                matched: false,
                written: Some(safe_active),
            });
        }
        Ok(GpioOutputs {
            outputs,
            min_confidence: config.min_confidence,
            last_label: None,
        })
    }

    pub fn update(&mut self, state: &OutputState) -> Result<(), GpioError> {
        self.update_at(state, Instant::now())
    }

    /// [`GpioOutputs::update`] at a given time; pulses end at the first update after they
    /// expire, so call it at least as often as the shortest pulse.
    pub fn update_at(&mut self, state: &OutputState, now: Instant) -> Result<(), GpioError> {
        let label = state
            .primary_face()
            .filter(|f| f.confidence >= self.min_confidence)
            .map(|f| f.label.clone());
        let changed = label.is_some() && label != self.last_label;
        let face_present = !state.faces.is_empty();
        let mut first_error = None;
        for output in &mut self.outputs {
            let matched = match &output.role {
                Role::FacePresent => face_present,
                Role::Change => changed,
                Role::Labels(labels) => label
                    .as_deref()
                    .is_some_and(|l| labels.iter().any(|x| x == l || x == "any")),
            };
            let rising = matched && (!output.matched || output.role == Role::Change);
            output.matched = matched;
            let active = match output.pulse {
                None => matched,
                Some(len) => {
                    if rising {
                        output.pulse_until = Some(now + len);
                    }
                    output.pulse_until.is_some_and(|until| now < until)
                }
            };
            if let Err(e) = output.write(active) {
                first_error.get_or_insert(e);
            }
        }
        self.last_label = label;
        first_error.map_or(Ok(()), Err)
    }

    /// Puts every line in its safe state; tries them all, reports the first failure.
    pub fn safe_state(&mut self) -> Result<(), GpioError> {
        let mut first_error = None;
        for output in &mut self.outputs {
            output.pulse_until = None;
            if let Err(e) = output.write(output.safe_active) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl<P: OutputPin> Drop for GpioOutputs<P> {
    fn drop(&mut self) {
        if let Err(e) = self.safe_state() {
            log::warn!("GPIO: could not restore the safe state: {e}");
        }
    }
}

fn expand_labels(labels: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for label in labels {
        match GROUPS.iter().find(|(g, _)| g == label) {
            Some(("any", _)) => out.push("any".to_string()),
            Some((_, members)) => out.extend(members.iter().map(|m| m.to_string())),
            None => out.push(label.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::convert::Infallible;
    use std::rc::Rc;

    use super::*;
    use crate::classify::{FaceResult, Scores};

    type Log = Rc<RefCell<Vec<(u32, bool)>>>;

    /// Records every physical level written, with its line.
    struct RecordingPin {
        line: u32,
        log: Log,
    }

    impl embedded_hal::digital::ErrorType for RecordingPin {
        type Error = Infallible;
    }

    impl OutputPin for RecordingPin {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.log.borrow_mut().push((self.line, false));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.log.borrow_mut().push((self.line, true));
            Ok(())
        }
    }

    fn face(label: &str, confidence: f32, side: f32) -> FaceResult {
        FaceResult {
            face: 0,
            bbox: [0.0, 0.0, side, side],
            score: None,
            label: label.to_string(),
            confidence,
            probabilities: Scores(vec![(label.to_string(), confidence)]),
            parts: Vec::new(),
            landmarks: None,
        }
    }

    fn config(toml_text: &str) -> GpioConfig {
        toml::from_str(toml_text).expect("gpio config")
    }

    /// Outputs over recording pins, with the initial levels each line was requested at.
    fn outputs(cfg: &GpioConfig) -> (GpioOutputs<RecordingPin>, Log, Vec<(u32, bool)>) {
        let log = Log::default();
        let mut initial = Vec::new();
        let outputs = GpioOutputs::with_pins(cfg, |line, high| {
            initial.push((line, high));
            Ok(RecordingPin {
                line,
                log: Rc::clone(&log),
            })
        })
        .expect("outputs");
        (outputs, log, initial)
    }

    fn take(log: &Log) -> Vec<(u32, bool)> {
        std::mem::take(&mut *log.borrow_mut())
    }

    const LEDS: &str = r#"
        [[outputs]]
        line = 17
        labels = ["happy"]
        [[outputs]]
        line = 5
        labels = ["negative"]
    "#;

    #[test]
    fn labels_map_to_lines_and_groups_expand() {
        let (mut out, log, initial) = outputs(&config(LEDS));
        assert_eq!(initial, [(17, false), (5, false)]);
        let happy = [face("happy", 0.9, 50.0)];
        out.update(&OutputState::new(&happy, None)).unwrap();
        assert_eq!(take(&log), [(17, true)]);
        // Writes happen only on change.
        out.update(&OutputState::new(&happy, None)).unwrap();
        assert_eq!(take(&log), []);
        for negative in ["angry", "disgust", "fear", "sad"] {
            let faces = [face(negative, 0.9, 50.0)];
            out.update(&OutputState::new(&faces, None)).unwrap();
            let log = take(&log);
            assert!(
                log.contains(&(5, true)) || log.is_empty(),
                "{negative}: {log:?}"
            );
            assert_eq!(out.outputs[1].written, Some(true), "{negative}");
        }
        let neutral = [face("neutral", 0.9, 50.0)];
        out.update(&OutputState::new(&neutral, None)).unwrap();
        assert_eq!(take(&log), [(5, false)]);
    }

    #[test]
    fn the_largest_face_decides() {
        let (mut out, log, _) = outputs(&config(LEDS));
        let faces = [face("sad", 0.9, 20.0), face("happy", 0.6, 80.0)];
        out.update(&OutputState::new(&faces, None)).unwrap();
        assert_eq!(take(&log), [(17, true)]);
    }

    #[test]
    fn active_low_inverts_the_level_and_can_be_overridden_per_line() {
        let cfg = config(
            r#"
            active_low = true
            [[outputs]]
            line = 17
            labels = ["happy"]
            [[outputs]]
            line = 5
            labels = ["sad"]
            active_low = false
            "#,
        );
        let (mut out, log, initial) = outputs(&cfg);
        // Inactive at start: high for the active-low line, low for the other.
        assert_eq!(initial, [(17, true), (5, false)]);
        let happy = [face("happy", 0.9, 50.0)];
        out.update(&OutputState::new(&happy, None)).unwrap();
        assert_eq!(take(&log), [(17, false)]);
        let sad = [face("sad", 0.9, 50.0)];
        out.update(&OutputState::new(&sad, None)).unwrap();
        assert_eq!(take(&log), [(17, true), (5, true)]);
    }

    #[test]
    fn face_present_line_follows_the_face_count() {
        let cfg = config("[face_present]\nline = 6\n");
        let (mut out, log, _) = outputs(&cfg);
        let faces = [face("neutral", 0.3, 50.0)];
        out.update(&OutputState::new(&faces, None)).unwrap();
        out.update(&OutputState::new(&faces, None)).unwrap();
        out.update(&OutputState::new(&[], None)).unwrap();
        assert_eq!(take(&log), [(6, true), (6, false)]);
    }

    #[test]
    fn change_line_pulses_when_the_label_changes() {
        let cfg = config("[change]\nline = 13\npulse_ms = 100\n");
        let (mut out, log, _) = outputs(&cfg);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let happy = [face("happy", 0.9, 50.0)];
        let sad = [face("sad", 0.9, 50.0)];
        out.update_at(&OutputState::new(&happy, None), ms(0))
            .unwrap();
        assert_eq!(take(&log), [(13, true)]);
        out.update_at(&OutputState::new(&happy, None), ms(50))
            .unwrap();
        assert_eq!(take(&log), []);
        out.update_at(&OutputState::new(&happy, None), ms(100))
            .unwrap();
        assert_eq!(take(&log), [(13, false)]);
        // Losing the face is not a change; a new label is.
        out.update_at(&OutputState::new(&[], None), ms(150))
            .unwrap();
        out.update_at(&OutputState::new(&sad, None), ms(200))
            .unwrap();
        assert_eq!(take(&log), [(13, true)]);
        out.update_at(&OutputState::new(&happy, None), ms(250))
            .unwrap();
        out.update_at(&OutputState::new(&happy, None), ms(349))
            .unwrap();
        assert_eq!(take(&log), [], "a change during a pulse extends it");
        out.update_at(&OutputState::new(&happy, None), ms(350))
            .unwrap();
        assert_eq!(take(&log), [(13, false)]);
    }

    #[test]
    fn label_line_pulses_instead_of_staying_on() {
        let cfg = config("[[outputs]]\nline = 26\nlabels = [\"surprise\"]\npulse_ms = 150\n");
        let (mut out, log, _) = outputs(&cfg);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let surprise = [face("surprise", 0.9, 50.0)];
        out.update_at(&OutputState::new(&surprise, None), ms(0))
            .unwrap();
        out.update_at(&OutputState::new(&surprise, None), ms(100))
            .unwrap();
        out.update_at(&OutputState::new(&surprise, None), ms(150))
            .unwrap();
        out.update_at(&OutputState::new(&surprise, None), ms(400))
            .unwrap();
        assert_eq!(take(&log), [(26, true), (26, false)]);
    }

    #[test]
    fn low_confidence_counts_as_no_label() {
        let mut cfg = config(LEDS);
        cfg.min_confidence = 0.5;
        let (mut out, log, _) = outputs(&cfg);
        let unsure = [face("happy", 0.4, 50.0)];
        out.update(&OutputState::new(&unsure, None)).unwrap();
        assert_eq!(take(&log), []);
    }

    #[test]
    fn safe_state_on_drop_and_on_request() {
        let cfg = config(
            r#"
            [face_present]
            line = 6
            safe_active = true
            active_low = true
            [[outputs]]
            line = 17
            labels = ["any"]
            "#,
        );
        let (mut out, log, initial) = outputs(&cfg);
        assert_eq!(initial, [(6, false), (17, false)]);
        out.update(&OutputState::new(&[], None)).unwrap();
        assert_eq!(take(&log), [(6, true)], "no face: line 6 inactive (high)");
        let faces = [face("fear", 0.9, 50.0)];
        out.update(&OutputState::new(&faces, None)).unwrap();
        assert_eq!(take(&log), [(6, false), (17, true)]);
        out.safe_state().unwrap();
        assert_eq!(take(&log), [(17, false)]);
        out.update(&OutputState::new(&[], None)).unwrap();
        take(&log);
        drop(out);
        assert_eq!(take(&log), [(6, false)], "drop restores the safe state");
    }

    #[test]
    fn a_line_configured_twice_is_an_error() {
        let cfg =
            config("[face_present]\nline = 17\n[[outputs]]\nline = 17\nlabels = [\"happy\"]\n");
        let result = GpioOutputs::with_pins(&cfg, |line, _| {
            Ok(RecordingPin {
                line,
                log: Log::default(),
            })
        });
        assert!(matches!(result, Err(GpioError::Config(_))));
    }

    #[test]
    fn a_missing_chip_is_an_error_that_names_it() {
        let Err(err) = open_chip("no-such-gpiochip-label") else {
            panic!("expected an error")
        };
        assert!(err.to_string().contains("no-such-gpiochip-label"), "{err}");
        let Err(err) = open_chip("/dev/no-such-gpiochip") else {
            panic!("expected an error")
        };
        assert!(err.to_string().contains("/dev/no-such-gpiochip"), "{err}");
    }
}
