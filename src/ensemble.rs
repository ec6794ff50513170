//! The part-based expression ensemble: load once, run per face, read the outputs.
//!
//! [`Ensemble::load`] goes through tract's explicit steps once at start-up (parse -> fix the input
//! shape -> select the manifest's outputs -> check their shapes -> optimise -> runnable), so every
//! interface mismatch is a start-up error. The hot path is [`Session::predict`]: CLAHE and
//! normalisation as the manifest says, then one run of a plan it already holds. This module does
//! not find or crop faces ([`crate::detect`], [`crate::align`]) and does not decide what to do with
//! a prediction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::GrayImage;
use tract_onnx::prelude::*;

use crate::align::{self, ClaheScratch};
use crate::graph::ReusedTensor;
use crate::kernels::{Backend, ConvKernels, Int8Backend};
use crate::models::{Manifest, ModelSource};
pub use crate::profile::OpTime;
use tract_onnx::tract_core::internal::bail;

/// 68-point landmarks (iBUG 300-W order), in crop coordinates normalised to [0, 1].
pub const LANDMARK_POINTS: usize = 68;

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("cannot parse ONNX model {origin}: {reason}")]
    Parse { origin: String, reason: String },
    #[error("model {origin} does not match its manifest: {reason}")]
    Interface { origin: String, reason: String },
    #[error("cannot prepare model {origin} for inference: {reason}")]
    Optimise { origin: String, reason: String },
    #[error("face crop is {got_w}x{got_h}, the model needs {want_w}x{want_h}")]
    CropSize {
        got_w: u32,
        got_h: u32,
        want_w: usize,
        want_h: usize,
    },
    #[error("inference failed: {0}")]
    Run(String),
}

/// One face's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Fused probabilities, one per manifest label.
    pub probabilities: Vec<f32>,
    /// One probability vector per manifest part.
    pub part_probabilities: Vec<Vec<f32>>,
    /// Present when the model exports landmarks.
    pub landmarks: Option<Vec<[f32; 2]>>,
}

impl Prediction {
    /// Index and value of the most probable class.
    pub fn top(&self) -> (usize, f32) {
        argmax(&self.probabilities)
    }
}

/// Index and value of the largest value; the first on ties, `(0, -inf)` for none.
pub fn argmax(values: &[f32]) -> (usize, f32) {
    values
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
}

/// The arithmetic a float model runs in (`[model] precision` in the config: "stored" or "f16").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// As the ONNX file stores it (f32 weights, or int8 kernels for a quantized file).
    #[default]
    Stored,
    /// A float model's graph translated to f16 at load time: half the memory traffic, and twice
    /// the lanes per NEON instruction on CPUs with FP16 arithmetic (Cortex-A76/A78: Raspberry Pi 5,
    /// Jetson Orin). CPUs without it (Cortex-A72, x86_64) emulate it slowly.
    F16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stored" => Ok(Precision::Stored),
            "f16" => Ok(Precision::F16),
            other => Err(format!("expected \"stored\" or \"f16\", got {other:?}")),
        }
    }
}

/// A loaded, optimised model. Shared by reference across threads; each thread runs it through
/// its own [`Session`].
pub struct Ensemble {
    plan: Arc<TypedRunnableModel>,
    manifest: Manifest,
    precision: Precision,
    /// Who runs the backbones' convolutions: the name of ferrite's direct kernels
    /// ([`Backend::name`], [`Int8Backend::name`]), or tract (`None`).
    conv: Option<&'static str>,
    /// What the optimised graph takes: f16 after [`Precision::F16`], else f32.
    input_type: DatumType,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("model", &self.manifest.name)
            .finish()
    }
}

impl Ensemble {
    pub fn load(source: &ModelSource) -> Result<Self, EnsembleError> {
        Self::load_with(source, Precision::Stored)
    }

    /// [`Ensemble::load`] in the given arithmetic; [`Precision::F16`] needs a float model. The
    /// convolution kernels come from `FERRITE_CONV` ([`ConvKernels::from_env`]).
    pub fn load_with(source: &ModelSource, precision: Precision) -> Result<Self, EnsembleError> {
        let kernels = ConvKernels::from_env().map_err(|reason| EnsembleError::Optimise {
            origin: source.origin.clone(),
            reason,
        })?;
        Self::load_with_kernels(source, precision, kernels)
    }

