//! The DDS side of the ROS 2 sink: one thread owns the participant, the node and every publisher,
//! and publishes what the inference thread plans. The inference thread only plans and hands the
//! frame over through a short queue; when the queue is full (DDS stalled behind a slow reliable
//! reader) the frame's messages are dropped and counted, never waited for.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ros2_client::dds::rustdds::DomainParticipantBuilder;
use ros2_client::dds::{Context, Node, Publisher};
use ros2_client::qos::{Durability, History, WhenFull};
use ros2_client::{MessageTypeName, Name, NodeName, NodeOptions, QosProfile};

use super::{
    face_id, Expression, FramePlan, IdsList, NormalizedRegionOfInterest2D, Planner, Ros2Config,
};
use crate::sink::{Sink, SinkError};
use crate::track::{FrameUpdate, TrackId};

/// Frames that may wait for the DDS thread. Each is a few hundred bytes per face; a stalled
/// thread holds at most this many and the pipeline drops the rest.
const QUEUE: usize = 8;
/// How long a reliable write may wait for a slow reader's acknowledgements before the message is
/// given up: well under a frame at 30 fps, so one stuck reader delays the DDS thread only.
const WRITE_WAIT: Duration = Duration::from_millis(20);

/// How long a writer outlives its last message: the face writers of a face that left, and every
/// writer at shutdown. Deleting a writer stops it resending, and its last sample may still sit
/// in rustdds's event loop behind the deletion; ros2-client cannot wait for acknowledgements.
const LINGER: Duration = Duration::from_millis(300);

/// `/humans/faces/tracked`: reliable, transient-local (latched), the newest list only.
const TRACKED_QOS: QosProfile = QosProfile::publisher_default()
    .reliability_reliable(WhenFull::Wait(WRITE_WAIT))
    .durability(Durability::TransientLocal)
    .history(History::KeepLast { depth: 1 });
/// Per-face topics: reliable, depth 10 (rclpy's and rclcpp's default), and transient-local: a
/// new face's writer is matched a moment after it is created, and its first messages wait for
/// the readers that match late. Volatile readers (ROS 2's default) match it too.
const FACE_QOS: QosProfile = QosProfile::publisher_default()
    .reliability_reliable(WhenFull::Wait(WRITE_WAIT))
    .durability(Durability::TransientLocal)
    .history(History::KeepLast { depth: 10 });

enum Command {
    Frame(FramePlan),
    Close,
}

/// The `ros2` output.
pub struct Ros2Sink {
    planner: Planner,
    queue: SyncSender<Command>,
    thread: Option<JoinHandle<Result<(), String>>>,
    dropped: u64,
}

impl Ros2Sink {
    /// Joins the DDS domain and creates the node and the tracked-list publisher. Fails with a
    /// one-line reason when the configuration is invalid or no participant can be created
    /// (no usable network interface, every RTPS port of the domain taken).
    pub fn new(config: &Ros2Config) -> Result<Ros2Sink, SinkError> {
        config.validate().map_err(SinkError::Config)?;
        let (queue, commands) = mpsc::sync_channel(QUEUE);
        let (ready_tx, ready) = mpsc::channel();
        let config_for_thread = config.clone();
        let thread = std::thread::Builder::new()
            .name("ros2".into())
            .spawn(move || {
                let mut publishers = match Publishers::new(&config_for_thread) {
                    Ok(p) => {
                        let _ = ready_tx.send(Ok(()));
                        p
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                publishers.serve(&commands)
            })
            .map_err(|e| SinkError::Io("ros2: cannot start its thread".into(), e))?;
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(SinkError::Ros2(e));
            }
            Err(_) => return Err(SinkError::Ros2("the DDS thread stopped at start-up".into())),
        }
        log::info!(
            "ros2: node {}{} on DDS domain {}{}",
            config.namespace.trim_end_matches('/').to_string() + "/",
            config.node_name,
            config.domain().unwrap_or(0),
            if config.loopback_only() {
                ", this machine only"
            } else {
                ""
            }
        );
        Ok(Ros2Sink {
            planner: Planner::new(config),
            queue,
            thread: Some(thread),
            dropped: 0,
        })
    }
}

