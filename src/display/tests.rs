use std::io::Read;

use embedded_graphics::pixelcolor::{BinaryColor, Rgb888};
use embedded_graphics::prelude::*;
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction};

use super::canvas::Canvas;
use super::fbdev::{Framebuffer, PixelFormat};
use super::oled::{pack_pages, OledScreen, Sh1106Screen, Ssd1306Screen, SH1106_INIT};
use super::ui::{bar_length, driving_part, Layout};
use super::*;
use crate::classify::{FaceResult, Scores};
use crate::output::primary_face;

fn scores(pairs: &[(&str, f32)]) -> Scores {
    Scores(pairs.iter().map(|(l, p)| (l.to_string(), *p)).collect())
}

fn face(label: &str, side: f32) -> FaceResult {
    FaceResult {
        face: 0,
        bbox: [5.0, 5.0, side, side],
        score: Some(0.9),
        label: label.to_string(),
        confidence: 0.8,
        probabilities: scores(&[("happy", 0.8), ("sad", 0.2)]),
        parts: vec![
            ("jaw".into(), scores(&[("happy", 0.6), ("sad", 0.4)])),
            ("eyes".into(), scores(&[("happy", 0.7), ("sad", 0.3)])),
            ("mouth".into(), scores(&[("happy", 0.95), ("sad", 0.05)])),
            ("nose".into(), scores(&[("happy", 0.95), ("sad", 0.05)])),
        ],
        landmarks: None,
    }
}

#[test]
fn layout_follows_the_display_size() {
    let layout = |w, h| Layout::for_size(Size::new(w, h));
    assert_eq!(layout(128, 64), Layout::Mono128x64);
    assert_eq!(layout(128, 32), Layout::Mono128x64);
    assert_eq!(layout(240, 240), Layout::Square240);
    assert_eq!(layout(240, 320), Layout::Square240);
    assert_eq!(layout(320, 240), Layout::Wide320x240);
    assert_eq!(layout(480, 320), Layout::Wide320x240);
    assert_eq!(layout(1920, 1080), Layout::Wide320x240);
    assert_eq!(layout(280, 240), Layout::Square240);
}

#[test]
fn bars_are_proportional_and_clamped() {
    assert_eq!(bar_length(0.0, 136), 0);
    assert_eq!(bar_length(0.5, 136), 68);
    assert_eq!(bar_length(0.87, 100), 87);
    assert_eq!(bar_length(1.0, 136), 136);
    assert_eq!(bar_length(1.2, 136), 136);
    assert_eq!(bar_length(-0.1, 136), 0);
    assert_eq!(bar_length(f32::NAN, 136), 0);
}

#[test]
fn driving_part_is_the_part_most_sure_of_the_fused_label() {
    let f = face("happy", 10.0);
    // mouth and nose tie at 0.95: the earlier one wins.
    assert_eq!(driving_part(&f), Some(("mouth", 0.95)));
    let mut sad = f.clone();
    sad.label = "sad".into();
    assert_eq!(driving_part(&sad), Some(("jaw", 0.4)));
    sad.parts.clear();
    assert_eq!(driving_part(&sad), None);
}

#[test]
fn primary_face_is_the_largest_box() {
    let faces = [face("happy", 10.0), face("sad", 30.0), face("happy", 30.0)];
    assert_eq!(primary_face(&faces), Some(1));
    assert_eq!(primary_face(&[]), None);
    let state = OutputState::new(&faces, None);
    assert_eq!(state.primary_face().map(|f| f.label.as_str()), Some("sad"));
}

#[test]
fn display_specs_parse() {
    let png = DisplayConfig::parse_spec("png:out.png").unwrap();
    assert_eq!(
        png,
        DisplayConfig::Png(PngConfig {
            path: "out.png".into(),
            width: 240,
            height: 240
        })
    );
    let png = DisplayConfig::parse_spec("png:dir/a@b.png@128x64").unwrap();
    assert_eq!(
        png,
        DisplayConfig::Png(PngConfig {
            path: "dir/a@b.png".into(),
            width: 128,
            height: 64
        })
    );
    let oled = DisplayConfig::parse_spec("sh1106:/dev/i2c-3@0x3d").unwrap();
    let DisplayConfig::Sh1106(oled) = oled else {
        panic!("{oled:?}")
    };
    assert_eq!(
        (oled.i2c.as_path(), oled.address),
        (Path::new("/dev/i2c-3"), 0x3d)
    );
    assert!(matches!(
        DisplayConfig::parse_spec("fb:/dev/fb1").unwrap(),
        DisplayConfig::Framebuffer(_)
    ));
    for bad in [
        "png",
        "png:",
        "png:x.png@12",
        "png:x.png@0x10",
        "vga:1",
        "ssd1306:/dev/i2c-1@zz",
    ] {
        assert!(DisplayConfig::parse_spec(bad).is_err(), "{bad}");
    }
}

