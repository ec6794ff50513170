//! Bounded fuzzing on stable Rust: proptest mutates the committed seed inputs (tests/fuzz-seeds/:
//! a PNG, JPEG, BMP and PGM of the sample face, a Y4M recording, a config file, a manifest) and
//! every parser a user's file or a camera's bytes reach must answer with a value or an error, never
//! a panic, a hang or an absurd allocation: still-image decoding followed by classification, Y4M
//! reading, config and manifest parsing, and the camera frame conversions (YUYV, UYVY, GREY, MJPEG).
//!
//! CI runs `FUZZ_CASES` cases per target (64, a few seconds each) from a fixed seed, so a CI
//! result never depends on luck; a long run picks its own cases:
//!
//!     FERRITE_FUZZ_CASES=20000 FERRITE_FUZZ_SEED=7 cargo test --release --test it fuzz::
//!
//! A failure prints the minimised input; keep it as a regression test beside the fix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferrite::capture::decode::{grey_to_gray, mjpeg_to_gray, uyvy_to_gray, yuyv_to_gray};
use ferrite::capture::still::decode_image;
use ferrite::capture::y4m::Y4mSource;
use ferrite::capture::CaptureOptions;
use ferrite::classify::{Classifier, ClassifierOptions};
use ferrite::config::Config;
use ferrite::frame::FrameSource;
use ferrite::models::Manifest;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

/// Cases per target unless `FERRITE_FUZZ_CASES` says otherwise.
const FUZZ_CASES: u32 = 64;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn runner() -> TestRunner {
    let cases = env_number("FERRITE_FUZZ_CASES").map_or(FUZZ_CASES, |n| n as u32);
    let config = RunnerConfig {
        cases,
        // The shrunk failing input is printed; no regression file is written into the tree.
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&env_number("FERRITE_FUZZ_SEED").unwrap_or(0).to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
}

fn seed(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-seeds")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A seed with a few bytes overwritten, a run of bytes inserted and, in one case of four, the tail
/// cut: the damage a bad SD card, a dropped USB packet or a half-written file does. Most cases keep
/// their length so that many still decode and the stages after the parser see odd input too.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    let cut = prop_oneof![3 => Just(None), 1 => (1..=len).prop_map(Some)];
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..16),
        proptest::option::of((0..len, proptest::collection::vec(any::<u8>(), 1..64))),
        cut,
    )
        .prop_map(move |(flips, insert, cut)| {
            let mut bytes = seed.clone();
            for (at, value) in flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            if let Some((at, run)) = insert {
                let at = at.min(bytes.len());
                bytes.splice(at..at, run);
            }
            if let Some(keep) = cut {
                bytes.truncate(keep);
            }
            bytes
        })
}

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER
        .get_or_init(|| Classifier::build(&ClassifierOptions::default()).expect("bundled model"))
}

/// `checksummed`: PNG guards its data with CRCs, so nearly every mutation is a decode error there;
/// for the other formats most mutations still decode, and the classifier must see them.
fn image_target(name: &str, checksummed: bool) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let decoded = AtomicU32::new(0);
    let mut runner = runner();
    runner
        .run(&mutated(seed(name)), |bytes| {
            if let Ok(image) = decode_image(&bytes) {
                decoded.fetch_add(1, Ordering::Relaxed);
                // Whatever decodes is classified like any photo: odd sizes must not panic either.
                let mut session = classifier().session().expect("session");
                let _ = session.classify(&image.into_rgb8());
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // Otherwise the mutations would only ever test the decoder's error paths.
    assert!(
        checksummed || decoded.load(Ordering::Relaxed) > 0,
        "{name}: no mutated input decoded"
    );
}

#[test]
fn png_decode_and_classify() {
    image_target("face.png", true);
}

#[test]
fn jpeg_decode_and_classify() {
    image_target("face.jpg", false);
}

#[test]
fn bmp_decode_and_classify() {
    image_target("face.bmp", false);
}

#[test]
fn pgm_decode_and_classify() {
    image_target("face.pgm", false);
}

fn write_temp(bytes: &[u8], suffix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("input{suffix}"));
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    (dir, path)
}

#[test]
fn y4m_recordings() {
    let mut runner = runner();
    runner
        .run(&mutated(seed("clip.y4m")), |bytes| {
            let (_dir, path) = write_temp(&bytes, ".y4m");
            let options = CaptureOptions {
                looping: true,
                ..CaptureOptions::default()
            };
            if let Ok(mut source) = Y4mSource::open(&path, &options) {
                // Looping: a recording of broken frames must still end in an error or frames,
                // never spin. Ten reads are enough to go round the seed's four frames twice.
                for _ in 0..10 {
                    match source.next_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("y4m: {e}"));
}

#[test]
fn config_files() {
    let mut runner = runner();
    runner
        .run(&mutated(seed("ferrite.toml")), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(config) = Config::from_toml(&text, "fuzz.toml") {
                prop_assert!(config.validate("fuzz.toml").is_ok());
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("config: {e}"));
}

#[test]
fn model_manifests() {
    let mut runner = runner();
    runner
        .run(&mutated(seed("manifest.json")), |bytes| {
            let _ = Manifest::parse(&String::from_utf8_lossy(&bytes), "fuzz");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("manifest: {e}"));
}

#[test]
fn camera_frame_conversions() {
    let mut runner = runner();
    let raw = (
        proptest::collection::vec(any::<u8>(), 0..4096),
        0u32..96,
        0u32..96,
        0usize..256,
    );
    runner
        .run(&raw, |(buf, width, height, stride)| {
            let _ = yuyv_to_gray(&buf, width, height, stride);
            let _ = uyvy_to_gray(&buf, width, height, stride);
            let _ = grey_to_gray(&buf, width, height, stride);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("packed frames: {e}"));
    runner
        .run(&mutated(seed("face.jpg")), |bytes| {
            let _ = mjpeg_to_gray(&bytes);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("mjpeg: {e}"));
}
