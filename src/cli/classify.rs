//! `ferrite classify`, `eval` and `calibrate-crop`: still images in, per-face lines, a confusion
//! matrix or the crop geometry out.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use ferrite::capture::files::{expand_inputs, Job};
use ferrite::capture::still::read_image;
use ferrite::classify::{Classifier, ClassifierOptions, ClassifySession, FaceResult};
use ferrite::config::{Config, DetectConfig, ModelConfig};
use ferrite::detect::{Detector, DetectorConfig, DetectorModel};
#[cfg(feature = "display")]
use ferrite::display::Display;
use ferrite::display::DisplayConfig;
use ferrite::evaluate::{self, Confusion};
#[cfg(feature = "display")]
use ferrite::output::OutputState;
use ferrite::workers;

use super::{detector_parser, display_spec, unit_interval, PipelineArgs, EXIT_INPUT_FAILED};

#[derive(Args)]
pub struct ClassifyArgs {
    /// Image files or directories (searched recursively, following links, for png, jpg, jpeg, bmp,
    /// pgm, ppm, pnm).
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
    pub pipeline: PipelineArgs,
}

#[derive(Args)]
pub struct EvalArgs {
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
    pub pipeline: PipelineArgs,
}

/// `ferrite calibrate-crop`'s arguments.
#[derive(Args)]
pub struct CalibrateArgs {
    /// Directories or files of training crops (one face each).
    #[arg(required = true, value_name = "IMAGE|DIR")]
    inputs: Vec<PathBuf>,
    /// Use at most this many images (spread evenly over the sorted list).
    #[arg(long, default_value_t = 2000)]
    limit: usize,
    /// Face detector to calibrate for (calibrate for the one you run with).
    #[arg(long, default_value = "short", value_parser = detector_parser())]
    detector: DetectorModel,
    /// Detector score threshold; 48x48 training crops are small and blurry for BlazeFace,
    /// so a lower threshold than at run time keeps more of them.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    score_threshold: f32,
    /// Record that crops should be levelled by the eye line (as the runtime does by default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    rotate: bool,
}

pub fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // The config file gives classify its [display] only; the model comes from the flags.
    let classifier = Classifier::build(
        &args
            .pipeline
            .options(&ModelConfig::default(), &DetectConfig::default()),
    )?;
    let jobs = expand_inputs(&args.inputs);
    let mut printer = Printer::new(args.pretty, args.landmarks);
    let mut last_faces = None;
    classify_in_order(&classifier, &jobs, args.threads, |path, outcome| {
        if let Ok(faces) = &outcome {
            last_faces = Some(faces.clone());
        }
        printer.print(&path.display().to_string(), &outcome)
    })?;
    printer.finish()?;
    show_last(
        args.display.as_ref().or(config.display.as_ref()),
        last_faces.as_deref(),
    );

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

