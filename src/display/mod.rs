//! What the board shows: a UI drawn with embedded-graphics ([`ui`]) on OLEDs over I2C, TFT
//! panels over SPI, the Linux framebuffer, or a PNG file. [`Display::open`] builds one from its
//! configuration and [`Display::update`] redraws it, once per frame.

#[cfg(feature = "display")]
pub mod canvas;
#[cfg(feature = "display")]
pub mod fbdev;
#[cfg(feature = "display")]
pub mod oled;
#[cfg(feature = "display")]
pub mod png;
#[cfg(feature = "display")]
pub mod tft;
#[cfg(feature = "display")]
pub mod ui;

use std::path::{Path, PathBuf};

#[cfg(feature = "display")]
use embedded_graphics::prelude::Size;
use serde::Deserialize;

#[cfg(feature = "display")]
use crate::output::OutputState;

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("display {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("display configuration: {0}")]
    Config(String),
    #[error("display {device}: drawing failed: {reason}")]
    Draw { device: String, reason: String },
}

fn default_i2c() -> PathBuf {
    PathBuf::from("/dev/i2c-1")
}
fn default_i2c_address() -> u8 {
    0x3c
}
fn default_spi() -> PathBuf {
    PathBuf::from("/dev/spidev0.0")
}
fn default_gpiochip() -> String {
    "gpiochip0".to_string()
}
fn default_spi_hz() -> u32 {
    32_000_000
}
fn default_fb() -> PathBuf {
    PathBuf::from("/dev/fb0")
}
fn default_png() -> PathBuf {
    PathBuf::from("ferrite-display.png")
}
fn default_png_width() -> u32 {
    240
}
fn default_png_height() -> u32 {
    240
}

/// The `[display]` section: `driver` picks the variant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum DisplayConfig {
    Ssd1306(OledConfig),
    Sh1106(OledConfig),
    St7789(TftConfig),
    Ili9341(TftConfig),
    Framebuffer(FramebufferConfig),
    Png(PngConfig),
}

/// 128x64 monochrome OLED on an I2C bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OledConfig {
    #[serde(default = "default_i2c")]
    pub i2c: PathBuf,
    #[serde(default = "default_i2c_address")]
    pub address: u8,
    /// Turn the picture upside down (modules mounted the other way round).
    #[serde(default)]
    pub flip: bool,
}

/// A colour TFT over SPI; D/C, reset and backlight are GPIO lines of `gpiochip`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftConfig {
    #[serde(default = "default_spi")]
    pub spi: PathBuf,
    #[serde(default = "default_spi_hz")]
    pub spi_hz: u32,
    /// A gpiochip path (`/dev/gpiochip0`) or label (`pinctrl-rp1`).
    #[serde(default = "default_gpiochip")]
    pub gpiochip: String,
    /// Line offset of the data/command pin (BCM numbering on a Pi).
    pub dc: u32,
    #[serde(default)]
    pub reset: Option<u32>,
    #[serde(default)]
    pub backlight: Option<u32>,
    /// Panel size in pixels after rotation; defaults to the model's (240x240 ST7789, 320x240
    /// ILI9341).
    #[serde(default)]
    pub width: Option<u16>,
    #[serde(default)]
    pub height: Option<u16>,
    #[serde(default)]
    pub offset_x: u16,
    #[serde(default)]
    pub offset_y: u16,
    /// 0, 90, 180 or 270 degrees.
    #[serde(default)]
    pub rotation: u16,
    /// Colour inversion; most ST7789 modules need it on, most ILI9341 off. Default by model.
    #[serde(default)]
    pub invert: Option<bool>,
    /// Blue-green-red subpixel order (red and blue swapped on screen otherwise).
    #[serde(default)]
    pub bgr: bool,
}

/// The Linux framebuffer; the pixel format is read from the device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramebufferConfig {
    #[serde(default = "default_fb")]
    pub device: PathBuf,
}

/// A PNG file rewritten on every update.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PngConfig {
    #[serde(default = "default_png")]
    pub path: PathBuf,
    #[serde(default = "default_png_width")]
    pub width: u32,
    #[serde(default = "default_png_height")]
    pub height: u32,
}

