//! What the inference thread, the encoder thread and the client threads share, and the sink
//! that feeds it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::GrayImage;
use serde::Serialize;

use super::render::{Annotation, Renderer};
use super::{ServerInfo, WebConfig};
use crate::sink::{EventLine, FaceState, Picture, Sink, SinkError, StateLine, Vitals};
use crate::track::{Event, FrameUpdate};

/// Lines an `/events` client may fall behind before it skips ahead.
const FEED_LINES: usize = 512;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A client thread that panicked mid-write leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The newest frame handed over for encoding.
#[derive(Default)]
struct RawSlot {
    image: GrayImage,
    annotations: Vec<Annotation>,
    /// Boxes to pixelate with `blur_faces`: the tracks' and every other face found.
    private: Vec<[f32; 4]>,
    fresh: bool,
}

/// The newest encoded frame.
#[derive(Default)]
struct Encoded {
    seq: u64,
    jpeg: Arc<Vec<u8>>,
    at: Option<Instant>,
    /// Total time spent drawing and encoding, for `/status`.
    busy: Duration,
}

#[derive(Default)]
struct Feed {
    /// Sequence number of `lines[0]`.
    first: u64,
    lines: VecDeque<Arc<str>>,
}

impl Feed {
    fn end(&self) -> u64 {
        self.first + self.lines.len() as u64
    }
}

#[derive(Default)]
struct Live {
    vitals: Vitals,
    frame_size: [u32; 2],
    tracks_now: usize,
    /// Exponential average of the wall-clock interval between frames.
    interval_s: f64,
    last_frame: Option<Instant>,
}

/// Counts a client for as long as it lives.
pub(crate) struct ClientGuard<'a>(&'a AtomicUsize);

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Hub {
    pub(crate) config: WebConfig,
    info: ServerInfo,
    started: Instant,
    /// Clients waiting for encoded frames (streams, snapshots).
    viewers: AtomicUsize,
    /// `/events` clients.
    listeners: AtomicUsize,
    stop: AtomicBool,
    raw: Mutex<RawSlot>,
    raw_ready: Condvar,
    encoded: Mutex<Encoded>,
    encoded_ready: Condvar,
    feed: Mutex<Feed>,
    feed_ready: Condvar,
    live: Mutex<Live>,
}

impl Hub {
    pub(crate) fn new(config: WebConfig, info: ServerInfo) -> Hub {
        Hub {
            config,
            info,
            started: Instant::now(),
            viewers: AtomicUsize::new(0),
            listeners: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            raw: Mutex::default(),
            raw_ready: Condvar::new(),
            encoded: Mutex::default(),
            encoded_ready: Condvar::new(),
            feed: Mutex::default(),
            feed_ready: Condvar::new(),
            live: Mutex::default(),
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn shut_down(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Take each lock once so no waiter misses the flag between its check and its wait.
        drop(lock(&self.raw));
        self.raw_ready.notify_all();
        drop(lock(&self.encoded));
        self.encoded_ready.notify_all();
        drop(lock(&self.feed));
        self.feed_ready.notify_all();
    }

    pub(crate) fn streams(&self) -> usize {
        self.viewers.load(Ordering::SeqCst) + self.listeners.load(Ordering::SeqCst)
    }

    pub(crate) fn viewer(&self) -> ClientGuard<'_> {
        self.viewers.fetch_add(1, Ordering::SeqCst);
        ClientGuard(&self.viewers)
    }

    pub(crate) fn listener(&self) -> ClientGuard<'_> {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        ClientGuard(&self.listeners)
    }

    fn has_viewers(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
    }

