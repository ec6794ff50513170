//! `ferrite run`: the live pipeline from a camera or files to the configured outputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};

use ferrite::capture::{self, Size};
use ferrite::classify::Classifier;
use ferrite::config::{Config, MqttOverrides, Overrides, Ros2Overrides, WebOverrides};
use ferrite::display::DisplayConfig;
use ferrite::limits;
use ferrite::pipeline;
use ferrite::sink::json::JsonSink;
use ferrite::sink::local::SystemdSink;
use ferrite::sink::Sink;

#[cfg(feature = "display")]
use super::classify::open_display;
use super::{display_spec, smoothing, unit_interval, PipelineArgs, EXIT_INPUT_FAILED};

#[derive(Args)]
pub struct RunArgs {
    /// Frames to read: a V4L2 camera (/dev/videoN), a .y4m recording, an image file or a
    /// directory of images (sorted by name) [default: the config's [camera] device, /dev/video0].
    #[arg(long, visible_alias = "camera", value_name = "DEVICE|PATH")]
    input: Option<String>,

    /// Camera frame size to ask for (the nearest offered size is used) [default: 640x480].
    #[arg(long, value_name = "WxH")]
    size: Option<Size>,

    /// Camera: frame rate to ask for. Files: deliver frames at this rate, like a camera (and
    /// drop frames inference cannot keep up with); without it every file frame is processed.
    #[arg(long, value_name = "FPS", value_parser = |s: &str| limits::FPS.parse::<f32>(s))]
    fps: Option<f32>,

    /// Board profile: rpi3, rpi4, rpi5, rpi-zero2w, jetson-nano, jetson-orin-nano, x86-desktop
    /// (boards/*.toml: camera, model and detector defaults, the header's buses and gpiochip).
    #[arg(long, value_name = "NAME", env = "FERRITE_BOARD")]
    board: Option<String>,

    /// TOML configuration (see examples/ferrite.toml), merged over the board profile;
    /// command-line flags win over both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Draw the primary face on a display: png:FILE[@WxH], fb:/dev/fbN, ssd1306:/dev/i2c-N[@0x3c]
    /// or sh1106:... (overrides the config's [display]; a display that cannot be opened is a
    /// warning).
    #[arg(long, value_name = "SPEC", value_parser = display_spec)]
    display: Option<DisplayConfig>,

    /// Start the input over after its last frame, until stopped.
    #[arg(long = "loop")]
    looping: bool,

    /// Run the detector on every N-th frame; in between, faces are classified at the tracker's
    /// predicted boxes.
    #[arg(long, value_name = "N", value_parser = |s: &str| limits::DETECT_EVERY.parse::<u32>(s))]
    detect_every: Option<u32>,

    /// Detection passes a face must be matched before it is reported.
    #[arg(long, value_name = "N", value_parser = |s: &str| limits::MIN_HITS.parse::<u32>(s))]
    min_hits: Option<u32>,

    /// Detection passes a reported face may be missed before it leaves.
    #[arg(long, value_name = "N", value_parser = |s: &str| limits::MAX_MISSES.parse::<u32>(s))]
    max_misses: Option<u32>,

    /// Weight of the newest probabilities in the moving average, in (0, 1]; 1 = no smoothing.
    #[arg(long, value_name = "ALPHA", value_parser = smoothing)]
    smoothing: Option<f32>,

    /// Label hysteresis: a new label must lead the current one by more than this (smoothed
    /// probability) on --switch-frames consecutive frames before the label changes.
    #[arg(long, value_name = "P", value_parser = unit_interval)]
    switch_margin: Option<f32>,

    /// Consecutive frames a new label must lead by --switch-margin before the label changes.
    #[arg(long, value_name = "N", value_parser = |s: &str| limits::SWITCH_FRAMES.parse::<u32>(s))]
    switch_frames: Option<u32>,

    /// JSON lines to this file (appended), or `-` for stdout [default: stdout].
    #[arg(long, value_name = "PATH|-")]
    json: Option<PathBuf>,

    /// No JSON lines at all (e.g. MQTT only).
    #[arg(long, conflicts_with_all = ["json", "json_state"])]
    no_json: bool,

    /// Also write a "state" JSON line per frame with every reported face.
    #[arg(long)]
    json_state: bool,

    /// MQTT broker host; enables the MQTT output.
    #[arg(long, value_name = "HOST")]
    mqtt_host: Option<String>,

    /// MQTT broker port [default: 1883, 8883 with TLS].
    #[arg(long, value_name = "PORT")]
    mqtt_port: Option<u16>,

    /// Prefix of every topic [default: ferrite/<hostname>].
    #[arg(long, value_name = "TOPIC")]
    mqtt_base_topic: Option<String>,

    /// MQTT client id [default: ferrite-<hostname>].
    #[arg(long, value_name = "ID")]
    mqtt_client_id: Option<String>,

