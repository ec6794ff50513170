//! ferrite's kernels as tract operators. Each op is a [`Kernel`] (it checks its input shapes and
//! computes into a buffer it is given) and gets its `EvalOp` from `kernel_eval_op!`, so that in a
//! session it overwrites its last output ([`ReusedOutput`]) instead of allocating one per run.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::graph::ReusedTensor;
use crate::kernels::conv_chain::SCRATCH;
use crate::kernels::depthwise::with_phase_planes;
use crate::kernels::{
    ConvChain, Depthwise3x3, ImageConv, MaxPool2x2, Pointwise, QConvChain, QMatVec,
};

/// A ferrite op's arithmetic, apart from where its output lives, so that a planned run can
/// overwrite last turn's output ([`ReusedOutput`]) instead of allocating a tensor per node.
trait Kernel: Op + Sized {
    /// Checks the inputs against the shapes the op was built for; the output's shape.
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>>;
    /// Writes every element of `output`, shaped as [`Kernel::output_shape`] said.
    fn compute(&self, inputs: &[TValue], output: &mut [f32]) -> TractResult<()>;
}

fn single_input(inputs: &[TValue]) -> TractResult<&TValue> {
    match inputs {
        [only] => Ok(only),
        _ => bail!("expected one input, got {}", inputs.len()),
    }
}

/// Out of a plan (constant folding, tests): a fresh output tensor.
fn eval_fresh<K: Kernel>(op: &K, inputs: &[TValue]) -> TractResult<TVec<TValue>> {
    let mut output = Tensor::zero::<f32>(&op.output_shape(inputs)?)?;
    {
        let mut plain = output.try_as_plain_ram_mut()?;
        op.compute(inputs, plain.as_slice_mut::<f32>()?)?;
    }
    Ok(tvec!(output.into_tvalue()))
}

/// A ferrite op's state in one session (one `SimpleState`): its last output, written in place on
/// the next turn once every reader has dropped it (tract flushes a value after its last consumer
/// ran), so a warm session allocates none of these activations.
#[derive(Debug)]
struct ReusedOutput<K> {
    last: ReusedTensor,
    kernel: std::marker::PhantomData<fn() -> K>,
}

impl<K> Default for ReusedOutput<K> {
    fn default() -> Self {
        ReusedOutput {
            last: ReusedTensor::default(),
            kernel: std::marker::PhantomData,
        }
    }
}

/// A cloned state is another session: it starts without a buffer rather than share one.
impl<K> Clone for ReusedOutput<K> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<K: Kernel> OpState for ReusedOutput<K> {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let Some(op) = op.downcast_ref::<K>() else {
            bail!(
                "state of {} given a {}",
                std::any::type_name::<K>(),
                op.name()
            );
        };
        let shape = op.output_shape(&inputs)?;
        let output = self
            .last
            .refill(&shape, |values| op.compute(&inputs, values))?;
        Ok(tvec!(output))
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(())
    }
}

/// `EvalOp` for a [`Kernel`]: out of a plan a fresh output, in a session a reused one.
macro_rules! kernel_eval_op {
    ($op:ty) => {
        impl EvalOp for $op {
            op_out_of_plan!();

            fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
                eval_fresh(self, &inputs)
            }

            fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
                Ok(Some(Box::new(ReusedOutput::<Self>::default())))
            }
        }
    };
}

/// A chain's input and output, `[N, C, H, W]` to `[N, C', H', W']`: what [`ConvChain`] and
/// [`QConvChain`] share at the tract seam.
struct ChainShape {
    input: (usize, usize, usize),
    output: (usize, usize, usize),
}