    /// [`Ensemble::load_with`] with the convolution kernels given. Direct kernels apply to float
    /// models in [`Precision::Stored`] only; elsewhere tract runs every convolution.
    pub fn load_with_kernels(
        source: &ModelSource,
        precision: Precision,
        kernels: ConvKernels,
    ) -> Result<Self, EnsembleError> {
        let origin = source.origin.clone();
        let manifest = source.manifest.clone();
        let interface = |reason: String| EnsembleError::Interface {
            origin: origin.clone(),
            reason,
        };

        // The graph's own intermediate shapes carry a symbolic batch; ignore them and let tract
        // infer everything from the fixed input shape, then check the outputs ourselves.
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_read(&mut &*source.onnx)
            .map_err(|e| EnsembleError::Parse {
                origin: origin.clone(),
                reason: format!("{e:#}"),
            })?;

        let inputs = model
            .input_outlets()
            .map_err(|e| interface(e.to_string()))?;
        if inputs.len() != 1 {
            return Err(interface(format!(
                "expected one input, the graph has {}",
                inputs.len()
            )));
        }
        let input_name = &model.node(inputs[0].node).name;
        if *input_name != manifest.input.name {
            return Err(interface(format!(
                "the graph's input is {input_name:?}, the manifest says {:?}",
                manifest.input.name
            )));
        }
        let spec = &manifest.input;
        let declared = [
            None,
            Some(spec.channels),
            Some(spec.height),
            Some(spec.width),
        ];
        crate::graph::check_declared_input(&model, &declared).map_err(interface)?;
        let model = model
            .with_input_fact(
                0,
                f32::fact([1, spec.channels, spec.height, spec.width]).into(),
            )
            .map_err(|e| interface(format!("input shape: {e:#}")))?;

        let outputs = &manifest.outputs;
        let mut names = vec![
            outputs.probabilities.as_str(),
            outputs.part_probabilities.as_str(),
        ];
        names.extend(outputs.landmarks.as_deref());
        for name in &names {
            if !has_output(&model, name) {
                return Err(interface(format!("the graph has no output named {name:?}")));
            }
        }
        let model = model
            .with_outputs_by_name(&names)
            .map_err(|e| interface(format!("{e:#}")))?;

        let mut typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| interface(format!("{e:#}")))?;
        if precision == Precision::F16 {
            if !native_f16() {
                log::warn!(
                    "this CPU has no native FP16 arithmetic: f16 is emulated and runs thousands \
                     of times slower than --precision stored"
                );
            }
            to_f16(&mut typed).map_err(|reason| EnsembleError::Optimise {
                origin: origin.clone(),
                reason,
            })?;
        }
        let optimise = |reason: String| EnsembleError::Optimise {
            origin: origin.clone(),
            reason,
        };
        // Direct kernels are f32 and int8 only; an f16 graph stays tract's.
        let kernels = match precision {
            Precision::Stored => kernels,
            Precision::F16 => ConvKernels::Tract,
        };
        let fp32 =
            crate::kernels::rewrite(&mut typed, kernels, crate::kernels::replace_conv_chains)
                .map_err(|e| optimise(format!("{e:#}")))?;
        let int8 = crate::kernels::rewrite_int8(&mut typed, kernels)
            .map_err(|e| optimise(format!("{e:#}")))?;
        let conv = fp32.map(Backend::name).or(int8.map(Int8Backend::name));
        let typed = typed
            .into_optimized()
            .map_err(|e| interface(format!("{e:#}")))?;
        let classes = manifest.labels.len();
        let mut expected = vec![vec![1, classes], vec![1, manifest.parts.len(), classes]];
        if outputs.landmarks.is_some() {
            expected.push(vec![1, LANDMARK_POINTS, 2]);
        }
        for (ix, (name, want)) in names.iter().zip(&expected).enumerate() {
            let fact = typed
                .output_fact(ix)
                .map_err(|e| interface(format!("{e:#}")))?;
            let shape = fact.shape.as_concrete().map(|s| s.to_vec());
            let float = fact.datum_type == f32::datum_type()
                || (precision == Precision::F16 && fact.datum_type == f16::datum_type());
            if shape.as_ref() != Some(want) || !float {
                return Err(interface(format!(
                    "output {name:?} is {:?} {:?}, expected f32 {want:?}",
                    fact.datum_type, fact.shape
                )));
            }
        }
        let plan = typed.into_runnable().map_err(|e| EnsembleError::Optimise {
            origin: origin.clone(),
            reason: format!("{e:#}"),
        })?;
        let input_type = plan
            .model()
            .input_fact(0)
            .map_err(|e| interface(format!("{e:#}")))?
            .datum_type;
        log::debug!(
            "loaded model {} from {origin}, computing in {precision:?}",
            manifest.name
        );
        Ok(Ensemble {
            plan,
            manifest,
            precision,
            conv,
            input_type,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Median wall time of one pass over `runs` passes (at least one) on a blank input, after
    /// one warm-up pass. What the start-up check between an int8 model and its float sibling
    /// compares ([`float_is_faster`]).
    pub fn median_pass(&self, runs: usize) -> Result<Duration, EnsembleError> {
        let spec = &self.manifest.input;
        let input = vec![0.0f32; spec.channels * spec.height * spec.width];
        let mut session = self.session()?;
        session.predict_normalised(&input)?;
        let mut times = (0..runs.max(1))
            .map(|_| {
                let start = Instant::now();
                session.predict_normalised(&input).map(|_| start.elapsed())
            })
            .collect::<Result<Vec<_>, _>>()?;
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// Who runs the convolutions: "tract", or a direct backend: "direct-avx512", "direct-avx2",
    /// "direct-neon", "direct-portable" for float graphs, "direct-int8-avx2", "direct-int8-sdot",
    /// "direct-int8-neon", "direct-int8-portable" for int8 ones.
    pub fn conv_kernels(&self) -> &'static str {
        self.conv.unwrap_or("tract")
    }

    /// One line for status pages and logs: "name (format[ run as f16], KERNELS kernels)".
    pub fn describe(&self) -> String {
        let run_as = match self.precision {
            Precision::Stored => "",
            Precision::F16 => " run as f16",
        };
        format!(
            "{} ({}{run_as}, {} kernels)",
            self.manifest.name,
            self.manifest.format,
            self.conv_kernels()
        )
    }

    /// Side of the square crop the model expects (its input height and width).
    pub fn input_size(&self) -> (u32, u32) {
        (
            self.manifest.input.width as u32,
            self.manifest.input.height as u32,
        )
    }

    pub fn session(&self) -> Result<Session<'_>, EnsembleError> {
        let state = self
            .plan
            .spawn()
            .map_err(|e| EnsembleError::Run(format!("{e:#}")))?;
        Ok(Session {
            ensemble: self,
            state,
            pixels: Vec::new(),
            equalised: GrayImage::new(0, 0),
            clahe: ClaheScratch::default(),
            input: ReusedTensor::default(),
        })
    }
}

/// How much faster (as a ratio of medians) a float sibling must run than an int8 model before the
/// float one runs instead: enough to stay clear of timing noise on a shared machine.
pub const FORMAT_SWITCH_RATIO: f64 = 1.2;

/// Whether an int8 model's float sibling measured clearly faster (by more than
/// [`FORMAT_SWITCH_RATIO`]). It is never less accurate: quantization only loses accuracy. tract's
/// int8 kernels run 1.7x slower than its fp32 ones on this repository's x86_64 host, and about 5x
/// slower than ferrite's direct fp32 kernels; on Arm the formats were only counted, not timed.
pub fn float_is_faster(int8: Duration, float: Duration) -> bool {
    float.as_secs_f64() * FORMAT_SWITCH_RATIO < int8.as_secs_f64()
}

/// Whether this CPU has FP16 arithmetic that tract uses (Cortex-A55/A75/A76/A78 and later, Apple
/// M). Without it [`Precision::F16`] runs through tract's emulation, thousands of times slower.
pub fn native_f16() -> bool {
    tract_onnx::tract_core::tract_linalg::has_fp16()
}

/// Rewrites every f32 tensor and operator of a float graph to f16. A quantized graph has no f32
/// convolutions left to halve, so it is refused rather than silently left as it is.
fn to_f16(model: &mut TypedModel) -> Result<(), String> {
    let quantized = model.nodes().iter().any(|n| {
        n.outputs
            .iter()
            .any(|o| o.fact.datum_type.is_quantized() || o.fact.datum_type == i8::datum_type())
    });
    if quantized {
        return Err("f16 needs a float model; this one is quantized (use its fp32 sibling)".into());
    }
    let transform = tract_onnx::tract_core::transform::get_transform("f32_to_f16")
        .map_err(|e| format!("{e:#}"))?
        .ok_or("this tract has no f32_to_f16 transform")?;
    transform.transform(model).map_err(|e| format!("{e:#}"))
}

fn has_output(model: &InferenceModel, name: &str) -> bool {
    model.nodes().iter().any(|n| {
        n.name == name
            || (0..n.outputs.len())
                .any(|ix| model.outlet_label(OutletId::new(n.id, ix)) == Some(name))
    })
}

fn run_error(e: TractError) -> EnsembleError {
    EnsembleError::Run(format!("{e:#}"))
}

/// Per-thread inference state: reuses tract's op states (and with them the activations of
/// ferrite's kernels), the CLAHE buffers and the input buffer and tensor across faces.
pub struct Session<'a> {
    ensemble: &'a Ensemble,
    state: TypedSimpleState,
    pixels: Vec<f32>,
    equalised: GrayImage,
    clahe: ClaheScratch,
    /// The f32 input tensor of the last run, refilled in place when tract has let go of it.
    input: ReusedTensor,
}