impl Sink for Ros2Sink {
    fn name(&self) -> &str {
        "ros2"
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        let plan = self.planner.plan(update);
        match self.queue.try_send(Command::Frame(plan)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    log::warn!(
                        "ros2: DDS is behind; {} frames' messages dropped so far",
                        self.dropped
                    );
                }
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(SinkError::Ros2("the DDS thread has stopped".into()))
            }
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        // Blocking here is fine: shutdown waits for the queue's few frames and the empty list.
        let _ = self.queue.send(Command::Close);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if self.dropped > 0 {
            log::warn!(
                "ros2: {} frames' messages were dropped in all",
                self.dropped
            );
        }
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Ros2(e)),
            Err(_) => Err(SinkError::Ros2("the DDS thread panicked".into())),
        }
    }
}

/// How long a new writer publishes with no reader matched. Discovery of a new writer takes
/// milliseconds to a few hundred; its first messages wait in its transient-local history for the
/// readers that match within this window. After it, a writer with no reader publishes nothing:
/// rustdds keeps every sample no reader has acknowledged (up to 8192 per writer), so publishing
/// into the void would grow memory by about 0.4 KB per message.
const DISCOVERY_GRACE: Duration = Duration::from_secs(2);

/// A writer and when it was created, for [`DISCOVERY_GRACE`].
struct Gated<M: serde::Serialize> {
    publisher: Publisher<M>,
    created: Instant,
}

impl<M: serde::Serialize> Gated<M> {
    fn new(publisher: Publisher<M>) -> Self {
        Gated {
            publisher,
            created: Instant::now(),
        }
    }

    /// Whether a message now could reach anyone: a reader is matched, or the writer is new.
    fn open(&self, node: &Node) -> bool {
        self.created.elapsed() < DISCOVERY_GRACE || self.publisher.get_subscription_count(node) > 0
    }
}

/// One face's publishers; dropping them disposes its writers.
struct FacePublishers {
    expression: Gated<Expression>,
    roi: Gated<NormalizedRegionOfInterest2D>,
}

