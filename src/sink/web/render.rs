//! Drawing the boxes and labels on a frame, and encoding it as JPEG.

use std::convert::Infallible;

use embedded_graphics::mono_font::ascii::FONT_10X20;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use image::GrayImage;

use crate::track::TrackState;

/// What is drawn for one face.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Annotation {
    pub track: u64,
    /// [x, y, w, h] in frame pixels.
    pub bbox: [f32; 4],
    pub label: String,
    pub confidence: f32,
}

impl From<&TrackState> for Annotation {
    fn from(s: &TrackState) -> Self {
        Annotation {
            track: s.track,
            bbox: s.bbox,
            label: s.label.clone(),
            confidence: s.confidence,
        }
    }
}

/// The page uses the same colours (page.html, `COLOURS`).
pub(crate) fn colour(label: &str) -> Rgb888 {
    match label {
        "happy" => Rgb888::new(0xf2, 0xc1, 0x1d),
        "sad" => Rgb888::new(0x3b, 0x82, 0xf6),
        "angry" => Rgb888::new(0xef, 0x44, 0x44),
        "surprise" => Rgb888::new(0xf9, 0x73, 0x16),
        "fear" => Rgb888::new(0xa8, 0x55, 0xf7),
        "disgust" => Rgb888::new(0x22, 0xc5, 0x5e),
        _ => Rgb888::new(0xe5, 0xe7, 0xeb),
    }
}

/// A frame as JPEG's own planes, drawn on in place: the grey frame is the luma plane, and the
/// two chroma planes (4:2:0, half the width and height) are neutral except under what is drawn.
/// Encoding these planes skips the RGB copy of the frame and its colour conversion.
struct YccTarget<'a> {
    luma: &'a mut [u8],
    cb: &'a mut [u8],
    cr: &'a mut [u8],
    width: u32,
    height: u32,
}

/// The chroma planes' width or height for a luma plane's (libjpeg-turbo rounds up).
fn chroma_len(luma: u32) -> u32 {
    luma.div_ceil(2)
}

/// JPEG's full-range BT.601 conversion.
fn ycbcr(c: Rgb888) -> [u8; 3] {
    let (r, g, b) = (f32::from(c.r()), f32::from(c.g()), f32::from(c.b()));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

impl OriginDimensions for YccTarget<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for YccTarget<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        let chroma_width = chroma_len(self.width) as usize;
        let mut last: Option<(Rgb888, [u8; 3])> = None;
        for Pixel(p, c) in pixels {
            if p.x < 0 || p.y < 0 || p.x as u32 >= self.width || p.y as u32 >= self.height {
                continue;
            }
            let [y, cb, cr] = match last {
                Some((seen, ycc)) if seen == c => ycc,
                _ => {
                    let ycc = ycbcr(c);
                    last = Some((c, ycc));
                    ycc
                }
            };
            let (x, row) = (p.x as usize, p.y as usize);
            self.luma[row * self.width as usize + x] = y;
            let i = (row / 2) * chroma_width + x / 2;
            self.cb[i] = cb;
            self.cr[i] = cr;
        }
        Ok(())
    }
}

