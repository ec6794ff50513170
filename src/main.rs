//! The `ferrite` binary: arguments -> typed options -> library calls; errors are reported once,
//! here, with their context.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use ferrite::bench::Graphs;
use ferrite::capture::{self, Size};
use ferrite::classify::{Classifier, FaceResult};
use ferrite::config::Config;
use ferrite::detect::{Detector, DetectorConfig, DetectorModel};
use ferrite::display::{Display, DisplayConfig, DisplayState};
use ferrite::ensemble::{Ensemble, OpTime, Precision};
use ferrite::evaluate::{self, Confusion};
use ferrite::gpio::GpioOutputs;
use ferrite::models::{self, ModelSource, Purpose};
use ferrite::pipeline;
use ferrite::sink::json::JsonSink;
use ferrite::sink::local::{DisplaySink, GpioSink, SystemdSink};
use ferrite::sink::mqtt::MqttSink;
use ferrite::sink::Sink;

const EXIT_INPUT_FAILED: u8 = 1;
const EXIT_STARTUP_FAILED: u8 = 3;

// A macro rather than a const so that `concat!` can append it to subcommand help too.
macro_rules! exit_codes {
    () => {
        "Exit status:\n  \
         0  every input was processed (finding no face is not an error)\n  \
         1  at least one input could not be read or decoded; the others were processed\n  \
         2  invalid command line\n  \
         3  start-up failed: a model or detector could not be loaded or failed its checks, or the \
            config file is invalid"
    };
}

