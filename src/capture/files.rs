//! A still image, or a directory of them, as a stream of frames.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::{DynamicImage, GrayImage};
use log::warn;

use super::{CaptureOptions, Pacer};
use crate::frame::{CaptureError, Frame, FrameSource};

/// The image file extensions ferrite reads from a directory (`run --input DIR`, `classify`,
/// `eval`, `calibrate-crop`); matched without regard to case.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "pgm", "ppm", "pnm"];

/// One input of `classify`, `eval` or `calibrate-crop`: an image path, or a path that could not be
/// used with the reason (reported in its place, in input order).
pub type Job = Result<PathBuf, (PathBuf, String)>;

/// Expands directories (recursively, sorted) into image files; explicit files are kept whatever
/// their extension, so a mislabelled file still gets a clear decode error.
pub fn expand_inputs(inputs: &[PathBuf]) -> Vec<Job> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = walk(input, &mut found) {
                files.push(Err((input.clone(), format!("cannot list directory: {e}"))));
                continue;
            }
            if found.is_empty() {
                files.push(Err((input.clone(), "directory holds no images".into())));
            }
            found.sort();
            files.extend(found.into_iter().map(Ok));
        } else {
            files.push(Ok(input.clone()));
        }
    }
    files
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if has_image_extension(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// Frames from one image file or from the images of a directory (not recursive), in name order.
///
/// A file that cannot be decoded is a [`CaptureError::CorruptFrame`]: it takes its place in the
/// numbering and the next call goes on with the next file.
pub struct ImageFilesSource {
    description: String,
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
    pacer: Pacer,
    fps: Option<f64>,
    index: u64,
    start: Option<Instant>,
    corrupt: u64,
}

impl ImageFilesSource {
    pub fn open(path: &Path, opts: &CaptureOptions) -> Result<ImageFilesSource, CaptureError> {
        let fatal = |e: std::io::Error| CaptureError::Fatal(format!("{}: {e}", path.display()));
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(fatal)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && has_image_extension(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(CaptureError::Fatal(format!(
                    "{}: no images ({}) in this directory",
                    path.display(),
                    IMAGE_EXTENSIONS.join(", ")
                )));
            }
            files
        } else {
            std::fs::metadata(path).map_err(fatal)?;
            vec![path.to_path_buf()]
        };
        Ok(ImageFilesSource {
            description: format!(
                "{} ({} image{})",
                path.display(),
                files.len(),
                if files.len() == 1 { "" } else { "s" }
            ),
            files,
            next: 0,
            looping: opts.looping,
            pacer: Pacer::new(opts.fps),
            fps: opts.fps,
            index: 0,
            start: None,
            corrupt: 0,
        })
    }

    /// Files that could not be decoded so far.
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Gray the way the still-image pipeline makes it (BT.601 weights, as OpenCV and the training
/// scripts), which is also the Y that a camera's YUYV or MJPEG carries; the image crate's own
/// `into_luma8` uses Rec. 709 weights.
fn to_gray(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(gray) => gray,
        other => crate::align::rgb_to_gray(&other.into_rgb8()),
    }
}

impl FrameSource for ImageFilesSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.next == self.files.len() {
            if !self.looping {
                return Ok(None);
            }
            self.next = 0;
        }
        let path = &self.files[self.next];
        self.next += 1;
        self.pacer.wait();
        let index = self.index;
        self.index += 1;
        // With a rate the timeline is nominal (reproducible); without one, it is the reading time.
        let start = *self.start.get_or_insert_with(Instant::now);
        let timestamp = match self.fps {
            Some(fps) if fps > 0.0 => Duration::from_secs_f64(index as f64 / fps),
            _ => start.elapsed(),
        };
        match image::open(path) {
            Ok(img) => Ok(Some(Frame {
                index,
                timestamp,
                image: to_gray(img),
            })),
            Err(e) => {
                self.corrupt += 1;
                warn!(
                    "{}: not decodable, frame {index} dropped ({} so far): {e}",
                    path.display(),
                    self.corrupt
                );
                Err(CaptureError::CorruptFrame(format!(
                    "{}: {e}",
                    path.display()
                )))
            }
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_inputs_walks_directories_sorted_and_reports_empty_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/nested")).expect("mkdir");
        std::fs::create_dir_all(root.join("empty")).expect("mkdir");
        for name in ["b/2.PNG", "b/nested/1.pnm", "b/notes.txt", "a.jpg"] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        let explicit = root.join("b/notes.txt");
        let jobs = expand_inputs(&[root.join("b"), explicit.clone(), root.join("empty")]);
        let ok: Vec<PathBuf> = jobs
            .iter()
            .filter_map(|j| j.as_ref().ok().cloned())
            .collect();
        // Recursive, sorted, case-insensitive extensions; an explicit file is kept as given.
        assert_eq!(
            ok,
            vec![root.join("b/2.PNG"), root.join("b/nested/1.pnm"), explicit]
        );
        let errors: Vec<&(PathBuf, String)> =
            jobs.iter().filter_map(|j| j.as_ref().err()).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, root.join("empty"));
        assert!(errors[0].1.contains("no images"), "{}", errors[0].1);
    }

    #[test]
    fn image_extensions_match_without_case() {
        assert!(has_image_extension(Path::new("x/face.JPEG")));
        assert!(has_image_extension(Path::new("x/face.pnm")));
        assert!(!has_image_extension(Path::new("x/face.gif")));
        assert!(!has_image_extension(Path::new("x/face")));
    }
}
