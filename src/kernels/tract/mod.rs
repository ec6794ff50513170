//! The tract side of the kernels: the ops as tract operators (`ops.rs`), and the rewrites that put
//! them in place of the nodes they match in a decluttered graph (`match_chain.rs` for the
//! ensemble's convolution chains, `match_detector.rs` for BlazeFace's layers), with the graph
//! queries the two share (`graph.rs`).

mod graph;
mod match_chain;
mod match_detector;
mod ops;

pub use match_chain::replace_conv_chains;
pub use match_detector::replace_detector_ops;

use tract_onnx::prelude::*;

use super::{Backend, ConvKernels};

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
