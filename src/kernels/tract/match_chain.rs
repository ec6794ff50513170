//! The ensemble's rewrite: each chain of `Conv 3x3 (+ ReLU) (+ MaxPool 3x3/2)` nodes becomes one
//! [`ConvChain`].

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::graph::{const_f32, is_f32_rank4, is_relu, is_unit, pads_one, single_successor, splice};
use crate::kernels::conv_chain::{Conv3x3, Stage};
use crate::kernels::{Backend, ConvChain};

/// Replaces every chain of supported `Conv (+ ReLU) (+ MaxPool)` nodes of a decluttered f32 graph
/// by one [`ConvChain`] and returns how many convolutions it took over. Nodes that do not match
/// exactly are left to tract.
pub fn replace_conv_chains(model: &mut TypedModel, backend: Backend) -> TractResult<usize> {
    if !backend.available() {
        bail!("{} is not available on this CPU", backend.name());
    }
    let mut chains = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for id in model.eval_order()? {
        if taken.contains(&id) {
            continue;
        }
        let Some(mut conv) = match_conv(model, id)? else {
            continue;
        };
        let start = model.node(id).inputs[0];
        let fact = model.outlet_fact(start)?;
        let Some(shape) = fact.shape.as_concrete() else {
            continue;
        };
        let (channels, h, w) = (shape[1], shape[2], shape[3]);
        let mut stages = Vec::new();
        let mut end;
        loop {
            taken.insert(conv.node);
            end = conv.node;
            if let Some(relu) = single_successor(model, end).filter(|&s| is_relu(model, s)) {
                conv.op.relu = true;
                end = relu;
                taken.insert(relu);
            }
            let relu = conv.op.relu;
            stages.push(Stage::Conv(conv.op));
            let mut next = single_successor(model, end);
            if let Some(pool) = next.filter(|&s| relu && is_maxpool_3x3_s2_p1(model, s)) {
                stages.push(Stage::MaxPool);
                end = pool;
                taken.insert(pool);
                next = single_successor(model, end);
            }
            // The next convolution must read this chain's output as its data, not as a weight.
            let next =
                next.filter(|&n| model.node(n).inputs.first() == Some(&OutletId::new(end, 0)));
            match next.map(|n| match_conv(model, n)).transpose()?.flatten() {
                Some(found) => conv = found,
                None => break,
            }
        }
        chains.push((
            start,
            OutletId::new(end, 0),
            ConvChain::new(stages, backend, channels, h, w),
        ));
    }
    let mut replaced = 0;
    for (start, end, chain) in chains {
        replaced += chain.conv_count();
        splice(model, &[start], end, chain)?;
    }
    Ok(replaced)
}

struct MatchedConv {
    node: usize,
    op: Conv3x3,
}

pub(super) fn is_maxpool_3x3_s2_p1(model: &TypedModel, node: usize) -> bool {
    let n = model.node(node);
    let Some(pool) = n.op_as::<MaxPool>() else {
        return false;
    };
    let spec = &pool.pool_spec;
    pool.with_index_outputs.is_none()
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && spec
            .strides
            .as_ref()
            .is_some_and(|s| s.as_slice() == [2, 2])
        && is_unit(&spec.dilations)
        && pads_one(spec)
        && is_f32_rank4(model, n.inputs[0])
}

fn match_conv(model: &TypedModel, node: usize) -> TractResult<Option<MatchedConv>> {
    let n = model.node(node);
    let Some(conv) = n.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    let shape_ok = spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && is_unit(&spec.strides)
        && is_unit(&spec.dilations)
        && (pads_one(spec)
            || spec.padding == PaddingSpec::SameUpper
            || spec.padding == PaddingSpec::SameLower)
        && conv.group == 1
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 3
        && is_f32_rank4(model, n.inputs[0])
        && is_f32_rank4(model, OutletId::new(node, 0));
    if !shape_ok {
        return Ok(None);
    }
    let (ci, co) = (spec.input_channels, spec.output_channels);
    let (Some(kernel), Some(bias)) = (const_f32(model, n.inputs[1]), const_f32(model, n.inputs[2]))
    else {
        return Ok(None);
    };
    if kernel.len() != co * ci * 9 {
        return Ok(None);
    }
    let bias = match bias.len() {
        1 => vec![bias[0]; co],
        len if len == co => bias,
        _ => return Ok(None),
    };
    Ok(Some(MatchedConv {
        node,
        op: Conv3x3::new(&kernel, &bias, ci, co, false),
    }))
}
