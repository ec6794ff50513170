//! Heap allocations of a warm frame, counted by a global allocator that wraps the system one.
//! Only this test binary uses it. Run with `-- --nocapture` for the counts.
//!
//! The hot path's buffers (the detector's tract state, its input tensor and every activation of
//! ferrite's kernels, the crop, CLAHE and the ensemble's input) are kept between frames, so
//! after a warm-up a frame allocates only tract's own nodes' outputs and the small result values
//! handed to the caller. The bounds below sit far under what one activation of the detector's
//! first layers (64x64x24 floats, 384 KiB) or the frame copy they replaced would take.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use ferrite::align::{self, CropGeometry};
use ferrite::classify::{Classifier, StageTimes};
use ferrite::detect::{Detector, DetectorConfig, Tiles};
use ferrite::ensemble::Ensemble;
use ferrite::kernels::{Backend, ConvKernels};
use ferrite::models;
use image::GrayImage;

struct Counting;

thread_local! {
    /// (allocations, bytes) made by this thread. Per thread, so the test harness's other
    /// threads do not count.
    static COUNTS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn count(bytes: usize) {
    let _ = COUNTS.try_with(|c| {
        let (n, b) = c.get();
        c.set((n + 1, b + bytes as u64));
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's `GlobalAlloc::alloc` contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's `GlobalAlloc::alloc_zeroed` contract, passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's `GlobalAlloc::realloc` contract, passed on unchanged; `ptr` came
        // from `System` since every allocation here does.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's `GlobalAlloc::dealloc` contract, passed on unchanged; `ptr` came
        // from `System` since every allocation here does.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes `work` makes on this thread.
fn counted(work: impl FnOnce()) -> (u64, u64) {
    let before = COUNTS.with(Cell::get);
    work();
    let after = COUNTS.with(Cell::get);
    (after.0 - before.0, after.1 - before.1)
}

/// The bundled sample as a 640x480 gray frame, the size of a typical camera stream.
fn frame() -> GrayImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/astronaut.png");
    let photo = image::open(path).expect("assets/astronaut.png").to_luma8();
    let mut frame = GrayImage::from_pixel(640, 480, image::Luma([90]));
    image::imageops::overlay(&mut frame, &photo, 64, 0);
    frame
}

fn kernels() -> Vec<ConvKernels> {
    let mut all = vec![ConvKernels::Tract, ConvKernels::Direct(Backend::Portable)];
    all.extend(
        [Backend::Avx512, Backend::Neon]
            .into_iter()
            .filter(|b| b.available())
            .map(ConvKernels::Direct),
    );
    all
}

#[test]
fn warm_frames_allocate_only_small_results() {
    let gray = frame();
    for kernels in kernels() {
        // The live pipeline's detector: one whole-frame pass, no second opinion
        // (`ClassifierOptions::for_live_video`).
        let live = DetectorConfig {
            tiles: Tiles::Off,
            verify: false,
            ..DetectorConfig::default()
        };
        let detector = Detector::with_kernels(live, kernels).expect("detector");
        let source = models::bundled("fer2013-48-fp32").expect("bundled model");
        let ensemble =
            Ensemble::load_with_kernels(&source, ferrite::ensemble::Precision::Stored, kernels)
                .expect("ensemble");
        let classifier = Classifier::new(Some(detector), ensemble, CropGeometry::default());
        let mut session = classifier.session().expect("session");
        let mut times = StageTimes::default();
        for _ in 0..3 {
            let found = session
                .classify_gray(&gray, None, &mut times)
                .expect("warm-up");
            assert_eq!(found.len(), 1, "the sample has one face");
        }
        let detector = classifier.detector().expect("detector");
        let (detect_n, detect_bytes) = counted(|| {
            detector.detect_gray(&gray).expect("detect");
        });
        let face = detector.detect_gray(&gray).expect("detect")[0].clone();
        let size = classifier.ensemble().input_size().0;
        let mut crop = GrayImage::new(size, size);
        let (crop_n, _) = counted(|| {
            align::crop_face_into(&gray, &face, classifier.crop(), &mut crop);
        });
        let mut model = classifier.ensemble().session().expect("ensemble session");
        for _ in 0..2 {
            model.predict(&crop).expect("warm-up");
        }
        let (prepare_n, _) = counted(|| model.prepare(&crop).expect("prepare"));
        let (run_n, run_bytes) = counted(|| {
            model.run_prepared().expect("run");
        });
        let (frame_n, frame_bytes) = counted(|| {
            session
                .classify_gray(&gray, None, &mut times)
                .expect("frame");
        });
        println!(
            "{kernels:?}: detect {detect_n} allocations / {detect_bytes} B; crop {crop_n}; \
             CLAHE and normalise {prepare_n}; ensemble run {run_n} / {run_bytes} B; \
             whole frame {frame_n} / {frame_bytes} B"
        );
        assert_eq!(crop_n, 0, "{kernels:?}: cropping into a buffer allocated");
        assert_eq!(prepare_n, 0, "{kernels:?}: CLAHE or normalising allocated");
        if let ConvKernels::Direct(_) = kernels {
            // What is left is tract's: the detector's four heads (their packed inputs and their
            // outputs, about 430 KB), the ensemble's dense layers and softmax, and the
            // per-face result values. With tract running every layer a frame made 1289
            // allocations of 16.1 MB in all (measured when this test was written).
            assert!(
                detect_n <= 60,
                "{kernels:?}: detect made {detect_n} allocations"
            );
            assert!(
                detect_bytes < 512 * 1024,
                "{kernels:?}: detect {detect_bytes} B"
            );
            assert!(
                run_bytes < 64 * 1024,
                "{kernels:?}: ensemble run {run_bytes} B"
            );
            assert!(
                frame_bytes < 640 * 1024,
                "{kernels:?}: frame {frame_bytes} B"
            );
        }
    }
}
