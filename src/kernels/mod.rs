//! ferrite's own convolution kernels, run inside tract as custom operators that replace the
//! nodes they match: the ensemble's 3x3 convolution chains, and BlazeFace's first convolution,
//! depthwise 3x3 and 1x1 convolutions and 2x2 max-pools.
//!
//! Why: tract lowers every convolution to an im2col gather plus a matrix product. For the wide,
//! shallow layers of the ensemble's backbones (16 or 32 channels at 48x48 and 24x24) the gather
//! costs more than the arithmetic, and onnxruntime ran the fp32 ensemble 2.2-2.8x faster than tract
//! on the same CPU (docs/performance.md, "Where tract's time went"). Here each chain of
//! `Conv 3x3 (+ ReLU) (+ MaxPool 3x3/2)` nodes becomes one [`ConvChain`] that keeps its activations
//! in a channel-blocked layout (16 channels per vector, zero border included, so no Pad and no
//! gather) and computes every output vector as a sum of broadcast inputs times weight vectors.
//! In the detector, tract's depthwise convolution and max-pool took about 40 % of the graph's time
//! for 12 % of its multiply-adds, and its 1x1 convolutions (a packing step, a matrix product and a
//! separate add chain each) most of the rest: [`Depthwise3x3`], [`MaxPool2x2`], [`Pointwise`]
//! (bias, residual shortcut and ReLU fused) and [`ImageConv`] (the first layer, read from the NHWC
//! image) replace them. The heads, dense layers and softmax stay tract's.
//!
//! Each op keeps its output tensor in its per-session state (`ReusedOutput`) and overwrites it
//! on the next run, so a warm session allocates none of these activations.
//!
//! The replacements are exact up to float summation order and apply only to f32 nodes that match
//! the shapes implemented here; anything else keeps tract's kernels.
//!
//! The int8 ensemble (ONNX QOperator: QLinearConv, DequantizeLinear, Relu, MaxPool,
//! QuantizeLinear, QLinearMatMul) has its own pair: [`QConvChain`] runs each backbone's
//! convolution chain in integers, requantising straight into the next convolution's input scale
//! ([`Int8Backend`]: `vpdpbusd` with AVX512-VNNI, `vpmaddwd` on AVX2, `sdot` on Armv8.2,
//! widening multiply-adds on other NEON cores), and [`QMatVec`] each dense layer. Both reproduce onnxruntime's integer arithmetic
//! exactly (its float requantisation scale, rounding half to even).
//!
//! # Where things are
//!
//! One file per op and one per vector backend, as in tract-linalg, with the tract side apart:
//!
//! - `vector/`: one 16-float vector and the few operations the kernels need, per backend
//!   (`portable.rs`, `avx512.rs`, `avx2.rs`, `neon.rs`). Each kernel is one generic body over it,
//!   instantiated per backend; the entry points in `avx512.rs` and `avx2.rs` carry the target
//!   features so that the generic body and the intrinsics inline into them.
//! - `conv_chain.rs`: [`ConvChain`], the ensemble's 3x3 convolutions and 3x3 max-pools in the
//!   channel-blocked layout.
//! - `qconv_chain.rs`, `qmatvec.rs`: the int8 ensemble's [`QConvChain`] and [`QMatVec`];
//!   `vector/int8*.rs` their 16 int32 accumulators per backend.
//! - `depthwise.rs`, `maxpool.rs`, `pointwise.rs`, `image_conv.rs`: the detector's
//!   [`Depthwise3x3`], [`MaxPool2x2`], [`Pointwise`] and [`ImageConv`], on plain NCHW tensors.
//! - `tract/`: the ops as tract operators (`ops.rs`), and the graph rewrites that put them in place
//!   of tract's nodes ([`replace_conv_chains`], [`replace_detector_ops`], [`rewrite`]).
//!
//! # Safety
//!
//! The kernels read and write through raw pointers and SIMD intrinsics. Each `unsafe fn` states
//! what it needs in a `# Safety` section, and the safe function that enters it (`conv_forward`,
//! `maxpool_forward`, an op's `run_image`) asserts the bounds first. Beyond those bounds the
//! `unsafe` code relies on one invariant of this module: **an op's backend is available on this
//! CPU** ([`Backend::available`]). The rewrites check it before they build any op, and nothing
//! outside `kernels` can build one (the constructors and fields are private to it). The dispatch
//! relies on it to enter the AVX-512 entry points, and to keep the register tile that
//! [`Pointwise`] and [`ImageConv`] packed their weights for equal to the tile it runs: a NEON op on
//! x86_64 would be packed for the NEON tile and run with the wide one. The int8 chains rely on
//! the same for [`Int8Backend::available`]: their weights are packed for one backend's element
//! type and step, and the AVX2 and `sdot` entry points carry target features.

