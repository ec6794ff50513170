//! Capture: decoding camera buffers, file and recording sources, and a real camera where one exists.

use std::io::Cursor;
use std::process::Command;

use ferrite::align::rgb_to_gray;
use ferrite::capture::decode::{
    grey_to_gray, mjpeg_to_gray, uyvy_to_gray, with_default_huffman_tables, yuyv_to_gray,
};
use ferrite::capture::{open_source, CaptureOptions, Y4mChroma, Y4mSource, Y4mWriter};
use ferrite::frame::{CaptureError, FrameSource};
use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, Luma, Rgb, RgbImage};

/// A frame with structure at several scales: gradients, a bright disc, a dark bar.
fn synthetic(width: u32, height: u32, seed: u32) -> GrayImage {
    GrayImage::from_fn(width, height, |x, y| {
        let (cx, cy) = (width as i64 / 2, height as i64 / 3);
        let (dx, dy) = (x as i64 - cx, y as i64 - cy);
        let v = if dx * dx + dy * dy < (height as i64 / 5).pow(2) {
            230
        } else if (height / 2..height / 2 + 6).contains(&y) {
            20
        } else {
            (x * 160 / width + y * 60 / height + seed) % 200 + 20
        };
        Luma([v as u8])
    })
}

/// A colour image and its BT.601 luma (what a JPEG encoder stores as Y): a luma decode must give
/// the luma whatever the chroma.
fn coloured(gray: &GrayImage) -> (RgbImage, GrayImage) {
    let rgb = RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
        let g = i32::from(gray.get_pixel(x, y)[0]);
        let tint = ((x * 7 + y * 3) % 60) as i32 - 30;
        let c = |v: i32| v.clamp(0, 255) as u8;
        Rgb([c(g + tint), c(g - tint / 2), c(g + 2 * tint)])
    });
    let luma = GrayImage::from_fn(gray.width(), gray.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(f64::from);
        Luma([(0.299 * r + 0.587 * g + 0.114 * b).round() as u8])
    });
    (rgb, luma)
}

fn rgb_of(gray: &GrayImage) -> RgbImage {
    coloured(gray).0
}

fn encode_jpeg_rgb(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut out), quality)
        .encode_image(img)
        .unwrap();
    out
}

fn mean_abs_diff(a: &GrayImage, b: &GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Removes every DHT segment (before the first scan), as MJPEG cameras send frames.
fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut pos = 2;
    loop {
        assert_eq!(jpeg[pos], 0xFF);
        let marker = jpeg[pos + 1];
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[pos..]);
            return out;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
}

#[test]
fn yuyv_uyvy_and_grey_buffers_decode_to_their_luma() {
    let (w, h) = (6u32, 3u32);
    let gray = synthetic(w, h, 7);
    let stride = 2 * w as usize + 4;
    let mut yuyv = vec![0xEE; stride * h as usize];
    let mut uyvy = vec![0xEE; stride * h as usize];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let v = gray.get_pixel(x as u32, y as u32)[0];
            let chroma = (x * 37 + y * 11) as u8;
            yuyv[y * stride + 2 * x] = v;
            yuyv[y * stride + 2 * x + 1] = chroma;
            uyvy[y * stride + 2 * x] = chroma;
            uyvy[y * stride + 2 * x + 1] = v;
        }
    }
    assert_eq!(yuyv_to_gray(&yuyv, w, h, stride).unwrap(), gray);
    assert_eq!(uyvy_to_gray(&uyvy, w, h, stride).unwrap(), gray);

    let gstride = w as usize + 2;
    let mut grey = vec![0xEE; gstride * h as usize];
    for y in 0..h as usize {
        grey[y * gstride..y * gstride + w as usize]
            .copy_from_slice(&gray.as_raw()[y * w as usize..(y + 1) * w as usize]);
    }
    assert_eq!(grey_to_gray(&grey, w, h, gstride).unwrap(), gray);
    // A buffer cut short is a corrupt frame, not a panic.
    assert!(matches!(
        yuyv_to_gray(&yuyv[..stride], w, h, stride),
        Err(CaptureError::CorruptFrame(_))
    ));
}

