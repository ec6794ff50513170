//! The connection: rumqttc's client on its own thread, publishing events, per-track state and the
//! primary expression, with the availability topic as last will.
//!
//! Every message goes through the sink's [`Outbox`] first, and is handed to rumqttc's request
//! queue only while the connection is up: rumqttc would take a few hundred messages while the
//! broker is down and then refuse the newest, events included, with stale state updates ahead of
//! them. The outbox keeps events in order (bounded, oldest dropped and counted) and only the
//! newest retained message per topic.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, Event as MqttEvent, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use serde::Serialize;

use super::super::{seconds, EventLine, FaceState, Sink, SinkError, SCHEMA_VERSION};
use super::outbox::{self, Outbox, Pending};
use super::{hostname, sanitise, MqttConfig, Topics};
use crate::track::{Event, EventKind, FrameUpdate, Stamp, TrackId};

/// The retained per-track state: the face and when it was last updated.
#[derive(Debug, Serialize)]
struct TrackMessage<'a> {
    schema: u32,
    time: f64,
    frame: u64,
    #[serde(flatten)]
    face: &'a FaceState,
}

impl<'a> TrackMessage<'a> {
    fn new(stamp: Stamp, face: &'a FaceState) -> Self {
        TrackMessage {
            schema: SCHEMA_VERSION,
            time: seconds(stamp.timestamp),
            frame: stamp.frame,
            face,
        }
    }
}

impl MqttConfig {
    fn qos(&self) -> Result<QoS, SinkError> {
        match self.qos {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            q => Err(SinkError::Config(format!(
                "mqtt: qos must be 0, 1 or 2, got {q}"
            ))),
        }
    }

    fn options(&self, topics: &Topics) -> Result<MqttOptions, SinkError> {
        let host = self
            .host
            .clone()
            .ok_or_else(|| SinkError::Config("mqtt: no host".into()))?;
        let tls = self.uses_tls();
        let port = self.broker_port();
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("ferrite-{}", sanitise(&hostname())));
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(self.keep_alive_s.max(5)));
        options.set_last_will(LastWill::new(
            &topics.availability,
            "offline",
            self.qos()?,
            true,
        ));
        let password = match &self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| SinkError::Io(path.display().to_string(), e))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => self.password.as_ref().map(|p| p.0.clone()),
        };
        match (&self.username, password) {
            (Some(user), password) => {
                options.set_credentials(user, password.unwrap_or_default());
            }
            (None, Some(_)) => {
                return Err(SinkError::Config(
                    "mqtt: a password needs a username".into(),
                ))
            }
            (None, None) => {}
        }
        if tls {
            options.set_transport(Transport::tls_with_config(self.tls_config()?));
        }
        Ok(options)
    }

    fn tls_config(&self) -> Result<TlsConfiguration, SinkError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| SinkError::Io(path.display().to_string(), e))
        };
        let client_auth = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(SinkError::Config(
                    "mqtt: client_cert and client_key go together".into(),
                ))
            }
        };
        if let Some(ca) = &self.ca_file {
            return Ok(TlsConfiguration::Simple {
                ca: read(ca)?,
                alpn: None,
                client_auth,
            });
        }
        if client_auth.is_some() {
            return Err(SinkError::Config(
                "mqtt: a client certificate needs ca_file".into(),
            ));
        }
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::warn!("mqtt: system CA certificates: {e}");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(SinkError::Config(
                "mqtt: TLS without ca_file, and no system CA certificates found".into(),
            ));
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConfiguration::Rustls(Arc::new(config)))
    }
}

