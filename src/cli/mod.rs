//! The command line: argument definitions, one file per subcommand, and the few helpers they
//! share. Decisions about models, configuration layering and worker threads live in the library;
//! this module turns arguments into library options and results into printed output.

pub mod bench;
pub mod classify;
pub mod info;
pub mod run;

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use ferrite::classify::ClassifierOptions;
use ferrite::config::{DetectConfig, ModelConfig};
use ferrite::detect::{DetectorModel, Tiles};
use ferrite::display::DisplayConfig;
use ferrite::ensemble::Precision;
use ferrite::limits;

use bench::BenchArgs;
use classify::{CalibrateArgs, ClassifyArgs, EvalArgs};
use run::RunArgs;

pub const EXIT_INPUT_FAILED: u8 = 1;
pub const EXIT_STARTUP_FAILED: u8 = 3;

// A macro rather than a const so that `concat!` can append it to subcommand help too.
macro_rules! exit_codes {
    () => {
        "Exit status:\n  \
         0  every input was processed (finding no face is not an error)\n  \
         1  at least one input could not be read or decoded, or a write to an output (the JSON \
            log, MQTT) failed; the rest was processed\n  \
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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    CalibrateCrop(CalibrateArgs),
    /// Time each stage (decode, detect, crop+CLAHE, ensemble, whole frame): median and p95.
    #[command(
        after_long_help = "Examples:\n  ferrite bench\n  ferrite bench --all-models --runs 100 --json\n  \
            ferrite bench --threads 1,2\n  ferrite bench --detector long my_frame.jpg\n  \
            ferrite bench --graphs-only --all-models --json --save-inputs /tmp/inputs\n\n\
            Stages, as `ferrite run` processes a camera frame: decode (the image to the luma \
            frame the live pipeline works on: a JPEG as an MJPEG camera frame, straight to \
            luma), detect (letterbox, BlazeFace, box decoding, suppression), crop+clahe (crop, \
            CLAHE, normalise), ensemble (the expression model, once per face), whole frame. \
            With --graphs-only: detect graph and ensemble graph, the two tract graphs alone.\n\n\
            Kernels: the ensemble's 3x3 convolutions and the detector's depthwise convolutions \
            and 2x2 max-pools run in ferrite's direct kernels where those beat tract's (x86_64 \
            with AVX-512F or AVX2: timed; aarch64 NEON: fewer instructions counted under \
            emulation), else in tract; so does the int8 ensemble (AVX2, NEON sdot or smlal). \
            FERRITE_CONV=tract|avx512|avx2|neon|portable|auto overrides that for any command, e.g. \
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

/// Options that choose and configure the detector and the expression model. Unset ones take the
/// config file's `[model]` value (`run`), else the default.
#[derive(clap::Args)]
pub struct PipelineArgs {
    /// Expression model: a bundled name (see `ferrite models`, which marks the default for this
    /// CPU) or a directory holding manifest.json and the ONNX file it names.
    #[arg(long, value_name = "NAME|DIR")]
    model: Option<String>,

    /// Arithmetic of a float model: `stored` (as the file stores it) or `f16` (translated at
    /// load time; for CPUs with FP16 arithmetic such as the Cortex-A76 of a Raspberry Pi 5, see
    /// docs/performance.md; elsewhere a warning and the stored model). An int8 model accepts
    /// only `stored`. [default: stored]
    #[arg(long, value_name = "stored|f16", value_parser = precision)]
    precision: Option<Precision>,

    /// Face detector: `short` (BlazeFace 128x128, faces within ~2 m, fast) or `long`
    /// (BlazeFace 256x256, smaller and farther faces, ~4x slower). [default: short]
    #[arg(long, value_parser = detector_parser())]
    detector: Option<DetectorModel>,

    /// Also search the image tile by tile for faces too small for the whole-frame pass (which
    /// finds faces from about 1/8 of the longer side): N (1-4) levels of overlapping tiles, each
    /// level's tiles half the side of the last; `auto` for still images the levels that reach
    /// faces of 4 % of the height (at least 32 px, or --min-face), for `run` off; `off` never.
    /// Each tile is one more detector run: 37 at 640x480, 109 at 1280x720 (`ferrite bench
    /// --tiles`).
    /// [default: auto]
    #[arg(long, value_name = "auto|off|N", value_parser = |s: &str| s.parse::<Tiles>())]
    tiles: Option<Tiles>,

    /// Report every face the detector scores above --score-threshold, without the second
    /// opinion: by default a face scoring below 0.85 in a still image (or in tiled live video)
    /// must be found again in two crops around it, which rejects most false faces (textures,
    /// animals) at two more detector runs per unsure face.
    #[arg(long)]
    no_verify: bool,

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
    #[arg(long, value_name = "FACTOR", value_parser = |s: &str| limits::CROP_SCALE.parse::<f32>(s))]
    crop_scale: Option<f32>,

    /// Run --model exactly as named. Without it a bundled int8 model is timed against its fp32
    /// sibling at start-up (a few passes each, well under a second on x86_64) and the sibling
    /// runs instead where it is more than 1.2x faster: int8 loses on CPUs without a dot-product
    /// instruction (Cortex-A53, A72).
    /// `bench` and `eval` always keep the named model.
    #[arg(long)]
    keep_model: bool,

    /// Allow a model whose manifest says it is a test fixture (random weights; for tests only).
    #[arg(long, hide = true)]
    allow_test_fixture: bool,
}

impl PipelineArgs {
    /// The classifier these flags describe, over the `[model]` section `config` (whose own
    /// unset keys are defaults).
    pub fn options(&self, config: &ModelConfig, detect: &DetectConfig) -> ClassifierOptions {
        let layered = ModelConfig {
            name: self.model.clone().or_else(|| config.name.clone()),
            detector: self.detector.or(config.detector),
            precision: self.precision.or(config.precision),
            keep: self.keep_model.then_some(true).or(config.keep),
        };
        ClassifierOptions {
            detector_file: self.detector_model.clone(),
            min_face: self.min_face,
            max_faces: self.max_faces,
            score_threshold: self.score_threshold,
            tiles: self.tiles.or(detect.tiles).unwrap_or_default(),
            verify: self.no_verify.then_some(false).or(detect.verify),
            no_detect: self.no_detect,
            crop_scale: self.crop_scale,
            allow_test_fixture: self.allow_test_fixture,
            ..ClassifierOptions::from_config(&layered)
        }
    }
}

fn display_spec(s: &str) -> Result<DisplayConfig, String> {
    DisplayConfig::parse_spec(s).map_err(|e| e.to_string())
}

fn detector_parser() -> impl TypedValueParser<Value = DetectorModel> {
    PossibleValuesParser::new(DetectorModel::ALL.map(DetectorModel::name))
        .try_map(|s| s.parse::<DetectorModel>())
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

fn precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn run_options(args: &[&str], config: &ModelConfig) -> ClassifierOptions {
        let cli = Cli::try_parse_from(["ferrite", "run"].iter().chain(args)).expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        run.pipeline.options(config, &DetectConfig::default())
    }

    #[test]
    fn model_flags_win_over_the_config_and_unset_ones_yield_to_it() {
        let config = ModelConfig {
            name: Some("fer2013-48-int8".into()),
            detector: Some(DetectorModel::Long),
            precision: Some(Precision::F16),
            keep: Some(true),
        };
        let from_config = run_options(&[], &config);
        assert_eq!(from_config.model, "fer2013-48-int8");
        assert_eq!(from_config.detector, DetectorModel::Long);
        assert_eq!(from_config.precision, Precision::F16);
        assert!(from_config.keep_model);
        let flags = run_options(
            &[
                "--model",
                "fer2013-48-fp32",
                "--detector",
                "short",
                "--precision",
                "stored",
            ],
            &config,
        );
        assert_eq!(flags.model, "fer2013-48-fp32");
        assert_eq!(flags.detector, DetectorModel::Short);
        assert_eq!(flags.precision, Precision::Stored);
        let defaults = run_options(&[], &ModelConfig::default());
        assert_eq!(defaults, ClassifierOptions::default());
    }

    #[test]
    fn tiles_and_the_second_opinion_layer_and_live_video_turns_auto_off() {
        let detect = DetectConfig {
            tiles: Some(Tiles::Levels(2)),
            verify: Some(false),
        };
        let from_config = {
            let cli = Cli::try_parse_from(["ferrite", "run"]).expect("parses");
            let Command::Run(run) = cli.command else {
                panic!("not run")
            };
            run.pipeline.options(&ModelConfig::default(), &detect)
        };
        assert_eq!(from_config.tiles, Tiles::Levels(2));
        assert_eq!(from_config.verify, Some(false));
        let flags = run_options(&["--tiles", "off", "--no-verify"], &ModelConfig::default());
        assert_eq!((flags.tiles, flags.verify), (Tiles::Off, Some(false)));

        let stills = run_options(&[], &ModelConfig::default());
        assert_eq!((stills.tiles, stills.verify), (Tiles::Auto, None));
        let live = stills.clone().for_live_video();
        assert_eq!((live.tiles, live.verify), (Tiles::Off, Some(false)));
        let tiled_live = run_options(&["--tiles", "1"], &ModelConfig::default()).for_live_video();
        assert_eq!(
            (tiled_live.tiles, tiled_live.verify),
            (Tiles::Levels(1), Some(true))
        );
    }

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        for args in [
            ["--detector", "medium"],
            ["--score-threshold", "1.5"],
            ["--crop-scale", "-1"],
            ["--tiles", "5"],
            ["--tiles", "some"],
        ] {
            assert!(
                Cli::try_parse_from(["ferrite", "classify", "x.png"].iter().chain(&args)).is_err(),
                "{args:?}"
            );
        }
    }
}
