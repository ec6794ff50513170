//! Model manifests and the models embedded in the binary.
//!
//! A model is an ONNX file plus a `manifest.json` that says how to feed it (input size, channels,
//! CLAHE and normalisation), how to read it (labels, part names, output names) and what its bytes
//! must hash to. This module parses and checks manifests and hands out model bytes, bundled or from
//! disk; it does not run models (that is [`crate::ensemble`]) and knows nothing of faces.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::align::CropGeometry;

/// The model `ferrite classify` and `ferrite run` use when none is named: the faster format on
/// this CPU at the same accuracy (the int8 model is within 0.2 points of fp32; docs/performance.md,
/// "int8 with AVX512-VNNI", "int8: ferrite's own kernels" and "Arm boards").
/// - x86_64 with AVX-512F and AVX512-VNNI: int8, whose ensemble ran in 0.42x the fp32 time in
///   ferrite's kernels. Other x86_64: fp32. With AVX2 alone the int8 ensemble took 0.99x the fp32
///   time (`vpmaddwd` does as many products per instruction as an FMA).
/// - aarch64: fp32. int8 executes 0.44x the fp32 instructions on a core with the dot product
///   (the `rpi5` and `jetson-orin-nano` profiles name it) but 1.43x without one; that was counted
///   under emulation, not timed, so the default stays where it was measured safe.
/// - 32-bit Arm was not counted; int8 stays.
pub fn default_model() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::Int8Backend::detect() == Some(crate::kernels::Int8Backend::Avx512Vnni) {
            INT8_MODEL
        } else {
            FP32_MODEL
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        FP32_MODEL
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        INT8_MODEL
    }
}

/// The bundled expression models, by format.
pub const FP32_MODEL: &str = "fer2013-48-fp32";
pub const INT8_MODEL: &str = "fer2013-48-int8";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no bundled model named {name:?} (bundled: {available}); pass a directory holding manifest.json to use your own")]
    UnknownBundled { name: String, available: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed manifest {path}: {source}")]
    Manifest {
        path: String,
        source: serde_json::Error,
    },
    #[error("invalid manifest {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("checksum mismatch for {path}: manifest says sha256 {expected}, file is {actual} (corrupt or tampered model file)")]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
}

/// What a model is for. Test fixtures share the real interface but have random weights, so the
/// CLI refuses to present their output as expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    Classifier,
    TestFixture,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    pub clahe_clip_limit: f32,
    pub clahe_tiles: [u32; 2],
    /// Model input = pixel * scale + offset.
    pub scale: f32,
    pub offset: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputNames {
    pub probabilities: String,
    pub part_probabilities: String,
    pub landmarks: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub purpose: Purpose,
    /// Numeric format of the weights ("fp32", "int8"); informational.
    pub format: String,
    pub file: String,
    pub sha256: String,
    pub input: InputSpec,
    pub preprocess: Preprocess,
    pub labels: Vec<String>,
    pub parts: Vec<String>,
    pub outputs: OutputNames,
    /// How the detector's box maps to the framing of the training crops; see docs/models.md,
    /// "Crop calibration". Absent means [`CropGeometry::default`].
    #[serde(default)]
    pub crop: Option<CropGeometry>,
}

impl Manifest {
    pub fn parse(json: &str, origin: &str) -> Result<Self, ModelError> {
        let manifest: Manifest =
            serde_json::from_str(json).map_err(|source| ModelError::Manifest {
                path: origin.to_string(),
                source,
            })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    fn validate(&self, origin: &str) -> Result<(), ModelError> {
        let invalid = |reason: String| ModelError::Invalid {
            path: origin.to_string(),
            reason,
        };
        if !matches!(self.input.channels, 1 | 3) {
            return Err(invalid(format!(
                "input.channels is {}, expected 1 or 3",
                self.input.channels
            )));
        }
        if !(8..=1024).contains(&self.input.height) || !(8..=1024).contains(&self.input.width) {
            return Err(invalid(format!(
                "input size {}x{} is outside 8..=1024",
                self.input.width, self.input.height
            )));
        }
        if self.labels.len() < 2 {
            return Err(invalid("needs at least two labels".into()));
        }
        if self.parts.is_empty() {
            return Err(invalid("needs at least one part".into()));
        }
        let [tx, ty] = self.preprocess.clahe_tiles;
        let clip = self.preprocess.clahe_clip_limit;
        if tx == 0 || ty == 0 || !clip.is_finite() || clip <= 0.0 {
            return Err(invalid(
                "CLAHE needs a positive clip limit and non-zero tiles".into(),
            ));
        }
        if !self.preprocess.scale.is_finite() || !self.preprocess.offset.is_finite() {
            return Err(invalid("preprocess.scale and offset must be finite".into()));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("sha256 must be 64 hex digits".into()));
        }
        // A manifest is data anyone can hand over: its file may not reach outside its folder
        // (`/dev/zero` would be read until memory runs out).
        let file = Path::new(&self.file);
        let inside = file
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if self.file.is_empty() || !inside {
            return Err(invalid(format!(
                "file {:?} must be a relative path inside the manifest's folder",
                self.file
            )));
        }
        if let Some(crop) = &self.crop {
            let checks = [
                crate::limits::CROP_SCALE.check(crop.scale),
                crate::limits::CROP_SHIFT.check(crop.shift_x),
                crate::limits::CROP_SHIFT.check(crop.shift_y),
            ];
            for check in checks {
                check.map_err(|e| invalid(e.to_string()))?;
            }
        }
        Ok(())
    }