/// The longest wait between two connection attempts. Short, because the outbox holds what
/// arrives during an outage and the broker's subscribers (Home Assistant) see nothing until we are
/// back: once the broker returns, the backlog should start draining within seconds, not after the
/// tens of seconds a long back-off reaches. An attempt against a broker that is down costs one
/// refused or timed-out TCP connection, nothing a single client needs to spare the broker from.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How long `close` waits for the broker to take the last messages and the disconnect.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// What the connection thread tells the sink about the link.
#[derive(Debug, Default)]
struct Link {
    /// From a ConnAck to the next connection error: what is handed to rumqttc now goes out.
    up: AtomicBool,
    /// ConnAcks so far: a change shows a reconnect that happened between two sink calls.
    connects: AtomicU64,
}

/// An outage as the sink saw it: from a call that found the link down (or reconnected) until the
/// outbox's events were all handed over again.
#[derive(Debug)]
struct Outage {
    since: Instant,
    dropped_before: u64,
    delivered: usize,
}

pub struct MqttSink {
    client: Client,
    topics: Topics,
    qos: QoS,
    what: String,
    state_interval: Duration,
    last_state: HashMap<TrackId, Instant>,
    primary: Option<(Option<TrackId>, String)>,
    outbox: Outbox,
    link: Arc<Link>,
    connects_seen: u64,
    outage: Option<Outage>,
    closing: Arc<AtomicBool>,
    /// The connection thread's end: true after a clean disconnect.
    done: mpsc::Receiver<bool>,
    thread: Option<JoinHandle<()>>,
}