mod conv_chain;
mod depthwise;
mod image_conv;
mod maxpool;
mod pointwise;
mod qconv_chain;
mod qmatvec;
#[cfg(test)]
mod testing;
mod tract;
mod vector;

use vector::int8::Storage;

pub use conv_chain::ConvChain;
pub use depthwise::Depthwise3x3;
pub use image_conv::ImageConv;
pub use maxpool::MaxPool2x2;
pub use pointwise::Pointwise;
pub use qconv_chain::QConvChain;
pub use qmatvec::QMatVec;
pub use tract::{
    replace_conv_chains, replace_detector_ops, replace_qconv_chains, rewrite, rewrite_int8,
};

/// Channels per vector in the blocked layout.
const LANES: usize = 16;

/// Which implementation runs the chains' arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AVX-512F intrinsics (x86_64, detected at run time).
    Avx512,
    /// AVX2 and FMA intrinsics (x86_64 without AVX-512, detected at run time): a vector is two
    /// registers, and tiles are NEON's narrow ones.
    Avx2,
    /// NEON intrinsics (every aarch64 CPU).
    Neon,
    /// Plain Rust over 16-float arrays; any CPU. Used for testing the chain logic everywhere and
    /// when forced; not faster than tract's own kernels.
    Portable,
}

impl Backend {
    /// The backend that beat tract on this CPU, if any. x86_64 with AVX-512F: timed
    /// (docs/performance.md, "Both graphs"); with AVX2 and FMA: timed (the ensemble 0.36x and the
    /// short detector 0.26x tract's time; "int8: ferrite's own kernels, and AVX2"). aarch64: NEON
    /// executed fewer instructions than tract's kernels on every core counted under emulation
    /// (`cross/insn_count.py --kernels tract,neon`: the ensemble 0.52x on the Cortex-A53, 0.81x
    /// on the A57, A72 and A76; the detector 0.50-0.57x; docs/performance.md, "Arm boards"), an
    /// estimate, not a timing. Elsewhere (32-bit Arm, x86_64 before AVX2) tract's kernels run.
    pub fn detect() -> Option<Backend> {
        if cfg!(target_arch = "aarch64") {
            return Some(Backend::Neon);
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Backend::Avx512);
            }
            if Backend::Avx2.available() {
                return Some(Backend::Avx2);
            }
        }
        None
    }

    /// Whether this CPU can run the backend at all.
    pub fn available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Avx512 | Backend::Avx2 => false,
            Backend::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx512 => "direct-avx512",
            Backend::Avx2 => "direct-avx2",
            Backend::Neon => "direct-neon",
            Backend::Portable => "direct-portable",
        }
    }
}

/// Which implementation runs the int8 chains' arithmetic ([`QConvChain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Backend {
    /// AVX-512F with AVX512-VNNI (x86_64, detected at run time): unsigned-by-signed bytes
    /// through `vpdpbusd`, four input channels per instruction.
    Avx512Vnni,
    /// AVX2 (x86_64, detected at run time): 16-bit pairs through `vpmaddwd`.
    Avx2,
    /// NEON with the Armv8.2 dot product (aarch64, detected at run time): `sdot`.
    NeonDot,
    /// NEON without it (every aarch64 CPU): 16-bit widening multiply-adds.
    Neon,
    /// Plain Rust; any CPU. For testing the chain logic everywhere and when forced.
    Portable,
}

