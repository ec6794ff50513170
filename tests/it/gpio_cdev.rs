//! GPIO through a real character device, wherever one is present (skips with a message where
//! none is: CI containers and this VM have no /dev/gpiochip*). Lines are only driven when
//! FERRITE_GPIO_TEST_LINE names one that is safe to toggle (e.g. `pinctrl-rp1:17` with an LED),
//! because a test must not switch whatever a board has wired to an arbitrary line.

use ferrite::classify::{FaceResult, Scores};
use ferrite::gpio::{open_chip, GpioConfig, GpioOutputs, OutputConfig};
use ferrite::output::OutputState;

fn chips() -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut chips: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gpiochip"))
        })
        .collect();
    chips.sort();
    chips
}

#[test]
fn gpiochips_open_by_path_and_by_label() {
    let chips = chips();
    if !crate::needs::available(
        "gpiochip",
        !chips.is_empty(),
        "no /dev/gpiochip* on this machine",
    ) {
        return;
    }
    for path in chips {
        let chip = open_chip(&path.display().to_string()).expect("open by path");
        let label = chip.label().to_string();
        eprintln!(
            "{}: label {label:?}, {} lines",
            path.display(),
            chip.num_lines()
        );
        if !label.is_empty() {
            let again = open_chip(&label).expect("open by label");
            assert!(!again.label().is_empty());
        }
    }
}

#[test]
fn a_line_follows_the_label_and_returns_to_its_safe_state() {
    let spec = std::env::var("FERRITE_GPIO_TEST_LINE");
    let how = "set FERRITE_GPIO_TEST_LINE=CHIP:LINE to drive a real line";
    let Ok(spec) = spec.map_err(|_| crate::needs::available("gpio-line", false, how)) else {
        return;
    };
    let (chip, line) = spec.rsplit_once(':').expect("CHIP:LINE");
    let line: u32 = line.parse().expect("line number");
    let config = GpioConfig {
        chip: chip.to_string(),
        active_low: false,
        min_confidence: 0.0,
        face_present: None,
        change: None,
        outputs: vec![OutputConfig {
            line,
            labels: vec!["happy".into()],
            active_low: None,
            pulse_ms: None,
            safe_active: false,
        }],
    };
    let mut outputs = GpioOutputs::new(&config).expect("open");
    let face = FaceResult {
        face: 0,
        bbox: [0.0, 0.0, 10.0, 10.0],
        score: None,
        label: "happy".into(),
        confidence: 0.9,
        probabilities: Scores(vec![("happy".into(), 0.9)]),
        parts: Vec::new(),
        landmarks: None,
    };
    let faces = [face];
    outputs.update(&OutputState::new(&faces, None)).expect("on");
    outputs.update(&OutputState::new(&[], None)).expect("off");
    drop(outputs);
    // The line is free again once the outputs are dropped.
    let mut chip = open_chip(chip).expect("chip");
    let info = chip.get_line(line).and_then(|l| l.info()).expect("info");
    assert!(!info.is_used(), "line {line} still requested");
}