#[derive(Parser)]
#[command(
    name = "ferrite",
    version,
    about = "Offline facial-expression recognition for edge boards",
    long_about = "Offline facial-expression recognition for edge boards.\n\n\
        Finds faces with BlazeFace and classifies each face's expression with a part-based CNN \
        ensemble (five sub-networks: jaw, eyebrows, nose, eyes, mouth) running through tract. \
        The models are embedded in the binary; nothing leaves the machine.\n\n\
        Logging goes to stderr; set RUST_LOG=info (or debug) for more.",
    after_help = exit_codes!()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify the expressions of the faces in images (one JSON line per face).
    #[command(
        after_long_help = concat!(
            "Examples:\n",
            "  ferrite classify assets/astronaut.png --pretty\n",
            "  ferrite classify photos/ --threads 2 > faces.jsonl\n",
            "  ferrite classify --no-detect fer2013/public_test/happy/\n",
            "  ferrite classify --model models/fer2013-48-fp32 --detector long group.jpg\n\n",
            "Each JSON line has the keys file, face, box ([x, y, w, h] in pixels), score (detector, \
             null with --no-detect), label, confidence, probabilities (label -> probability) and \
             parts (part -> label -> probability). An input that fails gets a line \
             {\"file\": ..., \"error\": ...} instead.\n\n",
            exit_codes!()
        )
    )]
    Classify(ClassifyArgs),
    /// Measure accuracy on a labelled folder tree (e.g. fer2013/public_test) through tract.
    #[command(
        after_long_help = "Examples:\n  ferrite eval --no-detect ../shared/datasets/fer2013/public_test\n  ferrite eval --no-detect --model models/fer2013-48-fp32 ../shared/datasets/ckplus48"
    )]
    Eval(EvalArgs),
    /// Measure the crop framing of a set of training images (prints the manifest's `crop`).
    ///
    /// Runs the detector on every image, expresses the image's square in units of the detected
    /// box and prints the medians as JSON, ready to paste into a model's manifest.json as "crop".
    /// Use it when you train on your own crops, so that camera frames are cropped the same way.
    #[command(
        after_long_help = "Example:\n  ferrite calibrate-crop ../shared/datasets/fer2013/train --limit 2000"
    )]
    CalibrateCrop {
        /// Directories or files of training crops (one face each).
        #[arg(required = true, value_name = "IMAGE|DIR")]
        inputs: Vec<PathBuf>,
        /// Use at most this many images (spread evenly over the sorted list).
        #[arg(long, default_value_t = 2000)]
        limit: usize,
        /// Face detector to calibrate for (calibrate for the one you run with).
        #[arg(long, value_enum, default_value_t = DetectorChoice::Short)]
        detector: DetectorChoice,
        /// Detector score threshold; 48x48 training crops are small and blurry for BlazeFace,
        /// so a lower threshold than at run time keeps more of them.
        #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
        score_threshold: f32,
        /// Record that crops should be levelled by the eye line (as the runtime does by default).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        rotate: bool,
    },
    /// Time each stage (decode, detect, crop+CLAHE, ensemble, whole frame): median and p95.
    #[command(
        after_long_help = "Examples:\n  ferrite bench\n  ferrite bench --all-models --runs 100 --json\n  \
            ferrite bench --threads 1,2\n  ferrite bench --detector long my_frame.jpg\n  \
            ferrite bench --graphs-only --all-models --json --save-inputs /tmp/inputs\n\n\
            Stages: decode (image file to RGB), detect (letterbox, BlazeFace, box decoding, \
            suppression), crop+clahe (frame to gray, crop, CLAHE, normalise), ensemble (the \
            expression model, once per face), whole frame. With --graphs-only: detect graph and \
            ensemble graph, the two tract graphs alone.\n\n\
            Kernels: the ensemble's 3x3 convolutions and the detector's depthwise convolutions \
            and 2x2 max-pools run in ferrite's direct kernels where those beat tract's (x86_64 \
            with AVX-512F: timed; aarch64 NEON: fewer instructions counted under emulation), \
            else in tract. \
            FERRITE_CONV=tract|avx512|neon|portable|auto overrides that for any command, e.g. \
            to compare: FERRITE_CONV=tract ferrite bench --graphs-only\n\n\
            --json prints an array with one object per model, thread count and stage:\n  \
            model         string  model name as given (--model or a bundled name)\n  \
            precision     string  \"stored\" or \"f16\": what the ensemble ran in\n  \
            conv_kernels  string  \"direct-avx512\", \"direct-neon\", \"direct-portable\" or \"tract\": who \
            ran the ensemble's convolutions\n  \
            detector_kernels string  the same for the detector's convolutions and 2x2 max-pools\n  \
            detector      string  \"short\" or \"long\"\n  \
            threads       number  concurrent workers (1 with --graphs-only)\n  \
            tract_threads number  --tract-threads: tract's intra-op threads per graph run\n  \
            stage         string  one of the stage names above\n  \
            median_ms     number  median latency of the stage per frame, milliseconds\n  \
            p95_ms        number  95th percentile (nearest rank), milliseconds\n  \
            runs          number  timed samples: --runs x threads\n  \
            frames_per_s  number  \"whole frame\" rows only: frames of all workers per \
            second of wall time\n  \
            input_shape   array   --graphs-only rows only: the graph's input shape\n  \
            input_file    string  --graphs-only with --save-inputs: that input as raw \
            little-endian f32\n  \
            profile       array   --profile, graph rows: {op, median_ms} per tract \
            operator kind, slowest first"
    )]
    Bench(BenchArgs),
    /// List the V4L2 cameras: driver, formats, sizes and frame rates.
    #[command(
        after_long_help = "Examples:\n  ferrite devices\n  ferrite devices --json\n\n\
            Formats marked (not supported) cannot be decoded by ferrite; GREY, YUYV, UYVY and \
            MJPEG can. With no camera it prints \"no V4L2 capture devices found\" and exits 0."
    )]
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Live pipeline: camera or files in, tracked per-person expression events out (JSON lines,
    /// MQTT, display, GPIO).
    #[command(
        after_long_help = concat!(
            "Examples:\n",
            "  ferrite run --board rpi5 --config /etc/ferrite/ferrite.toml\n",
            "  ferrite run --camera /dev/video0 --size 640x480 --fps 30 --display png:ui.png\n",
            "  ferrite run --input clip.y4m --stats\n",
            "  ferrite run --input frames/ --stats\n",
            "  ferrite run --input clip/ --fps 15 --loop --mqtt-host localhost --json events.jsonl\n",
            "  ferrite run --input frames/ --json - --json-state --detect-every 1\n\n",
            "Each JSON line has schema (1), type (appeared, expression_changed, left; state with \
             --json-state), time (stream seconds), frame, and per face: track, box, label, \
             confidence, probabilities (smoothed); expression_changed adds from, left adds \
             duration. SIGINT or SIGTERM stops cleanly: open tracks leave, sinks are flushed, \
             MQTT availability goes offline; a second SIGINT exits at once.\n\n",
            "Exit status:\n  0  the input ended, --max-frames was reached, or a signal stopped the run\n  \
             1  the input failed while running\n  2  invalid command line\n  \
             3  start-up failed: model, detector, input or an output could not be opened"
        )
    )]
    Run(Box<RunArgs>),
    /// Check a configuration against this machine: board architecture, model, camera, display
    /// bus, GPIO chip and lines, MQTT broker.
    #[command(after_long_help = "Examples:\n  ferrite check --board rpi5\n  \
        ferrite check --board rpi5 --config /etc/ferrite/ferrite.toml\n\n\
        Exit status: 0 when every item is fine, 1 when any is not, 3 when the configuration \
        itself is invalid.")]
    Check {
        /// Board profile (see `ferrite run --help`).
        #[arg(long, value_name = "NAME", env = "FERRITE_BOARD")]
        board: Option<String>,
        /// TOML configuration merged over the board profile.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List the bundled models and their manifests.
    Models {
        /// Print the full manifests as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ClassifyArgs {
    /// Image files or directories (searched recursively for png, jpg, jpeg, bmp, pgm, ppm).
    #[arg(required = true, value_name = "IMAGE|DIR")]
    inputs: Vec<PathBuf>,

    /// Worker threads, each with its own detector and model state [default: CPU cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Print a readable table instead of JSON lines.
    #[arg(long)]
    pretty: bool,

    /// Add a "landmarks" key: the model's 68 facial landmarks ([x, y] in pixels, iBUG 300-W
    /// order), when the model exports them.
    #[arg(long)]
    landmarks: bool,

    /// Show the result of the last image on a display: png:FILE[@WxH] (default 240x240; 128x64
    /// draws the OLED layout), fb:/dev/fbN, ssd1306:/dev/i2c-N[@0x3c], sh1106:/dev/i2c-N[@0x3c].
    /// Overrides the config file's [display]. A display that cannot be opened is a warning.
    #[arg(long, value_name = "SPEC", value_parser = display_spec)]
    display: Option<DisplayConfig>,

    /// TOML configuration file (see examples/ferrite.toml); classify uses its [display].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    pipeline: PipelineArgs,
}

fn display_spec(s: &str) -> Result<DisplayConfig, String> {
    DisplayConfig::parse_spec(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct EvalArgs {
    /// Labelled folder trees: each image's class is the name of its parent directory
    /// (anger and sadness are read as angry and sad).
    #[arg(required = true, value_name = "DIR")]
    inputs: Vec<PathBuf>,

    /// Worker threads, each with its own detector and model state [default: CPU cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Print the confusion matrix as JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pipeline: PipelineArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// Image to time (one or more faces) [default: the bundled 512x512 JPEG sample].
    #[arg(value_name = "IMAGE")]
    image: Option<PathBuf>,

    /// Timed runs per model, after the warm-up.
    #[arg(long, default_value_t = 50)]
    runs: usize,

    /// Untimed runs first (caches, lazy allocations).
    #[arg(long, default_value_t = 5)]
    warmup: usize,

    /// Bench every bundled model instead of only --model.
    #[arg(long)]
    all_models: bool,

    /// Worker-thread counts to bench, e.g. `1,2` or `1-4`: with T, T workers (each with its own
    /// ensemble session and detector state) process frames concurrently; each times --runs
    /// frames after its warm-up, and the frame rate counts all of them.
    #[arg(long, default_value = "1", value_name = "LIST", value_parser = thread_list)]
    threads: ThreadList,

    /// Threads tract may split each graph run over (its own intra-op threads; needs a build
    /// with `--features tract-threads`). 1, the default, runs each graph on its caller's thread.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    tract_threads: u16,

    /// Time only the two tract graphs (detector, ensemble) on the tensors the pipeline builds
    /// from the image: no decode, letterbox, box decoding, crop or CLAHE. For comparisons with
    /// other runtimes (models/side_by_side.py); one thread.
    #[arg(long)]
    graphs_only: bool,

    /// With --graphs-only: write the two input tensors there as raw little-endian f32
    /// (detect-<short|long>.f32, ensemble-<model>.f32) and name them in the output.
    #[arg(long, value_name = "DIR", requires = "graphs_only")]
    save_inputs: Option<PathBuf>,

    /// With --graphs-only: where each graph's time goes, per tract operator kind (median ms per
    /// run over --runs extra runs that time every node; `OptMatMul` holds tract's convolutions,
    /// `Ferrite*` ferrite's direct kernels).
    #[arg(long, requires = "graphs_only")]
    profile: bool,

    /// With --graphs-only: time only this graph (for instruction counts under emulation,
    /// cross/insn_count.py).
    #[arg(long, value_enum, default_value_t = GraphChoice::Both, requires = "graphs_only")]
    graph: GraphChoice,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pipeline: PipelineArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Frames to read: a V4L2 camera (/dev/videoN), a .y4m recording, an image file or a
    /// directory of images (sorted by name) [default: the config's [camera] device, /dev/video0].
    #[arg(long, visible_alias = "camera", value_name = "DEVICE|PATH")]
    input: Option<String>,

    /// Camera frame size to ask for (the nearest offered size is used) [default: 640x480].
    #[arg(long, value_name = "WxH")]
    size: Option<Size>,

    /// Camera: frame rate to ask for. Files: deliver frames at this rate, like a camera (and
    /// drop frames inference cannot keep up with); without it every file frame is processed.
    #[arg(long, value_name = "FPS", value_parser = positive)]
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
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    detect_every: Option<u32>,

    /// Detection passes a face must be matched before it is reported.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    min_hits: Option<u32>,

    /// Detection passes a reported face may be missed before it leaves.
    #[arg(long, value_name = "N")]
    max_misses: Option<u32>,

    /// Weight of the newest probabilities in the moving average, in (0, 1]; 1 = no smoothing.
    #[arg(long, value_name = "ALPHA", value_parser = smoothing)]
    smoothing: Option<f32>,

    /// Label hysteresis: a new label must lead the current one by more than this (smoothed
    /// probability) on --switch-frames consecutive frames before the label changes.
    #[arg(long, value_name = "P", value_parser = unit_interval)]
    switch_margin: Option<f32>,

    /// Consecutive frames a new label must lead by --switch-margin before the label changes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
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

    /// Print per-stage timings and counts to stderr at exit.
    #[arg(long)]
    stats: bool,

    /// Stop after this many processed frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,

    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Options that choose and configure the detector and the expression model.
#[derive(Args)]
struct PipelineArgs {
    /// Expression model: a bundled name (see `ferrite models`) or a directory holding
    /// manifest.json and the ONNX file it names.
    #[arg(long, default_value = models::DEFAULT_MODEL, value_name = "NAME|DIR")]
    model: String,

    /// Arithmetic of a float model: `stored` (as the file stores it) or `f16` (translated at
    /// load time; for CPUs with FP16 arithmetic such as the Cortex-A76 of a Raspberry Pi 5, see
    /// README "Performance"; elsewhere a warning and the stored model). An int8 model accepts
    /// only `stored`.
    #[arg(long, default_value = "stored", value_name = "stored|f16", value_parser = precision)]
    precision: Precision,

    /// Face detector: `short` (BlazeFace 128x128, faces within ~2 m, fast) or `long`
    /// (BlazeFace 256x256, smaller and farther faces, ~4x slower).
    #[arg(long, value_enum, default_value_t = DetectorChoice::Short)]
    detector: DetectorChoice,

    /// Use this BlazeFace ONNX file instead of the bundled one (same input size as --detector).
    #[arg(long, value_name = "FILE")]
    detector_model: Option<PathBuf>,

    /// Ignore faces smaller than this many pixels (box side, in the input image).
    #[arg(long, value_name = "PX")]
    min_face: Option<f32>,

    /// Report at most this many faces per image (the highest-scoring ones).
    #[arg(long, value_name = "N")]
    max_faces: Option<usize>,

    /// Detector score threshold in 0..1; lower finds more faces and more false ones
    /// [default: 0.6 for short, 0.75 for long].
    #[arg(long, value_name = "SCORE", value_parser = unit_interval)]
    score_threshold: Option<f32>,

    /// Treat each image as one already-cropped face (like FER2013 and CK+48 images): skip
    /// detection and cropping, keep CLAHE and normalisation.
    #[arg(long)]
    no_detect: bool,

    /// Crop side as a multiple of the detector's box (default: the model's calibrated value).
    #[arg(long, value_name = "FACTOR", value_parser = positive)]
    crop_scale: Option<f32>,

    /// Run --model exactly as named. Without it a bundled int8 model is timed against its fp32
    /// sibling at start-up (a few passes each, well under a second on x86_64) and the sibling
    /// runs instead where it is more than 1.2x faster: tract's int8 kernels are slow on x86_64.
    /// `bench` and `eval` always keep the named model.
    #[arg(long)]
    keep_model: bool,

    /// Allow a model whose manifest says it is a test fixture (random weights; for tests only).
    #[arg(long, hide = true)]
    allow_test_fixture: bool,
}

fn unit_interval(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number within 0..1, got {s:?}")),
    }
}

fn smoothing(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("expected a number in (0, 1], got {s:?}")),
    }
}

fn positive(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DetectorChoice {
    Short,
    Long,
}

fn precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphChoice {
    Both,
    Detector,
    Ensemble,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let outcome = match cli.command {
        Command::Classify(args) => classify(args),
        Command::Eval(args) => evaluate(args),
        Command::Bench(args) => bench(args),
        Command::Run(args) => run(*args, matches.subcommand_matches("run")),
        Command::Models { json } => list_models(json).map(|()| ExitCode::SUCCESS),
        Command::Devices { json } => list_devices(json).map(|()| ExitCode::SUCCESS),
        Command::Check { board, config } => check(board.as_deref(), config.as_deref()),
        Command::CalibrateCrop {
            inputs,
            limit,
            detector,
            score_threshold,
            rotate,
        } => calibrate_crop(&inputs, limit, detector, score_threshold, rotate),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ferrite: {err:#}");
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

fn check(board: Option<&str>, config: Option<&Path>) -> Result<ExitCode> {
    let config = Config::layered(board, config)?;
    let mut items = Vec::new();
    let model = config
        .model
        .name
        .clone()
        .unwrap_or_else(|| models::DEFAULT_MODEL.to_string());
    items.push(ferrite::check::CheckItem {
        what: format!("model {model}"),
        ok: true,
        detail: String::new(),
    });
    let precision = config.model.precision.unwrap_or_default();
    let loaded = models::resolve(&model)
        .map_err(|e| e.to_string())
        .and_then(|source| Ensemble::load_with(&source, precision).map_err(|e| e.to_string()));
    match loaded {
        Ok(_) => items[0].detail = "loads".into(),
        Err(e) => {
            items[0].ok = false;
            items[0].detail = e;
        }
    }
    items.extend(ferrite::check::check(&config));
    let mut out = io::stdout().lock();
    for item in &items {
        let mark = if item.ok { "ok  " } else { "FAIL" };
        writeln!(out, "{mark}  {:<32} {}", item.what, item.detail)?;
    }
    Ok(if items.iter().all(|i| i.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn override_with<T>(value: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *value = v;
    }
}

fn override_some<T>(value: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *value = flag;
    }
}

fn list_models(json: bool) -> Result<()> {
    let manifests = models::bundled_manifests()?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &manifests)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<18} {:<6} {:<7} {:<34} LABELS",
        "NAME", "FORMAT", "INPUT", "PARTS"
    )?;
    for m in &manifests {
        let default = if m.name == models::DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        writeln!(
            out,
            "{:<18} {:<6} {:<7} {:<34} {}{default}",
            m.name,
            m.format,
            format!("{}x{}", m.input.width, m.input.height),
            m.parts.join(","),
            m.labels.join(",")
        )?;
    }
    writeln!(
        out,
        "\nDetails: ferrite models --json; model card: models/README.md"
    )?;
    Ok(())
}

fn list_devices(json: bool) -> Result<()> {
    let devices = capture::list_devices();
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &devices)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", capture::v4l2::format_device_table(&devices))?;
    }
    Ok(())
}

fn detector_model(choice: DetectorChoice) -> DetectorModel {
    match choice {
        DetectorChoice::Short => DetectorModel::Short,
        DetectorChoice::Long => DetectorModel::Long,
    }
}

fn calibrate_crop(
    inputs: &[PathBuf],
    limit: usize,
    detector: DetectorChoice,
    score_threshold: f32,
    rotate: bool,
) -> Result<ExitCode> {
    let detector = Detector::new(DetectorConfig {
        score_threshold,
        ..DetectorConfig::for_model(detector_model(detector))
    })?;
    let files: Vec<PathBuf> = expand_inputs(inputs)
        .into_iter()
        .filter_map(|job| {
            job.map_err(|(p, e)| log::warn!("{}: {e}", p.display()))
                .ok()
        })
        .collect();
    let step = (files.len() as f64 / limit.max(1) as f64).max(1.0);
    let picked: Vec<&PathBuf> = (0..files.len().min(limit))
        .map(|i| &files[(i as f64 * step) as usize])
        .collect();
    let mut crops = Vec::with_capacity(picked.len());
    for (i, path) in picked.iter().enumerate() {
        match image::open(path) {
            Ok(img) => crops.push(img.to_luma8()),
            Err(e) => log::warn!("{}: {e}", path.display()),
        }
        if (i + 1).is_multiple_of(500) {
            eprintln!("calibrate-crop: read {} of {} images", i + 1, picked.len());
        }
    }
    eprintln!("calibrate-crop: detecting faces in {} images", crops.len());
    let Some(found) = ferrite::calibrate::calibrate(&detector, &crops, rotate)? else {
        bail!(
            "the detector found a face in none of the {} images",
            crops.len()
        );
    };
    serde_json::to_writer_pretty(io::stdout().lock(), &found)?;
    println!();
    Ok(ExitCode::SUCCESS)
}

fn build_classifier(args: &PipelineArgs) -> Result<Classifier> {
    let source = models::resolve(&args.model)?;
    if source.manifest.purpose == Purpose::TestFixture && !args.allow_test_fixture {
        bail!(
            "model {} is a test fixture with random weights, not an expression classifier",
            source.origin
        );
    }
    // A board profile's f16 on a CPU without FP16 (a config tried on a desktop, an older board)
    // would run thousands of times slower than the stored model: run that instead and say so.
    let precision = if args.precision == Precision::F16 && !ferrite::ensemble::native_f16() {
        log::warn!(
            "precision f16: this CPU has no FP16 arithmetic (tract would emulate it, thousands of \
             times slower); running {} as stored",
            source.manifest.name
        );
        Precision::Stored
    } else {
        args.precision
    };
    let ensemble = Ensemble::load_with(&source, precision)?;
    let (source, ensemble) = if args.keep_model {
        (source, ensemble)
    } else {
        prefer_faster_format(source, ensemble)?
    };
    let mut crop = source.manifest.crop_geometry();
    if let Some(scale) = args.crop_scale {
        crop.scale = scale;
    }
    let detector = if args.no_detect {
        None
    } else {
        let mut config = DetectorConfig::for_model(detector_model(args.detector));
        if let Some(v) = args.min_face {
            config.min_face_size = v;
        }
        if let Some(v) = args.max_faces {
            config.max_faces = v;
        }
        if let Some(v) = args.score_threshold {
            config.score_threshold = v;
        }
        Some(match &args.detector_model {
            Some(path) => Detector::from_onnx_file(path, config)?,
            None => Detector::new(config)?,
        })
    };
    Ok(Classifier::new(detector, ensemble, crop))
}

/// A bundled int8 model is timed against its fp32 sibling, and the sibling runs instead where it
/// is clearly faster on this CPU (README, "Performance": tract's int8 path on x86_64). The float
/// model is never less accurate, so the only cost of the switch is memory.
fn prefer_faster_format(
    source: ModelSource,
    ensemble: Ensemble,
) -> Result<(ModelSource, Ensemble)> {
    let Some(sibling) = models::float_sibling(&source) else {
        return Ok((source, ensemble));
    };
    let float = Ensemble::load(&sibling)?;
    const RUNS: usize = 5;
    let int8_time = ensemble.median_pass(RUNS)?;
    let float_time = float.median_pass(RUNS)?;
    let (int8_name, float_name) = (&source.manifest.name, &sibling.manifest.name);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    if ferrite::ensemble::float_is_faster(int8_time, float_time) {
        log::warn!(
            "measured at start-up: {int8_name} {:.2} ms per face, {float_name} {:.2} ms on this \
             CPU; running {float_name} (--keep-model runs {int8_name} anyway)",
            ms(int8_time),
            ms(float_time)
        );
        Ok((sibling, float))
    } else {
        log::info!(
            "measured at start-up: {int8_name} {:.2} ms per face, {float_name} {:.2} ms on this \
             CPU; keeping {int8_name}",
            ms(int8_time),
            ms(float_time)
        );
        Ok((source, ensemble))
    }
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "pgm", "ppm", "pnm"];

/// Expands directories (recursively, sorted) into image files; explicit files are kept whatever
/// their extension, so a mislabelled file still gets a clear decode error.
fn expand_inputs(inputs: &[PathBuf]) -> Vec<Job> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = walk(input, &mut found) {
                files.push(Err((input.clone(), format!("cannot list directory: {e}"))));
                continue;
            }
            if found.is_empty() {
                files.push(Err((input.clone(), "directory holds no images".into())));
            }
            found.sort();
            files.extend(found.into_iter().map(Ok));
        } else {
            files.push(Ok(input.clone()));
        }
    }
    files
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            found.push(path);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct FaceLine<'a> {
    file: &'a str,
    #[serde(flatten)]
    result: &'a FaceResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    landmarks: Option<&'a Vec<[f32; 2]>>,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    error: &'a str,
}

