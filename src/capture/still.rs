//! Still image files as the user sees them: strictly decoded (a cut-off file is an error, never a
//! partly gray picture) and turned the way their EXIF orientation says.
//!
//! `classify`, `eval`, `calibrate-crop`, `bench IMAGE` and `run --input` on image files all decode
//! through [`read_image`] or [`decode_image`], so that a face box means the same pixels whichever
//! command reported it.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Why a still image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    #[error("cannot open: {0}")]
    Open(#[from] std::io::Error),
    #[error("not a readable image: {0}")]
    Decode(#[from] image::ImageError),
    /// The JPEG decoder makes up the missing part of a cut-off file and reports success, which
    /// would pass for a photo without faces; checked separately for that reason.
    #[error("not a readable image: truncated JPEG ({0})")]
    TruncatedJpeg(&'static str),
}

/// Reads and decodes one image file; see [`decode_image`].
pub fn read_image(path: &Path) -> Result<DynamicImage, ImageFileError> {
    let bytes = std::fs::read(path)?;
    decode(&bytes, ImageFormat::from_path(path).ok())
}

/// Decodes an encoded image (format from its content), applying its EXIF orientation: the result
/// is the image as a viewer displays it, so face boxes are in displayed-image pixels. A JPEG that
/// ends before its end-of-image marker is an error.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, ImageFileError> {
    decode(bytes, None)
}

fn decode(bytes: &[u8], by_name: Option<ImageFormat>) -> Result<DynamicImage, ImageFileError> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Some(format) = by_name {
        reader.set_format(format);
    }
    // The content decides where it is recognisable: a PNG named .jpg is still a PNG.
    let reader = reader.with_guessed_format()?;
    if reader.format() == Some(ImageFormat::Jpeg) {
        check_jpeg_complete(bytes)?;
    }
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    // What `ImageReader::decode` checks and `into_decoder` does not: a header cannot make us
    // allocate more than the default limit.
    Limits::default().reserve(decoder.total_bytes())?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Walks a JPEG's marker structure to its end-of-image marker (EOI).
///
/// Segment lengths are followed rather than searching for the EOI bytes, because an EXIF
/// thumbnail (a whole JPEG inside APP1) carries an EOI of its own. Bytes after the EOI are allowed
/// (cameras append data there). Stray bytes between segments are skipped as libjpeg does: only the
/// missing end matters here, the decoder judges the rest.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), ImageFileError> {
    const CUT: &str = "the data ends before the end-of-image marker";
    let cut = || ImageFileError::TruncatedJpeg(CUT);
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(ImageFileError::TruncatedJpeg("no start-of-image marker"));
    }
    let mut at = 2;
    loop {
        // Up to the next marker: 0xFF, any number of fill 0xFF, then the marker code.
        at += bytes
            .get(at..)
            .ok_or_else(cut)?
            .iter()
            .position(|&b| b == 0xFF)
            .ok_or_else(cut)?;
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *bytes.get(at).ok_or_else(cut)?;
        at += 1;
        match marker {
            0xD9 => return Ok(()),
            // Markers without a length: TEM, restart markers, and a stuffed zero out of place.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let length = match bytes.get(at..at + 2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(cut()),
        };
        if length < 2 {
            return Err(ImageFileError::TruncatedJpeg("a segment length below 2"));
        }
        at += length;
        if at > bytes.len() {
            return Err(cut());
        }
        if marker == 0xDA {
            at = end_of_scan(bytes, at).ok_or_else(cut)?;
        }
    }
}

