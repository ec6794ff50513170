use super::decode::{sigmoid, RawDetection};
use super::*;

fn det(xmin: f32, ymin: f32, size: f32, score: f32) -> RawDetection {
    RawDetection {
        xmin,
        ymin,
        xmax: xmin + size,
        ymax: ymin + size,
        keypoints: [(xmin, ymin); KEYPOINTS],
        score,
    }
}

#[test]
fn anchors_match_the_output_shapes() {
    for model in [DetectorModel::Short, DetectorModel::Long] {
        let (anchors, groups) = generate_anchors(model.input_size(), &model.strides());
        assert_eq!(anchors.len(), 896, "{model:?}");
        assert_eq!(groups, vec![512, 384], "{model:?}");
        // 16x16 grid, two anchors per cell, then 8x8 grid, six per cell.
        assert_eq!(
            anchors[0],
            Anchor {
                x: 0.5 / 16.0,
                y: 0.5 / 16.0
            }
        );
        assert_eq!(anchors[1], anchors[0]);
        assert_eq!(
            anchors[2],
            Anchor {
                x: 1.5 / 16.0,
                y: 0.5 / 16.0
            }
        );
        assert_eq!(
            anchors[32],
            Anchor {
                x: 0.5 / 16.0,
                y: 1.5 / 16.0
            }
        );
        assert_eq!(
            anchors[511],
            Anchor {
                x: 15.5 / 16.0,
                y: 15.5 / 16.0
            }
        );
        assert_eq!(
            anchors[512],
            Anchor {
                x: 0.5 / 8.0,
                y: 0.5 / 8.0
            }
        );
        assert_eq!(anchors[517], anchors[512]);
        assert_eq!(
            anchors[518],
            Anchor {
                x: 1.5 / 8.0,
                y: 0.5 / 8.0
            }
        );
        assert_eq!(
            anchors[895],
            Anchor {
                x: 7.5 / 8.0,
                y: 7.5 / 8.0
            }
        );
    }
}

#[test]
fn sigmoid_is_clipped_and_finite() {
    assert_eq!(sigmoid(0.0), 0.5);
    assert_eq!(sigmoid(1e30), sigmoid(100.0));
    assert!(sigmoid(-1e30) >= 0.0 && sigmoid(-1e30) < 1e-40);
    assert!(sigmoid(f32::NAN).is_nan());
}

#[test]
fn decode_offsets_from_the_anchor_in_input_pixels() {
    let anchors = [Anchor { x: 0.25, y: 0.75 }];
    let mut raw = [0.0f32; COORDS];
    raw[..4].copy_from_slice(&[2.0, -4.0, 20.0, 10.0]);
    raw[4] = 1.0; // right eye x
    raw[5] = -1.0; // right eye y
    let mut out = Vec::new();
    decode(&[3.0], &raw, &anchors, 128.0, 0.5, &mut out);
    assert_eq!(out.len(), 1);
    let d = out[0];
    // anchor centre (32, 96) in input pixels
    assert_eq!((d.xmin, d.ymin, d.xmax, d.ymax), (24.0, 87.0, 44.0, 97.0));
    assert_eq!(d.keypoints[0], (33.0, 95.0));
    assert_eq!(d.keypoints[1], (32.0, 96.0));
    assert!((d.score - sigmoid(3.0)).abs() < 1e-7);
    // Below threshold, NaN scores and non-finite boxes are dropped.
    out.clear();
    decode(&[-3.0], &raw, &anchors, 128.0, 0.5, &mut out);
    decode(&[f32::NAN], &raw, &anchors, 128.0, 0.0, &mut out);
    raw[2] = f32::INFINITY;
    decode(&[3.0], &raw, &anchors, 128.0, 0.5, &mut out);
    assert!(out.is_empty());
}