    /// MQTT user name (the password comes from --mqtt-password-file).
    #[arg(long, value_name = "USER")]
    mqtt_username: Option<String>,

    /// File whose first line is the MQTT password (keeps it out of the process list).
    #[arg(long, value_name = "FILE", requires = "mqtt_username")]
    mqtt_password_file: Option<PathBuf>,

    /// Connect with TLS (the system's CA certificates unless --mqtt-ca-file).
    #[arg(long)]
    mqtt_tls: bool,

    /// PEM CA certificate for the broker (implies --mqtt-tls).
    #[arg(long, value_name = "FILE")]
    mqtt_ca_file: Option<PathBuf>,

    /// PEM client certificate (with --mqtt-client-key).
    #[arg(long, value_name = "FILE", requires = "mqtt_client_key")]
    mqtt_client_cert: Option<PathBuf>,

    /// PEM private key of --mqtt-client-cert.
    #[arg(long, value_name = "FILE", requires = "mqtt_client_cert")]
    mqtt_client_key: Option<PathBuf>,

    /// Publish Home Assistant MQTT discovery for the primary face's expression.
    #[arg(long)]
    homeassistant: bool,

    /// Publish faces and expressions to ROS 2 (REP-155 topics under /humans/faces, over DDS; no
    /// ROS install needed). See docs/robotics.md.
    #[arg(long)]
    ros2: bool,

    /// DDS domain of --ros2, 0-232 [default: $ROS_DOMAIN_ID, else 0].
    #[arg(long, value_name = "ID", requires = "ros2")]
    ros2_domain: Option<u16>,

    /// frame_id of the ROS 2 message headers (the camera's TF frame) [default: camera].
    #[arg(long, value_name = "FRAME", requires = "ros2")]
    ros2_frame_id: Option<String>,

    /// Keep ROS 2 discovery and traffic on this machine (like ROS_LOCALHOST_ONLY=1).
    #[arg(long, requires = "ros2")]
    ros2_localhost_only: bool,

    /// Serve the live view in a browser: the annotated camera stream, each face's expression and
    /// its parts' votes, the frame rate; also /stream.mjpg, /snapshot.jpg, /events and /status.
    /// Without ADDR it listens on [web] listen, by default 127.0.0.1:8080 (this machine only);
    /// 0.0.0.0:8080 serves the network (set a token then). See docs/web.md.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = false)]
    web: Option<Option<String>>,

    /// Token every web request must carry (?token=... or Authorization: Bearer ...). Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(long, value_name = "TOKEN", env = ferrite::sink::web::TOKEN_ENV, hide_env_values = true)]
    web_token: Option<String>,

    /// Pixelate faces in the web stream and snapshots (boxes and labels are still drawn).
    #[arg(long)]
    web_blur_faces: bool,

    /// Print per-stage timings and counts to stderr at exit.
    #[arg(long)]
    stats: bool,

