//! BlazeFace's rewrite: its depthwise 3x3 convolutions, 2x2 max-pools, 1x1 convolutions (with the
//! bias, residual and ReLU after them) and first layer become [`Depthwise3x3`], [`MaxPool2x2`],
//! [`Pointwise`] and [`ImageConv`].

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::graph::{const_f32, is_f32_rank4, is_relu, is_unit, single_successor, splice};
use crate::kernels::{Backend, Depthwise3x3, ImageConv, MaxPool2x2, Pointwise};

/// Replaces every supported depthwise 3x3 convolution, 1x1 convolution and 2x2 max-pool of a
/// decluttered f32 graph (BlazeFace's) by [`Depthwise3x3`], [`Pointwise`] and [`MaxPool2x2`];
/// returns how many operations they took over (a fused bias, residual or ReLU counts as one).
pub fn replace_detector_ops(model: &mut TypedModel, backend: Backend) -> TractResult<usize> {
    if !backend.available() {
        bail!("{} is not available on this CPU", backend.name());
    }
    // One at a time, rescanning after each: a fused 1x1 convolution reads outputs that an earlier
    // splice may have moved to a new node.
    let mut count = 0;
    while let Some((inputs, last, op, nodes)) = model
        .eval_order()?
        .into_iter()
        .find_map(|id| match_detector_op(model, id, backend))
    {
        splice(model, &inputs, OutletId::new(last, 0), op)?;
        count += nodes;
    }
    Ok(count)
}

/// The op replacing `id` (and any nodes fused into it): its inputs, the last node it replaces,
/// the op, and how many nodes it replaces.
type DetectorOp = (TVec<OutletId>, usize, Box<dyn TypedOp>, usize);

fn match_detector_op(model: &TypedModel, id: usize, backend: Backend) -> Option<DetectorOp> {
    let input = tvec![model.node(id).inputs.first().copied()?];
    if let Some(op) = match_depthwise(model, id, backend) {
        Some((input, id, Box::new(op), 1))
    } else if is_maxpool_2x2(model, id) {
        Some((input, id, Box::new(MaxPool2x2 { backend }), 1))
    } else {
        match_pointwise(model, id, backend)
            .or_else(|| match_image_conv(model, id, backend))
            .map(|m| (m.inputs, m.last, m.op, m.nodes))
    }
}

fn match_depthwise(model: &TypedModel, node: usize, backend: Backend) -> Option<Depthwise3x3> {
    let n = model.node(node);
    let conv = n.op_as::<Conv>()?;
    let spec = &conv.pool_spec;
    let channels = spec.input_channels;
    let stride = match spec.strides.as_ref().map(|s| s.as_slice()) {
        None | Some([1, 1]) => 1,
        Some([2, 2]) => 2,
        _ => return None,
    };
    let (before, after) = match &spec.padding {
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false)
            if b.len() == 2 && a.len() == 2 =>
        {
            ((b[0], b[1]), (a[0], a[1]))
        }
        _ => return None,
    };
    let shape_ok = spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && is_unit(&spec.dilations)
        && conv.group == channels
        && spec.output_channels == channels
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 3
        && is_f32_rank4(model, n.inputs[0])
        && is_f32_rank4(model, OutletId::new(node, 0))
        && before.0 <= 2
        && before.1 <= 2
        && after.0 <= 2
        && after.1 <= 2;
    if !shape_ok {
        return None;
    }
    let shape = model
        .outlet_fact(n.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let weights = const_f32(model, n.inputs[1])?;
    let bias = const_f32(model, n.inputs[2])?;
    let bias = match bias.len() {
        1 => vec![bias[0]; channels],
        len if len == channels => bias,
        _ => return None,
    };
    let op = Depthwise3x3 {
        channels,
        stride,
        hw: (shape[2], shape[3]),
        pad_before: before,
        pad_after: after,
        weights,
        bias,
        backend,
    };
    let fits = shape[1] == channels
        && op.weights.len() == channels * 9
        && op.padded_hw().0 >= 3
        && op.padded_hw().1 >= 3
        && model
            .outlet_fact(OutletId::new(node, 0))
            .ok()?
            .shape
            .as_concrete()
            == Some(&[shape[0], channels, op.output_hw().0, op.output_hw().1][..]);
    fits.then_some(op)
}