/// The box clipped to the frame, as whole pixels: (x0, y0, x1, y1), exclusive ends.
fn clip(bbox: &[f32; 4], width: u32, height: u32) -> Option<(u32, u32, u32, u32)> {
    let [x, y, w, h] = *bbox;
    let x0 = x.max(0.0).floor() as u32;
    let y0 = y.max(0.0).floor() as u32;
    let x1 = ((x + w).ceil().max(0.0) as u32).min(width);
    let y1 = ((y + h).ceil().max(0.0) as u32).min(height);
    (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
}

/// Replaces each face with blocks of its mean grey: about 8 blocks across, too coarse to
/// recognise anyone, and nothing a deblurring filter can undo.
pub(crate) fn pixelate(image: &mut GrayImage, bbox: &[f32; 4]) {
    let (width, height) = image.dimensions();
    let Some((x0, y0, x1, y1)) = clip(bbox, width, height) else {
        return;
    };
    let block = ((x1 - x0).max(y1 - y0) / 8).max(4);
    for by in (y0..y1).step_by(block as usize) {
        for bx in (x0..x1).step_by(block as usize) {
            let (ex, ey) = ((bx + block).min(x1), (by + block).min(y1));
            let mut sum = 0u64;
            for y in by..ey {
                for x in bx..ex {
                    sum += u64::from(image.get_pixel(x, y).0[0]);
                }
            }
            let mean = (sum / u64::from((ex - bx) * (ey - by))) as u8;
            for y in by..ey {
                for x in bx..ex {
                    image.put_pixel(x, y, image::Luma([mean]));
                }
            }
        }
    }
}

/// The encoder thread's JPEG compressor and reusable planes.
pub(crate) struct Renderer {
    compressor: turbojpeg::Compressor,
    cb: Vec<u8>,
    cr: Vec<u8>,
    /// The luma plane padded to even dimensions, which 4:2:0 planes need; for odd frames only.
    padded: Vec<u8>,
}

impl Renderer {
    /// Fails only when libjpeg-turbo cannot allocate its compressor or rejects the quality.
    pub(crate) fn new(quality: u8) -> Result<Renderer, String> {
        let mut compressor = turbojpeg::Compressor::new()
            .map_err(|e| format!("cannot start the JPEG encoder: {e}"))?;
        compressor
            .set_quality(i32::from(quality))
            .map_err(|e| format!("JPEG quality {quality}: {e}"))?;
        Ok(Renderer {
            compressor,
            cb: Vec::new(),
            cr: Vec::new(),
            padded: Vec::new(),
        })
    }

    /// Pixelates the `private` boxes in `image`, draws the annotations on it and returns the
    /// JPEG. The frame is drawn on in place: the caller's copy is for this frame only.
    pub(crate) fn render(
        &mut self,
        image: &mut GrayImage,
        annotations: &[Annotation],
        private: &[[f32; 4]],
    ) -> Result<Vec<u8>, String> {
        for bbox in private {
            pixelate(image, bbox);
        }
        let (width, height) = image.dimensions();
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(format!("cannot encode an empty {width}x{height} frame"));
        }
        if annotations.is_empty() {
            // Nothing in colour to draw: the grey plane alone encodes in two thirds of the
            // time of the three planes (0.50 against 0.75 ms at 640x480 on the dev VM).
            self.compressor
                .set_subsamp(turbojpeg::Subsamp::Gray)
                .map_err(|e| e.to_string())?;
            let grey = turbojpeg::Image {
                pixels: image.as_raw().as_slice(),
                width: w,
                pitch: w,
                height: h,
                format: turbojpeg::PixelFormat::GRAY,
            };
            return self
                .compressor
                .compress_to_vec(grey)
                .map_err(|e| e.to_string());
        }
        let chroma = (chroma_len(width) * chroma_len(height)) as usize;
        for plane in [&mut self.cb, &mut self.cr] {
            plane.clear();
            plane.resize(chroma, 128);
        }
        let mut target = YccTarget {
            luma: &mut *image,
            cb: &mut self.cb,
            cr: &mut self.cr,
            width,
            height,
        };
        for a in annotations {
            draw(&mut target, a);
        }
        // 4:2:0 chroma: the colour is only in the boxes and tags, which are several pixels wide.
        let padded_width = w.next_multiple_of(2);
        let luma = if w % 2 == 0 && h % 2 == 0 {
            image.as_raw().as_slice()
        } else {
            pad_to_even(image, &mut self.padded);
            self.padded.as_slice()
        };
        let planes = turbojpeg::YuvPlanesImage {
            y_plane: luma,
            u_plane: self.cb.as_slice(),
            v_plane: self.cr.as_slice(),
            width: w,
            height: h,
            y_stride: padded_width,
            u_stride: chroma_len(width) as usize,
            v_stride: chroma_len(width) as usize,
            subsamp: turbojpeg::Subsamp::Sub2x2,
        };
        self.compressor
            .compress_yuv_planes_to_vec(&planes)
            .map_err(|e| e.to_string())
    }
}

/// `image` with its last column and row repeated to even dimensions, into `out`. The repeated
/// pixels fill the encoder's last 2x2 block and are cropped away on decoding.
fn pad_to_even(image: &GrayImage, out: &mut Vec<u8>) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let padded_width = w.next_multiple_of(2);
    out.clear();
    for row in image.as_raw().chunks_exact(w) {
        out.extend_from_slice(row);
        out.extend(std::iter::repeat_n(row[w - 1], padded_width - w));
    }
    if h % 2 == 1 {
        out.extend_from_within(out.len() - padded_width..);
    }
}