    /// Stop after this many processed frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    // The first signal asks for a clean stop; a second SIGINT while stopping exits at once
    // (the conditional handler runs first, while the flag is still unset, so it only fires then).
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, stop.clone())
        .context("installing signal handlers")?;
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    // Past a file size limit the kernel would kill the process (SIGXFSZ); handled, the write
    // fails with EFBIG instead, which the JSON sink reports and counts like a full disk.
    signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))
        .context("installing signal handlers")?;
    let mut config = Config::resolve(
        args.board.as_deref(),
        args.config.as_deref(),
        &args.overrides(),
    )?;
    let options = args
        .pipeline
        .options(&config.model, &config.detect)
        .for_live_video();
    let classifier = Classifier::build(&options)?;
    let source = capture::open_source(&config.camera.device, &config.camera)?;
    // Unpaced files are read as fast as inference takes them, so none may be dropped; cameras
    // and paced files run in real time, where the newest frame must win.
    let is_file = !capture::is_v4l2_path(Path::new(&config.camera.device));
    if is_file && config.camera.fps.is_none() {
        config.pipeline.drop_frames = false;
    }
    log::info!("input: {}", source.describe());

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if config.json.enabled {
        sinks.push(Box::new(JsonSink::new(&config.json)?));
    }
    if config.mqtt.host.is_some() {
        #[cfg(feature = "mqtt")]
        {
            let sink = ferrite::sink::mqtt::MqttSink::start(&config.mqtt)?;
            log::info!("mqtt: publishing under {}", sink.topics().availability);
            sinks.push(Box::new(sink));
        }
        #[cfg(not(feature = "mqtt"))]
        anyhow::bail!(
            "an MQTT host is configured, but this ferrite was built without MQTT (cargo feature mqtt)"
        );
    }
    if config.ros2.enabled {
        #[cfg(feature = "ros2")]
        sinks.push(Box::new(ferrite::sink::ros2::Ros2Sink::new(&config.ros2)?));
        #[cfg(not(feature = "ros2"))]
        anyhow::bail!(
            "ROS 2 output is on, but this ferrite was built without it (cargo feature ros2)"
        );
    }
    #[cfg(feature = "display")]
    if let Some(display) = open_display(config.display.as_ref()) {
        sinks.push(Box::new(ferrite::sink::local::DisplaySink::new(display)));
    }
    #[cfg(not(feature = "display"))]
    if config.display.is_some() {
        log::warn!(
            "{}; continuing without a display",
            ferrite::display::NO_DISPLAY
        );
    }
    if let Some(gpio) = &config.gpio {
        #[cfg(feature = "gpio")]
        match ferrite::gpio::GpioOutputs::new(gpio) {
            Ok(outputs) => sinks.push(Box::new(ferrite::sink::local::GpioSink::new(outputs))),
            Err(e) => log::warn!("gpio: {e}; continuing without GPIO outputs"),
        }
        #[cfg(not(feature = "gpio"))]
        log::warn!(
            "gpio {}: {}; continuing without GPIO outputs",
            gpio.chip,
            ferrite::gpio::NO_GPIO
        );
    }
    if config.web.enabled {
        #[cfg(feature = "web")]
        {
            let info = ferrite::sink::web::ServerInfo {
                model: classifier.ensemble().describe(),
                detector: classifier.detector().map_or_else(
                    || "none".to_string(),
                    |d| d.config().model.name().to_string(),
                ),
                camera: source.describe(),
                sinks: sinks.iter().map(|s| s.name().to_string()).collect(),
            };
            let sink = ferrite::sink::web::WebSink::start(&config.web, info)?;
            let auth = if config.web.token.is_some() {
                " (token required)"
            } else {
                ""
            };
            log::warn!("web: live view at http://{}/{auth}", sink.address());
            sinks.push(Box::new(sink));
        }
        #[cfg(not(feature = "web"))]
        anyhow::bail!(
            "the web view is on, but this ferrite was built without it (cargo feature web)"
        );
    }
    sinks.push(Box::new(SystemdSink::ready()));

    let outcome = pipeline::run(
        source,
        &classifier,
        &config.tracker,
        &config.pipeline,
        &mut sinks,
        stop.clone(),
    );
    if stop.load(Ordering::Relaxed) {
        log::info!("stopped by signal");
    }
    match outcome {
        Ok(stats) => {
            if args.stats {
                eprint!("{}", stats.table());
            }
            if stats.sink_errors > 0 {
                // Lost output is a failed run even if every frame was processed.
                eprintln!(
                    "ferrite: {} writes to the outputs failed (the warnings above say which)",
                    stats.sink_errors
                );
                return Ok(ExitCode::from(EXIT_INPUT_FAILED));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("ferrite: {e}");
            Ok(ExitCode::from(EXIT_INPUT_FAILED))
        }
    }
}

impl RunArgs {
    /// The flags that layer over the board profile and the config file.
    fn overrides(&self) -> Overrides {
        let p = &self.pipeline;
        Overrides {
            input: self.input.clone(),
            size: self.size,
            fps: self.fps.map(f64::from),
            looping: self.looping,
            model: p.model.clone(),
            precision: p.precision,
            keep_model: p.keep_model.then_some(true),
            detector: p.detector,
            tiles: p.tiles,
            verify: p.no_verify.then_some(false),
            detect_every: self.detect_every,
            max_frames: self.max_frames,
            min_hits: self.min_hits,
            max_misses: self.max_misses,
            smoothing: self.smoothing,
            switch_margin: self.switch_margin,
            switch_frames: self.switch_frames,
            json_path: self.json.clone(),
            no_json: self.no_json,
            json_state: self.json_state,
            mqtt: MqttOverrides {
                host: self.mqtt_host.clone(),
                port: self.mqtt_port,
                client_id: self.mqtt_client_id.clone(),
                base_topic: self.mqtt_base_topic.clone(),
                username: self.mqtt_username.clone(),
                password_file: self.mqtt_password_file.clone(),
                tls: self.mqtt_tls,
                ca_file: self.mqtt_ca_file.clone(),
                client_cert: self.mqtt_client_cert.clone(),
                client_key: self.mqtt_client_key.clone(),
                homeassistant: self.homeassistant,
            },
            ros2: Ros2Overrides {
                enabled: self.ros2,
                domain_id: self.ros2_domain,
                frame_id: self.ros2_frame_id.clone(),
                localhost_only: self.ros2_localhost_only,
            },
            web: WebOverrides {
                listen: self.web.clone(),
                token: self.web_token.clone(),
                blur_faces: self.web_blur_faces,
            },
            display: self.display.clone(),
        }
    }
}
