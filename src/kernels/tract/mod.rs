//! The tract side of the kernels: the ops as tract operators (`ops.rs`), and the rewrites that put
//! them in place of the nodes they match in a decluttered graph (`match_chain.rs` for the
//! ensemble's convolution chains, `match_detector.rs` for BlazeFace's layers), with the graph
//! queries the two share (`graph.rs`).

mod graph;
mod match_chain;
mod match_detector;
mod match_qchain;
mod ops;

pub use match_chain::replace_conv_chains;
pub use match_detector::replace_detector_ops;
pub use match_qchain::replace_qconv_chains;

use tract_onnx::prelude::*;

use super::{Backend, ConvKernels, Int8Backend};

/// Applies a `replace_*` rewrite with the kernels asked for; returns the backend that now runs
/// part of the graph, or `None` when tract runs all of it.
pub fn rewrite(
    model: &mut TypedModel,
    kernels: ConvKernels,
    replace: fn(&mut TypedModel, Backend) -> TractResult<usize>,
) -> TractResult<Option<Backend>> {
    let Some(backend) = kernels.resolve() else {
        return Ok(None);
    };
    let replaced = replace(model, backend)?;
    log::debug!("{replaced} operations run by {}", backend.name());
    Ok((replaced > 0).then_some(backend))
}

/// [`rewrite`] for the int8 chains ([`replace_qconv_chains`]).
pub fn rewrite_int8(
    model: &mut TypedModel,
    kernels: ConvKernels,
) -> TractResult<Option<Int8Backend>> {
    let Some(backend) = kernels.resolve_int8() else {
        return Ok(None);
    };
    let replaced = replace_qconv_chains(model, backend)?;
    log::debug!("{replaced} int8 convolutions run by {}", backend.name());
    Ok((replaced > 0).then_some(backend))
}
