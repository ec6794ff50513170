//! `ferrite run` against a real broker (Debian's mosquitto on loopback): availability, events,
//! retained track state, Home Assistant discovery, the last will when the process is killed, a
//! clean stop on SIGTERM, and (through the library's sink) what an outage keeps. Skipped, with a message, only when the mosquitto binary is missing
//! (`apt-get install mosquitto`; scripts/setup.sh --dev installs it).

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ferrite::classify::Scores;
use ferrite::sink::mqtt::{MqttConfig, MqttSink};
use ferrite::sink::Sink;
use ferrite::track::{Event as TrackEvent, EventKind, FrameUpdate, Stamp, TrackId, TrackState};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;

fn mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_broker() -> Option<Broker> {
    start_broker_on(free_port())
}

fn start_broker_on(port: u16) -> Option<Broker> {
    let binary = mosquitto();
    let how = "no mosquitto binary (apt-get install mosquitto)";
    if !crate::needs::available("mosquitto", binary.is_some(), how) {
        return None;
    }
    let binary = binary?;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Broker { child, port })
}

#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

impl Message {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// Subscribes to `filters` and forwards every publish; the client lives as long as the receiver.
/// Returns once the broker has acknowledged the subscriptions, so that nothing published after
/// it is missed.
fn subscribe(port: u16, id: &str, filters: &[&str]) -> Receiver<Message> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 64);
    for f in filters {
        client.subscribe(*f, QoS::AtLeastOnce).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    let (acked_tx, acked) = mpsc::channel();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = acked_tx.send(());
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let m = Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    };
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    for _ in filters {
        acked
            .recv_timeout(Duration::from_secs(10))
            .expect("no SUBACK within 10 s");
    }
    rx
}

/// Collects messages until `done` holds for what was seen, or panics after `timeout`.
fn wait_for(
    rx: &Receiver<Message>,
    seen: &mut Vec<Message>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Message]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {what}; got {seen:#?}"
        );
        if let Ok(m) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            seen.push(m);
        }
    }
}

fn astronaut() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/astronaut.png")
}

const BASE: &str = "test/ferrite";

/// A running `ferrite run`; killed if a test fails before stopping it, so no looping child
/// outlives the test.
struct Ferrite(Child);

