//! What every tract graph ferrite runs shares (the detector, the ensemble and the direct kernels'
//! ops): the declared-input check a graph passes before tract optimises it (a fully convolutional
//! model would otherwise run at the wrong size and answer nonsense), and the f32 tensor a warm
//! session refills in place instead of allocating per run.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::bail;
use tract_onnx::tract_hir::infer::Factoid;

/// Requires exactly one input whose declared shape agrees with `expected` wherever both are known:
/// `None` in `expected` accepts any size (the batch), and a symbolic dimension in the graph accepts
/// any expected size. The error shows both shapes as `AxBxCxD` with `?`/`N` for the open ones.
pub(crate) fn check_declared_input(
    model: &InferenceModel,
    expected: &[Option<usize>],
) -> Result<(), String> {
    let inputs = model.input_outlets().map_err(|e| format!("{e:#}"))?;
    if inputs.len() != 1 {
        return Err(format!(
            "expected one input, the graph has {}",
            inputs.len()
        ));
    }
    let fact = model.input_fact(0).map_err(|e| format!("{e:#}"))?;
    let declared: Vec<Option<i64>> = fact
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.to_i64().ok()))
        .collect();
    let fits = declared.len() == expected.len()
        && declared
            .iter()
            .zip(expected)
            .all(|(got, want)| match (got, want) {
                (Some(got), Some(want)) => *got == *want as i64,
                _ => true,
            });
    if fits {
        return Ok(());
    }
    let shown = |dims: Vec<String>| dims.join("x");
    Err(format!(
        "the graph's input is {}, expected {}",
        shown(
            declared
                .iter()
                .map(|d| d.map_or("?".into(), |v| v.to_string()))
                .collect()
        ),
        shown(
            expected
                .iter()
                .map(|d| d.map_or("N".into(), |v| v.to_string()))
                .collect()
        ),
    ))
}

/// An f32 tensor handed to tract by reference count and refilled in place on the next run. tract
/// drops a run's inputs, and every consumer of an op's output, by the end of the run, so a warm
/// session finds the tensor unshared and overwrites it: no allocation per frame. A tensor someone
/// still holds (a caller keeping a graph output) or of another shape is replaced, never overwritten.
#[derive(Debug, Default)]
pub(crate) struct ReusedTensor(Option<Arc<Tensor>>);

impl ReusedTensor {
    /// The tensor of `shape`, its values written by `fill`, as the value a run takes.
    pub(crate) fn refill(
        &mut self,
        shape: &[usize],
        fill: impl FnOnce(&mut [f32]) -> TractResult<()>,
    ) -> TractResult<TValue> {
        let reusable = self
            .0
            .as_mut()
            .and_then(Arc::get_mut)
            .is_some_and(|t| t.shape() == shape);
        let mut tensor = match self.0.take() {
            Some(held) if reusable => held,
            _ => Arc::new(Tensor::zero::<f32>(shape)?),
        };
        let Some(values) = Arc::get_mut(&mut tensor) else {
            bail!("a tensor just made is shared");
        };
        fill(values.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
        self.0 = Some(Arc::clone(&tensor));
        Ok(TValue::from_const(tensor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with_input(shape: &[usize]) -> InferenceModel {
        let mut model = InferenceModel::default();
        let input = model
            .add_source("x", f32::fact(shape).into())
            .expect("a source node");
        model.select_output_outlets(&[input]).expect("outputs");
        model
    }

    #[test]
    fn accepts_matching_and_open_dimensions() {
        let model = model_with_input(&[1, 1, 48, 48]);
        assert_eq!(
            check_declared_input(&model, &[None, Some(1), Some(48), Some(48)]),
            Ok(())
        );
        assert_eq!(
            check_declared_input(&model, &[Some(1), Some(1), Some(48), Some(48)]),
            Ok(())
        );
    }

    #[test]
    fn refuses_another_size_or_rank_and_names_both_shapes() {
        let model = model_with_input(&[1, 1, 64, 64]);
        let err = check_declared_input(&model, &[None, Some(1), Some(48), Some(48)]).unwrap_err();
        assert_eq!(err, "the graph's input is 1x1x64x64, expected Nx1x48x48");
        let err = check_declared_input(&model, &[Some(1), Some(64), Some(64)]).unwrap_err();
        assert!(err.contains("expected 1x64x64"), "{err}");
    }

    #[test]
    fn refuses_two_inputs() {
        let mut model = model_with_input(&[1, 3]);
        model
            .add_source("y", f32::fact([1, 3]).into())
            .expect("a second source");
        let err = check_declared_input(&model, &[Some(1), Some(3)]).unwrap_err();
        assert_eq!(err, "expected one input, the graph has 2");
    }

    fn fill_with(x: f32) -> impl FnOnce(&mut [f32]) -> TractResult<()> {
        move |values| {
            values.fill(x);
            Ok(())
        }
    }

    fn values(value: &TValue) -> Vec<f32> {
        let plain = value.try_as_plain_ram().expect("plain memory");
        plain.as_slice::<f32>().expect("f32 values").to_vec()
    }

    fn address(value: &TValue) -> *const f32 {
        let plain = value.try_as_plain_ram().expect("plain memory");
        plain.as_slice::<f32>().expect("f32 values").as_ptr()
    }

    #[test]
    fn reused_tensor_is_refilled_in_place_once_released() {
        let mut reused = ReusedTensor::default();
        let first = reused.refill(&[1, 4], fill_with(1.0)).expect("first");
        let first_at = address(&first);
        drop(first);
        let second = reused.refill(&[1, 4], fill_with(2.0)).expect("second");
        assert_eq!(
            address(&second),
            first_at,
            "an unshared tensor of the same shape is reused"
        );
        assert_eq!(values(&second), &[2.0; 4]);
    }

    #[test]
    fn reused_tensor_never_overwrites_a_held_value() {
        let mut reused = ReusedTensor::default();
        let kept = reused.refill(&[2], fill_with(1.0)).expect("first");
        let next = reused.refill(&[2], fill_with(2.0)).expect("second");
        assert_eq!(values(&kept), &[1.0; 2], "the held value is intact");
        assert_eq!(values(&next), &[2.0; 2]);
        drop(next);
        let resized = reused.refill(&[3], fill_with(3.0)).expect("third");
        assert_eq!(resized.shape(), &[3]);
    }
}