/// The offset of the marker that ends the entropy-coded data starting at `at`, or `None` when the
/// data runs to the end of the file. Inside it, 0xFF is followed by a stuffed zero or a restart
/// marker; anything else is a real marker.
fn end_of_scan(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 => at += 2,
            // Fill bytes before a marker.
            0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::exif_fixture::{exif_orientation, jpeg};
    use super::*;
    use image::{Rgb, RgbImage};

    /// 64x32, black but for a white 16x16 block in the stored top-left corner.
    fn marked() -> RgbImage {
        RgbImage::from_fn(64, 32, |x, y| {
            if x < 16 && y < 16 {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        })
    }

    fn bright(image: &RgbImage, x: u32, y: u32) -> bool {
        image.get_pixel(x, y)[0] > 200
    }

    #[test]
    fn orientation_3_is_read_upside_down() {
        let shown = decode_image(&jpeg(&marked(), Some(exif_orientation(3))))
            .unwrap()
            .into_rgb8();
        assert_eq!(shown.dimensions(), (64, 32));
        assert!(bright(&shown, 56, 24), "the mark moves to the bottom right");
        assert!(!bright(&shown, 8, 8));
    }

    #[test]
    fn orientation_6_is_read_turned_clockwise() {
        let shown = decode_image(&jpeg(&marked(), Some(exif_orientation(6))))
            .unwrap()
            .into_rgb8();
        assert_eq!(shown.dimensions(), (32, 64), "the sides swap");
        assert!(bright(&shown, 24, 8), "the mark moves to the top right");
        assert!(!bright(&shown, 8, 8));
        assert!(!bright(&shown, 8, 56));
    }

    #[test]
    fn without_exif_the_stored_pixels_are_kept() {
        let shown = decode_image(&jpeg(&marked(), None)).unwrap().into_rgb8();
        assert_eq!(shown.dimensions(), (64, 32));
        assert!(bright(&shown, 8, 8));
    }

    #[test]
    fn read_image_applies_the_orientation_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turned.jpg");
        std::fs::write(&path, jpeg(&marked(), Some(exif_orientation(6)))).unwrap();
        assert_eq!(
            read_image(&path).unwrap().into_rgb8().dimensions(),
            (32, 64)
        );
    }

    #[test]
    fn a_truncated_jpeg_is_an_error() {
        let whole = jpeg(&marked(), None);
        decode_image(&whole).unwrap();
        for keep in [whole.len() / 2, whole.len() - 2, whole.len() - 1] {
            let err = decode_image(&whole[..keep]).unwrap_err();
            assert!(
                matches!(err, ImageFileError::TruncatedJpeg(_)),
                "{keep} of {} bytes: {err}",
                whole.len()
            );
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }

    /// The EOI of an embedded thumbnail must not pass for the end of the image.
    #[test]
    fn an_end_marker_inside_a_segment_does_not_count() {
        let mut exif = exif_orientation(1);
        exif.extend_from_slice(&[0xFF, 0xD9, 0xFF, 0xD9]);
        let whole = jpeg(&marked(), Some(exif));
        decode_image(&whole).unwrap();
        // Cut inside the entropy-coded data, after the APP1 segment.
        let err = decode_image(&whole[..whole.len() * 3 / 4]).unwrap_err();
        assert!(matches!(err, ImageFileError::TruncatedJpeg(_)), "{err}");
    }

    #[test]
    fn bytes_after_the_end_marker_are_allowed() {
        let mut whole = jpeg(&marked(), None);
        whole.extend_from_slice(b"appended by a camera");
        assert_eq!(decode_image(&whole).unwrap().width(), 64);
    }

    #[test]
    fn the_bundled_sample_is_complete() {
        check_jpeg_complete(crate::bench::SAMPLE_JPEG).unwrap();
    }

    /// The other formats' decoders already fail on missing data; this keeps it so.
    #[test]
    fn truncated_png_bmp_and_pnm_are_errors() {
        let image = DynamicImage::ImageRgb8(marked());
        for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Pnm] {
            let mut whole = Vec::new();
            image
                .write_to(&mut Cursor::new(&mut whole), format)
                .unwrap();
            decode_image(&whole).unwrap();
            let half = &whole[..whole.len() / 2];
            assert!(decode_image(half).is_err(), "{format:?}");
        }
    }

    #[test]
    fn a_missing_file_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_image(&dir.path().join("gone.png")).unwrap_err();
        assert!(matches!(err, ImageFileError::Open(_)), "{err}");
    }
}