pub fn evaluate(args: EvalArgs) -> Result<ExitCode> {
    // A mistyped dataset path would otherwise print an empty matrix; checked before the model
    // loads, so the answer comes at once.
    for input in &args.inputs {
        if let Err(e) = std::fs::metadata(input) {
            eprintln!("ferrite: eval: {}: {e}", input.display());
            return Ok(ExitCode::from(EXIT_INPUT_FAILED));
        }
    }
    let options = ClassifierOptions {
        // Accuracy is reported for the model named, never a faster sibling.
        keep_model: true,
        ..args
            .pipeline
            .options(&ModelConfig::default(), &DetectConfig::default())
    };
    let classifier = Classifier::build(&options)?;
    let labels = classifier.ensemble().manifest().labels.clone();
    let jobs = expand_inputs(&args.inputs);
    let mut confusion = Confusion::new(&labels);
    let mut failed = 0usize;
    let mut seen = 0usize;
    classify_in_order(&classifier, &jobs, args.threads, |path, outcome| {
        seen += 1;
        if seen.is_multiple_of(500) {
            eprintln!("eval: {seen} of {} images", jobs.len());
        }
        // Before the class: a directory that cannot be listed has no class, and must still count.
        let faces = match outcome {
            Err(e) => {
                failed += 1;
                log::warn!("{}: {e}", path.display());
                return Ok(());
            }
            Ok(faces) => faces,
        };
        let class = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let Some(truth) = evaluate::label_index(class, &labels) else {
            confusion.skipped_unknown_class += 1;
            return Ok(());
        };
        match faces.first() {
            None => confusion.no_face += 1,
            Some(face) => {
                let predicted = labels.iter().position(|l| *l == face.label).unwrap_or(0);
                confusion.add(truth, predicted);
            }
        }
        Ok(())
    })?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &confusion)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", confusion.table())?;
    }
    if failed > 0 {
        eprintln!("ferrite: {failed} of {} input(s) failed", jobs.len());
        return Ok(ExitCode::from(EXIT_INPUT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn calibrate_crop(args: CalibrateArgs) -> Result<ExitCode> {
    let CalibrateArgs {
        inputs,
        limit,
        detector,
        score_threshold,
        rotate,
    } = args;
    let detector = Detector::new(DetectorConfig {
        score_threshold,
        ..DetectorConfig::for_model(detector)
    })?;
    let mut failed = 0usize;
    let files: Vec<PathBuf> = expand_inputs(&inputs)
        .into_iter()
        .filter_map(|job| match job {
            Ok(path) => Some(path),
            Err((path, e)) => {
                failed += 1;
                log::warn!("{}: {e}", path.display());
                None
            }
        })
        .collect();
    let step = (files.len() as f64 / limit.max(1) as f64).max(1.0);
    let picked: Vec<&PathBuf> = (0..files.len().min(limit))
        .map(|i| &files[(i as f64 * step) as usize])
        .collect();
    let mut crops = Vec::with_capacity(picked.len());
    for (i, path) in picked.iter().enumerate() {
        match read_image(path) {
            Ok(img) => crops.push(img.to_luma8()),
            Err(e) => {
                failed += 1;
                log::warn!("{}: {e}", path.display());
            }
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
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &found)?;
    writeln!(out)?;
    if failed > 0 {
        eprintln!("ferrite: {failed} input(s) could not be read (not measured)");
        return Ok(ExitCode::from(EXIT_INPUT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// A display is an extra: when it cannot be opened, say why and keep classifying.
#[cfg(feature = "display")]
pub fn open_display(config: Option<&DisplayConfig>) -> Option<Display> {
    match Display::open(config?) {
        Ok(display) => Some(display),
        Err(e) => {
            log::warn!("{e}; continuing without a display");
            None
        }
    }
}

/// Shows the last image's faces on the configured display, if any.
#[cfg(feature = "display")]
fn show_last(config: Option<&DisplayConfig>, faces: Option<&[FaceResult]>) {
    let Some(mut display) = open_display(config) else {
        return;
    };
    match faces {
        Some(faces) => {
            if let Err(e) = display.update(&OutputState::new(faces, None)) {
                log::warn!("{e}");
            }
        }
        None => log::warn!("{}: no image was classified, nothing shown", display.name()),
    }
}

#[cfg(not(feature = "display"))]
fn show_last(config: Option<&DisplayConfig>, _faces: Option<&[FaceResult]>) {
    if config.is_some() {
        log::warn!("{}; nothing shown", ferrite::display::NO_DISPLAY);
    }
}

type Outcome = Result<Vec<FaceResult>, String>;

/// Classifies every job on `threads` workers (each with its own session) and hands the outcomes
/// to `sink` in input order.
fn classify_in_order(
    classifier: &Classifier,
    jobs: &[Job],
    threads: Option<usize>,
    mut sink: impl FnMut(&Path, Outcome) -> Result<()>,
) -> Result<()> {
    let threads = workers::worker_count(threads, jobs.len());
    log::info!(
        "{} input(s), {threads} thread(s), model {}",
        jobs.len(),
        classifier.ensemble().manifest().name
    );
    workers::map_in_order(
        jobs,
        threads,
        || classifier.session().map_err(anyhow::Error::from),
        |session, job| match job {
            Ok(path) => classify_file(session, path),
            Err((_, reason)) => Err(reason.clone()),
        },
        |i, outcome| {
            let (Ok(path) | Err((path, _))) = &jobs[i];
            sink(path, outcome)
        },
    )
}

fn classify_file(session: &mut ClassifySession<'_>, path: &Path) -> Outcome {
    let image = read_image(path).map_err(|e| e.to_string())?.into_rgb8();
    session.classify(&image).map_err(|e| e.to_string())
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
                            let label = scores.top().map_or("", |(label, _)| label);
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
