//! What the MQTT sink has published but rumqttc has not taken yet: everything while the broker is
//! unreachable, and the rest whenever rumqttc's request queue is full.
//!
//! The two kinds of message age differently. Events are a history: each one counts, in order, so
//! they wait in a bounded FIFO and, when it is full, the oldest is dropped and counted. Retained
//! messages are state: a newer payload on the same topic makes the older one worthless, so only
//! the newest per topic is kept (superseding loses nothing). Flushing sends the events first, then
//! the retained messages in the order they were last updated, and stops at the first message the
//! queue refuses.
//!
//! No rumqttc types here, so the policy is tested without a broker.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Events kept while the broker is unreachable: at about 300 bytes each, 10,000 events are 3 MB,
/// and at one `appeared` plus one `left` per visitor they cover hours of a busy kiosk. The same
/// bound applies to the number of retained topics (one per track seen during the outage).
pub(super) const CAPACITY: usize = 10_000;

/// One message handed to the send function of [`Outbox::flush`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pending<'a> {
    /// On the events topic, not retained.
    Event(&'a [u8]),
    Retained {
        topic: &'a str,
        payload: &'a [u8],
    },
}

/// What one [`Outbox::flush`] handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Flushed {
    pub events: usize,
    pub retained: usize,
}

pub(super) struct Outbox {
    capacity: usize,
    events: VecDeque<Vec<u8>>,
    /// Topic to (update number, payload); the update number keys `order`.
    retained: HashMap<String, (u64, Vec<u8>)>,
    /// Update number to topic: the retained messages in the order of their last update, so that
    /// e.g. `offline` published at shutdown still goes out last.
    order: BTreeMap<u64, String>,
    updates: u64,
    dropped: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            capacity: capacity.max(1),
            events: VecDeque::new(),
            retained: HashMap::new(),
            order: BTreeMap::new(),
            updates: 0,
            dropped: 0,
        }
    }

    /// Queues an event; returns how many messages were dropped to make room (0 or 1).
    pub fn push_event(&mut self, payload: Vec<u8>) -> u64 {
        let mut dropped = 0;
        if self.events.len() >= self.capacity {
            self.events.pop_front();
            dropped = 1;
        }
        self.events.push_back(payload);
        self.dropped += dropped;
        dropped
    }

    /// Queues a retained message, replacing any older one on the same topic; returns how many
    /// messages were dropped to make room (0 or 1: the least recently updated topic's, when a new
    /// topic would exceed the capacity).
    pub fn push_retained(&mut self, topic: &str, payload: Vec<u8>) -> u64 {
        let update = self.updates;
        self.updates += 1;
        if let Some((old, slot)) = self.retained.get_mut(topic) {
            self.order.remove(old);
            *old = update;
            *slot = payload;
            self.order.insert(update, topic.to_string());
            return 0;
        }
        let mut dropped = 0;
        if self.retained.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.retained.remove(&oldest);
                dropped = 1;
            }
        }
        self.retained.insert(topic.to_string(), (update, payload));
        self.order.insert(update, topic.to_string());
        self.dropped += dropped;
        dropped
    }

    /// Hands messages to `send` (events in order, then retained ones) until it refuses one, which
    /// stays queued with everything after it.
    pub fn flush(&mut self, mut send: impl FnMut(Pending<'_>) -> bool) -> Flushed {
        let mut flushed = Flushed::default();
        while let Some(payload) = self.events.front() {
            if !send(Pending::Event(payload)) {
                return flushed;
            }
            self.events.pop_front();
            flushed.events += 1;
        }
        while let Some(entry) = self.order.first_entry() {
            let topic = entry.get();
            let Some((_, payload)) = self.retained.get(topic) else {
                // Unreachable: both maps change together.
                entry.remove();
                continue;
            };
            if !send(Pending::Retained { topic, payload }) {
                return flushed;
            }
            let topic = entry.remove();
            self.retained.remove(&topic);
            flushed.retained += 1;
        }
        flushed
    }

    pub fn events(&self) -> usize {
        self.events.len()
    }

    pub fn retained(&self) -> usize {
        self.retained.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.retained.is_empty()
    }

    /// Messages dropped for room since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `flush` hands over, as (topic or "events", payload).
    fn drain(outbox: &mut Outbox) -> Vec<(String, String)> {
        let mut sent = Vec::new();
        outbox.flush(|m| {
            sent.push(match m {
                Pending::Event(p) => ("events".into(), String::from_utf8_lossy(p).into()),
                Pending::Retained { topic, payload } => {
                    (topic.into(), String::from_utf8_lossy(payload).into())
                }
            });
            true
        });
        sent
    }

    fn pair(topic: &str, payload: &str) -> (String, String) {
        (topic.into(), payload.into())
    }

    #[test]
    fn events_go_first_and_in_order_then_retained_in_update_order() {
        let mut o = Outbox::new(100);
        o.push_retained("track/1", b"a1".to_vec());
        o.push_event(b"e1".to_vec());
        o.push_retained("expression", b"x1".to_vec());
        o.push_event(b"e2".to_vec());
        o.push_retained("track/2", b"b1".to_vec());
        o.push_event(b"e3".to_vec());
        assert_eq!(
            drain(&mut o),
            [
                pair("events", "e1"),
                pair("events", "e2"),
                pair("events", "e3"),
                pair("track/1", "a1"),
                pair("expression", "x1"),
                pair("track/2", "b1"),
            ]
        );
        assert!(o.is_empty());
        assert_eq!(o.dropped(), 0);
    }

    #[test]
    fn only_the_newest_retained_message_per_topic_is_kept() {
        let mut o = Outbox::new(100);
        for i in 0..50 {
            assert_eq!(o.push_retained("track/1", format!("s{i}").into_bytes()), 0);
            assert_eq!(
                o.push_retained("expression", format!("x{i}").into_bytes()),
                0
            );
        }
        // The track left: the empty message that deletes its state supersedes the state.
        o.push_retained("track/1", Vec::new());
        assert_eq!(o.retained(), 2);
        assert_eq!(
            drain(&mut o),
            [pair("expression", "x49"), pair("track/1", "")]
        );
        // Superseding is not a loss.
        assert_eq!(o.dropped(), 0);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_event_and_counts_it() {
        let mut o = Outbox::new(3);
        let dropped: u64 = (1..=5)
            .map(|i| o.push_event(format!("e{i}").into_bytes()))
            .sum();
        assert_eq!(dropped, 2);
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.events(), 3);
        assert_eq!(
            drain(&mut o),
            [
                pair("events", "e3"),
                pair("events", "e4"),
                pair("events", "e5")
            ]
        );
    }

    #[test]
    fn too_many_retained_topics_drop_the_least_recently_updated_one() {
        let mut o = Outbox::new(2);
        assert_eq!(o.push_retained("a", b"1".to_vec()), 0);
        assert_eq!(o.push_retained("b", b"1".to_vec()), 0);
        // Updating keeps the count and makes `a` the most recent.
        assert_eq!(o.push_retained("a", b"2".to_vec()), 0);
        assert_eq!(o.push_retained("c", b"1".to_vec()), 1);
        assert_eq!(o.dropped(), 1);
        assert_eq!(drain(&mut o), [pair("a", "2"), pair("c", "1")]);
    }

    #[test]
    fn a_refused_message_stays_queued_with_everything_after_it() {
        let mut o = Outbox::new(100);
        for i in 1..=3 {
            o.push_event(format!("e{i}").into_bytes());
        }
        o.push_retained("t", b"s".to_vec());
        // The queue takes two messages, then is full.
        let mut room = 2;
        let flushed = o.flush(|_| {
            if room == 0 {
                return false;
            }
            room -= 1;
            true
        });
        assert_eq!(
            flushed,
            Flushed {
                events: 2,
                retained: 0
            }
        );
        assert_eq!((o.events(), o.retained()), (1, 1));
        // A refused retained message stays too.
        let flushed = o.flush(|m| matches!(m, Pending::Event(_)));
        assert_eq!(
            flushed,
            Flushed {
                events: 1,
                retained: 0
            }
        );
        assert_eq!(drain(&mut o), [pair("t", "s")]);
        assert!(o.is_empty());
    }
}