#[test]
fn mjpeg_decodes_to_the_encoded_luma() {
    let (rgb, luma) = coloured(&synthetic(160, 120, 3));
    let jpeg = encode_jpeg_rgb(&rgb, 92);
    let decoded = mjpeg_to_gray(&jpeg).unwrap();
    assert_eq!(decoded.dimensions(), (160, 120));
    let mad = mean_abs_diff(&decoded, &luma);
    assert!(mad < 2.0, "mean abs diff {mad}");
    // The same as a full RGB decode converted to gray the way the still-image pipeline does.
    let reference = rgb_to_gray(&image::load_from_memory(&jpeg).unwrap().into_rgb8());
    let mad = mean_abs_diff(&decoded, &reference);
    assert!(mad < 1.0, "mean abs diff vs image crate {mad}");

    // Trailing zero padding (bytesused covering the whole buffer) is tolerated.
    let mut padded = jpeg.clone();
    padded.extend_from_slice(&[0; 300]);
    assert_eq!(mjpeg_to_gray(&padded).unwrap(), decoded);
}

#[test]
fn mjpeg_without_huffman_tables_decodes_like_with_them() {
    let gray = synthetic(64, 48, 11);
    let jpeg = encode_jpeg_rgb(&rgb_of(&gray), 80);
    let stripped = strip_dht(&jpeg);
    assert!(
        stripped.len() < jpeg.len(),
        "the encoder wrote DHT segments"
    );
    assert!(!stripped.windows(2).any(|w| w == [0xFF, 0xC4]));
    // zune-jpeg alone fills default tables only for frames with an "AVI1" APP0 marker.
    assert!(with_default_huffman_tables(&stripped).is_some());
    assert!(with_default_huffman_tables(&jpeg).is_none());
    assert_eq!(
        mjpeg_to_gray(&stripped).unwrap(),
        mjpeg_to_gray(&jpeg).unwrap()
    );
}

#[test]
fn truncated_or_damaged_mjpeg_is_a_corrupt_frame() {
    let jpeg = encode_jpeg_rgb(&rgb_of(&synthetic(64, 48, 5)), 90);
    for cut in [jpeg.len() / 2, jpeg.len() - 3, 10, 1] {
        assert!(
            matches!(
                mjpeg_to_gray(&jpeg[..cut]),
                Err(CaptureError::CorruptFrame(_))
            ),
            "cut at {cut}"
        );
    }
    // A damaged header (the frame header's marker overwritten).
    let mut bad = jpeg.clone();
    let sof = bad.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bad[sof + 1] = 0x00;
    assert!(matches!(
        mjpeg_to_gray(&bad),
        Err(CaptureError::CorruptFrame(_))
    ));
    assert!(matches!(
        mjpeg_to_gray(&[]),
        Err(CaptureError::CorruptFrame(_))
    ));
}

fn frames_of(source: &mut dyn FrameSource) -> Vec<Result<(u64, GrayImage), String>> {
    let mut out = Vec::new();
    loop {
        match source.next_frame() {
            Ok(Some(f)) => out.push(Ok((f.index, f.image))),
            Ok(None) => return out,
            Err(e) if e.is_transient() => out.push(Err(e.to_string())),
            Err(e) => panic!("fatal: {e}"),
        }
    }
}

#[test]
fn y4m_round_trips_exactly_in_every_chroma_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (7u32, 5u32); // odd sides: chroma planes round up
    let frames: Vec<GrayImage> = (0..3).map(|i| synthetic(w, h, i * 40)).collect();
    for chroma in [
        Y4mChroma::Mono,
        Y4mChroma::C420,
        Y4mChroma::C422,
        Y4mChroma::C444,
        Y4mChroma::C444Alpha,
    ] {
        let path = dir.path().join(format!("{chroma:?}.y4m"));
        let mut writer = Y4mWriter::create(&path, w, h, (25, 1), chroma).unwrap();
        for f in &frames {
            writer.write_frame(f).unwrap();
        }
        writer.finish().unwrap();

        let mut source = open_source(path.to_str().unwrap(), &CaptureOptions::default()).unwrap();
        assert!(source.describe().contains("7x5"), "{}", source.describe());
        let mut got = Vec::new();
        while let Some(f) = source.next_frame().unwrap() {
            got.push(f);
        }
        assert_eq!(got.len(), 3, "{chroma:?}");
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.index, i as u64);
            assert_eq!(f.image, frames[i], "{chroma:?} frame {i}");
            // The file's 25 fps timeline.
            assert_eq!(f.timestamp.as_millis(), 40 * i as u128);
        }
    }
}