impl Drop for Ferrite {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ferrite(port: u16, json: &Path) -> Ferrite {
    let child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--input"])
        .arg(astronaut())
        .args([
            "--fps",
            "10",
            "--loop",
            "--min-hits",
            "2",
            "--detect-every",
            "2",
        ])
        .args(["--mqtt-host", "127.0.0.1", "--mqtt-port"])
        .arg(port.to_string())
        .args([
            "--mqtt-base-topic",
            BASE,
            "--mqtt-client-id",
            "ferrite-test",
        ])
        .args(["--homeassistant", "--json"])
        .arg(json)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Ferrite(child)
}

fn has(seen: &[Message], topic: &str, pred: impl Fn(&Message) -> bool) -> bool {
    seen.iter().any(|m| m.topic == topic && pred(m))
}

fn avail() -> String {
    format!("{BASE}/availability")
}

fn state1() -> String {
    format!("{BASE}/track/1/state")
}

/// Waits until the child is online and has reported the astronaut as track 1.
fn wait_until_reporting(rx: &Receiver<Message>, seen: &mut Vec<Message>) {
    wait_for(
        rx,
        seen,
        Duration::from_secs(90),
        "online, appeared, state, expression",
        |s| {
            has(s, &avail(), |m| m.text() == "online")
                && has(s, &format!("{BASE}/events"), |m| {
                    m.json()["type"] == "appeared" && m.json()["schema"] == 1
                })
                && has(s, &state1(), |m| m.json()["label"] == "happy")
                // The primary expression is published after the track's state; a late subscriber
                // that connects in between gets the retained "none" of start-up (seen here).
                && has(s, &format!("{BASE}/expression"), |m| {
                    m.json()["label"] == "happy"
                })
        },
    );
}

#[test]
fn mqtt_outputs_and_last_will_when_killed() {
    let Some(broker) = start_broker() else {
        return;
    };
    let started = Instant::now();
    let rx = subscribe(
        broker.port,
        "watcher",
        &[&format!("{BASE}/#"), "homeassistant/#"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_ferrite(broker.port, &dir.path().join("events.jsonl"));
    let mut seen = Vec::new();
    wait_until_reporting(&rx, &mut seen);

    // Availability, discovery and track state are retained: a late subscriber gets them at once.
    let late = subscribe(
        broker.port,
        "late",
        &[&format!("{BASE}/#"), "homeassistant/#"],
    );
    let mut retained = Vec::new();
    wait_for(
        &late,
        &mut retained,
        Duration::from_secs(10),
        "retained",
        |s| {
            has(s, &avail(), |m| m.retain && m.text() == "online")
                && has(s, &state1(), |m| m.retain && m.json()["track"] == 1)
                && s.iter().any(|m| {
                    m.topic.starts_with("homeassistant/sensor/")
                        && m.retain
                        && m.json()["state_topic"] == format!("{BASE}/expression")
                })
                && has(s, &format!("{BASE}/expression"), |m| {
                    m.retain && m.json()["label"] == "happy"
                })
        },
    );
    assert!(
        !retained
            .iter()
            .any(|m| m.topic == format!("{BASE}/events") && m.retain),
        "events must not be retained"
    );

    // SIGKILL: no goodbye from the process; the broker publishes the last will.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    wait_for(&rx, &mut seen, Duration::from_secs(30), "last will", |s| {
        has(s, &avail(), |m| m.text() == "offline")
    });
    eprintln!("mqtt kill test took {:?}", started.elapsed());
}

#[test]
fn sigterm_flushes_json_and_goes_offline_cleanly() {
    let Some(broker) = start_broker() else {
        return;
    };
    let started = Instant::now();
    let rx = subscribe(broker.port, "watcher2", &[&format!("{BASE}/#")]);
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let mut child = start_ferrite(broker.port, &json);
    let mut seen = Vec::new();
    wait_until_reporting(&rx, &mut seen);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ferrite ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));

    // The JSON sink was flushed: whole lines only, ending with the track leaving.
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let lines: Vec<Value> = std::io::Cursor::new(&text)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(
        lines.first().map(|l| l["type"].clone()),
        Some("appeared".into())
    );
    assert_eq!(lines.last().map(|l| l["type"].clone()), Some("left".into()));
    assert!(lines.iter().all(|l| l["schema"] == 1));

    // MQTT was left in its stopped state: offline (sent by us, not the will), state cleared.
    wait_for(
        &rx,
        &mut seen,
        Duration::from_secs(10),
        "offline and cleared state",
        |s| {
            has(s, &avail(), |m| m.text() == "offline")
                && has(s, &state1(), |m| m.payload.is_empty())
                && has(s, &format!("{BASE}/events"), |m| m.json()["type"] == "left")
        },
    );
    // A clean disconnect: our own `offline`, not followed by the last will.
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(m) = rx.try_recv() {
        seen.push(m);
    }
    let offline = seen
        .iter()
        .filter(|m| m.topic == avail() && m.text() == "offline")
        .count();
    assert_eq!(offline, 1, "{seen:#?}");
    let late = subscribe(broker.port, "late2", &[&format!("{BASE}/#")]);
    let mut retained = Vec::new();
    wait_for(
        &late,
        &mut retained,
        Duration::from_secs(10),
        "retained offline",
        |s| {
            has(s, &avail(), |m| m.retain && m.text() == "offline")
                && has(s, &format!("{BASE}/expression"), |m| {
                    m.json()["label"] == "none"
                })
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(m) = late.try_recv() {
        retained.push(m);
    }
    assert!(
        !retained.iter().any(|m| m.topic.contains("/track/")),
        "no retained track state after a clean stop: {retained:#?}"
    );
    eprintln!("sigterm test took {:?}", started.elapsed());
}

#[test]
fn a_broker_that_is_down_at_start_is_retried_while_inference_runs() {
    let how = "no mosquitto binary (apt-get install mosquitto)";
    if !crate::needs::available("mosquitto", mosquitto().is_some(), how) {
        return;
    }
    let started = Instant::now();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let mut child = start_ferrite(port, &json);
    // No broker yet: events still flow to the JSON output.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&json).is_ok_and(|t| t.contains("\"appeared\"")) {
        assert!(Instant::now() < deadline, "no JSON events without a broker");
        assert!(child.0.try_wait().unwrap().is_none(), "ferrite exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(broker) = start_broker_on(port) else {
        return;
    };
    let rx = subscribe(broker.port, "watcher3", &[&format!("{BASE}/#")]);
    let mut seen = Vec::new();
    // Retries back off to at most a few seconds at this point.
    wait_for(
        &rx,
        &mut seen,
        Duration::from_secs(30),
        "online after the broker came up",
        |s| has(s, &avail(), |m| m.text() == "online") && has(s, &state1(), |_| true),
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    eprintln!("broker-down test took {:?}", started.elapsed());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_with_a_private_ca_and_password() {
    let binary = mosquitto();
    let has_openssl = Command::new("openssl").arg("version").output().is_ok();
    if !crate::needs::available("mosquitto", binary.is_some(), "no mosquitto binary")
        || !crate::needs::available("openssl", has_openssl, "no openssl binary")
    {
        return;
    }
    let Some(binary) = binary else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A throwaway CA and a server certificate for 127.0.0.1.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ferrite test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let passwd = Command::new("mosquitto_passwd")
        .current_dir(d)
        .args(["-b", "-c", "passwd", "kiosk", "s3cret"])
        .status();
    assert!(passwd.is_ok_and(|s| s.success()), "mosquitto_passwd failed");
    std::fs::write(d.join("password"), "s3cret\n").unwrap();
    // mosquitto drops root privileges to its own user; let it read the files.
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(d).status();

    let (plain, tls) = (free_port(), free_port());
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\npersistence false\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {tls} 127.0.0.1\nallow_anonymous false\npassword_file {dir}/passwd\n\
             cafile {dir}/ca.pem\ncertfile {dir}/server.pem\nkeyfile {dir}/server.key\n",
            dir = d.display()
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _broker = Broker { child, port: plain };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rx = subscribe(plain, "watcher4", &[&format!("{BASE}/#")]);
    std::thread::sleep(Duration::from_millis(300));
    let child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--input"])
        .arg(astronaut())
        .args(["--fps", "10", "--loop", "--min-hits", "2", "--no-json"])
        .args(["--mqtt-host", "127.0.0.1", "--mqtt-port", &tls.to_string()])
        .args(["--mqtt-base-topic", BASE, "--mqtt-username", "kiosk"])
        .arg("--mqtt-password-file")
        .arg(d.join("password"))
        .arg("--mqtt-ca-file")
        .arg(d.join("ca.pem"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Ferrite(child);
    let mut seen = Vec::new();
    wait_until_reporting(&rx, &mut seen);
    eprintln!("tls test took {:?}", started.elapsed());
}

fn face(track: TrackId, frame: u64, label: &str) -> TrackState {
    TrackState {
        track,
        bbox: [frame as f32, 20.0, 50.0, 50.0],
        label: label.into(),
        confidence: 0.9,
        probabilities: Scores(vec![(label.into(), 0.9), ("neutral".into(), 0.1)]),
        first_seen: Duration::ZERO,
        misses: 0,
        score: 0.9,
        parts: Vec::new(),
    }
}

fn stamp(frame: u64) -> Stamp {
    Stamp {
        frame,
        timestamp: Duration::from_millis(frame * 100),
    }
}

/// The sink started while no broker listens: events wait in order, retained state keeps only its
/// newest version, and once the broker is up the sink reconnects and delivers the backlog. More
/// messages than rumqttc's 512-request queue are published during the outage, so a sink that
/// relies on that queue loses events here.
#[test]
fn an_outage_delivers_every_event_in_order_and_only_the_newest_state() {
    let how = "no mosquitto binary (apt-get install mosquitto)";
    if !crate::needs::available("mosquitto", mosquitto().is_some(), how) {
        return;
    }
    let started = Instant::now();
    let port = free_port();
    let base = "test/outage";
    let config = MqttConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        client_id: Some("ferrite-outage".into()),
        base_topic: Some(base.into()),
        // Every frame publishes the track's state: many superseded retained messages.
        state_interval_ms: 0,
        ..MqttConfig::default()
    };
    let mut sink = MqttSink::start(&config).unwrap();
    let mut expected = Vec::new();
    let mut frame = 0;
    let mut event = |sink: &mut MqttSink, kind: EventKind, track: TrackId, frame: u64| {
        let e = TrackEvent {
            kind,
            stamp: stamp(frame),
            state: face(track, frame, "happy"),
        };
        expected.push((e.name().to_string(), track, frame));
        sink.on_event(&e)
            .expect("nothing is lost during a short outage");
    };
    // 300 visitors come and go, then one stays and changes on 300 frames.
    for track in 1..=300 {
        frame += 1;
        event(&mut sink, EventKind::Appeared, track, frame);
        let update = FrameUpdate {
            stamp: stamp(frame),
            detected: true,
            frame_size: [640, 480],
            tracks: vec![face(track, frame, "happy")],
        };
        sink.on_frame(&update).unwrap();
        frame += 1;
        event(&mut sink, EventKind::Left, track, frame);
    }
    let stay: TrackId = 1000;
    frame += 1;
    event(&mut sink, EventKind::Appeared, stay, frame);
    let mut last = None;
    for i in 0..300 {
        frame += 1;
        let label = if i % 2 == 0 { "happy" } else { "sad" };
        let update = FrameUpdate {
            stamp: stamp(frame),
            detected: true,
            frame_size: [640, 480],
            tracks: vec![face(stay, frame, label)],
        };
        sink.on_frame(&update).unwrap();
        last = Some(update);
    }
    let last = last.unwrap();
    let expected = expected;
    // Let a few connection attempts fail.
    std::thread::sleep(Duration::from_secs(2));

    let Some(broker) = start_broker_on(port) else {
        return;
    };
    let up = Instant::now();
    let rx = subscribe(broker.port, "outage-watcher", &[&format!("{base}/#")]);
    let events_topic = format!("{base}/events");
    let count_events = |s: &[Message]| s.iter().filter(|m| m.topic == events_topic).count();
    let mut seen = Vec::new();
    // The retry delay is at most 5 s, so the backlog is out well within 10 s of the broker
    // starting. The pipeline calls the sink every frame; the sink flushes on each call.
    let deadline = up + Duration::from_secs(10);
    while count_events(&seen) < expected.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} events within 10 s of the broker starting",
            count_events(&seen),
            expected.len()
        );
        sink.on_frame(&last).unwrap();
        while let Ok(m) = rx.recv_timeout(Duration::from_millis(20)) {
            seen.push(m);
        }
    }
    let delivered_after = up.elapsed();
    // The retained messages follow the events, and the sink sends what rumqttc's queue takes on
    // each call, so keep calling it as the pipeline would: until every visitor's state is deleted,
    // then for a moment more in which anything that should not come (stale state) would arrive.
    let deleted = |s: &[Message]| {
        (1..=300).all(|track| {
            has(s, &format!("{base}/track/{track}/state"), |m| {
                m.payload.is_empty()
            })
        })
    };
    let mut settle_until = None;
    loop {
        let now = Instant::now();
        match settle_until {
            Some(until) if now >= until => break,
            None if deleted(&seen) => settle_until = Some(now + Duration::from_millis(300)),
            None => assert!(
                now < deadline,
                "the visitors' state not deleted within 10 s"
            ),
            _ => {}
        }
        sink.on_frame(&last).unwrap();
        while let Ok(m) = rx.recv_timeout(Duration::from_millis(20)) {
            seen.push(m);
        }
    }

    let got: Vec<(String, TrackId, u64)> = seen
        .iter()
        .filter(|m| m.topic == events_topic)
        .map(|m| {
            let v = m.json();
            (
                v["type"].as_str().unwrap_or("?").to_string(),
                v["track"].as_u64().unwrap_or(0),
                v["frame"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(got, expected, "every event, once, in order");
    assert!(has(&seen, &format!("{base}/availability"), |m| m.text()
        == "online"));
    // The visitors' state was superseded by the empty message that deletes it.
    for track in 1..=300 {
        let topic = format!("{base}/track/{track}/state");
        let states: Vec<&Message> = seen.iter().filter(|m| m.topic == topic).collect();
        assert!(
            states.len() == 1 && states[0].payload.is_empty(),
            "{topic}: {states:#?}"
        );
    }
    // The staying track: only its newest state, never one of the 299 before it.
    let stay_topic = format!("{base}/track/{stay}/state");
    let frames: Vec<u64> = seen
        .iter()
        .filter(|m| m.topic == stay_topic)
        .map(|m| m.json()["frame"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        !frames.is_empty() && frames.iter().all(|f| *f == frame),
        "{stay_topic}: frames {frames:?}, want only {frame}"
    );
    let expressions: Vec<String> = seen
        .iter()
        .filter(|m| m.topic == format!("{base}/expression"))
        .map(|m| m.json()["label"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(expressions, ["sad"], "only the newest primary expression");

    // A late subscriber gets the newest retained state.
    let late = subscribe(broker.port, "outage-late", &[&stay_topic]);
    let mut retained = Vec::new();
    wait_for(
        &late,
        &mut retained,
        Duration::from_secs(10),
        "retained state",
        |s| has(s, &stay_topic, |m| m.retain),
    );
    let newest = retained.iter().find(|m| m.topic == stay_topic && m.retain);
    assert_eq!(newest.and_then(|m| m.json()["frame"].as_u64()), Some(frame));

    sink.close().expect("a clean stop delivers everything");
    wait_for(&rx, &mut seen, Duration::from_secs(5), "offline", |s| {
        has(s, &format!("{base}/availability"), |m| {
            m.text() == "offline"
        })
    });
    eprintln!(
        "outage test took {:?}; backlog delivered {delivered_after:?} after the broker started",
        started.elapsed()
    );
}
