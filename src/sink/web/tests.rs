//! HTTP-level tests against a real server on a loopback port, fed frames the way the pipeline
//! feeds them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use image::GrayImage;

use super::{ServerInfo, WebConfig, WebSink};
use crate::classify::Scores;
use crate::sink::{Picture, Sink, Vitals};
use crate::track::{Event, EventKind, FrameUpdate, Stamp, TrackState};

fn config() -> WebConfig {
    WebConfig {
        enabled: true,
        listen: "127.0.0.1:0".into(),
        stream_fps: 50.0,
        write_timeout_ms: 500,
        ..WebConfig::default()
    }
}

fn start(config: &WebConfig) -> WebSink {
    let info = ServerInfo {
        model: "test-model".into(),
        detector: "short".into(),
        camera: "synthetic".into(),
        sinks: vec!["json".into()],
    };
    WebSink::start(config, info).unwrap()
}

fn scores(happy: f32) -> Scores {
    Scores(vec![
        ("happy".into(), happy),
        ("neutral".into(), 1.0 - happy),
    ])
}

fn track() -> TrackState {
    TrackState {
        track: 7,
        bbox: [40.0, 40.0, 60.0, 60.0],
        label: "happy".into(),
        confidence: 0.9,
        probabilities: scores(0.9),
        first_seen: Duration::ZERO,
        misses: 0,
        score: 0.8,
        parts: vec![("mouth".into(), scores(0.95)), ("eyes".into(), scores(0.6))],
    }
}

fn update(frame: u64) -> FrameUpdate {
    FrameUpdate {
        stamp: Stamp {
            frame,
            timestamp: Duration::from_millis(frame * 100),
        },
        detected: true,
        frame_size: [160, 120],
        tracks: vec![track()],
    }
}

/// Feeds one frame through the sink as the pipeline does.
fn feed(sink: &mut WebSink, frame: u64) {
    let image = GrayImage::from_pixel(160, 120, image::Luma([100]));
    show(sink, &image, frame, &[]);
}

/// Feeds `image` as frame `frame`, with the track of [`update`] and these face boxes.
fn show(sink: &mut WebSink, image: &GrayImage, frame: u64, faces: &[[f32; 4]]) {
    let update = update(frame);
    let vitals = Vitals {
        frames: frame + 1,
        ..Vitals::default()
    };
    sink.on_frame(&update).unwrap();
    let picture = Picture {
        image,
        update: &update,
        faces,
        vitals: &vitals,
    };
    sink.on_picture(&picture).unwrap();
}

/// A texture that JPEG cannot flatten: pixelation and large frames show in it.
fn textured() -> GrayImage {
    GrayImage::from_fn(160, 120, |x, y| {
        image::Luma([((x * 37 + y * 91) % 200) as u8])
    })
}

fn spread(pixels: &[u8]) -> u8 {
    pixels.iter().max().unwrap() - pixels.iter().min().unwrap()
}