impl ChainShape {
    /// Checks the one input against the shape the chain was built for; the output's shape.
    fn output_shape(&self, what: &str, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        let (c, h, w) = self.input;
        if shape.len() != 4 || shape[1..] != [c, h, w] {
            bail!("{what} built for [N, {c}, {h}, {w}], got {shape:?}");
        }
        let (c, h, w) = self.output;
        Ok(tvec![shape[0], c, h, w])
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TVec<TypedFact> {
        let (c, h, w) = self.output;
        let batch = inputs[0].shape[0].clone();
        tvec!(f32::fact(&[batch, c.into(), h.into(), w.into()]))
    }

    /// Values per image of the input and of the output.
    fn image_lens(&self) -> (usize, usize) {
        let ((c, h, w), (co, oh, ow)) = (self.input, self.output);
        (c * h * w, co * oh * ow)
    }
}

impl ConvChain {
    fn shape(&self) -> ChainShape {
        let first = self.layouts[0];
        let (h, w) = self.output_hw();
        ChainShape {
            input: (self.input_channels, first.h, first.w),
            output: (self.output_channels, h, w),
        }
    }
}

impl QConvChain {
    fn shape(&self) -> ChainShape {
        let first = self.layouts[0];
        let (h, w) = self.output_hw();
        ChainShape {
            input: (self.input_channels, first.h, first.w),
            output: (self.output_channels, h, w),
        }
    }
}

impl Op for ConvChain {
    fn name(&self) -> StaticName {
        "FerriteConvChain".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} convolutions, {} stages, {}",
            self.conv_count(),
            self.stages.len(),
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(ConvChain);

impl Kernel for ConvChain {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        self.shape().output_shape("conv chain", inputs)
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let (in_image, out_image) = self.shape().image_lens();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for (input, out) in input
                .chunks_exact(in_image)
                .zip(out.chunks_exact_mut(out_image))
            {
                self.run_image(input, out, &mut scratch);
            }
        });
        Ok(())
    }
}

impl TypedOp for ConvChain {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(self.shape().output_facts(inputs))
    }

    as_op!();
}

impl Op for QConvChain {
    fn name(&self) -> StaticName {
        "FerriteQConvChain".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} int8 convolutions, {} stages, {}",
            self.conv_count(),
            self.stages.len(),
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(QConvChain);

impl Kernel for QConvChain {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        self.shape().output_shape("int8 conv chain", inputs)
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<i8>()?;
        let (in_image, out_image) = self.shape().image_lens();
        for (input, out) in input
            .chunks_exact(in_image)
            .zip(out.chunks_exact_mut(out_image))
        {
            self.run_image(input, out);
        }
        Ok(())
    }
}

impl TypedOp for QConvChain {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(self.shape().output_facts(inputs))
    }

    as_op!();
}

impl Op for QMatVec {
    fn name(&self) -> StaticName {
        "FerriteQMatVec".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("int8 {}x{}", self.k, self.n)])
    }

    op_as_typed_op!();
}

