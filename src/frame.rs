//! The seam between capture and the rest of the pipeline: a frame, and the trait every frame source
//! (V4L2 camera, image files, recorded video, synthetic test video) implements.

use std::time::Duration;

use image::GrayImage;

/// One captured frame. Luma only: the ensemble consumes gray crops and cameras deliver luma cheapest
/// (YUYV's Y plane, GREY, or an MJPEG decoded straight to luma).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the source's stream, counting frames the source produced (dropped ones included),
    /// so gaps show drops.
    pub index: u64,
    /// Capture time relative to the source's first frame.
    pub timestamp: Duration,
    pub image: GrayImage,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A frame arrived but could not be decoded. The stream itself is fine: drop it, count it, go on.
    #[error("corrupt frame: {0}")]
    CorruptFrame(String),
    /// The device went away (unplugged, EIO, timeout). The source may recover on a later call.
    #[error("camera unavailable: {0}")]
    Unavailable(String),
    /// Nothing to recover: bad path, unsupported format, malformed file.
    #[error("{0}")]
    Fatal(String),
}

impl CaptureError {
    /// Whether the pipeline should keep calling `next_frame` after this error.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CaptureError::CorruptFrame(_) | CaptureError::Unavailable(_)
        )
    }
}

/// Anything that yields frames. Capture runs on its own thread, hence `Send`.
pub trait FrameSource: Send {
    /// Blocks until the next frame. `Ok(None)` is the end of a finite stream (files, recordings).
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;

    /// A short human description for logs ("/dev/video0 640x480 YUYV @30", "clip.y4m").
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_recoverable_ones() {
        assert!(CaptureError::CorruptFrame("bad huffman".into()).is_transient());
        assert!(CaptureError::Unavailable("EIO".into()).is_transient());
        assert!(!CaptureError::Fatal("no such file".into()).is_transient());
    }
}