/// Every driver turns a missing bus or device into an error naming it; the caller logs it as a
/// warning and keeps classifying.
#[test]
fn missing_devices_are_errors_naming_the_device() {
    let configs = [
        "[display]\ndriver = \"ssd1306\"\ni2c = \"/dev/i2c-nonexistent\"\n",
        "[display]\ndriver = \"sh1106\"\ni2c = \"/dev/i2c-nonexistent\"\n",
        "[display]\ndriver = \"st7789\"\nspi = \"/dev/spidev-nonexistent\"\ndc = 25\n",
        "[display]\ndriver = \"ili9341\"\nspi = \"/dev/spidev-nonexistent\"\ndc = 25\n",
        "[display]\ndriver = \"framebuffer\"\ndevice = \"/dev/fb-nonexistent\"\n",
        "[display]\ndriver = \"png\"\npath = \"/nonexistent-dir/x.png\"\n",
    ];
    for text in configs {
        let config = crate::config::Config::from_toml(text, "t").unwrap();
        let display = config.display.unwrap();
        let Err(err) = Display::open(&display) else {
            panic!("{text}: expected an error")
        };
        assert!(err.to_string().contains("nonexistent"), "{err}");
    }
}

#[test]
fn a_plain_file_is_not_a_framebuffer() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let Err(err) = Framebuffer::open(file.path()) else {
        panic!("expected an error")
    };
    assert!(err.to_string().contains("not a framebuffer"), "{err}");
}

#[test]
fn pixels_pack_as_rgb565_and_xrgb8888() {
    let row = [
        Rgb888::new(255, 0, 0),
        Rgb888::new(0, 255, 0),
        Rgb888::new(0, 0, 255),
        Rgb888::new(0x12, 0x34, 0x56),
    ];
    let mut out = [0u8; 16];
    PixelFormat::Rgb565.pack(&row, &mut out);
    assert_eq!(&out[..8], &[0x00, 0xF8, 0xE0, 0x07, 0x1F, 0x00, 0xAA, 0x11]);
    PixelFormat::XRGB8888.pack(&row, &mut out);
    assert_eq!(
        out,
        [0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 0, 0x56, 0x34, 0x12, 0]
    );
    let bgr = PixelFormat::Rgb32 {
        red: 0,
        green: 8,
        blue: 16,
    };
    bgr.pack(&row[3..], &mut out);
    assert_eq!(&out[..4], &[0x12, 0x34, 0x56, 0]);
}

/// Renders into a framebuffer laid over a plain file (with a padded stride and a panning
/// offset), and reads the packed pixels back.
#[test]
fn framebuffer_writes_packed_rows_at_the_stride() {
    for format in [PixelFormat::Rgb565, PixelFormat::XRGB8888] {
        let bpp = format.bytes_per_pixel();
        let (w, h, stride, origin) = (128u32, 64u32, 128 * bpp + 32, 64u64);
        let file = tempfile::tempfile().unwrap();
        let mut fb = Framebuffer::from_file(
            file.try_clone().unwrap(),
            "test".into(),
            Size::new(w, h),
            stride,
            origin,
            format,
        )
        .unwrap();
        let faces = [face("happy", 20.0)];
        let state = OutputState::new(&faces, Some(10.0));
        fb.update(&state).unwrap();

        let mut expected = Canvas::new(Size::new(w, h), Rgb888::BLACK);
        let Ok(()) = ui::draw(&mut expected, &state);
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).unwrap();
        assert_eq!(
            bytes.len() as u64,
            origin + (h as u64 - 1) * stride as u64 + (w as usize * bpp) as u64
        );
        for (x, y) in [(0, 0), (13, 24), (5, 50), (127, 63), (40, 20)] {
            let at = origin as usize + y as usize * stride + x as usize * bpp;
            let mut packed = vec![0u8; bpp];
            format.pack(&[expected.pixel(x, y).unwrap()], &mut packed);
            assert_eq!(&bytes[at..at + bpp], &packed[..], "{format:?} ({x}, {y})");
        }
        // The monochrome layout on a colour framebuffer: light text on a dark background.
        let white = expected.pixels().iter().filter(|p| p.r() > 200).count();
        assert!(white > 100, "{white}");
        // An unchanged frame writes nothing: clobber the file and update again.
        file.set_len(0).unwrap();
        fb.update(&state).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 0);
    }
}