    fn has_listeners(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Hands a frame to the encoder, replacing one it has not taken yet. If the encoder is taking
    /// a frame out at this instant, this one is skipped: the inference thread never waits.
    fn post(&self, picture: &Picture<'_>) {
        let Ok(mut slot) = self.raw.try_lock() else {
            return;
        };
        slot.image.clone_from(picture.image);
        let tracks = &picture.update.tracks;
        slot.annotations = tracks.iter().map(Annotation::from).collect();
        slot.private.clear();
        if self.config.blur_faces {
            slot.private.extend(tracks.iter().map(|t| t.bbox));
            slot.private.extend_from_slice(picture.faces);
        }
        slot.fresh = true;
        drop(slot);
        self.raw_ready.notify_one();
    }

    /// The encoder thread: draws and encodes each posted frame until shutdown.
    pub(crate) fn encode_loop(&self, mut renderer: Renderer) {
        let mut image = GrayImage::default();
        let mut annotations = Vec::new();
        let mut private = Vec::new();
        loop {
            {
                let mut slot = lock(&self.raw);
                while !slot.fresh && !self.stopped() {
                    slot = self.raw_ready.wait(slot).unwrap_or_else(|e| e.into_inner());
                }
                if self.stopped() {
                    return;
                }
                std::mem::swap(&mut slot.image, &mut image);
                std::mem::swap(&mut slot.annotations, &mut annotations);
                std::mem::swap(&mut slot.private, &mut private);
                slot.fresh = false;
            }
            let start = Instant::now();
            match renderer.render(&mut image, &annotations, &private) {
                Ok(jpeg) => {
                    let mut encoded = lock(&self.encoded);
                    encoded.seq += 1;
                    encoded.jpeg = Arc::new(jpeg);
                    encoded.at = Some(Instant::now());
                    encoded.busy += start.elapsed();
                    drop(encoded);
                    self.encoded_ready.notify_all();
                }
                Err(e) => log::warn!("web: cannot encode a frame: {e}"),
            }
        }
    }

    /// The next encoded frame after `seen`; `None` after `wait` without one, or at shutdown.
    pub(crate) fn next_jpeg(&self, seen: u64, wait: Duration) -> Option<(u64, Arc<Vec<u8>>)> {
        let deadline = Instant::now() + wait;
        let mut encoded = lock(&self.encoded);
        while encoded.seq <= seen && !self.stopped() {
            let left = deadline.checked_duration_since(Instant::now())?;
            encoded = self
                .encoded_ready
                .wait_timeout(encoded, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        (encoded.seq > seen && !self.stopped()).then(|| (encoded.seq, encoded.jpeg.clone()))
    }

    /// The newest encoded frame if it is at most `age` old.
    pub(crate) fn recent_jpeg(&self, age: Duration) -> Option<(u64, Arc<Vec<u8>>)> {
        let encoded = lock(&self.encoded);
        let fresh = encoded.at.is_some_and(|at| at.elapsed() <= age);
        fresh.then(|| (encoded.seq, encoded.jpeg.clone()))
    }

    fn publish(&self, line: String) {
        let mut feed = lock(&self.feed);
        feed.lines.push_back(line.into());
        if feed.lines.len() > FEED_LINES {
            feed.lines.pop_front();
            feed.first += 1;
        }
        drop(feed);
        self.feed_ready.notify_all();
    }

    /// Where a new `/events` client starts: only lines published from now on.
    pub(crate) fn feed_end(&self) -> u64 {
        lock(&self.feed).end()
    }

    /// Lines from `cursor` on, waiting up to `wait` for one; the new cursor, and how many lines
    /// were skipped because the client fell more than [`FEED_LINES`] behind.
    pub(crate) fn lines_after(&self, cursor: u64, wait: Duration) -> (Vec<Arc<str>>, u64, u64) {
        let deadline = Instant::now() + wait;
        let mut feed = lock(&self.feed);
        while feed.end() <= cursor && !self.stopped() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return (Vec::new(), cursor, 0);
            };
            feed = self
                .feed_ready
                .wait_timeout(feed, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let skipped = feed.first.saturating_sub(cursor);
        let from = cursor.max(feed.first);
        let lines = feed
            .lines
            .iter()
            .skip((from - feed.first) as usize)
            .cloned()
            .collect();
        (lines, feed.end(), skipped)
    }

    fn observe(&self, picture: &Picture<'_>) {
        let mut live = lock(&self.live);
        let now = Instant::now();
        if let Some(last) = live.last_frame {
            let dt = now.duration_since(last).as_secs_f64();
            live.interval_s = if live.interval_s > 0.0 {
                0.9 * live.interval_s + 0.1 * dt
            } else {
                dt
            };
        }
        live.last_frame = Some(now);
        live.vitals = picture.vitals.clone();
        live.frame_size = picture.update.frame_size;
        live.tracks_now = picture.update.tracks.len();
    }

    pub(crate) fn status(&self) -> Status<'_> {
        let live = lock(&self.live);
        let encoded = lock(&self.encoded);
        Status {
            schema: crate::sink::SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: crate::sink::seconds(self.started.elapsed()),
            model: &self.info.model,
            detector: &self.info.detector,
            camera: &self.info.camera,
            frame_size: live.frame_size,
            fps: if live.interval_s > 0.0 {
                (10.0 / live.interval_s).round() / 10.0
            } else {
                0.0
            },
            last_frame_age_s: live.last_frame.map(|t| crate::sink::seconds(t.elapsed())),
            tracks_now: live.tracks_now,
            pipeline: live.vitals.clone(),
            sinks: &self.info.sinks,
            web: WebStatus {
                viewers: self.viewers.load(Ordering::SeqCst),
                listeners: self.listeners.load(Ordering::SeqCst),
                streaming: self.has_viewers(),
                stream_fps: self.config.stream_fps,
                blur_faces: self.config.blur_faces,
                token_required: self.config.token.is_some(),
                frames_encoded: encoded.seq,
                encode_ms: if encoded.seq > 0 {
                    (encoded.busy.as_secs_f64() * 1e3 / encoded.seq as f64 * 100.0).round() / 100.0
                } else {
                    0.0
                },
            },
        }
    }
}

/// `/status`.
#[derive(Serialize)]
pub(crate) struct Status<'a> {
    schema: u32,
    version: &'static str,
    uptime_s: f64,
    model: &'a str,
    detector: &'a str,
    camera: &'a str,
    frame_size: [u32; 2],
    /// Frames processed per second, recently.
    fps: f64,
    /// Seconds since the last processed frame (`null` before the first): a stalled camera shows
    /// here while the server still answers.
    last_frame_age_s: Option<f64>,
    tracks_now: usize,
    pipeline: Vitals,
    sinks: &'a [String],
    web: WebStatus,
}

#[derive(Serialize)]
struct WebStatus {
    viewers: usize,
    listeners: usize,
    /// Whether frames are being encoded (some viewer is connected).
    streaming: bool,
    stream_fps: f32,
    blur_faces: bool,
    token_required: bool,
    frames_encoded: u64,
    /// Mean time to draw and encode one frame.
    encode_ms: f64,
}

/// The `web` output: see the module's documentation.
pub struct WebSink {
    hub: Arc<Hub>,
    address: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    period: Duration,
    /// When the next frame is due for the encoder, and the next state line for `/events`.
    next_post: Option<Instant>,
    next_state: Option<Instant>,
}

impl WebSink {
    /// Binds the listening socket and starts the server and encoder threads. Fails with a
    /// one-line reason when the address cannot be bound.
    pub fn start(config: &WebConfig, info: ServerInfo) -> Result<WebSink, SinkError> {
        config.validate().map_err(SinkError::Config)?;
        let address = config.address().map_err(SinkError::Config)?;
        let timeout = Duration::from_millis(config.write_timeout_ms);
        let server = super::server::bind(address, timeout)
            .map_err(|e| SinkError::Web(format!("cannot listen on {address}: {e}")))?;
        let address = server.local_addr().unwrap_or(address);
        let renderer = Renderer::new(config.quality).map_err(SinkError::Web)?;
        let hub = Arc::new(Hub::new(config.clone(), info));
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| SinkError::Web(format!("cannot start a thread: {e}")))
        };
        let encoder = {
            let hub = hub.clone();
            spawn("web-encode", Box::new(move || hub.encode_loop(renderer)))?
        };
        let serve = {
            let hub = hub.clone();
            spawn("web-serve", Box::new(move || server.serve(&hub)))?
        };
        Ok(WebSink {
            hub,
            address,
            threads: vec![encoder, serve],
            period: Duration::from_secs_f32(1.0 / config.stream_fps),
            next_post: None,
            next_state: None,
        })
    }

    /// The bound address (the port is the OS's choice when the config says 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether a frame is due on the schedule `next`, which then moves one period on. Slots
    /// fall on a fixed grid, so frames arriving at 10 fps give a 5 fps stream 5 frames a second;
    /// a minimum gap between frames skips every frame that comes a jitter early (measured: 3.5
    /// frames a second for a 5 fps stream of a 10 fps camera).
    pub(crate) fn due(next: &mut Option<Instant>, period: Duration, now: Instant) -> bool {
        match *next {
            Some(at) if now < at => false,
            // After a pause (no client, a stalled source) the grid restarts at this frame.
            Some(at) if now < at + period => {
                *next = Some(at + period);
                true
            }
            _ => {
                *next = Some(now + period);
                true
            }
        }
    }
}