    pub fn crop_geometry(&self) -> CropGeometry {
        self.crop.unwrap_or_default()
    }
}

/// A manifest together with the ONNX bytes it describes, checksum already verified.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub manifest: Manifest,
    pub onnx: Cow<'static, [u8]>,
    /// Where it came from, for messages: `bundled:<name>` or a path.
    pub origin: String,
}

struct Bundled {
    manifest: &'static str,
    onnx: &'static [u8],
}

macro_rules! bundled {
    ($dir:literal) => {
        Bundled {
            manifest: include_str!(concat!("../models/", $dir, "/manifest.json")),
            onnx: include_bytes!(concat!("../models/", $dir, "/model.onnx")),
        }
    };
}

/// Embedded so a single binary deploys; `--model <dir>` overrides.
static BUNDLED: &[Bundled] = &[bundled!("fer2013-48-int8"), bundled!("fer2013-48-fp32")];

/// Manifests of every bundled model, in the order they were bundled.
pub fn bundled_manifests() -> Result<Vec<Manifest>, ModelError> {
    BUNDLED
        .iter()
        .map(|b| Manifest::parse(b.manifest, "bundled"))
        .collect()
}

/// Finds a bundled model by name and verifies it (the bytes could only be wrong if the build was).
pub fn bundled(name: &str) -> Result<ModelSource, ModelError> {
    for b in BUNDLED {
        let manifest = Manifest::parse(b.manifest, "bundled")?;
        if manifest.name == name {
            let origin = format!("bundled:{name}");
            verify_checksum(&manifest, b.onnx, &origin)?;
            return Ok(ModelSource {
                manifest,
                onnx: Cow::Borrowed(b.onnx),
                origin,
            });
        }
    }
    let available = bundled_manifests()?
        .into_iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ");
    Err(ModelError::UnknownBundled {
        name: name.to_string(),
        available,
    })
}

/// The bundled fp32 model trained alongside a bundled int8 one (`<stem>-int8` -> `<stem>-fp32`):
/// same weights before quantization, same labels and input. `None` for a model from a directory
/// or without such a sibling.
pub fn float_sibling(source: &ModelSource) -> Option<ModelSource> {
    let name = &source.manifest.name;
    if source.origin != format!("bundled:{name}") || source.manifest.format != "int8" {
        return None;
    }
    let sibling = bundled(&format!("{}-fp32", name.strip_suffix("-int8")?)).ok()?;
    let m = &sibling.manifest;
    (m.labels == source.manifest.labels && m.input == source.manifest.input).then_some(sibling)
}

/// Loads a model from a directory holding `manifest.json` (or from the manifest file itself);
/// the ONNX file is the manifest's `file`, relative to the manifest.
pub fn from_path(path: &Path) -> Result<ModelSource, ModelError> {
    let manifest_path = if path.is_dir() {
        path.join("manifest.json")
    } else {
        path.to_path_buf()
    };
    let read_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ModelError::Io { path: p, source }
    };
    let json = fs::read_to_string(&manifest_path).map_err(read_err(&manifest_path))?;
    let origin = manifest_path.display().to_string();
    let manifest = Manifest::parse(&json, &origin)?;
    let onnx_path = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&manifest.file);
    let meta = fs::metadata(&onnx_path).map_err(read_err(&onnx_path))?;
    if !meta.is_file() {
        return Err(ModelError::Invalid {
            path: origin,
            reason: format!("{} is not a regular file", onnx_path.display()),
        });
    }
    crate::limits::MODEL_FILE_BYTES
        .check(meta.len())
        .map_err(|e| ModelError::Invalid {
            path: origin.clone(),
            reason: e.to_string(),
        })?;
    let onnx = fs::read(&onnx_path).map_err(read_err(&onnx_path))?;
    verify_checksum(&manifest, &onnx, &onnx_path.display().to_string())?;
    Ok(ModelSource {
        manifest,
        onnx: Cow::Owned(onnx),
        origin,
    })
}

