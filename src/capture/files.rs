//! A still image, or a directory of them, as a stream of frames.

use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::{DynamicImage, GrayImage};
use log::{debug, warn};

use super::still::read_image;
use super::{CaptureOptions, Pacer};
use crate::frame::{CaptureError, Frame, FrameSource};

/// The image file extensions ferrite reads from a directory (`run --input DIR`, `classify`,
/// `eval`, `calibrate-crop`); matched without regard to case.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "pgm", "ppm", "pnm"];

/// One input of `classify`, `eval` or `calibrate-crop`: an image path, or a path that could not be
/// used with the reason (reported in its place, in input order).
pub type Job = Result<PathBuf, (PathBuf, String)>;

/// Expands directories (recursively, in path order) into image files; explicit files are kept
/// whatever their extension, so a mislabelled file still gets a clear decode error. A directory
/// that cannot be listed is an `Err` in its place and the rest of the tree is still expanded.
pub fn expand_inputs(inputs: &[PathBuf]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            jobs.push(Ok(input.clone()));
            continue;
        }
        match list_images(input, Depth::Recursive) {
            Ok(found) if found.is_empty() => {
                jobs.push(Err((input.clone(), "directory holds no images".into())));
            }
            Ok(found) => jobs.extend(found),
            Err(e) => jobs.push(Err((input.clone(), format!("cannot list directory: {e}")))),
        }
    }
    jobs
}

/// How far [`list_images`] goes below the directory it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The directory's own files (`run --input DIR`).
    Top,
    /// Every subdirectory too (`classify`, `eval`, `calibrate-crop`).
    Recursive,
}

/// The image files in `dir`, in path order. Symbolic links are followed, but each real
/// directory (device and inode) is listed once: a link back up the tree (`a -> .`) would
/// otherwise list the tree again at every level until the path grew too long, and two such links
/// make that exponential.
///
/// `Err` only when `dir` itself cannot be listed. Below it, a directory that cannot be listed is
/// an `Err` job in its place; so is an entry named like an image that cannot be examined (a
/// dangling link). Entries with other names that cannot be examined are not images: skipped.
pub fn list_images(dir: &Path, depth: Depth) -> io::Result<Vec<Job>> {
    walk(dir, depth, &mut |d| {
        std::fs::read_dir(d)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    })
}

/// [`list_images`] with the directory listing passed in: running as root (as CI does), no
/// permission makes `read_dir` fail, so the tests make it fail here.
fn walk(
    root: &Path,
    depth: Depth,
    list: &mut dyn FnMut(&Path) -> io::Result<Vec<PathBuf>>,
) -> io::Result<Vec<Job>> {
    let mut walker = Walker {
        depth,
        list,
        visited: HashSet::new(),
        jobs: Vec::new(),
    };
    walker.visited.insert(dir_id(&std::fs::metadata(root)?));
    let entries = (walker.list)(root)?;
    walker.entries(entries);
    Ok(walker.jobs)
}

struct Walker<'a> {
    depth: Depth,
    list: &'a mut dyn FnMut(&Path) -> io::Result<Vec<PathBuf>>,
    visited: HashSet<(u64, u64)>,
    jobs: Vec<Job>,
}

impl Walker<'_> {
    fn entries(&mut self, mut entries: Vec<PathBuf>) {
        // Entries share their parent, so this is name order, and the walk is in path order.
        entries.sort();
        for path in entries {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    if self.depth == Depth::Recursive {
                        self.directory(path, &meta);
                    }
                }
                // A FIFO or device named like an image would block or never end on reading.
                Ok(meta) if meta.is_file() && has_image_extension(&path) => {
                    self.jobs.push(Ok(path))
                }
                Ok(_) => {}
                Err(e) if has_image_extension(&path) => {
                    self.jobs.push(Err((path, format!("cannot open: {e}"))));
                }
                Err(e) => debug!("{}: skipped: {e}", path.display()),
            }
        }
    }

    fn directory(&mut self, path: PathBuf, meta: &Metadata) {
        if !self.visited.insert(dir_id(meta)) {
            debug!(
                "{}: a directory already listed (through a link), skipped",
                path.display()
            );
            return;
        }
        match (self.list)(&path) {
            Ok(entries) => self.entries(entries),
            Err(e) => self
                .jobs
                .push(Err((path, format!("cannot list directory: {e}")))),
        }
    }
}