fn draw(target: &mut YccTarget<'_>, a: &Annotation) {
    let Some((x0, y0, x1, y1)) = clip(&a.bbox, target.width, target.height) else {
        return;
    };
    let colour = colour(&a.label);
    let outline = Rectangle::with_corners(
        Point::new(x0 as i32, y0 as i32),
        Point::new(x1 as i32 - 1, y1 as i32 - 1),
    );
    let _ = outline
        .into_styled(PrimitiveStyle::with_stroke(colour, 3))
        .draw(target);
    let text = format!(
        "#{} {} {:.0}%",
        a.track,
        a.label,
        f64::from(a.confidence) * 100.0
    );
    // The tag sits above the box, or inside its top edge when the box touches the frame's top.
    let tag_h = 22;
    let tag_w = 10 * text.len() as u32 + 6;
    let tag_y = if y0 >= tag_h { y0 - tag_h } else { y0 };
    let _ = Rectangle::new(Point::new(x0 as i32, tag_y as i32), Size::new(tag_w, tag_h))
        .into_styled(PrimitiveStyle::with_fill(colour))
        .draw(target);
    let style = MonoTextStyle::new(&FONT_10X20, Rgb888::BLACK);
    let _ = Text::with_baseline(
        &text,
        Point::new(x0 as i32 + 3, tag_y as i32 + 1),
        style,
        Baseline::Top,
    )
    .draw(target);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(label: &str) -> Annotation {
        Annotation {
            track: 3,
            bbox: [40.0, 50.0, 60.0, 60.0],
            label: label.into(),
            confidence: 0.9,
        }
    }

    #[test]
    fn the_box_and_tag_are_drawn_in_the_label_colour_and_the_jpeg_decodes() {
        let mut image = GrayImage::from_pixel(160, 120, image::Luma([128]));
        let mut renderer = Renderer::new(90).unwrap();
        let jpeg = renderer.render(&mut image, &[face("happy")], &[]).unwrap();
        // The drawn planes: the box's left edge and the tag are happy's yellow.
        let yellow = ycbcr(colour("happy"));
        let ycc = |x: usize, y: usize| {
            let c = (y / 2) * 80 + x / 2;
            [image.as_raw()[y * 160 + x], renderer.cb[c], renderer.cr[c]]
        };
        assert_eq!(ycc(41, 80), yellow);
        assert_eq!(ycc(45, 30), yellow);
        assert_eq!(ycc(70, 80), [128; 3], "inside the box stays the frame");
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (160, 120));
        let p = decoded.get_pixel(41, 80).0;
        assert!(p[0] > 200 && p[2] < 90, "{p:?}");
        let p = decoded.get_pixel(75, 85).0;
        assert!(p.iter().all(|&v| v.abs_diff(128) < 6), "{p:?}");
    }

    #[test]
    fn colours_convert_to_jpeg_ycbcr_and_odd_frame_sizes_encode() {
        assert_eq!(ycbcr(Rgb888::WHITE), [255, 128, 128]);
        assert_eq!(ycbcr(Rgb888::BLACK), [0, 128, 128]);
        assert_eq!(ycbcr(Rgb888::new(255, 0, 0)), [76, 85, 255]);
        // Chroma planes round up: a 161x121 frame has 81x61 chroma samples.
        let mut image = GrayImage::from_pixel(161, 121, image::Luma([90]));
        let mut renderer = Renderer::new(80).unwrap();
        let mut right_edge = face("sad");
        right_edge.bbox = [120.0, 80.0, 41.0, 41.0];
        let jpeg = renderer.render(&mut image, &[right_edge], &[]).unwrap();
        assert_eq!(renderer.cb.len(), 81 * 61);
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (161, 121));
        let p = decoded.get_pixel(160, 100).0;
        assert!(
            p[2] > 180 && p[0] < 110,
            "the box's right edge is sad's blue: {p:?}"
        );
        let mut plain = GrayImage::from_pixel(161, 121, image::Luma([90]));
        let grey = renderer.render(&mut plain, &[], &[]).unwrap();
        let grey = image::load_from_memory(&grey).unwrap();
        assert_eq!((grey.width(), grey.height()), (161, 121));
        let empty = renderer.render(&mut GrayImage::new(0, 0), &[face("sad")], &[]);
        assert!(empty.unwrap_err().contains("empty"));
    }

    #[test]
    fn a_frame_without_faces_is_encoded_grey_and_with_faces_in_colour() {
        let mut image = GrayImage::from_pixel(160, 120, image::Luma([128]));
        let mut renderer = Renderer::new(90).unwrap();
        let grey = renderer.render(&mut image, &[], &[]).unwrap();
        let grey = image::load_from_memory(&grey).unwrap();
        assert_eq!(grey.color(), image::ColorType::L8);
        assert_eq!(grey.to_luma8().get_pixel(80, 60).0[0], 128);
        let colour = renderer.render(&mut image, &[face("sad")], &[]).unwrap();
        let colour = image::load_from_memory(&colour).unwrap();
        assert_eq!(colour.color(), image::ColorType::Rgb8);
    }

    #[test]
    fn blurring_pixelates_the_face_only() {
        let mut image = GrayImage::from_fn(160, 120, |x, y| {
            image::Luma([((x * 7 + y * 13) % 256) as u8])
        });
        let before = image.clone();
        pixelate(&mut image, &[40.0, 50.0, 64.0, 64.0]);
        // Outside the box nothing changed; inside, each 8x8 block is one grey.
        assert_eq!(image.get_pixel(39, 60), before.get_pixel(39, 60));
        assert_eq!(image.get_pixel(60, 49), before.get_pixel(60, 49));
        for (bx, by) in [(40, 50), (48, 58), (96, 106)] {
            let v = image.get_pixel(bx, by);
            for dy in 0..8 {
                for dx in 0..8 {
                    assert_eq!(image.get_pixel(bx + dx, by + dy), v);
                }
            }
        }
        assert_ne!(image, before);
        // A box outside the frame is ignored, one across its edge is clipped.
        let mut other = before.clone();
        pixelate(&mut other, &[500.0, 500.0, 10.0, 10.0]);
        assert_eq!(other, before);
        pixelate(&mut other, &[150.0, 110.0, 40.0, 40.0]);
        assert_ne!(other, before);
    }
}
