//! Camera buffers to the gray image the pipeline consumes. Every path takes luma only: chroma is
//! skipped, never converted, because the ensemble and the detector's input are both built from gray.

use image::GrayImage;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::frame::CaptureError;

fn corrupt(msg: impl Into<String>) -> CaptureError {
    CaptureError::CorruptFrame(msg.into())
}

/// Bytes per row the driver actually used: `stride` when it reports one (V4L2's `bytesperline`),
/// else the packed width.
fn effective_stride(stride: usize, packed: usize) -> usize {
    if stride == 0 {
        packed
    } else {
        stride
    }
}

/// Picks every `step`-th byte starting at `offset` of each row: the shared core of the packed
/// 4:2:2 formats and of GREY (step 1).
fn pick_luma(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    step: usize,
    offset: usize,
    what: &str,
) -> Result<GrayImage, CaptureError> {
    let (w, h) = (width as usize, height as usize);
    // A zero side would make a zero row length below (and `chunks(0)` panics); a driver or a
    // recording can report one.
    if w == 0 || h == 0 {
        return Err(corrupt(format!("{what}: empty {w}x{h} frame")));
    }
    let packed = w * step;
    let stride = effective_stride(stride, packed);
    if stride < packed {
        return Err(CaptureError::Fatal(format!(
            "{what}: stride {stride} is shorter than a {w}-pixel row ({packed} bytes)"
        )));
    }
    // The last row need not carry its padding.
    let needed = stride * (h - 1) + packed;
    if buf.len() < needed {
        return Err(corrupt(format!(
            "{what}: {} bytes, a {w}x{h} frame needs {needed}",
            buf.len()
        )));
    }
    let mut out = Vec::with_capacity(w * h);
    for row in buf.chunks(stride).take(h) {
        if step == 1 {
            out.extend_from_slice(&row[..w]);
        } else {
            out.extend(row[offset..packed].iter().step_by(step));
        }
    }
    GrayImage::from_raw(width, height, out).ok_or_else(|| corrupt(format!("{what}: bad size")))
}

/// YUYV (YUY2, 4:2:2 packed Y0 U Y1 V): the Y samples are every even byte.
pub fn yuyv_to_gray(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<GrayImage, CaptureError> {
    pick_luma(buf, width, height, stride, 2, 0, "YUYV")
}

/// UYVY (4:2:2 packed U Y0 V Y1): the Y samples are every odd byte.
pub fn uyvy_to_gray(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<GrayImage, CaptureError> {
    pick_luma(buf, width, height, stride, 2, 1, "UYVY")
}

/// GREY (8-bit luma), rows possibly padded to `stride` bytes.
pub fn grey_to_gray(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<GrayImage, CaptureError> {
    pick_luma(buf, width, height, stride, 1, 0, "GREY")
}

/// Decodes a JPEG (an MJPEG frame) straight to luma: zune-jpeg skips the colour conversion and, for
/// 4:2:0/4:2:2 frames, the chroma upsampling, which is most of the cost of an RGB decode.
///
/// A frame that does not end in an EOI marker is rejected: USB cameras that lose packets deliver
/// truncated frames, and the decoder (in its lenient mode, needed for the many cameras whose JPEGs
/// bend the standard) would paint the missing rows gray instead of failing. A gray half-face is
/// worse than a dropped frame.
pub fn mjpeg_to_gray(buf: &[u8]) -> Result<GrayImage, CaptureError> {
    let buf = trim_padding(buf);
    if buf.len() < 4 || buf[..2] != [0xFF, 0xD8] {
        return Err(corrupt("MJPEG: no JPEG start marker"));
    }
    if buf[buf.len() - 2..] != [0xFF, 0xD9] {
        return Err(corrupt("MJPEG: truncated (no end-of-image marker)"));
    }
    let patched;
    let data = match with_default_huffman_tables(buf) {
        Some(p) => {
            patched = p;
            &patched[..]
        }
        None => buf,
    };
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::Luma)
        .set_strict_mode(false);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    let pixels = decoder
        .decode()
        .map_err(|e| corrupt(format!("MJPEG: {e}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| corrupt("MJPEG: no image header"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    GrayImage::from_raw(w, h, pixels).ok_or_else(|| {
        corrupt(format!(
            "MJPEG: decoder returned a buffer that is not {w}x{h} luma"
        ))
    })
}

/// Drivers report `bytesused` for the whole buffer on some cameras; the JPEG then ends in zeros.
fn trim_padding(buf: &[u8]) -> &[u8] {
    let end = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &buf[..end]
}

/// The standard Huffman tables of JPEG Annex K.3 as one DHT segment: the tables that MJPEG cameras
/// omit (the AVI MJPEG convention, OpenDML). zune-jpeg fills them in only when the frame carries the
/// "AVI1" APP0 marker, which many UVC cameras do not send, so we insert them ourselves.
const DEFAULT_DHT: [u8; 420] = {
    const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
    const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_LUMA_VALUES: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    const AC_CHROMA_VALUES: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    // Segment: marker (2) + length (2) + 4 tables of (class/id byte + 16 counts + values).
    let mut out = [0u8; 420];
    out[0] = 0xFF;
    out[1] = 0xC4;
    let len = 418u16.to_be_bytes();
    out[2] = len[0];
    out[3] = len[1];
    let mut pos = 4;
    // (class << 4 | id, bits, values): DC luma, AC luma, DC chroma, AC chroma.
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &DC_VALUES),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES),
        (0x01, &DC_CHROMA_BITS, &DC_VALUES),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES),
    ];
    let mut t = 0;
    while t < tables.len() {
        let (class_id, bits, values) = tables[t];
        out[pos] = class_id;
        pos += 1;
        let mut i = 0;
        while i < 16 {
            out[pos] = bits[i];
            pos += 1;
            i += 1;
        }
        let mut i = 0;
        while i < values.len() {
            out[pos] = values[i];
            pos += 1;
            i += 1;
        }
        t += 1;
    }
    assert!(pos == 420);
    out
};