type Outcome = Result<Vec<FaceResult>, String>;

fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let classifier = build_classifier(&args.pipeline)?;
    let mut display = open_display(args.display.as_ref().or(config.display.as_ref()));
    let jobs = expand_inputs(&args.inputs);
    let mut printer = Printer::new(args.pretty, args.landmarks);
    let mut last_faces = None;
    for_each_in_order(&classifier, &jobs, args.threads, |path, outcome| {
        if let Ok(faces) = &outcome {
            last_faces = Some(faces.clone());
        }
        printer.print(&path.display().to_string(), &outcome)
    })?;
    printer.finish()?;
    if let Some(display) = &mut display {
        match &last_faces {
            Some(faces) => {
                if let Err(e) = display.update(&DisplayState::new(faces, None)) {
                    log::warn!("{e}");
                }
            }
            None => log::warn!("{}: no image was classified, nothing shown", display.name()),
        }
    }

    if printer.failed > 0 {
        eprintln!(
            "ferrite: {} of {} input(s) failed",
            printer.failed,
            jobs.len()
        );
        return Ok(ExitCode::from(EXIT_INPUT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// A display is an extra: when it cannot be opened, say why and keep classifying.
fn open_display(config: Option<&DisplayConfig>) -> Option<Display> {
    match Display::open(config?) {
        Ok(display) => Some(display),
        Err(e) => {
            log::warn!("{e}; continuing without a display");
            None
        }
    }
}

fn run(args: RunArgs, matches: Option<&clap::ArgMatches>) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    // The first signal asks for a clean stop; a second SIGINT while stopping exits at once
    // (the conditional handler runs first, while the flag is still unset, so it only fires then).
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, stop.clone())
        .context("installing signal handlers")?;
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let mut config = Config::layered(args.board.as_deref(), args.config.as_deref())?;
    let camera = &mut config.camera;
    if let Some(input) = &args.input {
        camera.device = input.clone();
    }
    if let Some(size) = args.size {
        camera.size = size;
    }
    if let Some(fps) = args.fps {
        camera.fps = Some(f64::from(fps));
    }
    camera.looping |= args.looping;

    let tracker = &mut config.tracker;
    override_with(&mut tracker.min_hits, args.min_hits);
    override_with(&mut tracker.max_misses, args.max_misses);
    override_with(&mut tracker.smoothing, args.smoothing);
    override_with(&mut tracker.switch_margin, args.switch_margin);
    override_with(&mut tracker.switch_frames, args.switch_frames);
    config.tracker.validate()?;
    override_with(&mut config.pipeline.detect_every, args.detect_every);
    if args.max_frames.is_some() {
        config.pipeline.max_frames = args.max_frames;
    }

    // A flag typed on the command line wins; a defaulted one yields to the board and config.
    let mut model_args = args.pipeline;
    let from_cli = |id: &str| {
        matches.and_then(|m| m.value_source(id)) == Some(clap::parser::ValueSource::CommandLine)
    };
    if let (false, Some(name)) = (from_cli("model"), &config.model.name) {
        model_args.model = name.clone();
    }
    if let (false, Some(precision)) = (from_cli("precision"), config.model.precision) {
        model_args.precision = precision;
    }
    if let (false, Some(keep)) = (from_cli("keep_model"), config.model.keep) {
        model_args.keep_model = keep;
    }
    if let (false, Some(detector)) = (from_cli("detector"), &config.model.detector) {
        model_args.detector = match detector.as_str() {
            "short" => DetectorChoice::Short,
            "long" => DetectorChoice::Long,
            other => bail!("[model] detector must be \"short\" or \"long\", not {other:?}"),
        };
    }
    let classifier = build_classifier(&model_args)?;
    let source = capture::open_source(&config.camera.device, &config.camera)?;
    // Unpaced files are read as fast as inference takes them, so none may be dropped; cameras
    // and paced files run in real time, where the newest frame must win.
    let is_file = !capture::is_v4l2_path(Path::new(&config.camera.device));
    if is_file && config.camera.fps.is_none() {
        config.pipeline.drop_frames = false;
    }
    log::info!("input: {}", source.describe());

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let json = &mut config.json;
    json.enabled &= !args.no_json;
    if args.json.is_some() {
        json.path = args.json.clone();
    }
    json.state |= args.json_state;
    if json.enabled {
        sinks.push(Box::new(JsonSink::new(json)?));
    }
    let mqtt = &mut config.mqtt;
    if args.mqtt_host.is_some() {
        mqtt.host = args.mqtt_host.clone();
    }
    override_some(&mut mqtt.port, args.mqtt_port);
    override_some(&mut mqtt.client_id, args.mqtt_client_id.clone());
    override_some(&mut mqtt.base_topic, args.mqtt_base_topic.clone());
    override_some(&mut mqtt.username, args.mqtt_username.clone());
    override_some(&mut mqtt.password_file, args.mqtt_password_file.clone());
    override_some(&mut mqtt.ca_file, args.mqtt_ca_file.clone());
    override_some(&mut mqtt.client_cert, args.mqtt_client_cert.clone());
    override_some(&mut mqtt.client_key, args.mqtt_client_key.clone());
    mqtt.tls |= args.mqtt_tls;
    mqtt.homeassistant |= args.homeassistant;
    if mqtt.host.is_some() {
        let sink = MqttSink::start(mqtt)?;
        log::info!("mqtt: publishing under {}", sink.topics().availability);
        sinks.push(Box::new(sink));
    }
    if let Some(display) = open_display(args.display.as_ref().or(config.display.as_ref())) {
        sinks.push(Box::new(DisplaySink::new(display)));
    }
    if let Some(gpio) = &config.gpio {
        match GpioOutputs::new(gpio) {
            Ok(outputs) => sinks.push(Box::new(GpioSink::new(outputs))),
            Err(e) => log::warn!("gpio: {e}; continuing without GPIO outputs"),
        }
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
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("ferrite: {e}");
            Ok(ExitCode::from(EXIT_INPUT_FAILED))
        }
    }
}