#[test]
fn nms_merges_overlapping_boxes_weighted_by_score() {
    // IoU of these two: 90x90 / (2 * 100^2 - 90x90) ~ 0.68
    let a = det(0.0, 0.0, 100.0, 0.9);
    let b = det(10.0, 10.0, 100.0, 0.6);
    let out = weighted_nms(vec![b, a], 0.3);
    assert_eq!(out.len(), 1);
    let m = out[0];
    assert_eq!(m.score, 0.9);
    let expect = (0.9 * 0.0 + 0.6 * 10.0) / 1.5;
    assert!((m.xmin - expect).abs() < 1e-4, "{m:?}");
    assert!((m.ymin - expect).abs() < 1e-4);
    assert!((m.xmax - (100.0 + expect)).abs() < 1e-4);
    assert!((m.keypoints[3].0 - expect).abs() < 1e-4);
}

#[test]
fn nms_keeps_distant_boxes_best_first() {
    let a = det(0.0, 0.0, 50.0, 0.8);
    let b = det(200.0, 0.0, 50.0, 0.95);
    // Overlapping a, but below the IoU threshold: 10x50 / (2 * 2500 - 500) = 0.11.
    let c = det(40.0, 0.0, 50.0, 0.7);
    let out = weighted_nms(vec![a, b, c], 0.3);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], b);
    assert_eq!(out[1], a);
    assert_eq!(out[2], c);
}

#[test]
fn nms_terminates_on_degenerate_boxes() {
    let z = det(5.0, 5.0, 0.0, 0.9);
    let out = weighted_nms(vec![z, z, z], 0.3);
    assert_eq!(out.len(), 3);
    assert!(weighted_nms(Vec::new(), 0.3).is_empty());
    // Zero scores (threshold 0 with saturated logits) keep the box unchanged.
    let out = weighted_nms(
        vec![det(0.0, 0.0, 10.0, 0.0), det(1.0, 1.0, 10.0, 0.0)],
        0.3,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].xmin, 0.0);
}

#[test]
fn letterbox_round_trip_and_centring() {
    let sizes = [
        (640, 480),
        (480, 640),
        (512, 512),
        (1, 1),
        (10_000, 3),
        (3, 10_000),
        (1920, 1080),
        (7, 5),
    ];
    for &(w, h) in &sizes {
        for size in [128u32, 256] {
            let lb = Letterbox::new(w, h, size);
            assert!(lb.scaled_w >= 1 && lb.scaled_w <= size, "{lb:?}");
            assert!(lb.scaled_h >= 1 && lb.scaled_h <= size, "{lb:?}");
            assert!(lb.scaled_w == size || lb.scaled_h == size, "{lb:?}");
            assert!(lb.pad_x * 2 + lb.scaled_w <= size && size - (lb.pad_x * 2 + lb.scaled_w) <= 1);
            assert!(lb.pad_y * 2 + lb.scaled_h <= size && size - (lb.pad_y * 2 + lb.scaled_h) <= 1);
            // Frame corners land on the scaled area's corners.
            assert_eq!(
                lb.input_from_frame(0.0, 0.0),
                (lb.pad_x as f32, lb.pad_y as f32)
            );
            let (x, y) = lb.input_from_frame(w as f32, h as f32);
            assert!((x - (lb.pad_x + lb.scaled_w) as f32).abs() < 1e-3, "{lb:?}");
            assert!((y - (lb.pad_y + lb.scaled_h) as f32).abs() < 1e-3, "{lb:?}");
            for &(px, py) in &[(0.0, 0.0), (0.3, 0.7), (0.5, 0.5), (1.0, 1.0)] {
                let (fx, fy) = (px * w as f32, py * h as f32);
                let (ix, iy) = lb.input_from_frame(fx, fy);
                let (bx, by) = lb.frame_from_input(ix, iy);
                let tol = 1e-3 * (w.max(h) as f32);
                assert!(
                    (bx - fx).abs() <= tol && (by - fy).abs() <= tol,
                    "{lb:?} {fx},{fy}"
                );
            }
        }
    }
    let lb = Letterbox::new(640, 480, 128);
    assert_eq!(
        (lb.scaled_w, lb.scaled_h, lb.pad_x, lb.pad_y),
        (128, 96, 0, 16)
    );
}