/// When the JPEG has no DHT segment before its first scan, returns a copy with the standard tables
/// inserted just before the SOS marker; `None` when it has its own tables (or is too malformed to
/// walk, which the decoder then reports).
pub fn with_default_huffman_tables(jpeg: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 2; // after SOI
    while pos + 4 <= jpeg.len() {
        if jpeg[pos] != 0xFF {
            return None;
        }
        let marker = jpeg[pos + 1];
        match marker {
            0xFF => {
                // Fill byte before a marker.
                pos += 1;
                continue;
            }
            0xC4 => return None,
            0xDA => {
                let mut out = Vec::with_capacity(jpeg.len() + DEFAULT_DHT.len());
                out.extend_from_slice(&jpeg[..pos]);
                out.extend_from_slice(&DEFAULT_DHT);
                out.extend_from_slice(&jpeg[pos..]);
                return Some(out);
            }
            // Markers without a length field.
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
                pos += 2 + len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_takes_the_even_bytes_and_skips_row_padding() {
        // 2x2 pixels, stride 6 (4 bytes of pixels + 2 of padding).
        let buf = [
            10, 200, 20, 201, 99, 99, //
            30, 202, 40, 203, 99, 99,
        ];
        let img = yuyv_to_gray(&buf, 2, 2, 6).unwrap();
        assert_eq!(img.as_raw(), &[10, 20, 30, 40]);
        let img = uyvy_to_gray(&buf, 2, 2, 6).unwrap();
        assert_eq!(img.as_raw(), &[200, 201, 202, 203]);
    }

    #[test]
    fn grey_with_stride_and_a_short_last_row() {
        // The last row is not padded: the buffer ends right after its pixels.
        let buf = [1, 2, 3, 0, 4, 5, 6];
        let img = grey_to_gray(&buf, 3, 2, 4).unwrap();
        assert_eq!(img.as_raw(), &[1, 2, 3, 4, 5, 6]);
        // Stride 0 means packed.
        let img = grey_to_gray(&[1, 2, 3, 4], 2, 2, 0).unwrap();
        assert_eq!(img.as_raw(), &[1, 2, 3, 4]);
    }

    #[test]
    fn short_buffers_are_corrupt_frames_and_bad_strides_fatal() {
        assert!(matches!(
            yuyv_to_gray(&[0; 7], 2, 2, 4),
            Err(CaptureError::CorruptFrame(_))
        ));
        assert!(matches!(
            grey_to_gray(&[0; 16], 4, 2, 3),
            Err(CaptureError::Fatal(_))
        ));
    }

    #[test]
    fn a_zero_side_is_a_corrupt_frame_not_a_panic() {
        // Found by tests/it/fuzz.rs: a zero width made the row length zero.
        for (w, h) in [(0, 2), (2, 0), (0, 0)] {
            for convert in [yuyv_to_gray, uyvy_to_gray, grey_to_gray] {
                assert!(matches!(
                    convert(&[0; 16], w, h, 0),
                    Err(CaptureError::CorruptFrame(_))
                ));
            }
        }
    }

    #[test]
    fn default_dht_segment_is_well_formed() {
        assert_eq!(&DEFAULT_DHT[..4], &[0xFF, 0xC4, 0x01, 0xA2]);
        // Each table's value count equals the sum of its 16 code-length counts.
        let mut pos = 4;
        while pos < DEFAULT_DHT.len() {
            let n: usize = DEFAULT_DHT[pos + 1..pos + 17]
                .iter()
                .map(|&b| b as usize)
                .sum();
            pos += 17 + n;
        }
        assert_eq!(pos, DEFAULT_DHT.len());
    }

    #[test]
    fn garbage_is_a_corrupt_frame() {
        assert!(matches!(
            mjpeg_to_gray(b"not a jpeg at all"),
            Err(CaptureError::CorruptFrame(_))
        ));
        assert!(matches!(
            mjpeg_to_gray(&[0xFF, 0xD8, 0xFF, 0xD9]),
            Err(CaptureError::CorruptFrame(_))
        ));
    }
}