/// Feeds frames every 10 ms until `done` or 10 s, whichever first.
fn feed_until(sink: &mut WebSink, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frame = 0;
    while !done() {
        assert!(Instant::now() < deadline, "nothing arrived in 10 s");
        feed(sink, frame);
        frame += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body(mut self) -> Vec<u8> {
        let mut body = Vec::new();
        match self
            .header("Content-Length")
            .map(|n| n.parse::<usize>().unwrap())
        {
            Some(n) => {
                body.resize(n, 0);
                self.reader.read_exact(&mut body).unwrap();
            }
            None => {
                self.reader.read_to_end(&mut body).unwrap();
            }
        }
        body
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }
}

fn request(address: SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Reply {
        status,
        headers,
        reader,
    }
}

fn get(address: SocketAddr, path: &str) -> Reply {
    request(address, "GET", path, "")
}

fn status(address: SocketAddr) -> serde_json::Value {
    let reply = get(address, "/status");
    assert_eq!(reply.status, 200);
    serde_json::from_slice(&reply.body()).unwrap()
}

/// One multipart part: its headers and the JPEG.
fn next_part(reply: &mut Reply) -> (Vec<String>, Vec<u8>) {
    let mut line = reply.line();
    while line.trim().is_empty() {
        line = reply.line();
    }
    assert_eq!(line.trim_end(), "--ferrite-frame");
    let mut headers = Vec::new();
    loop {
        let line = reply.line();
        if line.trim().is_empty() {
            break;
        }
        headers.push(line.trim_end().to_string());
    }
    let length: usize = headers
        .iter()
        .find_map(|h| h.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut jpeg = vec![0; length];
    reply.reader.read_exact(&mut jpeg).unwrap();
    (headers, jpeg)
}

#[test]
fn the_page_status_and_errors_have_their_status_codes_and_types() {
    let mut sink = start(&config());
    let address = sink.address();
    feed(&mut sink, 0);

    let page = get(address, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(page.body()).unwrap();
    assert!(html.contains(r#"id="stream""#) && html.contains("EventSource"));

    let reply = get(address, "/status");
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    let s: serde_json::Value = serde_json::from_slice(&reply.body()).unwrap();
    assert_eq!(s["model"], "test-model");
    assert_eq!(s["camera"], "synthetic");
    assert_eq!(s["frame_size"], serde_json::json!([160, 120]));
    assert_eq!(s["tracks_now"], 1);
    assert_eq!(s["pipeline"]["frames"], 1);
    assert_eq!(s["sinks"], serde_json::json!(["json"]));
    assert_eq!(s["web"]["token_required"], false);

    assert_eq!(get(address, "/nothing-here").status, 404);
    let post = request(address, "POST", "/status", "Content-Length: 0\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    sink.close().unwrap();
}

#[test]
fn with_a_token_every_route_needs_it_in_the_query_or_a_bearer_header() {
    let mut sink = start(&WebConfig {
        token: Some("s3cret-token".into()),
        ..config()
    });
    let address = sink.address();
    for path in ["/", "/status", "/stream.mjpg", "/events", "/snapshot.jpg"] {
        let reply = get(address, path);
        assert_eq!(reply.status, 401, "{path}");
        assert!(reply.header("WWW-Authenticate").is_some());
    }
    assert_eq!(get(address, "/status?token=wrong").status, 401);
    assert_eq!(get(address, "/status?token=s3cret-token").status, 200);
    assert_eq!(get(address, "/?kiosk=1&token=s3cret-token").status, 200);
    let bearer = request(
        address,
        "GET",
        "/status",
        "Authorization: Bearer s3cret-token\r\n",
    );
    assert_eq!(bearer.status, 200);
    let s: serde_json::Value = serde_json::from_slice(&bearer.body()).unwrap();
    assert_eq!(s["web"]["token_required"], true);
    sink.close().unwrap();
}

#[test]
fn the_stream_is_multipart_jpeg_with_the_face_box_drawn() {
    let mut sink = start(&config());
    let address = sink.address();
    let mut stream = get(address, "/stream.mjpg");
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.header("Content-Type"),
        Some("multipart/x-mixed-replace; boundary=ferrite-frame")
    );
    let reader = std::thread::spawn(move || {
        let parts: Vec<_> = (0..3).map(|_| next_part(&mut stream)).collect();
        parts
    });
    feed_until(&mut sink, || reader.is_finished());
    let parts = reader.join().unwrap();
    for (headers, jpeg) in &parts {
        assert!(headers.contains(&"Content-Type: image/jpeg".to_string()));
        let image = image::load_from_memory(jpeg).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (160, 120));
        // The box's left edge is happy's yellow; the frame around it stays grey.
        let edge = image.get_pixel(41, 80).0;
        assert!(edge[0] > 180 && edge[2] < 100, "edge {edge:?}");
        let grey = image.get_pixel(20, 110).0;
        assert!(
            grey.iter().all(|&c| (90..=110).contains(&c)),
            "grey {grey:?}"
        );
    }
    sink.close().unwrap();
}

#[test]
fn blur_faces_pixelates_every_face_found_in_the_stream() {
    // High quality: JPEG ringing at the 5-pixel blocks' edges would blur the measurement.
    let mut sink = start(&WebConfig {
        blur_faces: true,
        quality: 95,
        ..config()
    });
    let address = sink.address();
    let reader = std::thread::spawn(move || get(address, "/snapshot.jpg"));
    // A textured face, so that pixelation shows.
    let image = textured();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frame = 0;
    while !reader.is_finished() {
        assert!(Instant::now() < deadline);
        // A second face the detector found but the tracker has not confirmed yet.
        let faces = [[40.0, 40.0, 60.0, 60.0], [110.0, 10.0, 40.0, 40.0]];
        show(&mut sink, &image, frame, &faces);
        frame += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let reply = reader.join().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("image/jpeg"));
    let jpeg = image::load_from_memory(&reply.body()).unwrap().to_luma8();
    // Inside the face the texture is gone: a 7x7 block away from the box edge is near-flat.
    let block: Vec<u8> = (0..7)
        .flat_map(|dy| (0..7).map(move |dx| (dx, dy)))
        .map(|(dx, dy)| jpeg.get_pixel(50 + dx, 50 + dy).0[0])
        .collect();
    let face = spread(&block);
    assert!(face < 30, "face not pixelated: spread {face}");
    let unconfirmed: Vec<u8> = (0..3).map(|dx| jpeg.get_pixel(111 + dx, 12).0[0]).collect();
    let unconfirmed = spread(&unconfirmed);
    assert!(
        unconfirmed < 30,
        "unconfirmed face not pixelated: spread {unconfirmed}"
    );
    // Outside it, the texture is still there.
    let outside: Vec<u8> = (0..7).map(|dx| jpeg.get_pixel(5 + dx, 110).0[0]).collect();
    let outside = spread(&outside);
    assert!(
        outside > 60,
        "background lost its texture: spread {outside}"
    );
    sink.close().unwrap();
}

#[test]
fn events_are_server_sent_json_lines_with_the_parts_votes() {
    let mut sink = start(&config());
    let address = sink.address();
    let mut events = get(address, "/events");
    assert_eq!(events.status, 200);
    assert_eq!(events.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(events.header("Cache-Control"), Some("no-store"));
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        while lines.len() < 4 {
            let line = events.line();
            assert!(!line.is_empty(), "the stream ended");
            if let Some(data) = line.strip_prefix("data: ") {
                let value: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
                // Each event ends with a blank line.
                assert_eq!(events.line(), "\n");
                lines.push((value, data.to_string()));
            }
        }
        lines
    });
    // Wait until the client is counted, then an event and frames.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(address)["web"]["listeners"] != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    sink.on_event(&Event {
        kind: EventKind::Appeared,
        stamp: update(0).stamp,
        state: track(),
    })
    .unwrap();
    feed_until(&mut sink, || reader.is_finished());
    let lines = reader.join().unwrap();
    assert_eq!(lines[0].0["type"], "appeared");
    assert_eq!(lines[0].0["track"], 7);
    let (state, text) = lines.iter().find(|(l, _)| l["type"] == "state").unwrap();
    assert_eq!(state["schema"], crate::sink::SCHEMA_VERSION);
    let face = &state["faces"][0];
    assert_eq!(face["label"], "happy");
    assert_eq!(face["parts"]["mouth"]["happy"], 0.95);
    assert!(
        text.find("\"mouth\"") < text.find("\"eyes\""),
        "parts in the model's order: {text}"
    );
    sink.close().unwrap();
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_stalls_neither_frames_nor_other_clients() {
    let mut sink = start(&config());
    let address = sink.address();
    // Asks for the stream and never reads: the socket buffers fill, then the server's writes
    // block until the write timeout (500 ms here) drops the client.
    let stalled = TcpStream::connect(address).unwrap();
    socket2::SockRef::from(&stalled)
        .set_recv_buffer_size(4096)
        .unwrap();
    write!(&stalled, "GET /stream.mjpg HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    // Textured frames: large JPEGs fill the buffers quickly.
    let image = textured();
    let mut frames = 0u64;
    let mut feed_textured = |sink: &mut WebSink| {
        show(sink, &image, frames, &[]);
        frames += 1;
        std::thread::sleep(Duration::from_millis(5));
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(address)["web"]["viewers"] != 1 {
        assert!(Instant::now() < deadline);
        feed_textured(&mut sink);
    }
    // Meanwhile another client gets frames.
    let mut healthy = get(address, "/stream.mjpg");
    let reader = std::thread::spawn(move || (0..5).map(|_| next_part(&mut healthy)).count());
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "the healthy client got nothing");
        feed_textured(&mut sink);
    }
    assert_eq!(reader.join().unwrap(), 5);
    // The stalled client is dropped once a write has blocked for the timeout.
    while status(address)["web"]["viewers"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never dropped"
        );
        feed_textured(&mut sink);
    }
    assert!(frames > 0);
    drop(stalled);
    sink.close().unwrap();
}

#[test]
fn with_no_client_nothing_is_encoded_and_extra_clients_get_503() {
    let mut sink = start(&WebConfig {
        max_clients: 1,
        ..config()
    });
    let address = sink.address();
    for frame in 0..20 {
        feed(&mut sink, frame);
    }
    let s = status(address);
    assert_eq!(s["web"]["frames_encoded"], 0);
    assert_eq!(s["web"]["streaming"], false);
    assert_eq!(s["pipeline"]["frames"], 20);

    let _first = get(address, "/events");
    let second = get(address, "/stream.mjpg");
    assert_eq!(second.status, 503);
    assert_eq!(second.header("Retry-After"), Some("5"));
    sink.close().unwrap();
}

#[test]
fn a_snapshot_without_frames_is_a_503_and_a_bad_address_is_a_one_line_error() {
    let mut sink = start(&config());
    let reply = get(sink.address(), "/snapshot.jpg");
    assert_eq!(reply.status, 503);
    sink.close().unwrap();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = WebConfig {
        listen: taken.local_addr().unwrap().to_string(),
        ..config()
    };
    let Err(e) = WebSink::start(&busy, ServerInfo::default()) else {
        panic!("bound a port in use");
    };
    let message = e.to_string();
    assert!(
        message.starts_with("web: cannot listen on 127.0.0.1:"),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

#[test]
fn the_config_is_checked() {
    assert!(WebConfig::default().validate().is_ok());
    let bad = |c: WebConfig| c.validate().unwrap_err();
    assert!(bad(WebConfig {
        listen: "localhost".into(),
        ..WebConfig::default()
    })
    .contains("IP address and port"));
    assert!(bad(WebConfig {
        stream_fps: 0.0,
        ..WebConfig::default()
    })
    .contains("stream_fps"));
    assert!(bad(WebConfig {
        quality: 0,
        ..WebConfig::default()
    })
    .contains("quality"));
    assert!(bad(WebConfig {
        token: Some("has space".into()),
        ..WebConfig::default()
    })
    .contains("token"));
    assert!(bad(WebConfig {
        max_clients: 0,
        ..WebConfig::default()
    })
    .contains("max_clients"));
}

#[test]
fn frames_are_due_on_a_fixed_grid_so_the_stream_keeps_its_rate_under_jitter() {
    let period = Duration::from_millis(40);
    let start = Instant::now();
    let mut next = None;
    // One second of frames every 20 ms, every fourth one 3 ms late: one frame per 40 ms slot,
    // 25 in all, however the jitter falls.
    let due = (0..50u64)
        .filter(|i| {
            let late = if i % 4 == 0 { 3 } else { 0 };
            let now = start + Duration::from_millis(20 * i + late);
            WebSink::due(&mut next, period, now)
        })
        .count();
    assert_eq!(due, 25);
    // After a pause the grid restarts at the next frame instead of catching up.
    let resumed = start + Duration::from_secs(5);
    assert!(WebSink::due(&mut next, period, resumed));
    assert!(!WebSink::due(
        &mut next,
        period,
        resumed + Duration::from_millis(20)
    ));
    assert!(WebSink::due(
        &mut next,
        period,
        resumed + Duration::from_millis(40)
    ));
}