#[test]
fn shrinking_equals_the_image_crates_thumbnail() {
    // Integer and fractional ratios, both orientations, a 4K frame, and exactly 2x.
    let mut noise = 7u32;
    let mut next = move || {
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        (noise % 256) as u8
    };
    for (w, h, size) in [
        (640, 480, 128),
        (1280, 720, 128),
        (1000, 700, 128),
        (333, 1001, 128),
        (3840, 2160, 256),
        (256, 256, 128),
    ] {
        let lb = Letterbox::new(w, h, size);
        assert!(lb.shrink() >= 2.0, "{w}x{h}");
        let gray = image::GrayImage::from_fn(w, h, |_, _| image::Luma([next()]));
        let rgb = image::RgbImage::from_fn(w, h, |_, _| image::Rgb([next(), next(), next()]));
        let want = |raw: &[u8], channels: usize| {
            let mut data = vec![0.0; lb.tensor_len()];
            lb.place(raw, channels, &mut data);
            data
        };
        let thumb_gray = image::imageops::thumbnail(&gray, lb.scaled_w, lb.scaled_h);
        let thumb_rgb = image::imageops::thumbnail(&rgb, lb.scaled_w, lb.scaled_h);
        assert!(
            lb.tensor_data_gray(&gray) == want(thumb_gray.as_raw(), 1),
            "gray {w}x{h}"
        );
        assert!(
            lb.tensor_data(&rgb) == want(thumb_rgb.as_raw(), 3),
            "rgb {w}x{h}"
        );
    }
}

#[test]
fn letterbox_tensor_pads_black_and_scales_to_unit_range() {
    // A white 4x2 frame in a 128 input: 128x64 white band centred vertically.
    let white = image::RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
    let lb = Letterbox::new(4, 2, 128);
    assert_eq!(
        (lb.scaled_w, lb.scaled_h, lb.pad_x, lb.pad_y),
        (128, 64, 0, 32)
    );
    let data = lb.tensor_data(&white);
    assert_eq!(data.len(), 128 * 128 * 3);
    let at = |x: usize, y: usize, c: usize| data[(y * 128 + x) * 3 + c];
    assert_eq!(at(0, 0, 0), -1.0);
    assert_eq!(at(127, 31, 2), -1.0);
    assert_eq!(at(0, 32, 0), 1.0);
    assert_eq!(at(127, 95, 2), 1.0);
    assert_eq!(at(64, 96, 1), -1.0);
    // Channel order is RGB.
    let red = image::RgbImage::from_pixel(128, 128, image::Rgb([255, 0, 0]));
    let data = Letterbox::new(128, 128, 128).tensor_data(&red);
    assert_eq!(&data[..3], &[1.0, -1.0, -1.0]);
}

#[test]
fn gray_frames_give_the_tensor_and_faces_of_their_rgb_expansion() {
    let astronaut = image::load_from_memory(crate::bench::SAMPLE_JPEG)
        .unwrap()
        .into_rgb8();
    let gray = image::imageops::grayscale(&astronaut);
    // Equal size, block shrink (>= 2x), triangle shrink (< 2x), enlarging; odd sizes pad.
    for (w, h) in [
        (128, 128),
        (512, 512),
        (640, 480),
        (200, 150),
        (101, 77),
        (60, 90),
    ] {
        let g = image::imageops::resize(&gray, w, h, image::imageops::FilterType::Triangle);
        let rgb = image::DynamicImage::ImageLuma8(g.clone()).into_rgb8();
        let lb = Letterbox::new(w, h, 128);
        assert!(
            lb.tensor_data_gray(&g) == lb.tensor_data(&rgb),
            "{w}x{h}: tensors differ"
        );
    }
    let detector = Detector::new(DetectorConfig::default()).unwrap();
    let rgb = image::DynamicImage::ImageLuma8(gray.clone()).into_rgb8();
    let want = detector.detect(&rgb).unwrap();
    assert_eq!(want.len(), 1);
    assert_eq!(detector.detect_gray(&gray).unwrap(), want);
    assert!(detector
        .detect_gray(&image::GrayImage::new(0, 5))
        .unwrap()
        .is_empty());
}