fn is_maxpool_2x2(model: &TypedModel, node: usize) -> bool {
    let n = model.node(node);
    let Some(pool) = n.op_as::<MaxPool>() else {
        return false;
    };
    let spec = &pool.pool_spec;
    let no_padding = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false) => {
            b.iter().chain(a.iter()).all(|&p| p == 0)
        }
        _ => false,
    };
    pool.with_index_outputs.is_none()
        && spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.as_slice() == [2, 2]
        && spec
            .strides
            .as_ref()
            .is_some_and(|s| s.as_slice() == [2, 2])
        && is_unit(&spec.dilations)
        && no_padding
        && is_f32_rank4(model, n.inputs[0])
        && model
            .outlet_fact(n.inputs[0])
            .ok()
            .and_then(|f| f.shape.as_concrete().map(|s| s[2] >= 2 && s[3] >= 2))
            .unwrap_or(false)
}

/// A match that fuses several graph nodes into one op.
struct FusedMatch {
    /// The op's inputs (for a 1x1 convolution, the data then the residual if fused).
    inputs: TVec<OutletId>,
    /// The last node the op replaces.
    last: usize,
    /// How many graph nodes it replaces.
    nodes: usize,
    op: Box<dyn TypedOp>,
}

/// A two-input `Add` node reading `node`'s output: the other operand.
fn add_operand(model: &TypedModel, add: usize, node: usize) -> Option<OutletId> {
    let n = model.node(add);
    let bin = n.op_as::<TypedBinOp>()?;
    if !bin.0.is::<Add>() || n.inputs.len() != 2 {
        return None;
    }
    let ours = OutletId::new(node, 0);
    match (n.inputs[0] == ours, n.inputs[1] == ours) {
        (true, false) => Some(n.inputs[1]),
        (false, true) => Some(n.inputs[0]),
        _ => None,
    }
}

