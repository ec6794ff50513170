//! The connection: rumqttc's client on its own thread, publishing events, per-track state and the
//! primary expression, with the availability topic as last will.

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

pub struct MqttSink {
    client: Client,
    topics: Topics,
    qos: QoS,
    state_interval: Duration,
    last_state: HashMap<TrackId, Instant>,
    primary: Option<(Option<TrackId>, String)>,
    dropped: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
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
        // Room for bursts while (re)connecting; beyond that messages are dropped, not queued
        // without bound.
        let (client, connection) = Client::new(options, 512);
        let closing = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (done_tx, done) = mpsc::channel();
        let discovery = topics
            .discovery
            .clone()
            .map(|topic| (topic, discovery_payload(config, &topics)));
        let thread = {
            let client = client.clone();
            let closing = closing.clone();
            let availability = topics.availability.clone();
            std::thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || {
                    drive(
                        connection,
                        &client,
                        &closing,
                        &what,
                        &availability,
                        discovery,
                        qos,
                    );
                    let _ = done_tx.send(());
                })
                .map_err(|e| SinkError::Io("mqtt thread".into(), e))?
        };
        Ok(MqttSink {
            client,
            topics,
            qos,
            state_interval: Duration::from_millis(config.state_interval_ms),
            last_state: HashMap::new(),
            primary: None,
            dropped,
            closing,
            done,
            thread: Some(thread),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    fn publish(&mut self, topic: &str, retain: bool, payload: Vec<u8>) {
        if let Err(e) = self.client.try_publish(topic, self.qos, retain, payload) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                log::warn!("mqtt: dropped {} message(s), queue full: {e}", n + 1);
            }
        }
    }

    fn publish_json<T: Serialize>(&mut self, topic: &str, retain: bool, value: &T) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.publish(topic, retain, bytes),
            Err(e) => log::warn!("mqtt: cannot serialise for {topic}: {e}"),
        }
    }

    fn publish_primary(&mut self, primary: Option<&FaceState>) {
        let key = primary.map_or((None, "none".to_string()), |f| {
            (Some(f.track), f.label.clone())
        });
        if self.primary.as_ref() == Some(&key) {
            return;
        }
        let value = serde_json::json!({
            "schema": SCHEMA_VERSION,
            "track": key.0,
            "label": key.1,
            "confidence": primary.map(|f| f.confidence),
        });
        let topic = self.topics.expression.clone();
        self.publish_json(&topic, true, &value);
        self.primary = Some(key);
    }
}

/// The connection thread: makes progress, announces `online` after each connect, backs off
/// while the broker is unreachable, ends after the clean disconnect that `close` requests.
fn drive(
    mut connection: Connection,
    client: &Client,
    closing: &AtomicBool,
    what: &str,
    availability: &str,
    discovery: Option<(String, Vec<u8>)>,
    qos: QoS,
) {
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
                _ => break,
            }
        } else {
            connection.recv()
        };
        match next {
            Ok(Ok(MqttEvent::Incoming(Incoming::ConnAck(_)))) => {
                log::info!("mqtt: connected to {what}");
                failures = 0;
                delay = Duration::from_secs(1);
                if let Some((topic, payload)) = &discovery {
                    let _ = client.try_publish(topic, qos, true, payload.clone());
                }
                let _ = client.try_publish(availability, qos, true, "online");
            }
            Ok(Ok(MqttEvent::Outgoing(Outgoing::Disconnect))) => disconnecting = true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if closing.load(Ordering::Relaxed) {
                    log::warn!(
                        "mqtt: {what} unreachable at shutdown ({e}); unsent messages are lost"
                    );
                    break;
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
                    break;
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            // Every client handle is gone.
            Err(_) => break,
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
        let events = self.topics.events.clone();
        self.publish_json(&events, false, &line);
        let id = event.state.track;
        let topic = self.topics.track_state(id);
        match event.kind {
            EventKind::Left => {
                self.last_state.remove(&id);
                // An empty retained message deletes the retained state on the broker.
                self.publish(&topic, true, Vec::new());
            }
            EventKind::Appeared | EventKind::ExpressionChanged { .. } => {
                self.publish_json(&topic, true, &TrackMessage::new(event.stamp, &line.face));
                self.last_state.insert(id, Instant::now());
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        let now = Instant::now();
        for track in &update.tracks {
            let due = self
                .last_state
                .get(&track.track)
                .is_none_or(|t| now.duration_since(*t) >= self.state_interval);
            if due {
                let topic = self.topics.track_state(track.track);
                let face = FaceState::from(track);
                self.publish_json(&topic, true, &TrackMessage::new(update.stamp, &face));
                self.last_state.insert(track.track, now);
            }
        }
        let primary = update
            .tracks
            .iter()
            .max_by(|a, b| (a.bbox[2] * a.bbox[3]).total_cmp(&(b.bbox[2] * b.bbox[3])))
            .map(FaceState::from);
        self.publish_primary(primary.as_ref());
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.publish_primary(None);
        let availability = self.topics.availability.clone();
        self.publish(&availability, true, b"offline".to_vec());
        self.closing.store(true, Ordering::Relaxed);
        // Requests are sent in order, so the disconnect goes out after everything queued before.
        let _ = self.client.try_disconnect();
        match self.done.recv_timeout(Duration::from_secs(3)) {
            Ok(()) => {
                let _ = thread.join();
                Ok(())
            }
            // The broker is unreachable: what is still queued is lost; the retained last will
            // says `offline` for us.
            Err(_) => Err(SinkError::Mqtt(
                "not all messages were delivered before shutdown".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Secret;
    use super::*;

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