impl MqttSink {
    /// Starts the connection in the background and returns at once: a broker that is down is
    /// retried while inference runs. Errors are configuration errors only.
    pub fn start(config: &MqttConfig) -> Result<Self, SinkError> {
        let topics = config.topics();
        let qos = config.qos()?;
        let options = config.options(&topics)?;
        let what = format!(
            "{}:{}",
            options.broker_address().0,
            options.broker_address().1
        );
        // Only filled while the link is up (the outbox holds the rest), so this is room for
        // bursts between two polls of the connection thread.
        let (client, connection) = Client::new(options, 512);
        let closing = Arc::new(AtomicBool::new(false));
        let link = Arc::new(Link::default());
        let (done_tx, done) = mpsc::channel();
        let discovery = topics
            .discovery
            .clone()
            .map(|topic| (topic, discovery_payload(config, &topics)));
        let thread = {
            let client = client.clone();
            let closing = closing.clone();
            let link = link.clone();
            let what = what.clone();
            let availability = topics.availability.clone();
            std::thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || {
                    let clean = drive(
                        connection,
                        &client,
                        &link,
                        &closing,
                        &what,
                        &availability,
                        discovery,
                        qos,
                    );
                    let _ = done_tx.send(clean);
                })
                .map_err(|e| SinkError::Io("mqtt thread".into(), e))?
        };
        Ok(MqttSink {
            client,
            topics,
            qos,
            what,
            state_interval: Duration::from_millis(config.state_interval_ms),
            last_state: HashMap::new(),
            primary: None,
            outbox: Outbox::new(outbox::CAPACITY),
            link,
            connects_seen: 0,
            // Not connected yet: what is published before the first ConnAck waits like in any
            // outage, and the first flush reports it.
            outage: Some(Outage {
                since: Instant::now(),
                dropped_before: 0,
                delivered: 0,
            }),
            closing,
            done,
            thread: Some(thread),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Queues the primary expression when it changed; returns the messages dropped for room.
    fn publish_primary(&mut self, primary: Option<&FaceState>) -> Result<u64, SinkError> {
        let key = primary.map_or((None, "none".to_string()), |f| {
            (Some(f.track), f.label.clone())
        });
        if self.primary.as_ref() == Some(&key) {
            return Ok(0);
        }
        let value = serde_json::json!({
            "schema": SCHEMA_VERSION,
            "track": key.0,
            "label": key.1,
            "confidence": primary.map(|f| f.confidence),
        });
        let payload = to_json(&self.topics.expression, &value)?;
        let dropped = self.outbox.push_retained(&self.topics.expression, payload);
        self.primary = Some(key);
        Ok(dropped)
    }

    /// Hands the outbox to rumqttc while the link is up, and says once per outage, when its events
    /// are all out again, what it cost.
    fn flush(&mut self) {
        let up = self.link.up.load(Ordering::Acquire);
        let connects = self.link.connects.load(Ordering::Acquire);
        if self.outage.is_none() && (!up || connects != self.connects_seen) {
            self.outage = Some(Outage {
                since: Instant::now(),
                dropped_before: self.outbox.dropped(),
                delivered: 0,
            });
        }
        if !up {
            return;
        }
        let (client, qos, events) = (&self.client, self.qos, self.topics.events.as_str());
        let flushed = self.outbox.flush(|m| {
            match m {
                Pending::Event(payload) => client.try_publish(events, qos, false, payload),
                Pending::Retained { topic, payload } => {
                    client.try_publish(topic, qos, true, payload)
                }
            }
            .is_ok()
        });
        if self.outbox.events() > 0 {
            if let Some(outage) = &mut self.outage {
                outage.delivered += flushed.events;
            }
            return;
        }
        let Some(outage) = self.outage.take() else {
            return;
        };
        self.connects_seen = connects;
        let delivered = outage.delivered + flushed.events;
        let dropped = self.outbox.dropped() - outage.dropped_before;
        // Measured from the first call that found the link down: the outage as the outputs saw
        // it, to within a frame.
        let secs = outage.since.elapsed().as_secs_f64();
        if delivered == 0 && dropped == 0 && secs < 1.0 {
            log::info!("mqtt: connected to {}", self.what);
        } else {
            log::info!(
                "mqtt: connected to {} after {secs:.1} s: delivered {delivered} queued event(s), \
                 dropped {dropped} message(s) for room",
                self.what,
            );
        }
    }

    /// Ends a sink call: flushes, and turns messages dropped for room into an error, which the
    /// pipeline counts.
    fn finish(&mut self, dropped: u64) -> Result<(), SinkError> {
        self.flush();
        if dropped == 0 {
            return Ok(());
        }
        let total = self.outbox.dropped();
        // A long outage drops at frame rate: log at 1, 2, 4, 8, ... drops.
        if (total + 1 - dropped..=total).any(u64::is_power_of_two) {
            log::warn!(
                "mqtt: outbox full ({} events), broker unreachable or slow: dropped the oldest \
                 message(s), {total} so far",
                outbox::CAPACITY
            );
        }
        Err(SinkError::Mqtt(format!(
            "outbox full: dropped {dropped} old message(s), {total} so far"
        )))
    }
}

fn to_json<T: Serialize>(topic: &str, value: &T) -> Result<Vec<u8>, SinkError> {
    serde_json::to_vec(value)
        .map_err(|e| SinkError::Mqtt(format!("cannot serialise for {topic}: {e}")))
}

/// The next wait between connection attempts: doubling, up to [`MAX_RETRY_DELAY`].
fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_RETRY_DELAY)
}

