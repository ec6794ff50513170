//! Colour TFT panels over SPI (ST7789, ILI9341) through mipidsi, with the data/command, reset
//! and backlight pins on a GPIO character device.

use embedded_graphics::pixelcolor::Rgb565;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_hal::digital::{ErrorType, OutputPin};
use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
use linux_embedded_hal::{CdevPin, Delay, SpidevDevice};
use mipidsi::interface::SpiInterface;
use mipidsi::models::{ILI9341Rgb565, ST7789};
use mipidsi::options::{ColorInversion, ColorOrder, Orientation, Rotation};

use super::canvas::Canvas;
use super::{ui, DisplayError, OutputState, TftConfig};
use crate::gpio;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    St7789,
    Ili9341,
}

/// An optional pin: the reset line is not wired on every module.
pub struct MaybePin(Option<CdevPin>);

impl ErrorType for MaybePin {
    type Error = linux_embedded_hal::CdevPinError;
}

impl OutputPin for MaybePin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.as_mut().map_or(Ok(()), |p| p.set_low())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.as_mut().map_or(Ok(()), |p| p.set_high())
    }
}

type Interface = SpiInterface<'static, SpidevDevice, CdevPin>;

enum Panel {
    St7789(mipidsi::Display<Interface, ST7789, MaybePin>),
    Ili9341(mipidsi::Display<Interface, ILI9341Rgb565, MaybePin>),
}

pub struct Tft {
    panel: Panel,
    size: Size,
    last: Option<Canvas<Rgb565>>,
    device: String,
    // Held so that the backlight stays on while the display lives.
    _backlight: Option<CdevPin>,
}

impl Tft {
    pub fn open(model: Model, config: &TftConfig) -> Result<Tft, DisplayError> {
        let device = config.spi.display().to_string();
        let fail = |reason: String| DisplayError::Device {
            device: device.clone(),
            reason,
        };
        let mut spi = SpidevDevice::open(&config.spi)
            .map_err(|e| fail(format!("cannot open the SPI device: {e}")))?;
        let options = SpidevOptions::new()
            .bits_per_word(8)
            .max_speed_hz(config.spi_hz)
            .mode(SpiModeFlags::SPI_MODE_0)
            .build();
        spi.0
            .configure(&options)
            .map_err(|e| fail(format!("cannot configure SPI: {e}")))?;
        let chip = gpio::open_chip(&config.gpiochip).map_err(|e| fail(e.to_string()))?;
        let line = |offset: u32, what: &str| {
            gpio::output_pin(&chip, offset, true, "ferrite-display")
                .map_err(|e| fail(format!("{what} pin: {e}")))
        };
        let dc = line(config.dc, "D/C")?;
        let reset = MaybePin(config.reset.map(|l| line(l, "reset")).transpose()?);
        let backlight = config.backlight.map(|l| line(l, "backlight")).transpose()?;

        // mipidsi borrows its transfer buffer; the display lives for the rest of the process.
        let buffer: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let interface = SpiInterface::new(spi, dc, buffer);
        let rotation = match config.rotation {
            0 => Rotation::Deg0,
            90 => Rotation::Deg90,
            180 => Rotation::Deg180,
            270 => Rotation::Deg270,
            r => {
                return Err(DisplayError::Config(format!(
                    "rotation {r}: use 0, 90, 180 or 270"
                )))
            }
        };
        let orientation = Orientation::new().rotate(rotation);
        let order = if config.bgr {
            ColorOrder::Bgr
        } else {
            ColorOrder::Rgb
        };
        let inversion = |default: bool| {
            if config.invert.unwrap_or(default) {
                ColorInversion::Inverted
            } else {
                ColorInversion::Normal
            }
        };
        let swap = matches!(rotation, Rotation::Deg90 | Rotation::Deg270);
        let mut delay = Delay;
        let init_error = |e: String| fail(format!("panel initialisation failed: {e}"));
        let (panel, size) = match model {
            Model::St7789 => {
                let (w, h) = (config.width.unwrap_or(240), config.height.unwrap_or(240));
                let (pw, ph) = if swap { (h, w) } else { (w, h) };
                let d = mipidsi::Builder::new(ST7789, interface)
                    .display_size(pw, ph)
                    .display_offset(config.offset_x, config.offset_y)
                    .orientation(orientation)
                    .color_order(order)
                    .invert_colors(inversion(true))
                    .reset_pin(reset)
                    .init(&mut delay)
                    .map_err(|e| init_error(format!("{e:?}")))?;
                (Panel::St7789(d), Size::new(w.into(), h.into()))
            }
            Model::Ili9341 => {
                let (w, h) = (config.width.unwrap_or(320), config.height.unwrap_or(240));
                let (pw, ph) = if swap { (h, w) } else { (w, h) };
                let d = mipidsi::Builder::new(ILI9341Rgb565, interface)
                    .display_size(pw, ph)
                    .display_offset(config.offset_x, config.offset_y)
                    .orientation(orientation)
                    .color_order(order)
                    .invert_colors(inversion(false))
                    .reset_pin(reset)
                    .init(&mut delay)
                    .map_err(|e| init_error(format!("{e:?}")))?;
                (Panel::Ili9341(d), Size::new(w.into(), h.into()))
            }
        };
        Ok(Tft {
            panel,
            size,
            last: None,
            device,
            _backlight: backlight,
        })
    }

    pub fn update(&mut self, state: &OutputState) -> Result<(), DisplayError> {
        let mut canvas = Canvas::new(self.size, Rgb565::BLACK);
        let Ok(()) = ui::draw(&mut canvas, state);
        // A full 240x240 frame is 115 KB over SPI; most frames change only the FPS figure.
        if let Some((first, last)) = canvas.changed_rows(self.last.as_ref()) {
            let w = self.size.width;
            let band = Rectangle::new(Point::new(0, first as i32), Size::new(w, last - first + 1));
            let start = (first * w) as usize;
            let end = ((last + 1) * w) as usize;
            let pixels = canvas.pixels()[start..end].iter().copied();
            let result = match &mut self.panel {
                Panel::St7789(d) => d
                    .fill_contiguous(&band, pixels)
                    .map_err(|e| format!("{e:?}")),
                Panel::Ili9341(d) => d
                    .fill_contiguous(&band, pixels)
                    .map_err(|e| format!("{e:?}")),
            };
            result.map_err(|reason| DisplayError::Draw {
                device: self.device.clone(),
                reason,
            })?;
        }
        self.last = Some(canvas);
        Ok(())
    }
}
