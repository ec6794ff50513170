//! An in-memory `DrawTarget`: the PNG target and the goldens draw into it, and the hardware
//! targets draw into one first so that they send only the rows that changed since the last frame.

use std::convert::Infallible;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Canvas<C> {
    size: Size,
    pixels: Vec<C>,
}

impl<C: PixelColor> Canvas<C> {
    pub fn new(size: Size, background: C) -> Self {
        Canvas {
            size,
            pixels: vec![background; (size.width * size.height) as usize],
        }
    }

    pub fn pixel(&self, x: u32, y: u32) -> Option<C> {
        (x < self.size.width && y < self.size.height)
            .then(|| self.pixels[(y * self.size.width + x) as usize])
    }

    /// Row-major pixels.
    pub fn pixels(&self) -> &[C] {
        &self.pixels
    }

    pub fn row(&self, y: u32) -> &[C] {
        let w = self.size.width as usize;
        &self.pixels[y as usize * w..(y as usize + 1) * w]
    }

    /// The first and last rows that differ from `previous` (all rows when there is none or its
    /// size differs); `None` when nothing changed.
    pub fn changed_rows(&self, previous: Option<&Canvas<C>>) -> Option<(u32, u32)> {
        let Some(prev) = previous.filter(|p| p.size == self.size) else {
            return (self.size.height > 0).then(|| (0, self.size.height - 1));
        };
        let differs = |y: &u32| self.row(*y) != prev.row(*y);
        let first = (0..self.size.height).find(differs)?;
        let last = (0..self.size.height).rev().find(differs)?;
        Some((first, last))
    }
}

impl<C: PixelColor + Into<Rgb888>> Canvas<C> {
    pub fn to_rgb_image(&self) -> image::RgbImage {
        image::RgbImage::from_fn(self.size.width, self.size.height, |x, y| {
            let c: Rgb888 = self.pixels[(y * self.size.width + x) as usize].into();
            image::Rgb([c.r(), c.g(), c.b()])
        })
    }
}

impl<C> OriginDimensions for Canvas<C> {
    fn size(&self) -> Size {
        self.size
    }
}

impl<C: PixelColor> DrawTarget for Canvas<C> {
    type Color = C;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = (self.size.width as i32, self.size.height as i32);
        for Pixel(p, color) in pixels {
            if (0..w).contains(&p.x) && (0..h).contains(&p.y) {
                self.pixels[(p.y * w + p.x) as usize] = color;
            }
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.pixels.fill(color);
        Ok(())
    }
}
