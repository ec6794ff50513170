//! 128x64 monochrome OLEDs over I2C: SSD1306 through the `ssd1306` crate, and SH1106 (the
//! common 1.3" module) through a few lines here, because it has no page-free addressing mode
//! and a 132-column RAM that the SSD1306 driver cannot address.

use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_hal::i2c::I2c;
use ssd1306::mode::BufferedGraphicsMode;
use ssd1306::prelude::*;
use ssd1306::{I2CDisplayInterface, Ssd1306};

use super::canvas::Canvas;
use super::{ui, DisplayError, OledConfig, OutputState};

const WIDTH: u32 = 128;
const HEIGHT: u32 = 64;

pub trait OledScreen {
    fn update(&mut self, state: &OutputState) -> Result<(), DisplayError>;
}

fn open_bus(config: &OledConfig) -> Result<linux_embedded_hal::I2cdev, DisplayError> {
    linux_embedded_hal::I2cdev::new(&config.i2c).map_err(|e| DisplayError::Device {
        device: config.i2c.display().to_string(),
        reason: format!("cannot open the I2C bus: {e}"),
    })
}

pub fn open_ssd1306(config: &OledConfig) -> Result<Box<dyn OledScreen + Send>, DisplayError> {
    let bus = open_bus(config)?;
    let device = config.i2c.display().to_string();
    Ok(Box::new(Ssd1306Screen::new(
        bus,
        config.address,
        config.flip,
        device,
    )?))
}

pub fn open_sh1106(config: &OledConfig) -> Result<Box<dyn OledScreen + Send>, DisplayError> {
    let bus = open_bus(config)?;
    let device = config.i2c.display().to_string();
    Ok(Box::new(Sh1106Screen::new(
        bus,
        config.address,
        config.flip,
        device,
    )?))
}

fn render(state: &OutputState) -> Canvas<BinaryColor> {
    let mut canvas = Canvas::new(Size::new(WIDTH, HEIGHT), BinaryColor::Off);
    let Ok(()) = ui::draw(&mut canvas, state);
    canvas
}

type Ssd1306Driver<I2C> =
    Ssd1306<I2CInterface<I2C>, DisplaySize128x64, BufferedGraphicsMode<DisplaySize128x64>>;

pub struct Ssd1306Screen<I2C> {
    driver: Ssd1306Driver<I2C>,
    last: Option<Canvas<BinaryColor>>,
    device: String,
}

impl<I2C: I2c> Ssd1306Screen<I2C> {
    pub fn new(i2c: I2C, address: u8, flip: bool, device: String) -> Result<Self, DisplayError> {
        let interface = I2CDisplayInterface::new_custom_address(i2c, address);
        let rotation = if flip {
            DisplayRotation::Rotate180
        } else {
            DisplayRotation::Rotate0
        };
        let mut driver =
            Ssd1306::new(interface, DisplaySize128x64, rotation).into_buffered_graphics_mode();
        driver.init().map_err(|e| DisplayError::Device {
            device: device.clone(),
            reason: format!("no answer at I2C address {address:#04x}: {e:?}"),
        })?;
        Ok(Ssd1306Screen {
            driver,
            last: None,
            device,
        })
    }

    /// Gives the bus back (tests check what was sent).
    pub fn release(self) -> I2C {
        self.driver.release().release()
    }
}

impl<I2C: I2c> OledScreen for Ssd1306Screen<I2C> {
    fn update(&mut self, state: &OutputState) -> Result<(), DisplayError> {
        let canvas = render(state);
        // The driver flushes the bounding box of the pixels set since the last flush, so set
        // only those that changed: a new FPS figure then costs a few bytes, not the 1 KiB screen.
        match &self.last {
            None => {
                self.driver.clear_buffer();
                for (i, px) in canvas.pixels().iter().enumerate() {
                    if px.is_on() {
                        self.driver
                            .set_pixel(i as u32 % WIDTH, i as u32 / WIDTH, true);
                    }
                }
            }
            Some(last) => {
                for (i, (new, old)) in canvas.pixels().iter().zip(last.pixels()).enumerate() {
                    if new != old {
                        self.driver
                            .set_pixel(i as u32 % WIDTH, i as u32 / WIDTH, new.is_on());
                    }
                }
            }
        }
        self.driver.flush().map_err(|e| DisplayError::Draw {
            device: self.device.clone(),
            reason: format!("{e:?}"),
        })?;
        self.last = Some(canvas);
        Ok(())
    }
}

