//! End-to-end tests of the `ferrite` binary on fixtures.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn astronaut() -> PathBuf {
    root().join("assets/astronaut.png")
}

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("the ferrite binary runs")
}

/// [`ferrite`], killed after `limit`, for a test whose failure would be a hang. The output goes
/// through files: a full pipe would stop the process before it ends.
fn ferrite_within(args: &[&str], limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("the ferrite binary runs");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferrite {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    }
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn astronaut_is_one_happy_face_with_the_documented_keys() {
    let out = ferrite(&["classify", s(&astronaut()), "--threads", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let face = &lines[0];
    for key in [
        "file",
        "face",
        "box",
        "score",
        "label",
        "confidence",
        "probabilities",
        "parts",
    ] {
        assert!(face.get(key).is_some(), "missing {key}: {face}");
    }
    assert_eq!(face["label"], "happy", "{face}");
    assert_eq!(face["face"], 0);
    let bbox: Vec<f64> = face["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // The face sits around x 170-260, y 40-150 in the 512x512 portrait.
    assert!(
        bbox[0] > 120.0 && bbox[0] < 220.0 && bbox[1] > 10.0 && bbox[1] < 110.0,
        "{bbox:?}"
    );
    let probs = face["probabilities"].as_object().unwrap();
    assert_eq!(probs.len(), 7);
    let total: f64 = probs.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-3);
    let parts = face["parts"].as_object().unwrap();
    let names: Vec<&str> = parts.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5);
    for part in ["jaw", "eyebrows", "nose", "eyes", "mouth"] {
        assert!(parts.contains_key(part), "{names:?}");
    }
}

#[test]
fn bad_files_get_error_lines_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("not-an-image.png");
    fs::write(&fake, b"this is text, not a PNG").unwrap();
    let missing = dir.path().join("missing.jpg");
    let out = ferrite(&["classify", s(&fake), s(&astronaut()), s(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["file"], s(&fake));
    assert!(
        lines[0]["error"].as_str().unwrap().contains("image"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["file"], s(&astronaut()));
    assert!(lines[1].get("label").is_some());
    assert_eq!(lines[2]["file"], s(&missing));
    assert!(lines[2].get("error").is_some());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 3 input(s) failed"), "{stderr}");
}

#[test]
fn directories_are_walked_in_order_and_no_face_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("b")).unwrap();
    fs::copy(astronaut(), dir.path().join("b/face.png")).unwrap();
    let blank = image::RgbImage::from_fn(200, 150, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 60])
    });
    blank.save(dir.path().join("a.png")).unwrap();
    fs::write(
        dir.path().join("notes.txt"),
        "ignored: not an image extension",
    )
    .unwrap();
    let out = ferrite(&["classify", s(dir.path()), "--threads", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "the gradient has no face: {lines:?}");
    assert!(lines[0]["file"].as_str().unwrap().ends_with("b/face.png"));

    let empty = tempfile::tempdir().unwrap();
    let out = ferrite(&["classify", s(empty.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json_lines(&out)[0]["error"]
        .as_str()
        .unwrap()
        .contains("no images"));
}

#[test]
fn no_detect_treats_the_image_as_one_face() {
    let dir = tempfile::tempdir().unwrap();
    let crop = dir.path().join("crop.png");
    image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 4 + y) as u8]))
        .save(&crop)
        .unwrap();
    let out = ferrite(&["classify", "--no-detect", s(&crop)]);
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["box"], serde_json::json!([0.0, 0.0, 48.0, 48.0]));
    assert!(lines[0]["score"].is_null());
}

#[test]
fn pretty_prints_a_table() {
    let out = ferrite(&["classify", "--pretty", s(&astronaut())]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("FILE"), "{text}");
    assert!(text.contains("happy"), "{text}");
}

