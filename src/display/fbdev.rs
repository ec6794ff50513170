//! The Linux framebuffer (/dev/fbN): HDMI or DSI screens without a desktop, and SPI panels
//! driven by a kernel fbtft/DRM driver. The pixel layout is read from the device.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

use super::canvas::Canvas;
use super::{ui, DisplayError, OutputState};

/// How one pixel is stored, little-endian as every Linux framebuffer we target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 16 bits: 5 red (top), 6 green, 5 blue.
    Rgb565,
    /// 32 bits with each 8-bit channel at the given bit offset (XRGB8888: 16, 8, 0).
    Rgb32 { red: u32, green: u32, blue: u32 },
}

impl PixelFormat {
    pub const XRGB8888: PixelFormat = PixelFormat::Rgb32 {
        red: 16,
        green: 8,
        blue: 0,
    };

    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb565 => 2,
            PixelFormat::Rgb32 { .. } => 4,
        }
    }

    /// Packs pixels into `out`, which holds at least `bytes_per_pixel() * row.len()` bytes.
    pub fn pack(self, row: &[Rgb888], out: &mut [u8]) {
        match self {
            PixelFormat::Rgb565 => {
                for (c, o) in row.iter().zip(out.chunks_exact_mut(2)) {
                    let v = (u16::from(c.r() >> 3) << 11)
                        | (u16::from(c.g() >> 2) << 5)
                        | u16::from(c.b() >> 3);
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            PixelFormat::Rgb32 { red, green, blue } => {
                for (c, o) in row.iter().zip(out.chunks_exact_mut(4)) {
                    let v = (u32::from(c.r()) << red)
                        | (u32::from(c.g()) << green)
                        | (u32::from(c.b()) << blue);
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Bitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// `struct fb_var_screeninfo` from <linux/fb.h>.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct VarScreeninfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: Bitfield,
    green: Bitfield,
    blue: Bitfield,
    transp: Bitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    timing: [u32; 13],
    reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` from <linux/fb.h>.
#[repr(C)]
#[derive(Clone, Copy)]
struct FixScreeninfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const FBIOGET_VSCREENINFO: u64 = 0x4600;
const FBIOGET_FSCREENINFO: u64 = 0x4602;

pub struct Framebuffer {
    file: File,
    device: String,
    size: Size,
    /// Bytes from one row to the next (can exceed width x bytes per pixel).
    stride: usize,
    /// Byte offset of the visible top-left pixel.
    origin: u64,
    format: PixelFormat,
    last: Option<Canvas<Rgb888>>,
}

impl Framebuffer {
    pub fn open(path: &Path) -> Result<Framebuffer, DisplayError> {
        let device = path.display().to_string();
        let fail = |reason: String| DisplayError::Device {
            device: device.clone(),
            reason,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let mut var = VarScreeninfo::default();
        let mut fix = FixScreeninfo {
            id: [0; 16],
            smem_start: 0,
            smem_len: 0,
            type_: 0,
            type_aux: 0,
            visual: 0,
            xpanstep: 0,
            ypanstep: 0,
            ywrapstep: 0,
            line_length: 0,
            mmio_start: 0,
            mmio_len: 0,
            accel: 0,
            capabilities: 0,
            reserved: [0; 2],
        };
        // SAFETY: both requests fill a struct of exactly the type passed, which lives across
        // the call; the fd is open.
        let (rv, rf) = unsafe {
            (
                libc::ioctl(file.as_raw_fd(), FBIOGET_VSCREENINFO as _, &mut var),
                libc::ioctl(file.as_raw_fd(), FBIOGET_FSCREENINFO as _, &mut fix),
            )
        };
        if rv != 0 || rf != 0 {
            return Err(fail(format!(
                "not a framebuffer (screeninfo ioctl failed: {})",
                std::io::Error::last_os_error()
            )));
        }
        let format = match (
            var.bits_per_pixel,
            var.red.offset,
            var.green.offset,
            var.blue.offset,
        ) {
            (16, 11, 5, 0) => PixelFormat::Rgb565,
            (32, r, g, b) if [r, g, b].iter().all(|o| o % 8 == 0 && *o <= 24) => {
                PixelFormat::Rgb32 {
                    red: r,
                    green: g,
                    blue: b,
                }
            }
            (bpp, r, g, b) => {
                return Err(fail(format!(
                    "unsupported pixel format: {bpp} bits, red/green/blue at bits {r}/{g}/{b} \
                     (RGB565 and 32-bit RGB are supported)"
                )))
            }
        };
        let bpp = format.bytes_per_pixel() as u64;
        let origin =
            u64::from(var.yoffset) * u64::from(fix.line_length) + u64::from(var.xoffset) * bpp;
        log::info!(
            "{device}: {}x{} {format:?}, {} bytes per line",
            var.xres,
            var.yres,
            fix.line_length
        );
        Framebuffer::from_file(
            file,
            device.clone(),
            Size::new(var.xres, var.yres),
            fix.line_length as usize,
            origin,
            format,
        )
    }

    /// A framebuffer over any file with a known layout; `open` reads the layout from the device.
    pub fn from_file(
        file: File,
        device: String,
        size: Size,
        stride: usize,
        origin: u64,
        format: PixelFormat,
    ) -> Result<Framebuffer, DisplayError> {
        if size.width == 0
            || size.height == 0
            || stride < size.width as usize * format.bytes_per_pixel()
        {
            return Err(DisplayError::Device {
                device,
                reason: format!("inconsistent geometry {size:?}, {stride} bytes per line"),
            });
        }
        Ok(Framebuffer {
            file,
            device,
            size,
            stride,
            origin,
            format,
            last: None,
        })
    }

    pub fn size(&self) -> Size {
        self.size
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn update(&mut self, state: &OutputState) -> Result<(), DisplayError> {
        let mut canvas = Canvas::new(self.size, Rgb888::BLACK);
        let Ok(()) = ui::draw(&mut canvas, state);
        if let Some((first, last)) = canvas.changed_rows(self.last.as_ref()) {
            let row_bytes = self.size.width as usize * self.format.bytes_per_pixel();
            let contiguous = self.stride == row_bytes;
            for (start, rows) in write_spans(first, last, self.size.height, contiguous) {
                let mut buf = vec![0u8; rows as usize * row_bytes];
                for (y, out) in (start..).zip(buf.chunks_exact_mut(row_bytes)) {
                    self.format.pack(canvas.row(y), out);
                }
                let at = self.origin + start as u64 * self.stride as u64;
                self.file
                    .write_all_at(&buf, at)
                    .map_err(|e| DisplayError::Draw {
                        device: self.device.clone(),
                        reason: e.to_string(),
                    })?;
            }
        }
        self.last = Some(canvas);
        Ok(())
    }
}

/// The writes `update` makes for the changed rows `first..=last`, as (first row, row count).
///
/// Where rows follow each other in the file without padding, the changed rows go out in one
/// write of at least two rows. Linux's DRM fbdev emulation turns a write that covers exactly one
/// whole scanline into an empty damage rectangle (drm_fb_helper_memory_range_to_clip computes
/// its right edge as 0; since 5.18, "drm/fb-helper: Clip damage area horizontally", until a
/// later upstream fix), so that row stays in the shadow buffer and never reaches the screen:
/// Debian's 6.1 kernel with virtio-gpu shows it (cross/emulated-board.sh). With padded lines
/// each row is its own write, which ends before its line does and is handled right.
fn write_spans(first: u32, last: u32, height: u32, contiguous: bool) -> Vec<(u32, u32)> {
    if !contiguous {
        return (first..=last).map(|y| (y, 1)).collect();
    }
    let (mut start, mut end) = (first, last);
    if start == end && height > 1 {
        if end + 1 < height {
            end += 1;
        } else {
            start -= 1;
        }
    }
    vec![(start, end - start + 1)]
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use embedded_graphics::pixelcolor::Rgb888;
    use embedded_graphics::prelude::*;

    use super::{write_spans, Framebuffer, PixelFormat};
    use crate::display::canvas::Canvas;
    use crate::display::ui;
    use crate::output::OutputState;

    #[test]
    fn unpadded_rows_go_out_in_one_write_of_at_least_two_rows() {
        assert_eq!(write_spans(3, 7, 240, true), vec![(3, 5)]);
        assert_eq!(write_spans(0, 239, 240, true), vec![(0, 240)]);
        // A single changed row takes its neighbour along: a one-scanline write is lost on
        // DRM fbdev emulation.
        assert_eq!(write_spans(10, 10, 240, true), vec![(10, 2)]);
        assert_eq!(write_spans(239, 239, 240, true), vec![(238, 2)]);
        assert_eq!(write_spans(0, 0, 1, true), vec![(0, 1)]);
    }

    /// Unpadded rows written in spans hold the same bytes as the picture, also after a redraw
    /// that changes only a few rows.
    #[test]
    fn unpadded_framebuffer_holds_the_picture() {
        let format = PixelFormat::XRGB8888;
        let (w, h) = (320u32, 240u32);
        let file = tempfile::tempfile().unwrap();
        let mut fb = Framebuffer::from_file(
            file.try_clone().unwrap(),
            "test".into(),
            Size::new(w, h),
            w as usize * 4,
            0,
            format,
        )
        .unwrap();
        for fps in [Some(10.0), Some(12.5)] {
            let state = OutputState::new(&[], fps);
            fb.update(&state).unwrap();
            let mut canvas = Canvas::new(Size::new(w, h), Rgb888::BLACK);
            let Ok(()) = ui::draw(&mut canvas, &state);
            let mut expected = vec![0u8; (w * h * 4) as usize];
            format.pack(canvas.pixels(), &mut expected);
            let mut bytes = vec![0u8; expected.len()];
            file.read_exact_at(&mut bytes, 0).unwrap();
            assert!(bytes == expected, "fps {fps:?}");
        }
    }

    #[test]
    fn padded_rows_are_written_one_by_one() {
        assert_eq!(write_spans(4, 6, 64, false), vec![(4, 1), (5, 1), (6, 1)]);
    }
}
