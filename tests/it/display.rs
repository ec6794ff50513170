//! Golden-image tests of every layout through the PNG target: pixel-exact against the PNGs in
//! tests/golden/. After an intended change, look at the new pictures and bless them with
//! `FERRITE_BLESS=1 cargo test --test it display`.

use std::path::PathBuf;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use ferrite::classify::{FaceResult, Scores};
use ferrite::display::canvas::Canvas;
use ferrite::display::png::render;
use ferrite::display::ui::{self, face_icon};
use ferrite::display::{Display, DisplayConfig};
use ferrite::output::OutputState;

const LABELS: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "neutral", "sad", "surprise",
];
const PARTS: [&str; 5] = ["jaw", "eyebrows", "nose", "eyes", "mouth"];

fn scores(values: [f32; 7]) -> Scores {
    Scores(LABELS.iter().map(|l| l.to_string()).zip(values).collect())
}

/// A face whose fused probabilities are `fused`; the part at `driver` gave the winner the most.
fn face(index: usize, bbox: [f32; 4], fused: [f32; 7], driver: usize) -> FaceResult {
    let winner = (0..7)
        .max_by(|a, b| fused[*a].total_cmp(&fused[*b]))
        .unwrap_or(0);
    let parts = PARTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = fused;
            let shift = if i == driver { 0.08 } else { -0.02 * i as f32 };
            v[winner] = (v[winner] + shift).clamp(0.0, 1.0);
            (p.to_string(), scores(v))
        })
        .collect();
    FaceResult {
        face: index,
        bbox,
        score: Some(0.93),
        label: LABELS[winner].to_string(),
        confidence: fused[winner],
        probabilities: scores(fused),
        parts,
        landmarks: None,
    }
}

fn happy_pair() -> Vec<FaceResult> {
    vec![
        face(
            0,
            [10.0, 10.0, 40.0, 40.0],
            [0.02, 0.01, 0.03, 0.1, 0.78, 0.05, 0.01],
            2,
        ),
        face(
            1,
            [100.0, 50.0, 120.0, 120.0],
            [0.01, 0.0, 0.02, 0.87, 0.06, 0.01, 0.03],
            4,
        ),
    ]
}

fn surprised() -> Vec<FaceResult> {
    vec![face(
        0,
        [0.0, 0.0, 90.0, 90.0],
        [0.02, 0.01, 0.21, 0.04, 0.03, 0.01, 0.68],
        1,
    )]
}

fn sad() -> Vec<FaceResult> {
    vec![face(
        0,
        [0.0, 0.0, 90.0, 90.0],
        [0.08, 0.02, 0.1, 0.01, 0.24, 0.55, 0.0],
        0,
    )]
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.png"))
}

fn check_golden(name: &str, image: &image::RgbImage) {
    let path = golden_path(name);
    if std::env::var_os("FERRITE_BLESS").is_some() {
        image.save(&path).expect("write golden");
        eprintln!("blessed {}", path.display());
        return;
    }
    let golden = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with FERRITE_BLESS=1)", path.display()))
        .to_rgb8();
    assert_eq!(golden.dimensions(), image.dimensions(), "{name}: size");
    let differing = golden
        .pixels()
        .zip(image.pixels())
        .filter(|(a, b)| a != b)
        .count();
    if differing > 0 {
        let actual = std::env::temp_dir().join(format!("ferrite-{name}-actual.png"));
        let _ = image.save(&actual);
        panic!(
            "{name}: {differing} pixels differ from {}; see {}",
            path.display(),
            actual.display()
        );
    }
}

#[test]
fn mono_128x64_golden() {
    let faces = happy_pair();
    let state = OutputState::new(&faces, Some(12.4));
    check_golden("mono_128x64", &render(&state, Size::new(128, 64)));
}

#[test]
fn square_240x240_golden() {
    let faces = surprised();
    let state = OutputState::new(&faces, Some(9.8));
    check_golden("square_240x240", &render(&state, Size::new(240, 240)));
}

#[test]
fn wide_320x240_golden() {
    let faces = happy_pair();
    let state = OutputState::new(&faces, Some(14.7));
    check_golden("wide_320x240", &render(&state, Size::new(320, 240)));
}

#[test]
fn square_240x240_sad_golden() {
    let faces = sad();
    let state = OutputState::new(&faces, None);
    check_golden("square_240x240_sad", &render(&state, Size::new(240, 240)));
}

#[test]
fn no_face_goldens() {
    let state = OutputState::new(&[], Some(15.0));
    check_golden("mono_128x64_no_face", &render(&state, Size::new(128, 64)));
    check_golden("wide_320x240_no_face", &render(&state, Size::new(320, 240)));
}

/// Every class's icon side by side, so that a change to one shows up in review.
#[test]
fn icons_golden() {
    let mut canvas = Canvas::new(Size::new(8 * 72, 72), Rgb888::new(12, 16, 24));
    let Ok(()) = face_icon(&mut canvas, Point::new(36, 36), 64, None);
    for (i, label) in LABELS.iter().enumerate() {
        let centre = Point::new(36 + 72 * (i as i32 + 1), 36);
        let Ok(()) = face_icon(&mut canvas, centre, 64, Some(label));
    }
    check_golden("icons", &canvas.to_rgb_image());
}

/// The PNG target writes what `render` draws, and `--display` specs pick the size.
#[test]
fn png_display_writes_the_rendered_picture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.png");
    let spec = format!("png:{}@128x64", path.display());
    let config = DisplayConfig::parse_spec(&spec).expect("spec");
    let mut display = Display::open(&config).expect("open");
    let faces = happy_pair();
    let state = OutputState::new(&faces, Some(12.4));
    display.update(&state).expect("update");
    let written = image::open(&path).expect("read").to_rgb8();
    assert_eq!(written, render(&state, Size::new(128, 64)));
}

/// A display larger than its layout shows the layout centred, the margin in background colour.
#[test]
fn larger_displays_centre_the_layout() {
    let faces = surprised();
    let state = OutputState::new(&faces, Some(9.8));
    let big = render(&state, Size::new(260, 250));
    let small = render(&state, Size::new(240, 240));
    for (x, y, p) in small.enumerate_pixels() {
        assert_eq!(big.get_pixel(x + 10, y + 5), p);
    }
    assert_eq!(big.get_pixel(0, 0), big.get_pixel(259, 249));
    assert_eq!(
        ui::Layout::for_size(Size::new(260, 250)),
        ui::Layout::Square240
    );
}
