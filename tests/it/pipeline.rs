//! The live pipeline end to end on a synthetic video: two fixture faces on a gray canvas, one
//! leaving the frame for longer than `max_misses` and coming back. Real detector, bundled model.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma};

use ferrite::classify::Classifier;
use ferrite::detect::{Detector, DetectorConfig};
use ferrite::ensemble::Ensemble;
use ferrite::frame::{CaptureError, Frame, FrameSource};
use ferrite::models;
use ferrite::pipeline::{self, PipelineConfig};
use ferrite::sink::{Picture, Sink, SinkError};
use ferrite::track::{Event, EventKind, FrameUpdate, TrackerConfig};

const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const FRAMES: u64 = 80;
const FACE_SIDE: u32 = 128;

/// Frames composed on a canvas: person A (the astronaut) drifts right; person B (her mirror
/// image) walks out of the frame on the right, stays out, and walks back in.
struct SyntheticVideo {
    a: GrayImage,
    b: GrayImage,
    next: u64,
}

impl SyntheticVideo {
    fn new() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/astronaut.png");
        let photo = image::open(path).unwrap().to_luma8();
        // The face box is about (178, 81) 94x94; keep some hair, cheeks and chin around it.
        let face = imageops::crop_imm(&photo, 143, 45, 165, 165).to_image();
        let a = imageops::resize(&face, FACE_SIDE, FACE_SIDE, FilterType::Triangle);
        let b = imageops::flip_horizontal(&a);
        SyntheticVideo { a, b, next: 0 }
    }

    /// x of B's left edge: at rest, then out past the right edge (frames 16-30), away, and back
    /// in (frames 56-66).
    fn b_x(frame: u64) -> i64 {
        let rest = 184i64;
        let away = 340i64;
        match frame {
            0..16 => rest,
            16..30 => rest + (away - rest) * (frame as i64 - 16) / 14,
            30..56 => away,
            56..66 => away - (away - rest) * (frame as i64 - 56) / 10,
            _ => rest,
        }
    }

    fn a_x(frame: u64) -> i64 {
        8 + frame as i64 / 2
    }

    fn compose(&self, frame: u64) -> GrayImage {
        let mut canvas = GrayImage::from_pixel(WIDTH, HEIGHT, Luma([118]));
        imageops::overlay(&mut canvas, &self.a, Self::a_x(frame), 56);
        imageops::overlay(&mut canvas, &self.b, Self::b_x(frame), 50);
        canvas
    }
}

impl FrameSource for SyntheticVideo {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.next >= FRAMES {
            return Ok(None);
        }
        let index = self.next;
        self.next += 1;
        Ok(Some(Frame {
            index,
            timestamp: Duration::from_millis(index * 1000 / 15),
            image: self.compose(index),
        }))
    }

    fn describe(&self) -> String {
        "synthetic video".into()
    }
}

#[derive(Default)]
struct Recorded {
    events: Vec<Event>,
    frames: Vec<FrameUpdate>,
    pictures: Vec<SeenPicture>,
    closed: bool,
}

/// What a sink saw of one picture.
struct SeenPicture {
    size: (u32, u32),
    faces: Vec<[f32; 4]>,
    /// The vitals' frame count: frames processed before this one.
    counted: u64,
}

struct Recorder(Arc<Mutex<Recorded>>);

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn on_event(&mut self, event: &Event) -> Result<(), SinkError> {
        self.0.lock().unwrap().events.push(event.clone());
        Ok(())
    }
    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        self.0.lock().unwrap().frames.push(update.clone());
        Ok(())
    }
    fn on_picture(&mut self, picture: &Picture<'_>) -> Result<(), SinkError> {
        self.0.lock().unwrap().pictures.push(SeenPicture {
            size: picture.image.dimensions(),
            faces: picture.faces.to_vec(),
            counted: picture.vitals.frames,
        });
        Ok(())
    }
    fn close(&mut self) -> Result<(), SinkError> {
        self.0.lock().unwrap().closed = true;
        Ok(())
    }
}

fn classifier() -> Classifier {
    let source = models::resolve(models::default_model()).unwrap();
    let crop = source.manifest.crop_geometry();
    let ensemble = Ensemble::load(&source).unwrap();
    let detector = Detector::new(DetectorConfig::default()).unwrap();
    Classifier::new(Some(detector), ensemble, crop)
}