#[test]
fn y4m_reads_what_ffmpeg_writes_and_loops() {
    // ffmpeg's header: frame rate as a fraction, interlacing, aspect and its X extensions.
    let (w, h) = (4u32, 2u32);
    let mut data =
        b"YUV4MPEG2 W4 H2 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n"
            .to_vec();
    for i in 0..2u8 {
        data.extend_from_slice(b"FRAME\n");
        data.extend((0..8).map(|k| i * 100 + k));
        data.extend_from_slice(&[128; 4]);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ffmpeg.y4m");
    std::fs::write(&path, &data).unwrap();
    let opts = CaptureOptions {
        looping: true,
        ..CaptureOptions::default()
    };
    let mut source = Y4mSource::open(&path, &opts).unwrap();
    let mut firsts = Vec::new();
    for _ in 0..5 {
        let f = source.next_frame().unwrap().unwrap();
        assert_eq!(f.image.dimensions(), (w, h));
        firsts.push((f.index, f.image.as_raw()[0]));
    }
    assert_eq!(firsts, [(0, 0), (1, 100), (2, 0), (3, 100), (4, 0)]);
}

#[test]
fn malformed_y4m_is_fatal_and_a_cut_recording_just_ends() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.y4m");
    std::fs::write(&bad, b"YUV4MPEG2 W640 Hx F30:1\nFRAME\n").unwrap();
    let err = open_source(bad.to_str().unwrap(), &CaptureOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, CaptureError::Fatal(_)), "{err}");
    assert!(err.to_string().contains("bad.y4m"), "{err}");

    let not_y4m = dir.path().join("clip.y4m");
    std::fs::write(&not_y4m, b"RIFF....AVI \n").unwrap();
    assert!(matches!(
        open_source(not_y4m.to_str().unwrap(), &CaptureOptions::default()).err(),
        Some(CaptureError::Fatal(_))
    ));

    // A frame whose data runs out mid-plane: the end of the stream, after the complete frames.
    let cut = dir.path().join("cut.y4m");
    let mut data = b"YUV4MPEG2 W2 H2 F10:1 Cmono\nFRAME\n\x01\x02\x03\x04FRAME\n\x05".to_vec();
    std::fs::write(&cut, &data).unwrap();
    let mut source = Y4mSource::open(&cut, &CaptureOptions::default()).unwrap();
    assert_eq!(
        source.next_frame().unwrap().unwrap().image.as_raw(),
        &[1, 2, 3, 4]
    );
    assert!(source.next_frame().unwrap().is_none());

    // Data that does not match the header loses sync: fatal.
    data =
        b"YUV4MPEG2 W2 H2 F10:1 Cmono\nFRAME\n\x01\x02\x03\x04\x05FRAME\n\x01\x02\x03\x04".to_vec();
    std::fs::write(&cut, &data).unwrap();
    let mut source = Y4mSource::open(&cut, &CaptureOptions::default()).unwrap();
    assert!(source.next_frame().unwrap().is_some());
    assert!(matches!(source.next_frame(), Err(CaptureError::Fatal(_))));
}

#[test]
fn image_directory_drops_a_corrupt_file_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic(32, 24, 1);
    let c = synthetic(32, 24, 2);
    a.save(dir.path().join("001.png")).unwrap();
    std::fs::write(dir.path().join("002.png"), b"\x89PNG but not really").unwrap();
    // JPEG through the same source, read as luma.
    std::fs::write(dir.path().join("003.jpg"), encode_jpeg_rgb(&rgb_of(&c), 95)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

    let mut source = open_source(dir.path().to_str().unwrap(), &CaptureOptions::default()).unwrap();
    assert!(
        source.describe().contains("3 images"),
        "{}",
        source.describe()
    );
    let frames = frames_of(source.as_mut());
    assert_eq!(frames.len(), 3);
    let (i0, img0) = frames[0].as_ref().unwrap();
    assert_eq!((*i0, img0), (0, &a));
    assert!(frames[1].as_ref().unwrap_err().contains("002.png"));
    let (i2, img2) = frames[2].as_ref().unwrap();
    assert_eq!(*i2, 2, "the dropped frame keeps its index");
    assert!(mean_abs_diff(img2, &coloured(&c).1) < 2.0);
}

