//! JSON lines on stdout or in a file: one [`EventLine`] per event and, optionally, one
//! [`StateLine`] per frame. Every line is flushed as soon as it is written, so a reader on a pipe
//! sees events when they happen and an interrupted run never leaves half a line. A file whose
//! write fails part-way (a full disk, a file size limit) is cut back to its last whole line, so
//! the log stays parseable; the error goes to the caller, which counts it.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{EventLine, Sink, SinkError, StateLine};
use crate::track::{Event, FrameUpdate};

/// `[json]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonConfig {
    /// Write JSON lines at all. Default true.
    pub enabled: bool,
    /// Output file (appended to); `None` or `-` is stdout. Default stdout.
    pub path: Option<PathBuf>,
    /// Also write a `state` line per frame. Default false (events only).
    pub state: bool,
    /// With `state`, write it only every N-th processed frame (>= 1). Default 1.
    pub state_every: u32,
}

impl Default for JsonConfig {
    fn default() -> Self {
        JsonConfig {
            enabled: true,
            path: None,
            state: false,
            state_every: 1,
        }
    }
}

/// Where the lines go. A file is written unbuffered, one `write_all` per line, and remembers how
/// long it was after its last whole line.
enum Out {
    File { file: File, whole_lines_end: u64 },
    Stream(Box<dyn Write + Send>),
}

impl Out {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Out::File {
                file,
                whole_lines_end,
            } => match file.write_all(line) {
                Ok(()) => {
                    *whole_lines_end += line.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    // Appends land at the end, so cutting the file back also moves the next
                    // line to where the broken one began.
                    if let Err(cut) = file.set_len(*whole_lines_end) {
                        log::warn!("cannot remove the partial line: {cut}");
                    }
                    Err(e)
                }
            },
            Out::Stream(out) => out.write_all(line).and_then(|()| out.flush()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::File { file, .. } => file.flush(),
            Out::Stream(out) => out.flush(),
        }
    }
}

pub struct JsonSink {
    out: Out,
    what: String,
    state: bool,
    state_every: u64,
    frames: u64,
}

impl JsonSink {
    pub fn new(config: &JsonConfig) -> Result<Self, SinkError> {
        match &config.path {
            Some(path) if path.as_os_str() != "-" => {
                let what = path.display().to_string();
                let io_err = |e| SinkError::Io(what.clone(), e);
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io_err)?;
                let whole_lines_end = file.metadata().map_err(io_err)?.len();
                let out = Out::File {
                    file,
                    whole_lines_end,
                };
                Ok(Self::with(out, what, config))
            }
            _ => Ok(Self::from_writer(
                Box::new(io::stdout()),
                "stdout".into(),
                config,
            )),
        }
    }

    /// Writes to any writer (tests, sockets).
    pub fn from_writer(out: Box<dyn Write + Send>, what: String, config: &JsonConfig) -> Self {
        Self::with(Out::Stream(out), what, config)
    }

    fn with(out: Out, what: String, config: &JsonConfig) -> Self {
        JsonSink {
            out,
            what,
            state: config.state,
            state_every: u64::from(config.state_every.max(1)),
            frames: 0,
        }
    }

    fn line<T: Serialize>(&mut self, value: &T) -> Result<(), SinkError> {
        let mut buf = serde_json::to_vec(value)
            .map_err(|e| SinkError::Io(self.what.clone(), io::Error::other(e)))?;
        buf.push(b'\n');
        self.out
            .write_line(&buf)
            .map_err(|e| SinkError::Io(self.what.clone(), e))
    }
}

impl Sink for JsonSink {
    fn name(&self) -> &str {
        "json"
    }

    fn on_event(&mut self, event: &Event) -> Result<(), SinkError> {
        self.line(&EventLine::from(event))
    }

    fn on_frame(&mut self, update: &FrameUpdate) -> Result<(), SinkError> {
        self.frames += 1;
        if self.state && (self.frames - 1).is_multiple_of(self.state_every) {
            self.line(&StateLine::from(update))?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.out
            .flush()
            .map_err(|e| SinkError::Io(self.what.clone(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Scores;
    use crate::track::{EventKind, Stamp, TrackState};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn state() -> TrackState {
        TrackState {
            track: 7,
            bbox: [10.04, 20.0, 50.0, 50.0],
            label: "happy".into(),
            confidence: 0.912345,
            probabilities: Scores(vec![("happy".into(), 0.912345), ("sad".into(), 0.087655)]),
            first_seen: Duration::from_millis(500),
            misses: 0,
            score: 0.9,
            parts: Vec::new(),
        }
    }

    #[test]
    fn every_line_is_versioned_json_with_the_documented_keys() {
        let buf = Shared::default();
        let mut sink = JsonSink::from_writer(
            Box::new(buf.clone()),
            "test".into(),
            &JsonConfig {
                state: true,
                state_every: 2,
                ..JsonConfig::default()
            },
        );
        let stamp = Stamp {
            frame: 42,
            timestamp: Duration::from_millis(2500),
        };
        for kind in [
            EventKind::Appeared,
            EventKind::ExpressionChanged { from: "sad".into() },
            EventKind::Left,
        ] {
            sink.on_event(&Event {
                kind,
                stamp,
                state: state(),
            })
            .unwrap();
        }
        for _ in 0..3 {
            sink.on_frame(&FrameUpdate {
                stamp,
                detected: true,
                frame_size: [640, 480],
                tracks: vec![state()],
            })
            .unwrap();
        }
        sink.close().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines.iter().all(|l| l["schema"] == 1));
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["appeared", "expression_changed", "left", "state", "state"]
        );
        let appeared = &lines[0];
        assert_eq!(appeared["track"], 7);
        assert_eq!(appeared["label"], "happy");
        assert_eq!(appeared["time"], 2.5);
        assert_eq!(appeared["frame"], 42);
        assert_eq!(appeared["box"][0].as_f64().unwrap() as f32, 10.0);
        assert_eq!(appeared["confidence"].as_f64().unwrap() as f32, 0.9123);
        assert!(appeared.get("from").is_none() && appeared.get("duration").is_none());
        assert_eq!(lines[1]["from"], "sad");
        assert_eq!(lines[2]["duration"], 2.0);
        assert_eq!(lines[3]["faces"][0]["track"], 7);
        assert_eq!(lines[3]["detected"], true);
        assert!(
            text.starts_with("{\"schema\":1,\"type\":\"appeared\""),
            "{text}"
        );
    }
}
