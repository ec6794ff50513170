//! The int8 ensemble's rewrite: each chain of `QLinearConv 3x3 -> DequantizeLinear -> Relu
//! (-> MaxPool 3x3/2) -> QuantizeLinear -> QLinearConv ...` nodes, as tract declutters an ONNX
//! QOperator graph, becomes one [`QConvChain`] that ends at the last ReLU (or pool) in f32.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8};

use super::graph::{
    const_scalar, const_values, is_relu, is_unit, pads_one, single_successor, splice,
};
use super::match_chain::is_maxpool_3x3_s2_p1;
use crate::kernels::qconv_chain::{QConv3x3, QConvParams, QStage};
use crate::kernels::qmatvec::QMatVecParams;
use crate::kernels::vector::int8::Requant;
use crate::kernels::{Int8Backend, QConvChain, QMatVec};

/// Replaces every chain of supported quantized convolutions of a decluttered graph by one
/// [`QConvChain`] and returns how many convolutions it took over. Nodes that do not match exactly
/// are left to tract.
pub fn replace_qconv_chains(model: &mut TypedModel, backend: Int8Backend) -> TractResult<usize> {
    if !backend.available() {
        bail!("{} is not available on this CPU", backend.name());
    }
    let mut chains = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for id in model.eval_order()? {
        if taken.contains(&id) {
            continue;
        }
        let Some(mut conv) = match_qconv(model, id)? else {
            continue;
        };
        let start = model.node(id).inputs[0];
        let Some(shape) = model
            .outlet_fact(start)?
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
        else {
            continue;
        };
        let (channels, h, w) = (shape[1], shape[2], shape[3]);
        let input_zero = conv.x_zero;
        let mut stages = Vec::new();
        let mut nodes = Vec::new();
        let end = loop {
            // Conv -> DequantizeLinear (its own output scale) -> Relu, or the chain ends before
            // this convolution.
            let Some(tail) = relu_tail(model, &conv) else {
                break None;
            };
            nodes.push(conv.node);
            nodes.extend(&tail.nodes);
            let next = tail
                .quantize
                .and_then(|q| single_successor(model, q).map(|n| (q, n)))
                .filter(|&(q, n)| model.node(n).inputs.first() == Some(&OutletId::new(q, 0)));
            let found = match next {
                // Only a convolution that can end a chain itself continues this one.
                Some((q, n)) => match_qconv(model, n)?
                    .filter(|c| quantize_matches(model, q, c) && relu_tail(model, c).is_some()),
                None => None,
            };
            let requant = Requant {
                y_zero: conv.y_zero,
                y_scale: conv.y_scale,
                next: found.as_ref().map(|c| (c.x_scale, c.x_zero)),
            };
            stages.push(QStage::Conv(QConv3x3::new(&conv.params(requant), backend)));
            if tail.pooled {
                stages.push(QStage::MaxPool);
            }
            match (found, next) {
                (Some(found), Some((q, _))) => {
                    nodes.push(q);
                    conv = found;
                }
                _ => break Some(tail.output),
            }
        };
        let Some(end) = end else {
            continue;
        };
        taken.extend(nodes);
        chains.push((
            start,
            OutletId::new(end, 0),
            QConvChain::new(stages, backend, channels, input_zero, h, w),
        ));
    }
    let mut replaced = 0;
    for (start, end, chain) in chains {
        replaced += chain.conv_count();
        splice(model, &[start], end, chain)?;
    }
    Ok(replaced + replace_qmatvecs(model)?)
}

/// Replaces every quantized one-row matrix product by a constant (the dense heads) by a
/// [`QMatVec`]; returns how many.
fn replace_qmatvecs(model: &mut TypedModel) -> TractResult<usize> {
    let mut found = Vec::new();
    for id in model.eval_order()? {
        if let Some(op) = match_qmatvec(model, id)? {
            found.push((model.node(id).inputs[0], OutletId::new(id, 0), op));
        }
    }
    let replaced = found.len();
    for (input, output, op) in found {
        splice(model, &[input], output, op)?;
    }
    Ok(replaced)
}