// Fields drop in order: the writers go before the node that owns the participant, which must
// still be there to remove them.
struct Publishers {
    faces: HashMap<TrackId, FacePublishers>,
    /// Writers of faces that left, and since when: deleted after [`LINGER`].
    retired: Vec<(Instant, FacePublishers)>,
    tracked: Gated<IdsList>,
    node: Node,
    /// The newest tracked list not yet published (no reader was matched).
    pending: Option<IdsList>,
    /// Writes that failed (a reader too slow for [`WRITE_WAIT`]); logged, not fatal.
    failed_writes: u64,
    /// The last list's header, for the empty list published at shutdown.
    last_header: Option<super::Header>,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Publishers {
    fn new(config: &Ros2Config) -> Result<Publishers, String> {
        let domain = config.domain()?;
        let mut builder = DomainParticipantBuilder::new(domain);
        if config.loopback_only() {
            builder = builder.with_only_networks([Ipv4Addr::LOCALHOST]);
        }
        let participant = builder
            .build()
            .map_err(|e| format!("cannot join DDS domain {domain}: {e}"))?;
        let context = Context::from_domain_participant(participant).map_err(text)?;
        let name = NodeName::new(&config.namespace, &config.node_name).map_err(text)?;
        let options = NodeOptions::new()
            .enable_rosout(false)
            .start_parameter_services(false);
        let mut node = context.new_node(name, options).map_err(text)?;
        // The spinner keeps the node's view of matched readers current; it stops when the node
        // is dropped.
        let spinner = node.spinner().map_err(text)?;
        std::thread::Builder::new()
            .name("ros2-spin".into())
            .spawn(move || {
                if let Err(e) = futures::executor::block_on(spinner.spin()) {
                    log::warn!("ros2: reader matching stopped: {e}");
                }
            })
            .map_err(text)?;
        let topic = node
            .create_topic(
                &Name::new("/humans/faces", "tracked").map_err(text)?,
                MessageTypeName::new("hri_msgs", "IdsList"),
                &TRACKED_QOS,
            )
            .map_err(text)?;
        let tracked = Gated::new(node.create_publisher(&topic, None).map_err(text)?);
        Ok(Publishers {
            faces: HashMap::new(),
            retired: Vec::new(),
            tracked,
            node,
            pending: None,
            failed_writes: 0,
            last_header: None,
        })
    }

    fn add_face(&mut self, track: TrackId) -> Result<(), String> {
        let namespace = format!("/humans/faces/{}", face_id(track));
        let open = |base: &str, type_name: &str| {
            let name = Name::new(&namespace, base).map_err(text)?;
            self.node
                .create_topic(
                    &name,
                    MessageTypeName::new("hri_msgs", type_name),
                    &FACE_QOS,
                )
                .map_err(text)
        };
        let expression_topic = open("expression", "Expression")?;
        let roi_topic = open("roi", "NormalizedRegionOfInterest2D")?;
        let publishers = FacePublishers {
            expression: Gated::new(
                self.node
                    .create_publisher(&expression_topic, None)
                    .map_err(text)?,
            ),
            roi: Gated::new(self.node.create_publisher(&roi_topic, None).map_err(text)?),
        };
        self.faces.insert(track, publishers);
        Ok(())
    }

    fn written<E: std::fmt::Display>(&mut self, result: Result<(), E>, what: &str) {
        if let Err(e) = result {
            self.failed_writes += 1;
            if self.failed_writes.is_power_of_two() {
                log::warn!("ros2: {what} not sent ({e}); {} so far", self.failed_writes);
            }
        }
    }

    fn publish(&mut self, plan: FramePlan) -> Result<(), String> {
        let present: Vec<TrackId> = plan.faces.iter().map(|f| f.track).collect();
        self.retire_faces(|track| !present.contains(track));
        self.retired.retain(|(since, _)| since.elapsed() < LINGER);
        let mut results = Vec::new();
        for face in plan.faces {
            if !self.faces.contains_key(&face.track) {
                self.add_face(face.track)?;
            }
            let Some(publishers) = self.faces.get(&face.track) else {
                continue;
            };
            if publishers.expression.open(&self.node) {
                let result = publishers.expression.publisher.publish(face.expression);
                results.push((result.map_err(|e| text(&e)), "expression"));
            }
            if publishers.roi.open(&self.node) {
                let result = publishers.roi.publisher.publish(face.roi);
                results.push((result.map_err(|e| text(&e)), "roi"));
            }
        }
        for (result, what) in results {
            self.written(result, what);
        }
        if let Some(list) = plan.tracked {
            self.last_header = Some(list.header.clone());
            self.pending = Some(list);
        }
        // A list held back while nobody listened goes out as soon as a reader matches.
        if self.pending.is_some() && self.tracked.open(&self.node) {
            if let Some(list) = self.pending.take() {
                let result = self.tracked.publisher.publish(list);
                self.written(result.map_err(|e| text(&e)), "tracked list");
            }
        }
        Ok(())
    }

    /// Moves the writers of the faces `gone` selects to [`Self::retired`].
    fn retire_faces(&mut self, gone: impl Fn(&TrackId) -> bool) {
        let leaving: Vec<TrackId> = self.faces.keys().copied().filter(|t| gone(t)).collect();
        for track in leaving {
            if let Some(publishers) = self.faces.remove(&track) {
                self.retired.push((Instant::now(), publishers));
            }
        }
    }

    fn serve(&mut self, commands: &Receiver<Command>) -> Result<(), String> {
        while let Ok(Command::Frame(plan)) = commands.recv() {
            self.publish(plan)?;
        }
        self.retire_faces(|_| true);
        let last_list = self.last_header.take();
        let linger = last_list.is_some() || !self.retired.is_empty();
        if let Some(header) = last_list {
            let result = self.tracked.publisher.publish(IdsList {
                header: super::Header {
                    stamp: super::Time::from_system(std::time::SystemTime::now()),
                    ..header
                },
                ids: Vec::new(),
            });
            self.written(result.map_err(|e| text(&e)), "empty tracked list");
        }
        if linger {
            // The last face messages and the empty list: reliable readers receive them (or have
            // them resent) before the writers and the participant go away.
            std::thread::sleep(LINGER);
        }
        Ok(())
    }
}