fn json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value)
        .map_err(|e| log::warn!("web: cannot serialise a line: {e}"))
        .ok()
}

impl Sink for WebSink {
    fn name(&self) -> &str {
        "web"
    }

    fn on_event(&mut self, event: &Event) -> Result<(), SinkError> {
        if self.hub.has_listeners() {
            let mut line = EventLine::from(event);
            line.face = FaceState::with_parts(&event.state);
            if let Some(text) = json(&line) {
                self.hub.publish(text);
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        if self.hub.has_listeners() && Self::due(&mut self.next_state, self.period, Instant::now())
        {
            let mut line = StateLine::from(update);
            line.faces = update.tracks.iter().map(FaceState::with_parts).collect();
            if let Some(text) = json(&line) {
                self.hub.publish(text);
            }
        }
        Ok(())
    }

    fn on_picture(&mut self, picture: &Picture<'_>) -> Result<(), SinkError> {
        self.hub.observe(picture);
        if self.hub.has_viewers() && Self::due(&mut self.next_post, self.period, Instant::now()) {
            self.hub.post(picture);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.hub.shut_down();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                return Err(SinkError::Web("a server thread panicked".into()));
            }
        }
        Ok(())
    }
}

impl Drop for WebSink {
    fn drop(&mut self) {
        self.hub.shut_down();
    }
}
