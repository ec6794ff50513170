//! Headless previews: the picture a display of a given size would show, written as a PNG.

use std::path::{Path, PathBuf};

use embedded_graphics::pixelcolor::{BinaryColor, Rgb888};
use embedded_graphics::prelude::*;

use super::canvas::Canvas;
use super::ui::{self, Layout, UiColor};
use super::{DisplayError, OutputState};

pub struct PngDisplay {
    path: PathBuf,
    size: Size,
}

impl PngDisplay {
    /// Fails when the PNG's folder does not exist, so that a typo shows at start-up rather than
    /// at the first frame.
    pub fn new(path: &Path, size: Size) -> Result<Self, DisplayError> {
        if size.width == 0 || size.height == 0 {
            return Err(DisplayError::Config(format!("png size {size:?} is empty")));
        }
        super::check_png_folder(path).map_err(|reason| DisplayError::Device {
            device: path.display().to_string(),
            reason,
        })?;
        Ok(PngDisplay {
            path: path.to_path_buf(),
            size,
        })
    }

    pub fn size(&self) -> Size {
        self.size
    }

    pub fn update(&mut self, state: &OutputState) -> Result<(), DisplayError> {
        let image = render(state, self.size);
        // Written beside and renamed, so that a viewer polling the file never reads half a PNG.
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        image
            .save_with_format(&tmp, image::ImageFormat::Png)
            .map_err(|e| DisplayError::Device {
                device: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
        std::fs::rename(&tmp, &self.path).map_err(|e| DisplayError::Device {
            device: self.path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// The picture for a display of `size`: monochrome layouts are drawn in `BinaryColor` so that
/// the preview has exactly the OLED's pixels.
pub fn render(state: &OutputState, size: Size) -> image::RgbImage {
    match Layout::for_size(size) {
        Layout::Mono128x64 => render_in::<BinaryColor>(state, size),
        _ => render_in::<Rgb888>(state, size),
    }
}

fn render_in<C: UiColor + Into<Rgb888>>(state: &OutputState, size: Size) -> image::RgbImage {
    let mut canvas = Canvas::new(size, C::from_rgb(Rgb888::BLACK));
    let Ok(()) = ui::draw(&mut canvas, state);
    canvas.to_rgb_image()
}