/// One row of `k` int8 values (any axes of size one around it) times constant int8 weights
/// `[k, n]`, to an output whose axes are all of size one but the last (`n`): the ensemble's dense
/// layers as tract declutters them with a batch of one (`mkba,kn->n`, `k,kn->man`).
fn match_qmatvec(model: &TypedModel, node: usize) -> TractResult<Option<QMatVec>> {
    let n = model.node(node);
    let Some(einsum) = n.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params != Some(i8::datum_type()) || n.inputs.len() != 9 {
        return Ok(None);
    }
    // The axes as tract prints them, one letter per axis: "mkba,kn,,,,,,,->n".
    let axes = einsum.axes.to_string();
    let Some((inputs, output)) = axes.split_once("->") else {
        return Ok(None);
    };
    let mut terms = inputs.split(',');
    let (Some(x_axes), Some(w_axes)) = (terms.next(), terms.next()) else {
        return Ok(None);
    };
    let x_fact = model.outlet_fact(n.inputs[0])?;
    let out_fact = model.outlet_fact(OutletId::new(node, 0))?;
    let i = &n.inputs;
    let w_fact = model.outlet_fact(i[1])?;
    let (Some(x_shape), Some(out_shape), Some(w_shape)) = (
        x_fact.shape.as_concrete(),
        out_fact.shape.as_concrete(),
        w_fact.shape.as_concrete(),
    ) else {
        return Ok(None);
    };
    let (Some(weights), [k, cols]) = (const_values::<i8>(model, i[1]), w_shape) else {
        return Ok(None);
    };
    let (k, cols) = (*k, *cols);
    let w_letters: Vec<char> = w_axes.chars().collect();
    let x_ok = w_letters.len() == 2
        && x_axes.chars().count() == x_shape.len()
        && x_axes
            .chars()
            .zip(x_shape)
            .all(|(axis, &d)| if axis == w_letters[0] { d == k } else { d == 1 })
        && x_axes.contains(w_letters[0])
        && x_fact.datum_type == i8::datum_type();
    let out_ok = output.chars().count() == out_shape.len()
        && output.ends_with(w_letters[1])
        && out_shape.last() == Some(&cols)
        && out_shape.iter().rev().skip(1).all(|&d| d == 1)
        && out_fact.datum_type == i8::datum_type();
    if !x_ok || !out_ok {
        return Ok(None);
    }
    let bias = const_values::<i32>(model, i[2]).filter(|b| b.len() == 1 || b.len() == cols);
    let (
        Some(bias),
        Some(x_zero),
        Some(x_scale),
        Some(w_zero),
        Some(w_scale),
        Some(y_zero),
        Some(y_scale),
    ) = (
        bias,
        zero_point(model, i[3]),
        const_scalar::<f32>(model, i[4]),
        zero_point(model, i[5]),
        const_scalar::<f32>(model, i[6]),
        zero_point(model, i[7]),
        const_scalar::<f32>(model, i[8]),
    )
    else {
        return Ok(None);
    };
    Ok(Some(QMatVec::new(QMatVecParams {
        weights: &weights,
        k,
        n: cols,
        bias: &bias,
        x_zero,
        x_scale,
        w_zero,
        w_scale,
        y_zero,
        y_scale,
        out_shape: out_shape.to_vec(),
    })))
}

struct MatchedQConv {
    node: usize,
    in_channels: usize,
    out_channels: usize,
    kernel: Vec<i8>,
    bias: Vec<i32>,
    x_zero: i32,
    x_scale: f32,
    w_scale: Vec<f32>,
    y_zero: i32,
    y_scale: f32,
}

impl MatchedQConv {
    fn params(&self, requant: Requant) -> QConvParams<'_> {
        QConvParams {
            kernel: &self.kernel,
            bias: &self.bias,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            x_scale: self.x_scale,
            x_zero: self.x_zero,
            w_scale: &self.w_scale,
            requant,
        }
    }
}

/// What follows a quantized convolution: DequantizeLinear, Relu, maybe MaxPool, maybe a
/// QuantizeLinear after them.
struct ReluTail {
    nodes: Vec<usize>,
    pooled: bool,
    /// The last f32 node (Relu or MaxPool).
    output: usize,
    quantize: Option<usize>,
}

fn relu_tail(model: &TypedModel, conv: &MatchedQConv) -> Option<ReluTail> {
    let dq = single_successor(model, conv.node)?;
    let dequantize = model.node(dq).op_as::<DequantizeLinearF32>()?;
    if dequantize.scale != conv.y_scale || dequantize.zero_point != conv.y_zero {
        return None;
    }
    let relu = single_successor(model, dq).filter(|&r| is_relu(model, r))?;
    let mut nodes = vec![dq, relu];
    let mut output = relu;
    let pool = single_successor(model, relu).filter(|&p| is_maxpool_3x3_s2_p1(model, p));
    if let Some(pool) = pool {
        nodes.push(pool);
        output = pool;
    }
    let quantize = single_successor(model, output).filter(|&q| {
        model
            .node(q)
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.downcast_ref::<QuantizeLinearI8>().is_some())
    });
    Some(ReluTail {
        nodes,
        pooled: pool.is_some(),
        output,
        quantize,
    })
}