impl DisplayConfig {
    /// Parses the `--display` argument: `png:FILE[@WxH]`, `fb:/dev/fbN`,
    /// `ssd1306:/dev/i2c-N[@0xADDR]` or `sh1106:/dev/i2c-N[@0xADDR]`. SPI panels need pins and
    /// are configured in the TOML file only.
    pub fn parse_spec(spec: &str) -> Result<DisplayConfig, DisplayError> {
        let bad = |why: &str| DisplayError::Config(format!("--display {spec:?}: {why}"));
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected KIND:TARGET, e.g. png:out.png@128x64"))?;
        let (target, suffix) = match rest.rsplit_once('@') {
            Some((t, s)) => (t, Some(s)),
            None => (rest, None),
        };
        if target.is_empty() {
            return Err(bad("the target after ':' is empty"));
        }
        match kind {
            "png" => {
                let (width, height) = match suffix {
                    None => (default_png_width(), default_png_height()),
                    Some(s) => parse_size(s).ok_or_else(|| bad("size must be WIDTHxHEIGHT"))?,
                };
                Ok(DisplayConfig::Png(PngConfig {
                    path: PathBuf::from(target),
                    width,
                    height,
                }))
            }
            "fb" if suffix.is_none() => Ok(DisplayConfig::Framebuffer(FramebufferConfig {
                device: PathBuf::from(target),
            })),
            "ssd1306" | "sh1106" => {
                let address = match suffix {
                    None => default_i2c_address(),
                    Some(s) => parse_address(s).ok_or_else(|| bad("address must be like 0x3c"))?,
                };
                let oled = OledConfig {
                    i2c: PathBuf::from(target),
                    address,
                    flip: false,
                };
                Ok(if kind == "ssd1306" {
                    DisplayConfig::Ssd1306(oled)
                } else {
                    DisplayConfig::Sh1106(oled)
                })
            }
            _ => Err(bad(
                "KIND must be png, fb, ssd1306 or sh1106 (SPI panels: use the config file)",
            )),
        }
    }
}

/// The folder a PNG display writes into must exist (`ferrite check` asks the same).
pub fn check_png_folder(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!("folder {} does not exist", dir.display()))
    }
}

/// Why a display cannot be opened by a build without the `display` cargo feature.
#[cfg(not(feature = "display"))]
pub const NO_DISPLAY: &str =
    "this ferrite was built without display support (cargo feature display)";

fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    let side = |v: u32| crate::limits::DISPLAY_SIDE.check(v).ok();
    Some((side(w)?, side(h)?))
}

fn parse_address(s: &str) -> Option<u8> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(feature = "display")]
enum Target {
    Png(png::PngDisplay),
    Framebuffer(fbdev::Framebuffer),
    Oled(Box<dyn oled::OledScreen + Send>),
    Tft(Box<tft::Tft>),
}

/// A configured display. Opening fails with a reason when its bus or device is missing; the
/// caller logs it and keeps classifying.
#[cfg(feature = "display")]
pub struct Display {
    target: Target,
    name: String,
}

#[cfg(feature = "display")]
impl Display {
    pub fn open(config: &DisplayConfig) -> Result<Display, DisplayError> {
        let (target, name) = match config {
            DisplayConfig::Png(c) => (
                Target::Png(png::PngDisplay::new(&c.path, Size::new(c.width, c.height))?),
                format!("png {}", c.path.display()),
            ),
            DisplayConfig::Framebuffer(c) => (
                Target::Framebuffer(fbdev::Framebuffer::open(&c.device)?),
                format!("framebuffer {}", c.device.display()),
            ),
            DisplayConfig::Ssd1306(c) => (
                Target::Oled(oled::open_ssd1306(c)?),
                format!("ssd1306 {}", c.i2c.display()),
            ),
            DisplayConfig::Sh1106(c) => (
                Target::Oled(oled::open_sh1106(c)?),
                format!("sh1106 {}", c.i2c.display()),
            ),
            DisplayConfig::St7789(c) => (
                Target::Tft(Box::new(tft::Tft::open(tft::Model::St7789, c)?)),
                format!("st7789 {}", c.spi.display()),
            ),
            DisplayConfig::Ili9341(c) => (
                Target::Tft(Box::new(tft::Tft::open(tft::Model::Ili9341, c)?)),
                format!("ili9341 {}", c.spi.display()),
            ),
        };
        log::info!("display: {name}");
        Ok(Display { target, name })
    }

    /// A PNG display writing to `path`; for previews and tests.
    pub fn png(path: &Path, size: Size) -> Result<Display, DisplayError> {
        Display::open(&DisplayConfig::Png(PngConfig {
            path: path.to_path_buf(),
            width: size.width,
            height: size.height,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Redraws the display; hardware targets send only the rows that changed.
    pub fn update(&mut self, state: &OutputState) -> Result<(), DisplayError> {
        match &mut self.target {
            Target::Png(d) => d.update(state),
            Target::Framebuffer(d) => d.update(state),
            Target::Oled(d) => d.update(state),
            Target::Tft(d) => d.update(state),
        }
    }
}

#[cfg(all(test, feature = "display"))]
mod tests;