/// `ferrite bench --threads`: distinct worker counts, in the order given.
#[derive(Clone, Debug)]
struct ThreadList(Vec<usize>);

fn thread_list(s: &str) -> Result<ThreadList, String> {
    ferrite::bench::parse_thread_list(s).map(ThreadList)
}

/// One `ferrite bench --json` row; the schema is documented in `ferrite bench --help`.
#[derive(Serialize)]
struct BenchRow {
    model: String,
    /// The arithmetic the ensemble ran in (after any f16 fallback).
    precision: Precision,
    /// Who ran the ensemble's convolutions: "direct-avx512", "direct-neon", "direct-portable" or "tract".
    conv_kernels: &'static str,
    /// Who ran the detector's convolutions and 2x2 max-pools (same names).
    detector_kernels: &'static str,
    detector: &'static str,
    threads: usize,
    tract_threads: usize,
    #[serde(flatten)]
    stats: ferrite::bench::StageStats,
    /// On "whole frame" rows: all workers' frames per second of wall time.
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_per_s: Option<f64>,
    /// On graph rows: the input tensor's shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_shape: Option<[usize; 4]>,
    /// On graph rows with --save-inputs: where that tensor was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_file: Option<PathBuf>,
    /// On the ensemble graph row with --profile: time per operator kind, slowest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Vec<OpTime>>,
}

