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

/// An RGB8 buffer as an embedded-graphics target.
struct RgbTarget<'a> {
    pixels: &'a mut [u8],
    width: u32,
    height: u32,
}

impl OriginDimensions for RgbTarget<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for RgbTarget<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = (p.y as usize * self.width as usize + p.x as usize) * 3;
                self.pixels[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
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

/// Reusable buffers and settings of the encoder thread.
pub(crate) struct Renderer {
    quality: u8,
    rgb: Vec<u8>,
}

impl Renderer {
    pub(crate) fn new(quality: u8) -> Renderer {
        Renderer {
            quality,
            rgb: Vec::new(),
        }
    }

    /// Pixelates the `private` boxes in `image`, draws the annotations and returns the JPEG.
    pub(crate) fn render(
        &mut self,
        image: &mut GrayImage,
        annotations: &[Annotation],
        private: &[[f32; 4]],
    ) -> Result<Vec<u8>, String> {
        let (width, height) = image.dimensions();
        for bbox in private {
            pixelate(image, bbox);
        }
        let (w, h) = (
            u16::try_from(width).map_err(|_| format!("frame {width} px wide is too large"))?,
            u16::try_from(height).map_err(|_| format!("frame {height} px high is too large"))?,
        );
        let mut jpeg = Vec::with_capacity(image.as_raw().len() / 8);
        let encoder = jpeg_encoder::Encoder::new(&mut jpeg, self.quality);
        if annotations.is_empty() {
            // Nothing in colour to draw: the grey plane alone encodes in 55-75 % of the time
            // of the RGB frame (measured with jpeg-encoder 0.7 on the dev VM).
            encoder
                .encode(image.as_raw(), w, h, jpeg_encoder::ColorType::Luma)
                .map_err(|e| e.to_string())?;
            return Ok(jpeg);
        }
        self.rgb.clear();
        self.rgb
            .extend(image.as_raw().iter().flat_map(|&g| [g, g, g]));
        let mut target = RgbTarget {
            pixels: &mut self.rgb,
            width,
            height,
        };
        for a in annotations {
            draw(&mut target, a);
        }
        encoder
            .encode(&self.rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| e.to_string())?;
        Ok(jpeg)
    }
}

fn draw(target: &mut RgbTarget<'_>, a: &Annotation) {
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
        let mut renderer = Renderer::new(90);
        let jpeg = renderer.render(&mut image, &[face("happy")], &[]).unwrap();
        // The drawn buffer: the box's left edge and the tag are happy's yellow.
        let px = |x: usize, y: usize| &renderer.rgb[(y * 160 + x) * 3..(y * 160 + x) * 3 + 3];
        assert_eq!(px(41, 80), &[0xf2, 0xc1, 0x1d]);
        assert_eq!(px(45, 30), &[0xf2, 0xc1, 0x1d]);
        assert_eq!(
            px(70, 80),
            &[128, 128, 128],
            "inside the box stays the frame"
        );
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (160, 120));
        let p = decoded.get_pixel(41, 80).0;
        assert!(p[0] > 200 && p[2] < 90, "{p:?}");
    }

    #[test]
    fn a_frame_without_faces_is_encoded_grey_and_with_faces_in_colour() {
        let mut image = GrayImage::from_pixel(160, 120, image::Luma([128]));
        let mut renderer = Renderer::new(90);
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