/// `EinSum NIHW,OI->NOHW` (tract's decluttered 1x1 convolution) with a constant kernel, then
/// optionally `Add` of a constant `[1, O, 1, 1]` bias, `Add` of a residual (the same shape, or a
/// channel concatenation of a tensor and constant zeros), and ReLU, in that order.
fn match_pointwise(model: &TypedModel, node: usize, backend: Backend) -> Option<FusedMatch> {
    let n = model.node(node);
    let einsum = n.op_as::<EinSum>()?;
    if einsum.axes.to_string() != "NIHW,OI->NOHW"
        || einsum.operating_dt != f32::datum_type()
        || einsum.q_params.is_some()
        || n.inputs.len() != 2
        || !is_f32_rank4(model, n.inputs[0])
        || !is_f32_rank4(model, OutletId::new(node, 0))
    {
        return None;
    }
    let shape = model
        .outlet_fact(n.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let out_shape = model
        .outlet_fact(OutletId::new(node, 0))
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let (in_channels, out_channels, hw) = (shape[1], out_shape[1], (shape[2], shape[3]));
    let weights = const_f32(model, n.inputs[1])?;
    if weights.len() != in_channels * out_channels || (out_shape[2], out_shape[3]) != hw {
        return None;
    }
    let mut last = node;
    let mut nodes = 1;
    let mut bias = vec![0.0; out_channels];
    if let Some(add) = single_successor(model, last) {
        let operand = add_operand(model, add, last);
        let konst = operand.and_then(|o| {
            let fact = model.outlet_fact(o).ok()?;
            let per_channel = fact.shape.as_concrete()? == [1, out_channels, 1, 1];
            per_channel.then(|| const_f32(model, o)).flatten()
        });
        if let Some(values) = konst {
            bias = values;
            last = add;
            nodes += 1;
        }
    }
    let mut inputs = tvec![n.inputs[0]];
    let mut residual_channels = None;
    if let Some(add) = single_successor(model, last) {
        if let Some(residual) =
            add_operand(model, add, last).and_then(|o| residual_source(model, o, &out_shape))
        {
            residual_channels = Some(residual.1);
            inputs.push(residual.0);
            last = add;
            nodes += 1;
        }
    }
    let mut relu = false;
    if let Some(max) = single_successor(model, last).filter(|&s| is_relu(model, s)) {
        relu = true;
        last = max;
        nodes += 1;
    }
    let op = Pointwise::new(
        (in_channels, out_channels),
        hw,
        &weights,
        &bias,
        residual_channels,
        relu,
        backend,
    );
    Some(FusedMatch {
        inputs,
        last,
        nodes,
        op: Box::new(op),
    })
}

/// Where a residual operand of shape `out_shape` comes from, and how many of its channels are
/// not constant zeros: itself, or the first input of a channel `Concat` whose second is zeros.
fn residual_source(
    model: &TypedModel,
    operand: OutletId,
    out_shape: &[usize],
) -> Option<(OutletId, usize)> {
    let fact = model.outlet_fact(operand).ok()?;
    if fact.datum_type != f32::datum_type()
        || fact.konst.is_some()
        || fact.shape.as_concrete()? != out_shape
    {
        return None;
    }
    let node = model.node(operand.node);
    let concat = node
        .op_as::<TypedConcat>()
        .filter(|c| c.axis == 1 && node.inputs.len() == 2);
    let Some(_) = concat else {
        return Some((operand, out_shape[1]));
    };
    let (data, zeros) = (node.inputs[0], node.inputs[1]);
    let data_shape = model.outlet_fact(data).ok()?.shape.as_concrete()?.to_vec();
    let all_zero = const_f32(model, zeros).is_some_and(|z| z.iter().all(|&v| v == 0.0));
    let fits = all_zero
        && model.outlet_fact(data).ok()?.datum_type == f32::datum_type()
        && data_shape.len() == 4
        && data_shape[0] == out_shape[0]
        && data_shape[2..] == out_shape[2..];
    if fits {
        Some((data, data_shape[1]))
    } else {
        Some((operand, out_shape[1]))
    }
}

/// A dense (one group) convolution of 2 to 7 taps a side, stride 1 or 2, with a constant kernel
/// and bias, then optionally ReLU. When its input is a `MoveAxis` from NHWC, the op reads the
/// NHWC tensor itself and the transpose goes.
fn match_image_conv(model: &TypedModel, node: usize, backend: Backend) -> Option<FusedMatch> {
    let n = model.node(node);
    let conv = n.op_as::<Conv>()?;
    let spec = &conv.pool_spec;
    let kernel = match spec.kernel_shape.as_slice() {
        [a, b] if a == b && (2..=7).contains(a) => *a,
        _ => return None,
    };
    let stride = match spec.strides.as_ref().map(|s| s.as_slice()) {
        None | Some([1, 1]) => 1,
        Some([2, 2]) => 2,
        _ => return None,
    };
    let (before, after) = match &spec.padding {
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false)
            if b.len() == 2 && a.len() == 2 =>
        {
            ((b[0], b[1]), (a[0], a[1]))
        }
        _ => return None,
    };
    let fits = spec.data_format == DataFormat::NCHW
        && is_unit(&spec.dilations)
        && conv.group == 1
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 3
        && is_f32_rank4(model, n.inputs[0])
        && is_f32_rank4(model, OutletId::new(node, 0))
        && before.0.max(before.1).max(after.0).max(after.1) < kernel;
    if !fits {
        return None;
    }
    let nchw = model
        .outlet_fact(n.inputs[0])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let (in_channels, out_channels) = (spec.input_channels, spec.output_channels);
    let weights = const_f32(model, n.inputs[1])?;
    let bias = const_f32(model, n.inputs[2])?;
    let bias = match bias.len() {
        1 => vec![bias[0]; out_channels],
        len if len == out_channels => bias,
        _ => return None,
    };
    if nchw[1] != in_channels || weights.len() != out_channels * in_channels * kernel * kernel {
        return None;
    }
    // Reading the image before tract's transpose, when the transpose has no other reader.
    let producer = model.node(n.inputs[0].node);
    let transposed = producer.op_as::<AxisOp>() == Some(&AxisOp::Move(3, 1))
        && single_successor(model, producer.id) == Some(node)
        && producer.inputs.len() == 1
        && is_f32_rank4(model, producer.inputs[0]);
    let input = if transposed {
        producer.inputs[0]
    } else {
        n.inputs[0]
    };
    let mut op = ImageConv::new(
        (in_channels, out_channels),
        (kernel, stride),
        (nchw[2], nchw[3]),
        (before, after),
        transposed,
        &weights,
        &bias,
        backend,
    );
    let (ph, pw) = op.padded_hw();
    if ph < kernel || pw < kernel {
        return None;
    }
    let (oh, ow) = op.output_hw();
    let declared = model
        .outlet_fact(OutletId::new(node, 0))
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    if declared != [nchw[0], out_channels, oh, ow] {
        return None;
    }
    let mut last = node;
    let mut nodes = 1 + usize::from(transposed);
    if let Some(max) = single_successor(model, last).filter(|&s| is_relu(model, s)) {
        op.relu = true;
        last = max;
        nodes += 1;
    }
    Some(FusedMatch {
        inputs: tvec![input],
        last,
        nodes,
        op: Box::new(op),
    })
}