fn write_f32(dir: &Path, name: &str, values: &[f32]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn bench(mut args: BenchArgs) -> Result<ExitCode> {
    // Times the model named, never a faster sibling.
    args.pipeline.keep_model = true;
    let encoded = match &args.image {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => ferrite::bench::SAMPLE_JPEG.to_vec(),
    };
    if args.graphs_only && args.threads.0 != [1] {
        bail!("--graphs-only times one thread; drop --threads");
    }
    let tract_threads = usize::from(args.tract_threads);
    ferrite::bench::set_tract_threads(tract_threads).map_err(anyhow::Error::msg)?;
    let models = if args.all_models {
        models::bundled_manifests()?
            .into_iter()
            .map(|m| m.name)
            .collect()
    } else {
        vec![args.pipeline.model.clone()]
    };
    let detector_name = match args.pipeline.detector {
        DetectorChoice::Short => "short",
        DetectorChoice::Long => "long",
    };
    let mut rows = Vec::new();
    for model in models {
        args.pipeline.model = model;
        let classifier = build_classifier(&args.pipeline)?;
        let Some(detector) = classifier.detector() else {
            bail!("bench times detection too; drop --no-detect");
        };
        let row = |threads, stats, frames_per_s| BenchRow {
            model: args.pipeline.model.clone(),
            precision: classifier.ensemble().precision(),
            conv_kernels: classifier.ensemble().conv_kernels(),
            detector_kernels: detector.kernels(),
            detector: detector_name,
            threads,
            tract_threads,
            stats,
            frames_per_s,
            input_shape: None,
            input_file: None,
            profile: None,
        };
        if args.graphs_only {
            eprintln!(
                "bench: {} graphs ({} runs after {} warm-up, kernels: ensemble {}, detector {})",
                args.pipeline.model,
                args.runs,
                args.warmup,
                classifier.ensemble().conv_kernels(),
                detector.kernels()
            );
            let inputs = ferrite::bench::graph_inputs(
                &encoded,
                detector,
                classifier.ensemble(),
                classifier.crop(),
            )?;
            let which = match args.graph {
                GraphChoice::Both => Graphs::Both,
                GraphChoice::Detector => Graphs::Detector,
                GraphChoice::Ensemble => Graphs::Ensemble,
            };
            let stats = ferrite::bench::run_graphs(
                &inputs,
                detector,
                classifier.ensemble(),
                which,
                args.runs,
                args.warmup,
            )?;
            let name = &classifier.ensemble().manifest().name;
            let mut tensors = Vec::new();
            if which.detector() {
                tensors.push((
                    format!("detect-{detector_name}.f32"),
                    &inputs.detector,
                    inputs.detector_shape,
                ));
            }
            if which.ensemble() {
                tensors.push((
                    format!("ensemble-{name}.f32"),
                    &inputs.ensemble,
                    inputs.ensemble_shape,
                ));
            }
            for (stats, (file, values, shape)) in stats.into_iter().zip(tensors) {
                let input_file = match &args.save_inputs {
                    Some(dir) => Some(write_f32(dir, &file, values)?),
                    None => None,
                };
                let profile = match (args.profile, stats.stage) {
                    (true, "ensemble graph") => {
                        let mut session = classifier.ensemble().session()?;
                        session.predict_normalised(&inputs.ensemble)?;
                        Some(session.profile_prepared(args.runs)?)
                    }
                    (true, "detect graph") => Some(detector.profile(&inputs.detector, args.runs)?),
                    _ => None,
                };
                rows.push(BenchRow {
                    input_shape: Some(shape),
                    input_file,
                    profile,
                    ..row(1, stats, None)
                });
            }
            continue;
        }
        for &threads in &args.threads.0 {
            eprintln!(
                "bench: {} ({} runs after {} warm-up, {threads} thread(s), tract threads {}, \
                 kernels: ensemble {}, detector {})",
                args.pipeline.model,
                args.runs,
                args.warmup,
                tract_threads,
                classifier.ensemble().conv_kernels(),
                detector.kernels()
            );
            let run = ferrite::bench::run_threads(
                &encoded,
                detector,
                classifier.ensemble(),
                classifier.crop(),
                args.runs,
                args.warmup,
                threads,
            )?;
            for stats in run.stages {
                let fps = (stats.stage == "whole frame").then_some(run.frames_per_s);
                rows.push(row(threads, stats, fps));
            }
        }
    }
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<24} {:<8} {:>7} {:<14} {:>10} {:>10} {:>9}",
            "MODEL", "DETECTOR", "THREADS", "STAGE", "MEDIAN ms", "P95 ms", "FRAMES/s"
        )?;
        for r in &rows {
            let fps = r.frames_per_s.map_or(String::new(), |f| format!("{f:.1}"));
            writeln!(
                out,
                "{:<24} {:<8} {:>7} {:<14} {:>10.2} {:>10.2} {:>9}",
                r.model,
                r.detector,
                r.threads,
                r.stats.stage,
                r.stats.median_ms,
                r.stats.p95_ms,
                fps
            )?;
        }
        for (r, profile) in rows.iter().filter_map(|r| Some((r, r.profile.as_ref()?))) {
            let total: f64 = profile.iter().map(|o| o.median_ms).sum();
            writeln!(
                out,
                "\n{} {} by operator (median ms per run):",
                r.model, r.stats.stage
            )?;
            for o in profile {
                let share = if total > 0.0 {
                    100.0 * o.median_ms / total
                } else {
                    0.0
                };
                writeln!(out, "  {:<28} {:>8.3} {:>6.1} %", o.op, o.median_ms, share)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn evaluate(mut args: EvalArgs) -> Result<ExitCode> {
    // Accuracy is reported for the model named, never a faster sibling.
    args.pipeline.keep_model = true;
    let classifier = build_classifier(&args.pipeline)?;
    let labels = classifier.ensemble().manifest().labels.clone();
    let jobs = expand_inputs(&args.inputs);
    let mut confusion = Confusion::new(&labels);
    let mut failed = 0usize;
    let mut seen = 0usize;
    for_each_in_order(&classifier, &jobs, args.threads, |path, outcome| {
        seen += 1;
        if seen.is_multiple_of(500) {
            eprintln!("eval: {seen} of {} images", jobs.len());
        }
        let class = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let Some(truth) = evaluate::label_index(class, &labels) else {
            confusion.skipped_unknown_class += 1;
            return Ok(());
        };
        match outcome {
            Err(e) => {
                failed += 1;
                log::warn!("{}: {e}", path.display());
            }
            Ok(faces) => match faces.first() {
                None => confusion.no_face += 1,
                Some(face) => {
                    let predicted = labels.iter().position(|l| *l == face.label).unwrap_or(0);
                    confusion.add(truth, predicted);
                }
            },
        }
        Ok(())
    })?;
    if args.json {
        serde_json::to_writer_pretty(io::stdout().lock(), &confusion)?;
        println!();
    } else {
        print!("{}", confusion.table());
    }
    if failed > 0 {
        eprintln!("ferrite: {failed} of {} input(s) failed", jobs.len());
        return Ok(ExitCode::from(EXIT_INPUT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

type Job = Result<PathBuf, (PathBuf, String)>;

/// Classifies every job on `threads` workers (each with its own session) and hands the outcomes
/// to `sink` in input order, although workers finish out of order.
fn for_each_in_order(
    classifier: &Classifier,
    jobs: &[Job],
    threads: Option<usize>,
    mut sink: impl FnMut(&Path, Outcome) -> Result<()>,
) -> Result<()> {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    log::info!(
        "{} input(s), {threads} thread(s), model {}",
        jobs.len(),
        classifier.ensemble().manifest().name
    );
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|scope| -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..threads {
            let tx = tx.clone();
            let next = &next;
            workers.push(scope.spawn(move || -> Result<()> {
                let mut session = classifier.session()?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else {
                        return Ok(());
                    };
                    let outcome = match job {
                        Ok(path) => classify_file(&mut session, path),
                        Err((_, reason)) => Err(reason.clone()),
                    };
                    if tx.send((i, outcome)).is_err() {
                        return Ok(());
                    }
                }
            }));
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut done = 0;
        for (i, outcome) in rx {
            pending.insert(i, outcome);
            while let Some(outcome) = pending.remove(&done) {
                let (Ok(path) | Err((path, _))) = &jobs[done];
                sink(path, outcome)?;
                done += 1;
            }
        }
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(_) => bail!("a worker thread panicked"),
            }
        }
        Ok(())
    })
}

fn classify_file(session: &mut ferrite::classify::ClassifySession<'_>, path: &Path) -> Outcome {
    let image = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .decode()
        .map_err(|e| format!("not a readable image: {e}"))?
        .into_rgb8();
    session.classify(&image).map_err(|e| e.to_string())
}

struct Printer {
    pretty: bool,
    landmarks: bool,
    out: io::BufWriter<io::Stdout>,
    failed: usize,
    header: bool,
}

impl Printer {
    fn new(pretty: bool, landmarks: bool) -> Self {
        Printer {
            pretty,
            landmarks,
            out: io::BufWriter::new(io::stdout()),
            failed: 0,
            header: false,
        }
    }

    fn print(&mut self, file: &str, outcome: &Outcome) -> Result<()> {
        match outcome {
            Err(error) => {
                self.failed += 1;
                log::warn!("{file}: {error}");
                if self.pretty {
                    self.header()?;
                    writeln!(self.out, "{file:<32} error: {error}")?;
                } else {
                    serde_json::to_writer(&mut self.out, &ErrorLine { file, error })?;
                    writeln!(self.out)?;
                }
            }
            Ok(faces) if self.pretty => {
                self.header()?;
                if faces.is_empty() {
                    writeln!(self.out, "{file:<32} no face found")?;
                }
                for f in faces {
                    let [x, y, w, h] = f.bbox.map(|v| v.round() as i64);
                    let score = f.score.map_or("-".to_string(), |s| format!("{s:.2}"));
                    let mut parts: Vec<String> = f
                        .parts
                        .iter()
                        .map(|(part, scores)| {
                            let (label, _) = scores.0.iter().fold(("", f32::MIN), |b, (l, p)| {
                                if *p > b.1 {
                                    (l, *p)
                                } else {
                                    b
                                }
                            });
                            format!("{part}:{label}")
                        })
                        .collect();
                    parts.truncate(5);
                    writeln!(
                        self.out,
                        "{file:<32} {:>4} {:>20} {score:>5} {:<9} {:>5.1}%  {}",
                        f.face,
                        format!("{x},{y} {w}x{h}"),
                        f.label,
                        f.confidence * 100.0,
                        parts.join(" ")
                    )?;
                }
            }
            Ok(faces) => {
                for result in faces {
                    let landmarks = result.landmarks.as_ref().filter(|_| self.landmarks);
                    let line = FaceLine {
                        file,
                        result,
                        landmarks,
                    };
                    serde_json::to_writer(&mut self.out, &line)?;
                    writeln!(self.out)?;
                }
            }
        }
        // Flush per input so a consumer of the JSON stream sees results as they come.
        self.out.flush()?;
        Ok(())
    }

    fn header(&mut self) -> Result<()> {
        if !self.header {
            self.header = true;
            writeln!(
                self.out,
                "{:<32} {:>4} {:>20} {:>5} {:<9} {:>6}  PARTS (each part's own top label)",
                "FILE", "FACE", "BOX (x,y wxh)", "SCORE", "LABEL", "CONF"
            )?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().context("writing results")
    }
}