/// SH1106 initialisation, sent as one command stream (control byte 0x00).
pub const SH1106_INIT: [u8; 23] = [
    0xAE, // display off
    0xD5, 0x80, // clock divide
    0xA8, 0x3F, // multiplex 64
    0xD3, 0x00, // display offset 0
    0x40, // start line 0
    0xAD, 0x8B, // DC-DC converter on
    0xA1, // segment remap: column 0 on the left
    0xC8, // COM scan from the bottom: row 0 at the top
    0xDA, 0x12, // COM pins alternative
    0x81, 0x80, // contrast
    0xD9, 0x22, // pre-charge
    0xDB, 0x35, // VCOM deselect level
    0xA4, // show RAM
    0xA6, // not inverted
    0xAF, // display on
];

/// The panel's 128 columns sit in the middle of the SH1106's 132-column RAM.
const SH1106_COLUMN_OFFSET: u8 = 2;

pub struct Sh1106Screen<I2C> {
    i2c: I2C,
    address: u8,
    flip: bool,
    sent: Option<Vec<u8>>,
    device: String,
}

impl<I2C: I2c> Sh1106Screen<I2C> {
    pub fn new(
        mut i2c: I2C,
        address: u8,
        flip: bool,
        device: String,
    ) -> Result<Self, DisplayError> {
        let mut init = vec![0x00];
        init.extend_from_slice(&SH1106_INIT);
        i2c.write(address, &init)
            .map_err(|e| DisplayError::Device {
                device: device.clone(),
                reason: format!("no answer at I2C address {address:#04x}: {e:?}"),
            })?;
        Ok(Sh1106Screen {
            i2c,
            address,
            flip,
            sent: None,
            device,
        })
    }

    pub fn release(self) -> I2C {
        self.i2c
    }
}

/// Packs a 128x64 canvas into the controller's layout: 8 pages of 128 bytes, each byte a
/// column of 8 rows, least significant bit at the top.
pub fn pack_pages(canvas: &Canvas<BinaryColor>, flip: bool) -> Vec<u8> {
    let mut pages = vec![0u8; (WIDTH * HEIGHT / 8) as usize];
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let (sx, sy) = if flip {
                (WIDTH - 1 - x, HEIGHT - 1 - y)
            } else {
                (x, y)
            };
            if canvas.pixel(sx, sy).is_some_and(|p| p.is_on()) {
                pages[((y / 8) * WIDTH + x) as usize] |= 1 << (y % 8);
            }
        }
    }
    pages
}

impl<I2C: I2c> OledScreen for Sh1106Screen<I2C> {
    fn update(&mut self, state: &OutputState) -> Result<(), DisplayError> {
        let pages = pack_pages(&render(state), self.flip);
        for (page, data) in pages.chunks(WIDTH as usize).enumerate() {
            let unchanged = self
                .sent
                .as_ref()
                .is_some_and(|s| s.chunks(WIDTH as usize).nth(page) == Some(data));
            if unchanged {
                continue;
            }
            let select = [0x00, 0xB0 | page as u8, SH1106_COLUMN_OFFSET, 0x10];
            let mut write = vec![0x40];
            write.extend_from_slice(data);
            self.i2c
                .write(self.address, &select)
                .and_then(|()| self.i2c.write(self.address, &write))
                .map_err(|e| DisplayError::Draw {
                    device: self.device.clone(),
                    reason: format!("{e:?}"),
                })?;
        }
        self.sent = Some(pages);
        Ok(())
    }
}