/// The connection thread: makes progress, announces `online` after each connect, tells the sink
/// whether the link is up, backs off while the broker is unreachable, ends after the disconnect
/// that `close` requests. Returns whether that disconnect was clean.
#[allow(clippy::too_many_arguments)]
fn drive(
    mut connection: Connection,
    client: &Client,
    link: &Link,
    closing: &AtomicBool,
    what: &str,
    availability: &str,
    discovery: Option<(String, Vec<u8>)>,
    qos: QoS,
) -> bool {
    let mut delay = Duration::from_secs(1);
    let mut failures = 0u32;
    let mut disconnecting = false;
    loop {
        let next = if disconnecting {
            // Read until the broker closes the connection: closing the socket with its acks still
            // unread would reset it, and the broker would drop our last messages (and the
            // DISCONNECT) and publish the last will instead.
            match connection.recv_timeout(Duration::from_secs(2)) {
                Ok(Ok(_)) => continue,
                _ => return true,
            }
        } else {
            connection.recv()
        };
        match next {
            Ok(Ok(MqttEvent::Incoming(Incoming::ConnAck(_)))) => {
                // The sink logs the reconnect, with what the outage cost, once it has flushed.
                log::debug!("mqtt: connected to {what}");
                failures = 0;
                delay = Duration::from_secs(1);
                if let Some((topic, payload)) = &discovery {
                    let _ = client.try_publish(topic, qos, true, payload.clone());
                }
                let _ = client.try_publish(availability, qos, true, "online");
                // After `online`, so that subscribers see it before the outbox's backlog.
                link.connects.fetch_add(1, Ordering::Release);
                link.up.store(true, Ordering::Release);
            }
            Ok(Ok(MqttEvent::Outgoing(Outgoing::Disconnect))) => disconnecting = true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                link.up.store(false, Ordering::Release);
                if closing.load(Ordering::Relaxed) {
                    log::warn!(
                        "mqtt: {what} unreachable at shutdown ({e}); unsent messages are lost"
                    );
                    return false;
                }
                failures += 1;
                if failures == 1 {
                    log::warn!("mqtt: {what}: {e}; retrying in the background");
                } else {
                    log::debug!("mqtt: {what}: {e} (attempt {failures})");
                }
                let until = Instant::now() + delay;
                while Instant::now() < until && !closing.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if closing.load(Ordering::Relaxed) {
                    log::warn!("mqtt: {what} unreachable at shutdown; unsent messages are lost");
                    return false;
                }
                delay = next_delay(delay);
            }
            // Every client handle is gone.
            Err(_) => return false,
        }
    }
}