/// `--model` accepts a bundled name or a path; a path wins when it exists.
pub fn resolve(spec: &str) -> Result<ModelSource, ModelError> {
    let path = Path::new(spec);
    if path.exists() {
        from_path(path)
    } else {
        bundled(spec)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify_checksum(manifest: &Manifest, onnx: &[u8], origin: &str) -> Result<(), ModelError> {
    let actual = sha256_hex(onnx);
    if !actual.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(ModelError::Checksum {
            path: origin.to_string(),
            expected: manifest.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ensemble");

    #[test]
    fn bundled_models_verify_and_are_classifiers() {
        let manifests = bundled_manifests().unwrap();
        assert!(manifests.iter().any(|m| m.name == default_model()));
        for m in manifests {
            let source = bundled(&m.name).unwrap();
            assert_eq!(source.manifest.purpose, Purpose::Classifier);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_x86_default_is_int8_exactly_where_the_vnni_kernels_run() {
        let vnni = crate::kernels::Int8Backend::Avx512Vnni.available();
        let default = bundled(default_model()).unwrap();
        let want = if vnni { "int8" } else { "fp32" };
        assert_eq!(default.manifest.format, want, "{}", default_model());
    }

    #[test]
    fn unknown_bundled_name_lists_the_available_ones() {
        let err = bundled("no-such-model").unwrap_err().to_string();
        assert!(err.contains(default_model()), "{err}");
    }

    #[test]
    fn fixture_loads_from_directory_and_manifest_path() {
        let a = from_path(Path::new(FIXTURE)).unwrap();
        let b = from_path(&Path::new(FIXTURE).join("manifest.json")).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.manifest.purpose, Purpose::TestFixture);
    }

    #[test]
    fn tampered_model_is_a_checksum_error() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["manifest.json", "model.onnx"] {
            fs::copy(Path::new(FIXTURE).join(f), dir.path().join(f)).unwrap();
        }
        let onnx = dir.path().join("model.onnx");
        let mut bytes = fs::read(&onnx).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        fs::write(&onnx, bytes).unwrap();
        let err = from_path(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    }

    #[test]
    fn missing_and_malformed_manifests_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            from_path(dir.path()).unwrap_err(),
            ModelError::Io { .. }
        ));
        fs::write(dir.path().join("manifest.json"), "{ not json").unwrap();
        assert!(matches!(
            from_path(dir.path()).unwrap_err(),
            ModelError::Manifest { .. }
        ));
    }

    #[test]
    fn validation_rejects_bad_values() {
        let json = fs::read_to_string(Path::new(FIXTURE).join("manifest.json")).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["input"]["channels"] = 2.into();
        let err = Manifest::parse(&value.to_string(), "t").unwrap_err();
        assert!(err.to_string().contains("channels"), "{err}");
    }

    #[test]
    fn crop_geometry_and_file_are_bounded() {
        let json = fs::read_to_string(Path::new(FIXTURE).join("manifest.json")).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&json).unwrap();
        let crop = |scale: f64| serde_json::json!({"scale": scale, "shift_x": 0.0, "shift_y": 0.0, "rotate": true});
        for scale in [0.0, -1.0, 1e30] {
            let mut value = fixture.clone();
            value["crop"] = crop(scale);
            let err = Manifest::parse(&value.to_string(), "t").unwrap_err();
            assert!(err.to_string().contains("crop.scale"), "{scale}: {err}");
        }
        let mut value = fixture.clone();
        value["crop"] = crop(1.3);
        Manifest::parse(&value.to_string(), "t").expect("a sane crop");
        for file in ["/dev/zero", "../model.onnx", "sub/../../x.onnx", ""] {
            let mut value = fixture.clone();
            value["file"] = file.into();
            let err = Manifest::parse(&value.to_string(), "t").unwrap_err();
            assert!(
                err.to_string().contains("inside the manifest's folder"),
                "{file}: {err}"
            );
        }
    }

    #[test]
    fn a_model_file_that_is_not_a_regular_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let json = fs::read_to_string(Path::new(FIXTURE).join("manifest.json")).unwrap();
        fs::write(dir.path().join("manifest.json"), json).unwrap();
        // A folder where the ONNX file should be (a FIFO or device would block or never end).
        fs::create_dir(dir.path().join("model.onnx")).unwrap();
        let err = from_path(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn only_a_bundled_int8_model_has_a_float_sibling() {
        let int8 = bundled("fer2013-48-int8").unwrap();
        assert_eq!(
            float_sibling(&int8).unwrap().manifest.name,
            "fer2013-48-fp32"
        );
        let fp32 = bundled("fer2013-48-fp32").unwrap();
        assert!(float_sibling(&fp32).is_none());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fer2013-48-int8");
        assert!(
            float_sibling(&from_path(&dir).unwrap()).is_none(),
            "a directory is used as given"
        );
    }
}