impl Int8Backend {
    /// The fastest backend this CPU has, if any beats tract's int8 kernels here.
    pub fn detect() -> Option<Int8Backend> {
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return Some(Int8Backend::NeonDot);
            }
            return Some(Int8Backend::Neon);
        }
        #[cfg(target_arch = "x86_64")]
        {
            if Int8Backend::Avx512Vnni.available() {
                return Some(Int8Backend::Avx512Vnni);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Some(Int8Backend::Avx2);
            }
        }
        #[allow(unreachable_code)]
        None
    }

    /// Whether this CPU can run the backend at all.
    pub fn available(self) -> bool {
        match self {
            Int8Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Int8Backend::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Backend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "aarch64")]
            Int8Backend::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[cfg(target_arch = "aarch64")]
            Int8Backend::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Backend::Avx512Vnni => "direct-int8-vnni",
            Int8Backend::Avx2 => "direct-int8-avx2",
            Int8Backend::NeonDot => "direct-int8-sdot",
            Int8Backend::Neon => "direct-int8-neon",
            Int8Backend::Portable => "direct-int8-portable",
        }
    }

    /// Input channels per multiply step, and how values sit in memory.
    fn step(self) -> (usize, Storage) {
        match self {
            Int8Backend::Avx512Vnni => (4, Storage::U8),
            Int8Backend::Avx2 => (2, Storage::I16),
            Int8Backend::Neon => (1, Storage::I16),
            Int8Backend::NeonDot | Int8Backend::Portable => (4, Storage::I8),
        }
    }
}

/// The environment variable that picks the convolution kernels (see [`ConvKernels`]). For
/// comparing kernels, and for working around a suspected kernel bug without a rebuild.
pub const CONV_ENV: &str = "FERRITE_CONV";

/// Who runs the convolutions ferrite has kernels for (`FERRITE_CONV`: auto, tract, avx512, avx2,
/// neon, portable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConvKernels {
    /// ferrite's direct kernels where they beat tract's ([`Backend::detect`]: x86_64 with
    /// AVX-512F or AVX2, timed; aarch64, counted), tract's everywhere else.
    #[default]
    Auto,
    /// tract's own im2col + matrix-product kernels.
    Tract,
    /// ferrite's direct kernels on the given backend, even where not measured faster.
    Direct(Backend),
}

impl ConvKernels {
    /// From `FERRITE_CONV`; unset or empty is [`ConvKernels::Auto`].
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(CONV_ENV) {
            Ok(value) => value.parse().map_err(|e| format!("{CONV_ENV}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(ConvKernels::Auto),
            Err(e) => Err(format!("{CONV_ENV}: {e}")),
        }
    }

    /// The backend that will run the fp32 kernels, if any.
    pub fn resolve(self) -> Option<Backend> {
        match self {
            ConvKernels::Auto => Backend::detect(),
            ConvKernels::Tract => None,
            ConvKernels::Direct(backend) => Some(backend),
        }
    }

    /// The backend that will run the int8 chains, if any. A forced fp32 backend brings its
    /// instruction set's int8 one: `avx512` VNNI where the CPU has it (AVX2 otherwise, which
    /// every AVX-512 CPU has), `avx2` AVX2 even on a VNNI CPU (to compare the two), `neon`
    /// `sdot` where the CPU has it.
    pub fn resolve_int8(self) -> Option<Int8Backend> {
        match self {
            ConvKernels::Auto => Int8Backend::detect(),
            ConvKernels::Tract => None,
            ConvKernels::Direct(Backend::Portable) => Some(Int8Backend::Portable),
            ConvKernels::Direct(Backend::Avx2) => Some(Int8Backend::Avx2),
            ConvKernels::Direct(Backend::Avx512 | Backend::Neon) => Int8Backend::detect(),
        }
    }
}

impl std::str::FromStr for ConvKernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let backend = match s {
            "" | "auto" => return Ok(ConvKernels::Auto),
            "tract" => return Ok(ConvKernels::Tract),
            "avx512" => Backend::Avx512,
            "avx2" => Backend::Avx2,
            "neon" => Backend::Neon,
            "portable" => Backend::Portable,
            other => {
                return Err(format!(
                    "expected auto, tract, avx512, avx2, neon or portable, got {other:?}"
                ))
            }
        };
        if !backend.available() {
            return Err(format!("{s}: this CPU cannot run it"));
        }
        Ok(ConvKernels::Direct(backend))
    }
}
