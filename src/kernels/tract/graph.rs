//! What the rewrites share: queries on a typed graph, and the splice that wires an op in place of
//! the nodes it replaces.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::math::Max;

/// Wires `op` from `inputs` and makes everything that read `output` read the op instead; the
/// nodes it replaces are left unread, for tract's optimiser to prune.
pub(super) fn splice(
    model: &mut TypedModel,
    inputs: &[OutletId],
    output: OutletId,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let taps = inputs
        .iter()
        .map(|&input| patch.tap_model(model, input))
        .collect::<TractResult<TVec<_>>>()?;
    let name = format!("{}.ferrite", model.node(output.node).name);
    let out = patch.wire_node(name, op, &taps)?;
    patch.shunt_outside(model, output, out[0])?;
    patch.apply(model)
}

/// The one node reading `node`'s only output, if the output goes nowhere else.
pub(super) fn single_successor(model: &TypedModel, node: usize) -> Option<usize> {
    let outlet = OutletId::new(node, 0);
    if model.node(node).outputs.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    match model.outlet_successors(outlet) {
        [only] => Some(only.node),
        _ => None,
    }
}

pub(super) fn is_f32_rank4(model: &TypedModel, outlet: OutletId) -> bool {
    model
        .outlet_fact(outlet)
        .map(|f| {
            f.datum_type == f32::datum_type() && f.shape.as_concrete().is_some_and(|s| s.len() == 4)
        })
        .unwrap_or(false)
}

pub(super) fn const_f32(model: &TypedModel, outlet: OutletId) -> Option<Vec<f32>> {
    const_values(model, outlet)
}

/// A constant's values, if the outlet is a constant of type `T`.
pub(super) fn const_values<T: Datum + Copy>(
    model: &TypedModel,
    outlet: OutletId,
) -> Option<Vec<T>> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    let plain = konst.try_as_plain_ram().ok()?;
    plain.as_slice::<T>().ok().map(|s| s.to_vec())
}

/// A scalar constant (one value, any rank).
pub(super) fn const_scalar<T: Datum + Copy>(model: &TypedModel, outlet: OutletId) -> Option<T> {
    match const_values::<T>(model, outlet)?.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

/// `max(x, 0)` with a constant zero, as tract declutters ONNX's Relu.
pub(super) fn is_relu(model: &TypedModel, node: usize) -> bool {
    let n = model.node(node);
    let Some(bin) = n.op_as::<TypedBinOp>() else {
        return false;
    };
    if !bin.0.is::<Max>() || n.inputs.len() != 2 || !is_f32_rank4(model, OutletId::new(node, 0)) {
        return false;
    }
    let shape_kept = model.outlet_fact(n.inputs[0]).ok().map(|f| f.shape.clone())
        == model
            .outlet_fact(OutletId::new(node, 0))
            .ok()
            .map(|f| f.shape.clone());
    shape_kept && const_f32(model, n.inputs[1]).is_some_and(|v| v.len() == 1 && v[0] == 0.0)
}

pub(super) fn is_unit(v: &Option<TVec<usize>>) -> bool {
    v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1))
}

pub(super) fn pads_one(spec: &PoolSpec) -> bool {
    match &spec.padding {
        PaddingSpec::Explicit(before, after)
        | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
            before.iter().chain(after.iter()).all(|&p| p == 1)
        }
        _ => false,
    }
}