fn discovery_payload(config: &MqttConfig, topics: &Topics) -> Vec<u8> {
    let node = config.node_id();
    let value = serde_json::json!({
        "name": "Expression",
        "unique_id": format!("ferrite_{node}_expression"),
        "state_topic": topics.expression,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": topics.expression,
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:emoticon-outline",
        "device": {
            "identifiers": [format!("ferrite_{node}")],
            "name": format!("ferrite {node}"),
            "manufacturer": "ferrite",
            "model": "ferrite expression recognition",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn on_event(&mut self, event: &Event) -> Result<(), SinkError> {
        let line = EventLine::from(event);
        let mut dropped = self.outbox.push_event(to_json(&self.topics.events, &line)?);
        let id = event.state.track;
        let topic = self.topics.track_state(id);
        match event.kind {
            EventKind::Left => {
                self.last_state.remove(&id);
                // An empty retained message deletes the retained state on the broker.
                dropped += self.outbox.push_retained(&topic, Vec::new());
            }
            EventKind::Appeared | EventKind::ExpressionChanged { .. } => {
                let payload = to_json(&topic, &TrackMessage::new(event.stamp, &line.face))?;
                dropped += self.outbox.push_retained(&topic, payload);
                self.last_state.insert(id, Instant::now());
            }
        }
        self.finish(dropped)
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        let now = Instant::now();
        let mut dropped = 0;
        for track in &update.tracks {
            let due = self
                .last_state
                .get(&track.track)
                .is_none_or(|t| now.duration_since(*t) >= self.state_interval);
            if due {
                let topic = self.topics.track_state(track.track);
                let face = FaceState::from(track);
                let payload = to_json(&topic, &TrackMessage::new(update.stamp, &face))?;
                dropped += self.outbox.push_retained(&topic, payload);
                self.last_state.insert(track.track, now);
            }
        }
        let primary = update
            .tracks
            .iter()
            .max_by(|a, b| (a.bbox[2] * a.bbox[3]).total_cmp(&(b.bbox[2] * b.bbox[3])))
            .map(FaceState::from);
        dropped += self.publish_primary(primary.as_ref())?;
        self.finish(dropped)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut dropped = match self.publish_primary(None) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("{e}");
                1
            }
        };
        let availability = self.topics.availability.clone();
        dropped += self
            .outbox
            .push_retained(&availability, b"offline".to_vec());
        // Hand over what the link takes, retrying while rumqttc's queue is full; a broker that
        // is down is not waited for (its last will says `offline` for us).
        loop {
            self.flush();
            if self.outbox.is_empty()
                || !self.link.up.load(Ordering::Acquire)
                || Instant::now() >= deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.closing.store(true, Ordering::Relaxed);
        // Requests are sent in order, so the disconnect goes out after everything queued before.
        while self.client.try_disconnect().is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let clean = match self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(clean) => {
                let _ = thread.join();
                clean
            }
            Err(_) => false,
        };
        let (events, retained) = (self.outbox.events(), self.outbox.retained());
        if clean && dropped == 0 && events == 0 && retained == 0 {
            return Ok(());
        }
        let mut why = format!("{events} event(s) and {retained} retained message(s) still queued");
        if dropped > 0 {
            why += &format!(", {dropped} dropped for room");
        }
        if !clean {
            why += ", the connection did not close cleanly";
        }
        Err(SinkError::Mqtt(format!(
            "not all messages were delivered before shutdown ({why})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Secret;
    use super::*;

    #[test]
    fn the_retry_delay_doubles_up_to_a_few_seconds() {
        let mut delay = Duration::from_secs(1);
        let mut waits = Vec::new();
        for _ in 0..6 {
            delay = next_delay(delay);
            waits.push(delay.as_secs());
        }
        assert_eq!(waits, [2, 4, 5, 5, 5, 5]);
    }

    #[test]
    fn topics_follow_the_base_topic() {
        let config = MqttConfig {
            host: Some("localhost".into()),
            base_topic: Some("robots/kiosk1/".into()),
            homeassistant: true,
            node_id: Some("kiosk 1".into()),
            ..MqttConfig::default()
        };
        let t = config.topics();
        assert_eq!(t.availability, "robots/kiosk1/availability");
        assert_eq!(t.events, "robots/kiosk1/events");
        assert_eq!(t.expression, "robots/kiosk1/expression");
        assert_eq!(t.track_state(3), "robots/kiosk1/track/3/state");
        assert_eq!(
            t.discovery.as_deref(),
            Some("homeassistant/sensor/kiosk_1/expression/config")
        );
        let d: serde_json::Value = serde_json::from_slice(&discovery_payload(&config, &t)).unwrap();
        assert_eq!(d["state_topic"], "robots/kiosk1/expression");
        assert_eq!(d["availability_topic"], "robots/kiosk1/availability");
        assert_eq!(d["unique_id"], "ferrite_kiosk_1_expression");
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        let base = MqttConfig {
            host: Some("localhost".into()),
            ..MqttConfig::default()
        };
        let bad = [
            MqttConfig {
                qos: 3,
                ..base.clone()
            },
            MqttConfig {
                password: Some(Secret("x".into())),
                ..base.clone()
            },
            MqttConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..base.clone()
            },
            MqttConfig {
                ca_file: Some("Cargo.toml".into()),
                client_cert: Some("Cargo.toml".into()),
                ..base.clone()
            },
        ];
        for config in bad {
            assert!(MqttSink::start(&config).is_err(), "{config:?}");
        }
    }

    #[test]
    fn config_deserialises_with_defaults_and_rejects_unknown_keys() {
        let c: MqttConfig = serde_json::from_str(r#"{"host": "broker"}"#).unwrap();
        assert_eq!(c.qos, 1);
        let options = c.options(&c.topics()).unwrap();
        assert_eq!(options.broker_address(), ("broker".to_string(), 1883));
        // A CA file implies TLS and its port.
        let tls = MqttConfig {
            ca_file: Some("Cargo.toml".into()),
            ..c
        };
        let options = tls.options(&tls.topics()).unwrap();
        assert_eq!(options.broker_address().1, 8883);
        assert!(serde_json::from_str::<MqttConfig>(r#"{"hots": "x"}"#).is_err());
        let c: MqttConfig = serde_json::from_str(r#"{"password": "hunter2"}"#).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