fn oled_canvas(state: &OutputState) -> Canvas<BinaryColor> {
    let mut canvas = Canvas::new(Size::new(128, 64), BinaryColor::Off);
    let Ok(()) = ui::draw(&mut canvas, state);
    canvas
}

fn command(bytes: &[u8]) -> Transaction {
    let mut v = vec![0x00];
    v.extend_from_slice(bytes);
    Transaction::write(0x3c, v)
}

/// The bytes an SSD1306 must receive: the datasheet's initialisation for a 128x64 panel with
/// the internal charge pump, then the whole picture in horizontal addressing mode.
#[test]
fn ssd1306_receives_init_and_the_picture_over_i2c() {
    let faces = [face("happy", 20.0)];
    let state = OutputState::new(&faces, Some(12.0));
    let pages = pack_pages(&oled_canvas(&state), false);

    let mut expected = vec![
        command(&[0xAE]),       // display off
        command(&[0xD5, 0x80]), // clock
        command(&[0xA8, 0x3F]), // multiplex 64
        command(&[0xD3, 0x00]), // offset
        command(&[0x40]),       // start line
        command(&[0x8D, 0x14]), // charge pump on
        command(&[0x20, 0x00]), // horizontal addressing
        command(&[0xDA, 0x12]), // COM pins
        command(&[0xA1]),       // segment remap
        command(&[0xC8]),       // COM scan reversed
        command(&[0xD9, 0x21]), // pre-charge
        command(&[0x81, 0x5F]), // contrast
        command(&[0xDB, 0x40]), // VCOMH (0x40: Adafruit's value, not in the datasheet's table)
        command(&[0xA4]),       // RAM content
        command(&[0xA6]),       // not inverted
        command(&[0x2E]),       // no scrolling
        command(&[0xAF]),       // display on
        command(&[0x21, 0, 127]),
        command(&[0x22, 0, 7]),
    ];
    for chunk in pages.chunks(16) {
        let mut v = vec![0x40];
        v.extend_from_slice(chunk);
        expected.push(Transaction::write(0x3c, v));
    }
    let mut i2c = I2cMock::new(&expected);
    let mut screen = Ssd1306Screen::new(i2c.clone(), 0x3c, false, "mock".into()).unwrap();
    screen.update(&state).unwrap();
    // The same picture again sends nothing.
    screen.update(&state).unwrap();
    drop(screen.release());
    i2c.done();
}

#[test]
fn sh1106_sends_only_changed_pages() {
    let faces = [face("happy", 20.0)];
    let first = OutputState::new(&faces, Some(12.0));
    let second = OutputState::new(&faces, Some(13.0));
    let (a, b) = (
        pack_pages(&oled_canvas(&first), false),
        pack_pages(&oled_canvas(&second), false),
    );
    let page = |pages: &[u8], n: usize| {
        let mut v = vec![0x40];
        v.extend_from_slice(&pages[n * 128..(n + 1) * 128]);
        Transaction::write(0x3c, v)
    };
    let mut init = vec![0x00];
    init.extend_from_slice(&SH1106_INIT);
    let mut expected = vec![Transaction::write(0x3c, init)];
    for n in 0..8 {
        expected.push(command(&[0xB0 | n as u8, 0x02, 0x10]));
        expected.push(page(&a, n));
    }
    // Only the FPS figure changed: it sits in page 0.
    assert!(a[128..] == b[128..] && a[..128] != b[..128]);
    expected.push(command(&[0xB0, 0x02, 0x10]));
    expected.push(page(&b, 0));

    let mut i2c = I2cMock::new(&expected);
    let mut screen = Sh1106Screen::new(i2c.clone(), 0x3c, false, "mock".into()).unwrap();
    screen.update(&first).unwrap();
    screen.update(&second).unwrap();
    drop(screen.release());
    i2c.done();
}

#[test]
fn pages_pack_lsb_at_the_top_and_flip() {
    let mut canvas = Canvas::new(Size::new(128, 64), BinaryColor::Off);
    let Ok(()) = Pixel(Point::new(3, 9), BinaryColor::On).draw(&mut canvas);
    let pages = pack_pages(&canvas, false);
    assert_eq!(pages[128 + 3], 0b10);
    assert_eq!(pages.iter().filter(|b| **b != 0).count(), 1);
    let flipped = pack_pages(&canvas, true);
    // (3, 9) -> (124, 54): page 6, bit 6.
    assert_eq!(flipped[6 * 128 + 124], 1 << 6);
}