impl Session<'_> {
    /// Classifies one aligned grayscale face crop of the model's input size.
    pub fn predict(&mut self, crop: &GrayImage) -> Result<Prediction, EnsembleError> {
        self.prepare(crop)?;
        self.run_prepared()
    }

    /// The preprocessing half of [`Session::predict`]: CLAHE and normalisation as the manifest
    /// says, into the session's input buffer. Split out so benchmarks time the two halves.
    pub fn prepare(&mut self, crop: &GrayImage) -> Result<(), EnsembleError> {
        let manifest = &self.ensemble.manifest;
        let spec = &manifest.input;
        if crop.width() as usize != spec.width || crop.height() as usize != spec.height {
            return Err(EnsembleError::CropSize {
                got_w: crop.width(),
                got_h: crop.height(),
                want_w: spec.width,
                want_h: spec.height,
            });
        }
        let pre = &manifest.preprocess;
        align::clahe_into(
            crop,
            pre.clahe_clip_limit,
            (pre.clahe_tiles[0], pre.clahe_tiles[1]),
            &mut self.equalised,
            &mut self.clahe,
        );
        align::normalise_into(&self.equalised, pre.scale, pre.offset, &mut self.pixels);
        Ok(())
    }

    /// The input buffer: after [`Session::prepare`], the normalised crop (`height x width`
    /// values; a three-channel model's copies are added by the next run). For feeding the same
    /// input to another runtime.
    pub fn prepared_input(&self) -> &[f32] {
        &self.pixels
    }

    /// Runs the model on an already preprocessed input (`channels x height x width` values, one
    /// channel is replicated when the model wants three). Used by parity tests.
    pub fn predict_normalised(&mut self, input: &[f32]) -> Result<Prediction, EnsembleError> {
        self.pixels.clear();
        self.pixels.extend_from_slice(input);
        self.run_prepared()
    }

    /// Makes the input buffer what the graph takes: a one-channel crop copied into each channel
    /// of a three-channel model.
    fn replicate_channels(&mut self) -> Result<(), EnsembleError> {
        let spec = &self.ensemble.manifest.input;
        let plane = spec.height * spec.width;
        if self.pixels.len() == plane && spec.channels == 3 {
            self.pixels.extend_from_within(0..plane);
            self.pixels.extend_from_within(0..plane);
        }
        if self.pixels.len() != plane * spec.channels {
            return Err(EnsembleError::Run(format!(
                "input has {} values, the model needs {}",
                self.pixels.len(),
                plane * spec.channels
            )));
        }
        Ok(())
    }

    /// The tensor the graph takes, built from the input buffer.
    fn input_tensor(&mut self) -> Result<Tensor, EnsembleError> {
        self.replicate_channels()?;
        let spec = &self.ensemble.manifest.input;
        let mut input =
            Tensor::from_shape(&[1, spec.channels, spec.height, spec.width], &self.pixels)
                .map_err(run_error)?;
        if self.ensemble.input_type != f32::datum_type() {
            input = input
                .cast_to_dt(self.ensemble.input_type)
                .map_err(run_error)?
                .into_owned();
        }
        Ok(input)
    }

    /// [`Session::input_tensor`] as the value a run takes; an f32 input refills the previous
    /// run's tensor ([`ReusedTensor`]), so a warm session allocates no input tensor.
    fn input_value(&mut self) -> Result<TValue, EnsembleError> {
        if self.ensemble.input_type != f32::datum_type() {
            return Ok(self.input_tensor()?.into_tvalue());
        }
        self.replicate_channels()?;
        let spec = &self.ensemble.manifest.input;
        let pixels = &self.pixels;
        self.input
            .refill(&[1, spec.channels, spec.height, spec.width], |values| {
                if values.len() != pixels.len() {
                    bail!(
                        "input has {} values, the tensor {}",
                        pixels.len(),
                        values.len()
                    );
                }
                values.copy_from_slice(pixels);
                Ok(())
            })
            .map_err(run_error)
    }

    /// Where the time of one graph run goes: runs the prepared input `runs` times, timing every
    /// node, and returns each operator kind's median time per run, slowest first. For finding
    /// what to optimise on a board (`ferrite bench --graphs-only --profile`).
    pub fn profile_prepared(&mut self, runs: usize) -> Result<Vec<OpTime>, EnsembleError> {
        let input = self.input_tensor()?;
        crate::profile::per_operator(&mut self.state, input, runs).map_err(run_error)
    }

    /// The inference half of [`Session::predict`]: runs the model on what [`Session::prepare`]
    /// left in the input buffer.
    pub fn run_prepared(&mut self) -> Result<Prediction, EnsembleError> {
        let manifest = &self.ensemble.manifest;
        let input = self.input_value()?;
        let outputs = self.state.run(tvec!(input)).map_err(run_error)?;
        let values = |ix: usize| -> Result<Vec<f32>, EnsembleError> {
            let values = outputs[ix].cast_to::<f32>().map_err(run_error)?;
            Ok(values
                .to_plain_array_view::<f32>()
                .map_err(run_error)?
                .iter()
                .copied()
                .collect())
        };
        let probabilities = values(0)?;
        let classes = probabilities.len();
        let part_probabilities = values(1)?.chunks(classes).map(<[f32]>::to_vec).collect();
        let landmarks = if manifest.outputs.landmarks.is_some() {
            Some(values(2)?.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
        } else {
            None
        };
        Ok(Prediction {
            probabilities,
            part_probabilities,
            landmarks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models;
    use std::path::{Path, PathBuf};

    fn fixture_dir(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn read_f32(path: &Path) -> Vec<f32> {
        std::fs::read(path)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{name}: length");
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= tol, "{name}: max |tract - onnxruntime| = {worst}");
    }

    /// tract must reproduce onnxruntime's outputs on the committed reference input.
    fn check_parity(fixture: &str, precision: Precision, tol: f32) {
        check_parity_with(fixture, precision, ConvKernels::Auto, tol);
    }

    fn check_parity_with(fixture: &str, precision: Precision, kernels: ConvKernels, tol: f32) {
        let dir = fixture_dir(fixture);
        let source = models::from_path(&dir).unwrap();
        let ensemble = Ensemble::load_with_kernels(&source, precision, kernels).unwrap();
        assert_eq!(ensemble.precision(), precision);
        let described = ensemble.describe();
        assert!(
            described.starts_with(&format!("{} (", ensemble.manifest().name))
                && described.contains(&ensemble.manifest().format)
                && described.contains(&format!("{} kernels", ensemble.conv_kernels()))
                && described.contains("f16") == (precision == Precision::F16),
            "{described}"
        );
        let mut session = ensemble.session().unwrap();
        let got = session
            .predict_normalised(&read_f32(&dir.join("input.f32")))
            .unwrap();
        assert_close(
            "probabilities",
            &got.probabilities,
            &read_f32(&dir.join("probabilities.f32")),
            tol,
        );
        let parts: Vec<f32> = got.part_probabilities.concat();
        assert_close(
            "part_probabilities",
            &parts,
            &read_f32(&dir.join("part_probabilities.f32")),
            tol,
        );
        let landmarks: Vec<f32> = got.landmarks.unwrap().concat();
        assert_close(
            "landmarks",
            &landmarks,
            &read_f32(&dir.join("landmarks.f32")),
            tol,
        );
    }

    #[test]
    fn fp32_fixture_matches_onnxruntime() {
        check_parity("ensemble", Precision::Stored, 1e-4);
    }

    #[test]
    fn fp32_fixture_matches_onnxruntime_with_every_conv_kernel() {
        let mut kernels = vec![ConvKernels::Tract, ConvKernels::Direct(Backend::Portable)];
        for backend in [Backend::Avx512, Backend::Avx2] {
            if backend.available() {
                kernels.push(ConvKernels::Direct(backend));
            }
        }
        for k in kernels {
            check_parity_with("ensemble", Precision::Stored, k, 1e-4);
            let source = models::from_path(&fixture_dir("ensemble")).unwrap();
            let ensemble = Ensemble::load_with_kernels(&source, Precision::Stored, k).unwrap();
            let want = match k {
                ConvKernels::Direct(backend) => backend.name(),
                _ => "tract",
            };
            assert_eq!(ensemble.conv_kernels(), want);
        }
    }

    #[test]
    fn direct_kernels_leave_f16_graphs_to_tract() {
        let portable = ConvKernels::Direct(Backend::Portable);
        let fp32 = models::from_path(&fixture_dir("ensemble")).unwrap();
        let ensemble = Ensemble::load_with_kernels(&fp32, Precision::F16, portable).unwrap();
        assert_eq!(ensemble.conv_kernels(), "tract");
    }

    #[test]
    fn int8_fixture_matches_onnxruntime_with_every_int8_kernel() {
        let mut kernels = vec![
            (ConvKernels::Tract, "tract"),
            (
                ConvKernels::Direct(Backend::Portable),
                "direct-int8-portable",
            ),
        ];
        if let Some(best) = Int8Backend::detect() {
            kernels.push((ConvKernels::Auto, best.name()));
        }
        for (k, want) in kernels {
            check_parity_with("ensemble-int8", Precision::Stored, k, 1e-4);
            let source = models::from_path(&fixture_dir("ensemble-int8")).unwrap();
            let ensemble = Ensemble::load_with_kernels(&source, Precision::Stored, k).unwrap();
            assert_eq!(ensemble.conv_kernels(), want);
        }
    }

    #[test]
    fn conv_kernels_parse_and_refuse_unknown_names() {
        assert_eq!("".parse::<ConvKernels>(), Ok(ConvKernels::Auto));
        assert_eq!("tract".parse::<ConvKernels>(), Ok(ConvKernels::Tract));
        assert_eq!(
            "portable".parse::<ConvKernels>(),
            Ok(ConvKernels::Direct(Backend::Portable))
        );
        let err = "cuda".parse::<ConvKernels>().unwrap_err();
        assert!(
            err.contains("expected auto, tract, avx512, avx2, neon or portable"),
            "{err}"
        );
        assert_eq!(
            "neon".parse::<ConvKernels>().is_ok(),
            Backend::Neon.available()
        );
        assert_eq!(
            "avx512".parse::<ConvKernels>().is_ok(),
            Backend::Avx512.available()
        );
    }

    #[test]
    fn float_sibling_wins_only_when_clearly_faster() {
        let ms = Duration::from_millis;
        assert!(float_is_faster(ms(20), ms(3)));
        assert!(!float_is_faster(ms(11), ms(10)), "within the noise margin");
        assert!(!float_is_faster(ms(5), ms(10)));
        let source = models::from_path(&fixture_dir("ensemble")).unwrap();
        let ensemble = Ensemble::load(&source).unwrap();
        assert!(ensemble.median_pass(3).unwrap() > Duration::ZERO);
    }

    #[test]
    fn int8_fixture_matches_onnxruntime() {
        check_parity("ensemble-int8", Precision::Stored, 1e-4);
    }

    #[test]
    fn f16_fixture_stays_near_onnxruntime_and_int8_refuses_f16() {
        // Half precision keeps about three significant digits.
        check_parity("ensemble", Precision::F16, 5e-3);
        let int8 = models::from_path(&fixture_dir("ensemble-int8")).unwrap();
        let err = Ensemble::load_with(&int8, Precision::F16).unwrap_err();
        assert!(err.to_string().contains("quantized"), "{err}");
        assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
        assert!("half".parse::<Precision>().is_err());
    }

    #[test]
    fn profile_names_every_operator_kind_slowest_first() {
        let dir = fixture_dir("ensemble");
        let ensemble = Ensemble::load(&models::from_path(&dir).unwrap()).unwrap();
        let mut session = ensemble.session().unwrap();
        session
            .predict_normalised(&read_f32(&dir.join("input.f32")))
            .unwrap();
        let profile = session.profile_prepared(3).unwrap();
        assert!(
            profile.iter().any(|o| o.op.contains("MatMul")),
            "{profile:?}"
        );
        assert!(profile.windows(2).all(|w| w[0].median_ms >= w[1].median_ms));
        assert!(profile.iter().all(|o| o.median_ms >= 0.0));
        let mut names: Vec<&str> = profile.iter().map(|o| o.op.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), profile.len(), "one row per operator kind");
    }

    #[test]
    fn prediction_shapes_follow_the_manifest() {
        let source = models::from_path(&fixture_dir("ensemble")).unwrap();
        let ensemble = Ensemble::load(&source).unwrap();
        let (w, h) = ensemble.input_size();
        let crop = GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]));
        let p = ensemble.session().unwrap().predict(&crop).unwrap();
        let m = ensemble.manifest();
        assert_eq!(p.probabilities.len(), m.labels.len());
        assert_eq!(p.part_probabilities.len(), m.parts.len());
        assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        // Fusion is the mean of the part softmaxes.
        for (c, fused) in p.probabilities.iter().enumerate() {
            let mean =
                p.part_probabilities.iter().map(|v| v[c]).sum::<f32>() / m.parts.len() as f32;
            assert!((fused - mean).abs() < 1e-5);
        }
        assert_eq!(p.landmarks.unwrap().len(), LANDMARK_POINTS);
    }

    #[test]
    fn wrong_crop_size_is_an_error_not_a_panic() {
        let source = models::from_path(&fixture_dir("ensemble")).unwrap();
        let ensemble = Ensemble::load(&source).unwrap();
        let err = ensemble
            .session()
            .unwrap()
            .predict(&GrayImage::new(10, 12))
            .unwrap_err();
        assert!(matches!(err, EnsembleError::CropSize { .. }));
    }

    fn with_manifest(edit: impl FnOnce(&mut Manifest)) -> Result<Ensemble, EnsembleError> {
        let mut source = models::from_path(&fixture_dir("ensemble")).unwrap();
        edit(&mut source.manifest);
        Ensemble::load(&source)
    }

    #[test]
    fn interface_mismatches_are_start_up_errors() {
        let missing = with_manifest(|m| m.outputs.landmarks = Some("nope".into())).unwrap_err();
        assert!(
            missing.to_string().contains("no output named \"nope\""),
            "{missing}"
        );

        let classes = with_manifest(|m| m.labels.push("extra".into())).unwrap_err();
        assert!(
            matches!(classes, EnsembleError::Interface { .. }),
            "{classes}"
        );

        let input = with_manifest(|m| m.input.name = "pixels".into()).unwrap_err();
        assert!(input.to_string().contains("input"), "{input}");

        let size = with_manifest(|m| m.input.height = 40).unwrap_err();
        assert!(matches!(size, EnsembleError::Interface { .. }), "{size}");
    }

    #[test]
    fn garbage_bytes_are_a_parse_error() {
        let mut source = models::from_path(&fixture_dir("ensemble")).unwrap();
        source.onnx = std::borrow::Cow::Owned(b"definitely not protobuf".to_vec());
        assert!(matches!(
            Ensemble::load(&source).unwrap_err(),
            EnsembleError::Parse { .. } | EnsembleError::Interface { .. }
        ));
    }
}