#[test]
fn config_is_validated() {
    assert!(DetectorConfig::default().validate().is_ok());
    let bad = [
        DetectorConfig {
            score_threshold: 1.5,
            ..Default::default()
        },
        DetectorConfig {
            score_threshold: f32::NAN,
            ..Default::default()
        },
        DetectorConfig {
            iou_threshold: -0.1,
            ..Default::default()
        },
        DetectorConfig {
            min_face_size: -1.0,
            ..Default::default()
        },
        DetectorConfig {
            min_face_size: f32::INFINITY,
            ..Default::default()
        },
        DetectorConfig {
            max_faces: 0,
            ..Default::default()
        },
    ];
    for config in bad {
        let err = Detector::new(config.clone()).expect_err("bad config accepted");
        assert!(
            matches!(err, DetectError::InvalidConfig(_)),
            "{config:?}: {err}"
        );
    }
}

#[test]
fn config_deserialises_with_defaults() {
    let c: DetectorConfig =
        serde_json::from_str(r#"{"model": "long", "max_faces": 2}"#).expect("valid json");
    assert_eq!(c.model, DetectorModel::Long);
    assert_eq!(c.max_faces, 2);
    assert_eq!(c.score_threshold, DetectorConfig::default().score_threshold);
    assert!(serde_json::from_str::<DetectorConfig>(r#"{"modle": "long"}"#).is_err());
}

#[test]
fn embedded_models_match_sha256sums() {
    use sha2::{Digest, Sha256};
    let sums = include_str!("../../models/blazeface/SHA256SUMS");
    for (name, bytes) in [
        ("blazeface_short_128.onnx", SHORT_ONNX),
        ("blazeface_long_256.onnx", LONG_ONNX),
    ] {
        let digest: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let line = format!("{digest}  {name}");
        assert!(
            sums.lines().any(|l| l == line),
            "{name}: {digest} not in SHA256SUMS"
        );
    }
}

/// tract on the fixture input vs onnxruntime's outputs (models/blazeface/reference.py).
/// Tolerance 1e-4, relative for values above 1: the long model's saturated logits reach
/// about -290, where tract and onnxruntime differ by ~5e-4 (f32 summation order).
fn parity(model: DetectorModel, name: &str) {
    let size = model.input_size();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let input = image::open(dir.join(format!("blazeface_input_{size}.png")))
        .expect("fixture input")
        .to_rgb8();
    assert_eq!(input.dimensions(), (size as u32, size as u32));
    let data: Vec<f32> = input
        .as_raw()
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    let bytes = std::fs::read(dir.join(format!("blazeface_{name}_ort.f32"))).expect("fixture");
    let expected: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut kernels = vec![ConvKernels::Tract, ConvKernels::Direct(Backend::Portable)];
    kernels.extend(
        [Backend::Avx512, Backend::Neon]
            .into_iter()
            .filter(|b| b.available())
            .map(ConvKernels::Direct),
    );
    for k in kernels {
        let config = DetectorConfig {
            model,
            ..Default::default()
        };
        let detector = Detector::with_kernels(config, k).expect("load");
        let want = match k {
            ConvKernels::Direct(backend) => backend.name(),
            _ => "tract",
        };
        assert_eq!(detector.kernels(), want);
        if let ConvKernels::Direct(_) = k {
            // The first convolution (reading the NHWC image) and every backbone block's
            // depthwise and 1x1 convolution run on ferrite's kernels, except the long model's
            // last 1x1, which tract declutters without its batch axis (`NIHW,OI->OHW`) and
            // keeps. The heads stay tract's.
            let count = |op: &str| {
                let graph = detector.plan.model();
                graph.nodes().iter().filter(|n| n.op().name() == op).count()
            };
            let (depthwise, pointwise) = match model {
                DetectorModel::Short => (16, 16),
                DetectorModel::Long => (32, 31),
            };
            assert_eq!(count("FerriteDepthwise3x3"), depthwise, "{name}");
            assert_eq!(count("FerritePointwise"), pointwise, "{name}");
            assert_eq!(count("FerriteImageConv"), 1, "{name}");
            assert_eq!(count("MoveAxis"), 0, "{name}: the image is read as NHWC");
        }
        parity_of(&detector, &data, &expected, name);
    }
}

fn parity_of(detector: &Detector, data: &[f32], expected: &[f32], name: &str) {
    let outputs = detector
        .run_with(|input| input.copy_from_slice(data))
        .expect("run");
    assert_eq!(outputs.len(), 4);
    let mut offset = 0;
    let mut worst = 0.0f32;
    for (i, shape) in [[1, 512, 1], [1, 384, 1], [1, 512, 16], [1, 384, 16]]
        .iter()
        .enumerate()
    {
        assert_eq!(outputs[i].shape(), shape, "output {i}");
        let got = outputs[i]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .expect("f32");
        let want = &expected[offset..offset + got.len()];
        let (mut abs, mut mag) = (0.0f32, 0.0f32);
        for (g, w) in got.iter().zip(want) {
            abs = abs.max((g - w).abs());
            mag = mag.max(w.abs());
            worst = worst.max((g - w).abs() / w.abs().max(1.0));
        }
        eprintln!("{name} output {i}: max |diff| {abs:e}, max |value| {mag}");
        offset += got.len();
    }
    assert_eq!(offset, expected.len());
    assert!(
        worst <= 1e-4,
        "{name}: max difference {worst} (relative above 1)"
    );
}

#[test]
fn parity_with_onnxruntime_short() {
    parity(DetectorModel::Short, "short_128");
}

#[test]
fn parity_with_onnxruntime_long() {
    parity(DetectorModel::Long, "long_256");
}

#[test]
fn detector_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Detector>();
}

/// The sample face shrunk to `face` pixels (box side) and pasted at (`x`, `y`) on a textured
/// `width x height` frame.
fn small_face_frame(width: u32, height: u32, face: f32, x: i64, y: i64) -> image::RgbImage {
    let astronaut = image::load_from_memory(crate::bench::SAMPLE_JPEG)
        .unwrap()
        .into_rgb8();
    // The detector's box on the 512x512 sample is about 94 px.
    let side = (512.0 * face / 94.0).round() as u32;
    let shrunk = image::imageops::resize(
        &astronaut,
        side,
        side,
        image::imageops::FilterType::Triangle,
    );
    let mut frame = image::RgbImage::from_fn(width, height, |x, y| {
        let v = (96 + (x * 7 + y * 13) % 64) as u8;
        image::Rgb([v, v, v])
    });
    image::imageops::overlay(&mut frame, &shrunk, x, y);
    frame
}

#[test]
fn tiles_find_a_face_the_whole_frame_pass_cannot() {
    // A 60 px face in a 1920x1080 frame is 4 px in the 128x128 whole-frame input.
    let frame = small_face_frame(1920, 1080, 60.0, 1300, 700);
    let untiled = Detector::new(DetectorConfig {
        tiles: Tiles::Off,
        ..DetectorConfig::default()
    })
    .unwrap();
    assert!(untiled.detect(&frame).unwrap().is_empty());
    let tiled = Detector::new(DetectorConfig::default()).unwrap();
    assert_eq!(tiled.tile_levels(1920, 1080), 3);
    let faces = tiled.detect(&frame).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let b = faces[0].bbox;
    // Where the sample's face lands: (178, 81) of 512 scaled by 60/94, plus the offset.
    let scale = 60.0 / 94.0;
    let (want_x, want_y) = (1300.0 + 178.0 * scale, 700.0 + 81.0 * scale);
    assert!(
        (b.x - want_x).abs() < 8.0 && (b.y - want_y).abs() < 8.0,
        "{b:?}"
    );
    assert!((b.w - 60.0).abs() < 12.0, "{b:?}");
    // The gray frame finds it too.
    let gray = image::imageops::grayscale(&frame);
    assert_eq!(tiled.detect_gray(&gray).unwrap().len(), 1);
}

#[test]
fn a_face_straddling_tiles_is_reported_once() {
    // Level-1 tiles of a 1920x1080 frame are 960 wide and start at 0, 480 and 960: a face
    // straddling x = 960 is cut by two tiles and whole in the middle one.
    let frame = small_face_frame(1920, 1080, 150.0, 960 - 130, 300);
    let detector = Detector::new(DetectorConfig {
        tiles: Tiles::Levels(2),
        ..DetectorConfig::default()
    })
    .unwrap();
    let faces = detector.detect(&frame).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
}

/// The gray sample with two tile levels: a patch of the suit scores 0.62 in one level-2 tile.
/// The second opinion finds it nowhere in the crops around it, and keeps the real face.
#[test]
fn the_second_opinion_rejects_a_false_face_found_in_a_tile() {
    let gray = image::imageops::grayscale(
        &image::load_from_memory(crate::bench::SAMPLE_JPEG)
            .unwrap()
            .into_rgb8(),
    );
    let config = DetectorConfig {
        tiles: Tiles::Levels(2),
        verify: false,
        ..DetectorConfig::default()
    };
    let unverified = Detector::new(config.clone())
        .unwrap()
        .detect_gray(&gray)
        .unwrap();
    assert_eq!(unverified.len(), 2, "{unverified:?}");
    assert!(unverified[1].score < CONFIDENT);
    let verified = Detector::new(DetectorConfig {
        verify: true,
        ..config
    })
    .unwrap()
    .detect_gray(&gray)
    .unwrap();
    assert_eq!(verified, unverified[..1]);
}

/// A gray face upscaled from 24 px, as a low camera resolution or a FER2013-sized face gives:
/// the whole-frame pass finds it unsure, and its second opinion lies between the whole-frame
/// and the tile thresholds, so it is kept because the whole-frame pass found it.
#[test]
fn the_second_opinion_keeps_a_blurry_face_the_whole_frame_pass_found() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/astronaut.png");
    let astronaut = image::open(path).unwrap().into_luma8();
    let face = image::imageops::crop_imm(&astronaut, 150, 40, 180, 180).to_image();
    let filter = image::imageops::FilterType::Triangle;
    let low = image::imageops::resize(&face, 24, 24, filter);
    let blurry = image::imageops::resize(&low, 140, 140, filter);
    let mut frame = image::GrayImage::from_pixel(320, 240, image::Luma([110]));
    image::imageops::overlay(&mut frame, &blurry, 90, 50);
    let config = DetectorConfig {
        tiles: Tiles::Off,
        verify: false,
        ..DetectorConfig::default()
    };
    let detector = Detector::new(config.clone()).unwrap();
    let unverified = detector.detect_gray(&frame).unwrap();
    assert_eq!(unverified.len(), 1, "{unverified:?}");
    assert!(unverified[0].score < CONFIDENT, "{unverified:?}");
    let fill: fn(&Letterbox, &image::GrayImage, &mut [f32]) = Letterbox::fill_gray;
    let opinion = detector
        .second_opinion(&frame, fill, &unverified[0])
        .unwrap();
    assert!(
        (VERIFIED_WHOLE_FRAME..VERIFIED).contains(&opinion),
        "second opinion {opinion}: the fixture no longer tells the passes apart"
    );
    let verified = Detector::new(DetectorConfig {
        verify: true,
        ..config
    })
    .unwrap()
    .detect_gray(&frame)
    .unwrap();
    assert_eq!(verified, unverified);
}

#[test]
fn nested_boxes_are_covered_and_neighbours_are_not() {
    let big = BBox {
        x: 0.0,
        y: 0.0,
        w: 100.0,
        h: 100.0,
    };
    assert!(big.covers(
        &BBox {
            x: 50.0,
            y: 50.0,
            w: 30.0,
            h: 30.0
        },
        NESTED
    ));
    assert!(!big.covers(
        &BBox {
            x: 90.0,
            y: 90.0,
            w: 30.0,
            h: 30.0
        },
        NESTED
    ));
    assert!(!big.covers(&big, NESTED), "not smaller");
}

/// The crop is calibrated on whole-frame boxes: tiles must not move the box of a face the
/// whole-frame pass finds (merging it with its tile detections grew the sample's box by 4 px).
#[test]
fn tiles_keep_the_whole_frame_box_of_a_face_it_finds() {
    let sample = image::load_from_memory(crate::bench::SAMPLE_JPEG)
        .unwrap()
        .into_rgb8();
    let detect = |tiles| {
        Detector::new(DetectorConfig {
            tiles,
            ..DetectorConfig::default()
        })
        .unwrap()
        .detect(&sample)
        .unwrap()
    };
    let whole = detect(Tiles::Off);
    assert_eq!(whole.len(), 1);
    assert_eq!(detect(Tiles::Levels(2)), whole);
}