/// A board profile's f16 must not make a CPU without FP16 arithmetic (this x86_64 host, a Pi 4)
/// emulate it: the binary warns and runs the stored model, with the same result.
#[cfg(target_arch = "x86_64")]
#[test]
fn f16_without_fp16_arithmetic_warns_and_runs_the_stored_model() {
    let image = astronaut();
    let args = |precision| {
        vec![
            "classify",
            s(&image),
            "--threads",
            "1",
            "--model",
            "fer2013-48-fp32",
            "--precision",
            precision,
        ]
    };
    let f16 = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args("f16"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(f16.status.success());
    let stderr = String::from_utf8_lossy(&f16.stderr);
    assert!(stderr.contains("no FP16 arithmetic"), "{stderr}");
    assert_eq!(json_lines(&f16), json_lines(&ferrite(&args("stored"))));
    let bad = ferrite(&["classify", s(&astronaut()), "--precision", "half"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn models_lists_the_bundled_default() {
    let out = ferrite(&["models"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let default = ferrite::models::default_model();
    assert!(
        text.lines()
            .any(|l| l.contains(default) && l.contains("(default)")),
        "{text}"
    );
    let out = ferrite(&["models", "--json"]);
    let manifests: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(manifests.as_array().unwrap().len() >= 2);
}

#[test]
fn a_tampered_model_is_a_one_line_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("tests/fixtures/ensemble");
    for f in ["manifest.json", "model.onnx"] {
        fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    let mut bytes = fs::read(dir.path().join("model.onnx")).unwrap();
    bytes[100] ^= 1;
    fs::write(dir.path().join("model.onnx"), bytes).unwrap();
    let out = ferrite(&[
        "classify",
        "--model",
        s(dir.path()),
        "--allow-test-fixture",
        s(&astronaut()),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_test_fixture_is_never_presented_as_a_classifier() {
    let fixture = root().join("tests/fixtures/ensemble");
    let out = ferrite(&["classify", "--model", s(&fixture), s(&astronaut())]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test fixture"));
}

#[test]
fn bad_option_values_are_usage_errors() {
    let out = ferrite(&["classify", "--threads", "many", s(&astronaut())]);
    assert_eq!(out.status.code(), Some(2));
    let out = ferrite(&["classify", "--score-threshold", "1.5", s(&astronaut())]);
    assert_eq!(out.status.code(), Some(2));
    let out = ferrite(&["classify", "--crop-scale", "-1", s(&astronaut())]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn eval_counts_a_labelled_tree_and_skips_unknown_classes() {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("happy", 2), ("sadness", 1), ("contempt", 1)] {
        fs::create_dir(dir.path().join(class)).unwrap();
        for i in 0..n {
            image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 3 + y * i) as u8]))
                .save(dir.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let fixture = root().join("tests/fixtures/ensemble");
    let out = ferrite(&[
        "eval",
        "--no-detect",
        "--allow-test-fixture",
        "--model",
        s(&fixture),
        "--json",
        s(dir.path()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["skipped_unknown_class"], 1);
    let matrix = report["matrix"].as_array().unwrap();
    let labels: Vec<&str> = report["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let row_total = |label: &str| -> u64 {
        let i = labels.iter().position(|l| *l == label).unwrap();
        matrix[i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(row_total("happy"), 2);
    assert_eq!(row_total("sad"), 1, "sadness is read as sad");
}

#[test]
fn links_back_up_a_directory_tree_do_not_repeat_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 4 + y) as u8]))
        .save(tree.join("sub/crop.png"))
        .unwrap();
    std::os::unix::fs::symlink(".", tree.join("sub/a")).unwrap();
    std::os::unix::fs::symlink("..", tree.join("sub/b")).unwrap();
    // Two such links made the walk exponential: a hang, so the run gets a time limit.
    let out = ferrite_within(
        &["classify", "--no-detect", "--threads", "1", s(&tree)],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["file"], s(&tree.join("sub/crop.png")));
}

#[test]
fn eval_of_a_missing_directory_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dataset");
    let out = ferrite(&["eval", s(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(s(&missing)), "{stderr}");
    assert!(out.stdout.is_empty(), "no matrix over nothing");
}

#[test]
fn eval_counts_what_it_cannot_read_as_failed_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("happy")).unwrap();
    image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 3 + y) as u8]))
        .save(tree.join("happy/0.png"))
        .unwrap();
    fs::write(tree.join("happy/cut.jpg"), half_of(&astronaut_jpeg())).unwrap();
    // An input directory without images has no class; it used to be skipped as one.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let fixture = root().join("tests/fixtures/ensemble");
    let out = ferrite(&[
        "eval",
        "--no-detect",
        "--allow-test-fixture",
        "--model",
        s(&fixture),
        "--json",
        s(&tree),
        s(&empty),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 of 3 input(s) failed"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counted: u64 = report["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1, "the cut JPEG is not counted as a prediction");
}

fn astronaut_jpeg() -> Vec<u8> {
    fs::read(root().join("assets/astronaut.jpg")).unwrap()
}

fn half_of(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len() / 2].to_vec()
}

#[test]
fn a_truncated_jpeg_gets_an_error_line_and_the_rest_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.jpg");
    fs::write(&cut, half_of(&astronaut_jpeg())).unwrap();
    let out = ferrite(&["classify", "--threads", "1", s(&cut), s(&astronaut())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["file"], s(&cut));
    let error = lines[0]["error"].as_str().unwrap();
    assert!(error.contains("truncated"), "{error}");
    assert_eq!(lines[1]["label"], "happy");
    assert!(stderr.contains("1 of 2 input(s) failed"), "{stderr}");
}

#[test]
fn calibrate_crop_measures_what_it_can_read_and_exits_1_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // A training-style crop, made the way the calibration's own unit test makes them.
    let frame = image::open(astronaut()).unwrap().into_rgb8();
    let detector = ferrite::detect::Detector::new(Default::default()).unwrap();
    let faces = detector.detect(&frame).unwrap();
    let geometry = ferrite::align::CropGeometry {
        scale: 1.3,
        shift_x: 0.0,
        shift_y: 0.06,
        rotate: true,
    };
    let gray = ferrite::align::rgb_to_gray(&frame);
    ferrite::align::crop_face(&gray, &faces[0], &geometry, 96)
        .save(dir.path().join("face.png"))
        .unwrap();
    fs::write(dir.path().join("cut.jpg"), half_of(&astronaut_jpeg())).unwrap();
    let out = ferrite(&["calibrate-crop", s(dir.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["images"], 1, "{found}");
    assert_eq!(found["detected"], 1, "{found}");
    assert!(stderr.contains("1 input(s) could not be read"), "{stderr}");
}

#[path = "../../src/capture/exif_fixture.rs"]
mod exif_fixture;
use exif_fixture::exif_orientation;

fn save_jpeg(path: &Path, image: &image::RgbImage, exif: Option<Vec<u8>>) {
    fs::write(path, exif_fixture::jpeg(image, exif)).unwrap();
}

fn face_box(out: &Output) -> Vec<f64> {
    let lines = json_lines(out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["label"], "happy", "{}", lines[0]);
    lines[0]["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Photos stored turned, with the EXIF orientation that turns them back, are classified as
/// displayed and their boxes are in displayed pixels.
#[test]
fn turned_photos_are_classified_as_their_exif_orientation_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let upright = image::open(astronaut()).unwrap().into_rgb8();
    let reference = dir.path().join("upright.jpg");
    save_jpeg(&reference, &upright, None);
    let upside_down = dir.path().join("upside-down.jpg");
    save_jpeg(
        &upside_down,
        &image::imageops::rotate180(&upright),
        Some(exif_orientation(3)),
    );
    // Orientation 6: the viewer turns it clockwise, so it is stored turned anticlockwise.
    let on_its_side = dir.path().join("on-its-side.jpg");
    save_jpeg(
        &on_its_side,
        &image::imageops::rotate270(&upright),
        Some(exif_orientation(6)),
    );
    let expected = face_box(&ferrite(&["classify", s(&reference)]));
    for photo in [&upside_down, &on_its_side] {
        let found = face_box(&ferrite(&["classify", s(photo)]));
        let off = found
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(off < 4.0, "{}: {found:?} vs {expected:?}", photo.display());
    }
}

#[test]
fn landmarks_are_in_frame_pixels_on_the_face() {
    let out = ferrite(&["classify", "--landmarks", s(&astronaut())]);
    assert!(out.status.success());
    let face = &json_lines(&out)[0];
    let points = face["landmarks"].as_array().unwrap();
    assert_eq!(points.len(), 68);
    let b: Vec<f64> = face["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mean = |axis: usize| {
        points
            .iter()
            .map(|p| p[axis].as_f64().unwrap())
            .sum::<f64>()
            / 68.0
    };
    // The landmarks' centroid sits inside the detected box (the nose region).
    assert!(
        mean(0) > b[0] && mean(0) < b[0] + b[2],
        "{} vs {b:?}",
        mean(0)
    );
    assert!(
        mean(1) > b[1] && mean(1) < b[1] + b[3],
        "{} vs {b:?}",
        mean(1)
    );
    let without = ferrite(&["classify", s(&astronaut())]);
    assert!(json_lines(&without)[0].get("landmarks").is_none());
}

#[cfg(feature = "display")]
#[test]
fn display_png_shows_the_classified_face() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("face.png");
    let spec = format!("png:{}@128x64", png.display());
    let out = ferrite(&[
        "classify",
        s(&astronaut()),
        "--threads",
        "1",
        "--display",
        &spec,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out).len(), 1);
    let image = image::open(&png).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (128, 64));
    // White pixels drawn (the label, icon and bars), not a blank screen.
    let on = image.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    assert!(on > 300, "{on} lit pixels");

    let bad = ferrite(&["classify", s(&astronaut()), "--display", "vga:0"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[cfg(feature = "display")]
#[test]
fn a_missing_display_is_a_warning_and_classification_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferrite.toml");
    fs::write(
        &config,
        "[display]\ndriver = \"ssd1306\"\ni2c = \"/dev/i2c-nonexistent\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args([
            "classify",
            s(&astronaut()),
            "--threads",
            "1",
            "--config",
            s(&config),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/i2c-nonexistent") && stderr.contains("continuing"),
        "{stderr}"
    );

    fs::write(&config, "[display]\ndriver = \"png\"\nwidht = 3\n").unwrap();
    let out = ferrite(&["classify", s(&astronaut()), "--config", s(&config)]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ferrite.toml:3:1"), "{stderr}");
}

#[test]
fn a_bundled_int8_model_is_timed_against_its_float_sibling_unless_kept() {
    let classify = |extra: &[&str], kernels: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args([
                "classify",
                s(&astronaut()),
                "--threads",
                "1",
                "--model",
                "fer2013-48-int8",
            ])
            .args(extra)
            .env("RUST_LOG", "ferrite=info")
            .env("FERRITE_CONV", kernels)
            .output()
            .expect("the ferrite binary runs")
    };
    // The portable kernels run both formats on any CPU, quickly enough for a test.
    let out = classify(&[], "portable");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("measured at start-up"))
        .unwrap_or_else(|| panic!("no timing line: {stderr}"));
    // Which one wins depends on this CPU; either way both are named with their times.
    assert!(
        line.contains("fer2013-48-int8") && line.contains("fer2013-48-fp32"),
        "{line}"
    );
    assert!(
        line.contains("running fer2013-48-fp32") || line.contains("keeping fer2013-48-int8"),
        "{line}"
    );
    assert_eq!(json_lines(&out)[0]["label"], "happy");

    let kept = classify(&["--keep-model"], "portable");
    assert!(kept.status.success());
    assert!(!String::from_utf8_lossy(&kept.stderr).contains("measured at start-up"));
}

#[test]
fn ferrite_conv_picks_the_convolution_kernels_and_bench_names_them() {
    let bench = |kernels: &str, model: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["bench", "--graphs-only", "--profile", "--model", model])
            .args(["--runs", "2", "--warmup", "0", "--json"])
            .env("RUST_LOG", "off")
            .env("FERRITE_CONV", kernels)
            .output()
            .expect("the ferrite binary runs")
    };
    for (kernels, model, names, ops, direct) in [
        (
            "tract",
            "fer2013-48-fp32",
            ["tract", "tract"],
            ["FerriteDepthwise3x3", "FerriteConvChain"],
            false,
        ),
        (
            "portable",
            "fer2013-48-fp32",
            ["direct-portable", "direct-portable"],
            ["FerriteDepthwise3x3", "FerriteConvChain"],
            true,
        ),
        (
            "portable",
            "fer2013-48-int8",
            ["direct-portable", "direct-int8-portable"],
            ["FerriteDepthwise3x3", "FerriteQConvChain"],
            true,
        ),
    ] {
        let out = bench(kernels, model);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2, "detect graph and ensemble graph");
        for (row, op) in rows.iter().zip(ops) {
            assert_eq!(row["conv_kernels"], names[1]);
            assert_eq!(row["detector_kernels"], names[0]);
            let ops: Vec<&str> = row["profile"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["op"].as_str().unwrap())
                .collect();
            assert_eq!(
                ops.contains(&op),
                direct,
                "{kernels} {}: {ops:?}",
                row["stage"]
            );
        }
    }
    let bad = bench("cuda", "fer2013-48-fp32");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("FERRITE_CONV") && stderr.contains("expected auto, tract"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn bench_times_one_graph_with_its_operator_profile() {
    let out = ferrite(&[
        "bench",
        "--graphs-only",
        "--graph",
        "ensemble",
        "--profile",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["stage"], "ensemble graph");
    assert_eq!(rows[0]["precision"], "stored");
    let profile = rows[0]["profile"].as_array().expect("profile");
    // The dense layers: tract's matrix products, or ferrite's int8 ones.
    assert!(
        profile.iter().any(|o| {
            let op = o["op"].as_str().unwrap();
            op.contains("MatMul") || op == "FerriteQMatVec"
        }),
        "{profile:?}"
    );
    let bad = ferrite(&["bench", "--graph", "ensemble"]);
    assert_eq!(bad.status.code(), Some(2), "--graph needs --graphs-only");
}
