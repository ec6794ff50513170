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
//! A failure prints the minimised input; keep it as a regression test beside the fix. What each
//! target does with an input lives in fuzz/targets.rs, shared with the libFuzzer targets that
//! `fuzz/run.sh` runs on nightly for as long as one likes.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

#[path = "../../fuzz/targets.rs"]
mod targets;

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

/// `checksummed`: PNG guards its data with CRCs, so nearly every mutation is a decode error there;
/// for the other formats most mutations still decode, and the classifier must see them.
fn image_target(name: &str, checksummed: bool) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let decoded = AtomicU32::new(0);
    let mut runner = runner();
    runner
        .run(&mutated(seed(name)), |bytes| {
            if targets::image_classify(&bytes) {
                decoded.fetch_add(1, Ordering::Relaxed);
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

/// Mutated seeds through one target.
fn bytes_target(name: &str, body: fn(&[u8])) {
    runner()
        .run(&mutated(seed(name)), |bytes| {
            body(&bytes);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn y4m_recordings() {
    bytes_target("clip.y4m", targets::y4m);
}

#[test]
fn config_files() {
    bytes_target("ferrite.toml", targets::config);
}

#[test]
fn model_manifests() {
    bytes_target("manifest.json", targets::manifest);
}

#[test]
fn camera_frame_conversions() {
    // Packed formats: a format byte, width, height, stride, then a buffer of any length.
    let packed = (
        0u8..3,
        0u8..96,
        0u8..96,
        0u16..256,
        proptest::collection::vec(any::<u8>(), 0..4096),
    )
        .prop_map(|(format, width, height, stride, buf)| {
            let mut bytes = vec![format, width, height];
            bytes.extend_from_slice(&stride.to_le_bytes());
            bytes.extend(buf);
            bytes
        });
    runner()
        .run(&packed, |bytes| {
            targets::camera_frame(&bytes);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("packed frames: {e}"));
    // MJPEG: mutated JPEGs; a mutation that breaks the SOI marker is a packed buffer instead.
    bytes_target("face.jpg", targets::camera_frame);
}