#[test]
fn image_directory_drops_a_truncated_jpeg_and_turns_by_exif() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = encode_jpeg_rgb(&rgb_of(&synthetic(32, 24, 3)), 95);
    std::fs::write(dir.path().join("001.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    // The same frame with an EXIF Orientation of 6 (turn clockwise): APP1 spliced in after SOI.
    let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&u16::try_from(2 + 6 + tiff.len()).unwrap().to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.append(&mut tiff);
    let turned = [&jpeg[..2], &app1, &jpeg[2..]].concat();
    std::fs::write(dir.path().join("002.jpg"), turned).unwrap();

    let mut source = open_source(dir.path().to_str().unwrap(), &CaptureOptions::default()).unwrap();
    let frames = frames_of(source.as_mut());
    assert_eq!(frames.len(), 2);
    let err = frames[0].as_ref().unwrap_err();
    assert!(
        err.contains("001.jpg") && err.contains("truncated"),
        "{err}"
    );
    let (_, upright) = frames[1].as_ref().unwrap();
    assert_eq!(upright.dimensions(), (24, 32));
}

#[test]
fn single_image_loops_at_the_requested_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("still.png");
    synthetic(16, 16, 0).save(&path).unwrap();
    let opts = CaptureOptions {
        looping: true,
        fps: Some(50.0),
        ..CaptureOptions::default()
    };
    let mut source = open_source(path.to_str().unwrap(), &opts).unwrap();
    let t = std::time::Instant::now();
    let mut stamps = Vec::new();
    for _ in 0..4 {
        stamps.push(source.next_frame().unwrap().unwrap().timestamp.as_millis());
    }
    assert_eq!(stamps, [0, 20, 40, 60]);
    assert!(t.elapsed().as_millis() >= 55);
}

#[test]
fn empty_directory_and_missing_paths_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    for spec in [
        dir.path().to_str().unwrap().to_string(),
        dir.path().join("nope.png").to_str().unwrap().to_string(),
        "/dev/video-does-not-exist".to_string(),
    ] {
        let err = open_source(&spec, &CaptureOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::Fatal(_)), "{spec}: {err}");
    }
}

fn has_video_nodes() -> bool {
    std::fs::read_dir("/dev").is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("video"))
    })
}

#[test]
fn devices_command_without_cameras_says_so() {
    if has_video_nodes() {
        eprintln!("skipped: this machine has V4L2 devices (see real_camera_streams_frames)");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("devices")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no V4L2 capture devices found\n"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["devices", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// Runs against the first capture device that offers a format ferrite decodes (a UVC webcam,
/// vivid); skips with a message where there is none.
#[cfg(feature = "v4l2")]
#[test]
fn real_camera_streams_frames() {
    use ferrite::capture::{list_devices, PixelFormat, Size, V4l2Source};
    use std::path::Path;

    let Some(device) = list_devices()
        .into_iter()
        .find(|d| d.capture && d.formats.iter().any(|f| f.supported))
    else {
        crate::needs::available(
            "v4l2",
            false,
            "no V4L2 capture device with a supported format",
        );
        return;
    };
    let opts = CaptureOptions {
        size: Size::new(320, 240),
        fps: Some(15.0),
        formats: PixelFormat::DEFAULT_PREFERENCE.to_vec(),
        ..CaptureOptions::default()
    };
    let mut source = V4l2Source::open(Path::new(&device.path), &opts).unwrap();
    eprintln!("streaming {}", source.describe());
    let mut good = 0;
    for _ in 0..10 {
        match source.next_frame() {
            Ok(Some(f)) => {
                assert!(f.image.width() > 0 && f.image.height() > 0);
                good += 1;
            }
            Ok(None) => panic!("a camera stream does not end"),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }
    assert!(good > 0, "no frame decoded: {:?}", source.stats());
}