/// Whether QuantizeLinear node `q` produces `conv`'s input in `conv`'s input scale and zero
/// point. tract keeps the inverse scale; the chain divides by the convolution's own `x_scale`, as
/// onnxruntime's QuantizeLinear does.
fn quantize_matches(model: &TypedModel, q: usize, conv: &MatchedQConv) -> bool {
    let Some(op) = model.node(q).op_as::<ElementWiseOp>() else {
        return false;
    };
    let Some(quantize) = op.0.downcast_ref::<QuantizeLinearI8>() else {
        return false;
    };
    quantize.zero_point as i32 == conv.x_zero
        && ((quantize.scale * conv.x_scale) - 1.0).abs() < 1e-5
        && op.1.is_none_or(|dt| dt == i8::datum_type())
}

fn is_i8_rank4(model: &TypedModel, outlet: OutletId) -> bool {
    model
        .outlet_fact(outlet)
        .map(|f| {
            f.datum_type == i8::datum_type() && f.shape.as_concrete().is_some_and(|s| s.len() == 4)
        })
        .unwrap_or(false)
}

/// A zero point: tract casts ONNX's int8 zero points to int32 constants.
fn zero_point(model: &TypedModel, outlet: OutletId) -> Option<i32> {
    const_scalar::<i32>(model, outlet)
        .or_else(|| const_scalar::<i8>(model, outlet).map(i32::from))
        .filter(|z| (i8::MIN as i32..=i8::MAX as i32).contains(z))
}

fn match_qconv(model: &TypedModel, node: usize) -> TractResult<Option<MatchedQConv>> {
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
        && conv.q_params == Some(i8::datum_type())
        && conv.kernel_fmt == KernelFormat::OIHW
        && n.inputs.len() == 9
        && is_i8_rank4(model, n.inputs[0])
        && is_i8_rank4(model, OutletId::new(node, 0));
    if !shape_ok {
        return Ok(None);
    }
    let (ci, co) = (spec.input_channels, spec.output_channels);
    // tract's quantized Conv inputs: x, kernel, bias, x0, x_scale, k0, k_scale, y0, y_scale.
    let i = &n.inputs;
    let (Some(kernel), Some(bias)) = (
        const_values::<i8>(model, i[1]),
        const_values::<i32>(model, i[2]),
    ) else {
        return Ok(None);
    };
    let (Some(x_zero), Some(x_scale), Some(k_zero), Some(w_scale), Some(y_zero), Some(y_scale)) = (
        zero_point(model, i[3]),
        const_scalar::<f32>(model, i[4]),
        zero_point(model, i[5]),
        const_values::<f32>(model, i[6]),
        zero_point(model, i[7]),
        const_scalar::<f32>(model, i[8]),
    ) else {
        return Ok(None);
    };
    let bias = match bias.len() {
        1 => vec![bias[0]; co],
        len if len == co => bias,
        _ => return Ok(None),
    };
    let scales_ok = w_scale.len() == 1 || w_scale.len() == co;
    if kernel.len() != co * ci * 9 || k_zero != 0 || !scales_ok {
        return Ok(None);
    }
    Ok(Some(MatchedQConv {
        node,
        in_channels: ci,
        out_channels: co,
        kernel,
        bias,
        x_zero,
        x_scale,
        w_scale,
        y_zero,
        y_scale,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the ensemble loads it: one 48x48 gray image.
    fn decluttered(model: &str) -> TypedModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(model);
        tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 1, 48, 48]).into()))
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .unwrap()
    }

    fn count(model: &TypedModel, name: &str) -> usize {
        model.nodes().iter().filter(|n| n.op.name() == name).count()
    }

    #[test]
    fn the_shipped_int8_ensemble_loses_every_quantized_conv_and_matmul() {
        let mut model = decluttered("models/fer2013-48-int8/model.onnx");
        let replaced = replace_qconv_chains(&mut model, Int8Backend::Portable).unwrap();
        let model = model.into_decluttered().unwrap();
        // Five parts, each a chain of eight convolutions and five dense layers.
        assert_eq!(count(&model, "FerriteQConvChain"), 5);
        assert_eq!(count(&model, "FerriteQMatVec"), 25);
        assert_eq!(replaced, 5 * 8 + 25);
        let left = model
            .nodes()
            .iter()
            .filter(|n| n.op_is::<Conv>() || n.op_is::<EinSum>())
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_float_graph_is_left_alone() {
        let mut model = decluttered("models/fer2013-48-fp32/model.onnx");
        let before = model.nodes().len();
        assert_eq!(
            replace_qconv_chains(&mut model, Int8Backend::Portable).unwrap(),
            0
        );
        assert_eq!(model.nodes().len(), before);
    }
}
