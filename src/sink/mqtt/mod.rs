//! MQTT output through rumqttc (pure Rust, TLS with rustls/ring), behind the `mqtt` cargo feature.
//! This file holds the `[mqtt]` configuration and the topic layout, which every build parses and
//! `ferrite check` uses; [`client`] holds the connection.
//!
//! Topics under `base_topic` (default `ferrite/<hostname>`):
//! - `availability`: `online` (retained) after each connect, `offline` (retained) on a clean stop
//!   and, as the broker's last will, when the process dies or the connection drops.
//! - `events`: every [`EventLine`] (not retained).
//! - `track/<id>/state`: the track's current [`FaceState`] (retained), published when it appears,
//!   when its label changes and at most every `state_interval_ms` otherwise; cleared with an empty
//!   retained payload when the track leaves.
//! - `expression`: the primary (largest) face's label as `{"schema":1,"track":..,"label":..,
//!   "confidence":..}` (retained), `label` `none` without faces; the Home Assistant sensor's state.
//!
//! Publishing never blocks inference: messages wait in the sink's outbox while the broker is
//! unreachable (events in order, at most `outbox::CAPACITY`, the oldest dropped and counted as a
//! sink error; retained messages only the newest per topic) and go to rumqttc's request queue
//! once it is back. The connection runs on its own thread and reconnects with a growing delay
//! (1 s up to 5 s).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::track::TrackId;

#[cfg(feature = "mqtt")]
pub mod client;
#[cfg(feature = "mqtt")]
mod outbox;
#[cfg(feature = "mqtt")]
pub use client::MqttSink;

/// `[mqtt]` in the configuration file. The sink is off unless `host` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address. Default none (MQTT off).
    pub host: Option<String>,
    /// Broker port. Default 1883, or 8883 with TLS.
    pub port: Option<u16>,
    /// MQTT client id. Default `ferrite-<hostname>`.
    pub client_id: Option<String>,
    /// Prefix of every topic. Default `ferrite/<hostname>`.
    pub base_topic: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Read the password from this file (first line) instead of `password`, keeping it out of
    /// the process list and the config file.
    pub password_file: Option<PathBuf>,
    /// Connect with TLS. Implied by `ca_file`. Default false.
    pub tls: bool,
    /// PEM CA certificate(s) that sign the broker's certificate. Default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate clients by certificate.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// QoS of every message: 0, 1 or 2. Default 1.
    pub qos: u8,
    /// MQTT keep-alive in seconds; the broker publishes the last will after 1.5x this without
    /// traffic. Default 15.
    pub keep_alive_s: u64,
    /// Minimum time between two retained state updates of one track (appearing and label changes
    /// are always published at once). Default 1000.
    pub state_interval_ms: u64,
    /// Publish Home Assistant MQTT discovery for the primary face's expression. Default false.
    pub homeassistant: bool,
    /// Home Assistant's discovery prefix. Default `homeassistant`.
    pub discovery_prefix: String,
    /// Home Assistant node id (letters, digits, `_`, `-`). Default the hostname.
    pub node_id: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: None,
            port: None,
            client_id: None,
            base_topic: None,
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            qos: 1,
            keep_alive_s: 15,
            state_interval_ms: 1000,
            homeassistant: false,
            discovery_prefix: "homeassistant".into(),
            node_id: None,
        }
    }
}

/// A password: deserialised from a plain string, never printed by `Debug`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The machine's host name, for default topics and ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferrite".into())
}

/// Letters, digits, `_` and `-` only: safe in topic levels and Home Assistant ids.
fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub availability: String,
    pub events: String,
    pub expression: String,
    base: String,
    pub discovery: Option<String>,
}

impl Topics {
    pub fn track_state(&self, id: TrackId) -> String {
        format!("{}/track/{id}/state", self.base)
    }
}

impl MqttConfig {
    pub fn enabled(&self) -> bool {
        self.host.is_some()
    }

    fn node_id(&self) -> String {
        sanitise(self.node_id.as_deref().unwrap_or(&hostname()))
    }

    pub fn topics(&self) -> Topics {
        let base = self
            .base_topic
            .clone()
            .unwrap_or_else(|| format!("ferrite/{}", sanitise(&hostname())));
        let base = base.trim_end_matches('/').to_string();
        Topics {
            availability: format!("{base}/availability"),
            events: format!("{base}/events"),
            expression: format!("{base}/expression"),
            discovery: self.homeassistant.then(|| {
                format!(
                    "{}/sensor/{}/expression/config",
                    self.discovery_prefix.trim_end_matches('/'),
                    self.node_id()
                )
            }),
            base,
        }
    }

    /// TLS was asked for, or implied by a CA file.
    pub fn uses_tls(&self) -> bool {
        self.tls || self.ca_file.is_some()
    }

    /// The configured port, else MQTT's default: 8883 with TLS, 1883 without.
    pub fn broker_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.uses_tls() { 8883 } else { 1883 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_base_topic_uses_the_hostname() {
        let t = MqttConfig::default().topics();
        assert_eq!(
            t.availability,
            format!("ferrite/{}/availability", sanitise(&hostname()))
        );
        assert!(t.discovery.is_none());
    }

    #[test]
    fn the_port_follows_tls() {
        let plain = MqttConfig {
            host: Some("broker".into()),
            ..MqttConfig::default()
        };
        assert_eq!(plain.broker_port(), 1883);
        let tls = MqttConfig {
            ca_file: Some("ca.pem".into()),
            ..plain.clone()
        };
        assert_eq!(tls.broker_port(), 8883);
        let explicit = MqttConfig {
            port: Some(1884),
            ..tls
        };
        assert_eq!(explicit.broker_port(), 1884);
        assert!(serde_json::from_str::<MqttConfig>(r#"{"hots": "x"}"#).is_err());
        let c: MqttConfig = serde_json::from_str(r#"{"password": "hunter2"}"#).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
