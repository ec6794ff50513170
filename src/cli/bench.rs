//! `ferrite bench`: each stage's latency on an image, or the two graphs alone.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use serde::Serialize;

use ferrite::bench::Graphs;
use ferrite::classify::{Classifier, ClassifierOptions};
use ferrite::config::{DetectConfig, ModelConfig};
use ferrite::ensemble::{OpTime, Precision};
use ferrite::models;

use super::PipelineArgs;

#[derive(Args)]
pub struct BenchArgs {
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
    #[arg(long, default_value = "both", requires = "graphs_only",
          value_parser = PossibleValuesParser::new(["both", "detector", "ensemble"]).try_map(|s| s.parse::<Graphs>()))]
    graph: Graphs,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
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

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    let encoded = match &args.image {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => ferrite::bench::SAMPLE_JPEG.to_vec(),
    };
    if args.graphs_only && args.threads.0 != [1] {
        bail!("--graphs-only times one thread; drop --threads");
    }
    let tract_threads = usize::from(args.tract_threads);
    ferrite::bench::set_tract_threads(tract_threads).map_err(anyhow::Error::msg)?;
    let options = args
        .pipeline
        .options(&ModelConfig::default(), &DetectConfig::default());
    let base = ClassifierOptions {
        // Times the model named, never a faster sibling.
        keep_model: true,
        ..options.for_live_video()
    };
    let models = if args.all_models {
        models::bundled_manifests()?
            .into_iter()
            .map(|m| m.name)
            .collect()
    } else {
        vec![base.model.clone()]
    };
    let detector_name = base.detector.name();
    let mut rows = Vec::new();
    for model in models {
        let options = ClassifierOptions {
            model,
            ..base.clone()
        };
        let classifier = Classifier::build(&options)?;
        let Some(detector) = classifier.detector() else {
            bail!("bench times detection too; drop --no-detect");
        };
        let row = |threads, stats, frames_per_s| BenchRow {
            model: options.model.clone(),
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
                options.model,
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
            let which = args.graph;
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
                    (true, ferrite::bench::ENSEMBLE_GRAPH) => {
                        let mut session = classifier.ensemble().session()?;
                        session.predict_normalised(&inputs.ensemble)?;
                        Some(session.profile_prepared(args.runs)?)
                    }
                    (true, ferrite::bench::DETECT_GRAPH) => {
                        Some(detector.profile(&inputs.detector, args.runs)?)
                    }
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
                options.model,
                args.runs,
                args.warmup,
                tract_threads,
                classifier.ensemble().conv_kernels(),
                detector.kernels()
            );
            let run = ferrite::bench::run_threads(
                &encoded,
                &classifier,
                args.runs,
                args.warmup,
                threads,
            )?;
            for stats in run.stages {
                let fps = (stats.stage == ferrite::bench::WHOLE_FRAME).then_some(run.frames_per_s);
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