#[test]
fn synthetic_video_gives_stable_ids_the_expected_events_and_no_flicker() {
    let classifier = classifier();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Recorder(recorded.clone()))];
    let tracker = TrackerConfig {
        min_hits: 2,
        max_misses: 3,
        ..TrackerConfig::default()
    };
    let config = PipelineConfig {
        detect_every: 2,
        drop_frames: false,
        stats_interval_s: 0.0,
        max_frames: None,
    };
    let stats = pipeline::run(
        Box::new(SyntheticVideo::new()),
        &classifier,
        &tracker,
        &config,
        &mut sinks,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert_eq!(stats.frames, FRAMES);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.detect.count, FRAMES / 2);

    let recorded = recorded.lock().unwrap();
    assert!(recorded.closed);
    // Each processed frame's picture follows its update (the final empty update has none): the
    // frame's pixels, every face box it was classified at, and the run's count before it.
    assert_eq!(recorded.pictures.len() as u64, FRAMES);
    for (i, (seen, update)) in recorded.pictures.iter().zip(&recorded.frames).enumerate() {
        assert_eq!([seen.size.0, seen.size.1], update.frame_size);
        assert_eq!(seen.counted, i as u64);
        // A track matched at this frame's detection had a detection box.
        if update.detected && update.tracks.iter().any(|t| t.misses == 0) {
            assert!(!seen.faces.is_empty(), "frame {i}: no face boxes");
        }
    }
    let summary: Vec<String> = recorded
        .events
        .iter()
        .map(|e| {
            format!(
                "{}:{} {} @{} x={:.0}",
                e.name(),
                e.state.track,
                e.state.label,
                e.stamp.frame,
                e.state.bbox[0]
            )
        })
        .collect();
    let lifecycle: Vec<(&str, u64)> = recorded
        .events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::ExpressionChanged { .. }))
        .map(|e| (e.name(), e.state.track))
        .collect();

    // Both faces appear at the start; A is the one on the left.
    let first_two: Vec<&Event> = recorded
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Appeared)
        .take(2)
        .collect();
    assert_eq!(first_two.len(), 2, "{summary:#?}");
    let a = first_two
        .iter()
        .min_by(|x, y| x.state.bbox[0].total_cmp(&y.state.bbox[0]))
        .unwrap()
        .state
        .track;
    let b = if a == 1 { 2 } else { 1 };
    assert_eq!(
        [first_two[0].state.track, first_two[1].state.track]
            .iter()
            .min(),
        Some(&1),
        "{summary:#?}"
    );
    // B leaves, comes back as a new track (3); at the end of the stream A and the new B leave.
    let expected = [
        ("appeared", 1),
        ("appeared", 2),
        ("left", b),
        ("appeared", 3),
        ("left", a),
        ("left", 3),
    ];
    assert_eq!(lifecycle, expected, "{summary:#?}");
    let b_left = recorded
        .events
        .iter()
        .find(|e| e.kind == EventKind::Left && e.state.track == b)
        .unwrap();
    assert!(
        (20..=45).contains(&b_left.stamp.frame),
        "B left at frame {}: {summary:#?}",
        b_left.stamp.frame
    );
    let returned = recorded
        .events
        .iter()
        .find(|e| e.kind == EventKind::Appeared && e.state.track == 3)
        .unwrap();
    assert!(returned.stamp.frame >= 56, "{summary:#?}");
    assert!(returned.state.bbox[0] > 150.0, "{summary:#?}");

    // A keeps its ID on every frame it is reported, wherever it is.
    for update in &recorded.frames {
        for t in &update.tracks {
            if t.bbox[0] < 120.0 {
                assert_eq!(t.track, a, "frame {}: {:?}", update.stamp.frame, t);
            }
        }
    }

    // No flicker: the smoothed, hysteresis-held label changes at most once per track, and the
    // astronaut smiles throughout.
    let changes = recorded
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ExpressionChanged { .. }))
        .count();
    assert!(changes <= 1, "{summary:#?}");
    for e in recorded
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Appeared)
    {
        assert_eq!(e.state.label, "happy", "{summary:#?}");
    }
    eprintln!("{}", stats.table());
}
