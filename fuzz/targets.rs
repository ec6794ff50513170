//! What each fuzz target does with one input, shared by the libFuzzer targets (fuzz_targets/*.rs,
//! nightly) and the bounded proptest harness that CI runs on stable (tests/it/fuzz.rs includes this
//! file with `#[path]`), so both exercise the same code and CI compiles these bodies on every run.
//! Each must return or panic; a panic, hang or abort is the finding.

// Each libFuzzer binary uses one of these functions.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrite::capture::decode::{grey_to_gray, mjpeg_to_gray, uyvy_to_gray, yuyv_to_gray};
use ferrite::capture::still::decode_image;
use ferrite::capture::y4m::Y4mSource;
use ferrite::capture::CaptureOptions;
use ferrite::classify::{Classifier, ClassifierOptions};
use ferrite::config::Config;
use ferrite::frame::FrameSource;
use ferrite::models::Manifest;

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER
        .get_or_init(|| Classifier::build(&ClassifierOptions::default()).expect("bundled model"))
}

/// Any bytes as a still image: decoded (format from content, EXIF orientation applied), and what
/// decodes is classified as the `classify` command would. True when it decoded.
pub fn image_classify(bytes: &[u8]) -> bool {
    let Ok(image) = decode_image(bytes) else {
        return false;
    };
    let mut session = classifier().session().expect("session");
    let _ = session.classify(&image.into_rgb8());
    true
}

/// Any bytes as a looping .y4m recording: reading must end in frames or an error, never spin or
/// allocate what a header claims without checking it. Ten reads go round the seed's four frames
/// twice.
pub fn y4m(bytes: &[u8]) {
    // Y4mSource reads a path, as the product does: one scratch file per process and thread.
    thread_local! {
        static SCRATCH: PathBuf = std::env::temp_dir().join(format!(
            "ferrite-fuzz-{}-{:?}.y4m",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    SCRATCH.with(|path| {
        std::fs::write(path, bytes).expect("scratch file");
        let options = CaptureOptions {
            looping: true,
            ..CaptureOptions::default()
        };
        if let Ok(mut source) = Y4mSource::open(path, &options) {
            for _ in 0..10 {
                match source.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let _ = std::fs::remove_file(path);
    });
}

/// Any text as a config file: a config or an error, and a config that parses has passed the same
/// bounds as the command line.
pub fn config(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(config) = Config::from_toml(&text, "fuzz.toml") {
        assert!(
            config.validate("fuzz.toml").is_ok(),
            "parsed but out of bounds"
        );
    }
}

/// Any text as a model manifest: a manifest or an error, and a parsed one's crop geometry is usable.
pub fn manifest(bytes: &[u8]) {
    if let Ok(manifest) = Manifest::parse(&String::from_utf8_lossy(bytes), "fuzz") {
        let _ = manifest.crop_geometry();
    }
}

/// A camera buffer as a driver hands it over. An input starting with a JPEG SOI is an MJPEG frame;
/// otherwise the first five bytes choose the packed format (0 YUYV, 1 UYVY, 2 GREY, modulo 3),
/// width, height and stride (u16 little-endian), and the rest is the buffer, short or odd-sized.
pub fn camera_frame(bytes: &[u8]) {
    if bytes.starts_with(&[0xff, 0xd8]) {
        let _ = mjpeg_to_gray(bytes);
        return;
    }
    let [format, width, height, stride_lo, stride_hi, buf @ ..] = bytes else {
        return;
    };
    let (width, height) = (u32::from(*width), u32::from(*height));
    let stride = usize::from(u16::from_le_bytes([*stride_lo, *stride_hi]));
    let _ = match format % 3 {
        0 => yuyv_to_gray(buf, width, height, stride),
        1 => uyvy_to_gray(buf, width, height, stride),
        _ => grey_to_gray(buf, width, height, stride),
    };
}