fn dir_id(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Frames from one image file or from the images of a directory (not recursive), in name order,
/// decoded by [`read_image`](super::still::read_image).
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
            let mut files = Vec::new();
            for job in list_images(path, Depth::Top).map_err(fatal)? {
                match job {
                    Ok(file) => files.push(file),
                    Err((file, reason)) => warn!("{}: {reason}; skipped", file.display()),
                }
            }
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
        match read_image(path) {
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

    fn listed(jobs: &[Job]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
        let ok = jobs
            .iter()
            .filter_map(|j| j.as_ref().ok().cloned())
            .collect();
        let err = jobs
            .iter()
            .filter_map(|j| j.as_ref().err().cloned())
            .collect();
        (ok, err)
    }

    #[test]
    fn links_back_up_the_tree_list_each_image_once() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        for name in ["top.png", "sub/face.png"] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        symlink(".", root.join("sub/a")).expect("symlink");
        symlink("..", root.join("sub/b")).expect("symlink");
        symlink(".", root.join("again")).expect("symlink");
        // Two loops made the old walk exponential: fail rather than hang if that comes back.
        let (tx, rx) = std::sync::mpsc::channel();
        let input = root.clone();
        std::thread::spawn(move || tx.send(expand_inputs(&[input])));
        let jobs = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the walk ends");
        let (ok, err) = listed(&jobs);
        assert_eq!(ok, vec![root.join("sub/face.png"), root.join("top.png")]);
        assert!(err.is_empty(), "{err:?}");
    }

    #[test]
    fn a_directory_reached_by_a_link_elsewhere_is_walked() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, other) = (dir.path().join("root"), dir.path().join("other"));
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("face.jpg"), b"x").expect("write");
        symlink(&other, root.join("linked")).expect("symlink");
        let (ok, _) = listed(&list_images(&root, Depth::Recursive).expect("listed"));
        assert_eq!(ok, vec![root.join("linked/face.jpg")]);
    }

    #[test]
    fn a_directory_that_cannot_be_listed_is_reported_in_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for sub in ["locked", "z"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        for name in ["a.png", "locked/hidden.png", "z/y.png"] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        let jobs = walk(root, Depth::Recursive, &mut |d| {
            if d.ends_with("locked") {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            std::fs::read_dir(d)?.map(|e| e.map(|e| e.path())).collect()
        })
        .expect("the root is listed");
        assert_eq!(jobs.len(), 3, "{jobs:?}");
        assert_eq!(jobs[0].as_ref().ok(), Some(&root.join("a.png")));
        let (locked, reason) = jobs[1].as_ref().expect_err("locked is reported");
        assert_eq!(locked, &root.join("locked"));
        assert!(reason.starts_with("cannot list directory"), "{reason}");
        assert_eq!(jobs[2].as_ref().ok(), Some(&root.join("z/y.png")));
    }

    #[test]
    fn a_dangling_link_is_an_error_only_when_named_like_an_image() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("ok.png"), b"x").expect("write");
        symlink(root.join("nowhere"), root.join("gone.png")).expect("symlink");
        symlink(root.join("nowhere"), root.join("gone")).expect("symlink");
        symlink(root.join("itself"), root.join("itself")).expect("symlink");
        let (ok, err) = listed(&list_images(root, Depth::Recursive).expect("listed"));
        assert_eq!(ok, vec![root.join("ok.png")]);
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!(err[0].0, root.join("gone.png"));
        assert!(err[0].1.starts_with("cannot open"), "{}", err[0].1);
    }

    #[test]
    fn top_depth_keeps_to_the_directory_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        for name in ["b.png", "a.bmp", "sub/c.png"] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        let (ok, err) = listed(&list_images(root, Depth::Top).expect("listed"));
        assert_eq!(ok, vec![root.join("a.bmp"), root.join("b.png")]);
        assert!(err.is_empty());
        assert!(list_images(&root.join("missing"), Depth::Top).is_err());
    }

    #[test]
    fn image_extensions_match_without_case() {
        assert!(has_image_extension(Path::new("x/face.JPEG")));
        assert!(has_image_extension(Path::new("x/face.pnm")));
        assert!(!has_image_extension(Path::new("x/face.gif")));
        assert!(!has_image_extension(Path::new("x/face")));
    }
}