thread_local! {
    static QMATVEC_ACC: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl EvalOp for QMatVec {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = single_input(&inputs)?;
        if input.len() != self.k {
            bail!(
                "int8 matrix product built for one row of {}, got {:?}",
                self.k,
                input.shape()
            );
        }
        let plain = input.try_as_plain_ram()?;
        let mut output = Tensor::zero::<i8>(&self.out_shape)?;
        {
            let mut out = output.try_as_plain_ram_mut()?;
            QMATVEC_ACC.with(|acc| -> TractResult<()> {
                let y = out.as_slice_mut::<i8>()?;
                self.run_row(plain.as_slice::<i8>()?, y, &mut acc.borrow_mut());
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for QMatVec {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i8::fact(&self.out_shape)))
    }

    as_op!();
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "FerriteDepthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "stride {}, {}",
            self.stride,
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(Depthwise3x3);

impl Kernel for Depthwise3x3 {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        if shape.len() != 4 || shape[1] != self.channels || (shape[2], shape[3]) != self.hw {
            bail!(
                "depthwise conv built for [N, {}, {:?}], got {shape:?}",
                self.channels,
                self.hw
            );
        }
        let (oh, ow) = self.output_hw();
        Ok(tvec![shape[0], self.channels, oh, ow])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let (oh, ow) = self.output_hw();
        let in_image = self.channels * self.hw.0 * self.hw.1;
        let out_image = self.channels * oh * ow;
        with_phase_planes(input, in_image, out, out_image, |input, out, planes| {
            self.run_image(input, out, planes)
        });
        Ok(())
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.output_hw();
        let batch = inputs[0].shape[0].clone();
        Ok(tvec!(f32::fact(&[
            batch,
            self.channels.into(),
            oh.into(),
            ow.into()
        ])))
    }

    as_op!();
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "FerriteMaxPool2x2".into()
    }

    op_as_typed_op!();
}

kernel_eval_op!(MaxPool2x2);

impl Kernel for MaxPool2x2 {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        if shape.len() != 4 || shape[2] < 2 || shape[3] < 2 {
            bail!("2x2 max-pool needs [N, C, H >= 2, W >= 2], got {shape:?}");
        }
        Ok(tvec![shape[0], shape[1], shape[2] / 2, shape[3] / 2])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let input = single_input(inputs)?;
        let (h, w) = (input.shape()[2], input.shape()[3]);
        let plain = input.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        for (plane, out) in input
            .chunks_exact(h * w)
            .zip(out.chunks_exact_mut((h / 2) * (w / 2)))
        {
            self.run_plane(plane, w, out);
        }
        Ok(())
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let half = |d: &TDim| -> TractResult<TDim> { Ok((d.to_usize()? / 2).into()) };
        Ok(tvec!(f32::fact(&[
            shape[0].clone(),
            shape[1].clone(),
            half(&shape[2])?,
            half(&shape[3])?
        ])))
    }

    as_op!();
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "FerritePointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, residual {:?}, relu {}, {}",
            self.in_channels,
            self.out_channels,
            self.residual_channels,
            self.relu,
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(Pointwise);

impl Kernel for Pointwise {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let expected_inputs = 1 + usize::from(self.residual_channels.is_some());
        if inputs.len() != expected_inputs {
            bail!(
                "1x1 conv expects {expected_inputs} inputs, got {}",
                inputs.len()
            );
        }
        let (h, w) = self.hw;
        let shape = inputs[0].shape();
        if shape.len() != 4 || shape[1] != self.in_channels || (shape[2], shape[3]) != self.hw {
            bail!(
                "1x1 conv built for [N, {}, {h}, {w}], got {shape:?}",
                self.in_channels
            );
        }
        let batch = shape[0];
        if let (Some(res), Some(channels)) = (inputs.get(1), self.residual_channels) {
            if res.shape() != [batch, channels, h, w] {
                bail!(
                    "1x1 conv residual built for [{batch}, {channels}, {h}, {w}], got {:?}",
                    res.shape()
                );
            }
        }
        Ok(tvec![batch, self.out_channels, h, w])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = inputs[0].try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let residual_plain = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
        let residual = residual_plain
            .as_ref()
            .map(|r| r.as_slice::<f32>())
            .transpose()?;
        let n = self.pixels();
        let (in_image, out_image) = (self.in_channels * n, self.out_channels * n);
        let res_image = self.residual_channels.unwrap_or(0) * n;
        for (b, out) in out.chunks_exact_mut(out_image).enumerate() {
            self.run_image(
                &input[b * in_image..][..in_image],
                residual.map(|r| &r[b * res_image..][..res_image]),
                out,
            );
        }
        Ok(())
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&[
            inputs[0].shape[0].clone(),
            self.out_channels.into(),
            self.hw.0.into(),
            self.hw.1.into()
        ])))
    }

    as_op!();
}

impl Op for ImageConv {
    fn name(&self) -> StaticName {
        "FerriteImageConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{} stride {}, {} -> {} channels, {}, relu {}, {}",
            self.kernel,
            self.kernel,
            self.stride,
            self.in_channels,
            self.out_channels,
            if self.nhwc { "NHWC" } else { "NCHW" },
            self.relu,
            self.backend.name()
        )])
    }

    op_as_typed_op!();
}

kernel_eval_op!(ImageConv);

impl Kernel for ImageConv {
    fn output_shape(&self, inputs: &[TValue]) -> TractResult<TVec<usize>> {
        let shape = single_input(inputs)?.shape();
        let batch = shape.first().copied().unwrap_or(0);
        if shape != self.input_shape(batch) {
            bail!(
                "image conv built for {:?}, got {shape:?}",
                self.input_shape(batch)
            );
        }
        let (oh, ow) = self.output_hw();
        Ok(tvec![batch, self.out_channels, oh, ow])
    }

    fn compute(&self, inputs: &[TValue], out: &mut [f32]) -> TractResult<()> {
        let plain = single_input(inputs)?.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let (oh, ow) = self.output_hw();
        let in_image = self.in_channels * self.hw.0 * self.hw.1;
        let out_image = self.out_channels * oh * ow;
        with_phase_planes(input, in_image, out, out_image, |input, out, planes| {
            self.run_image(input, out, planes)
        });
        Ok(())
    }
}

impl TypedOp for ImageConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.output_hw();
        Ok(tvec!(f32::fact(&[
            inputs[0].shape[0].clone(),
            self.out_channels.into(),
            oh.into(),
            ow.into()
        ])))
    }

    as_op!();
}
