//! Where a tract graph's time goes: every node timed, summed per operator kind
//! (`ferrite bench --graphs-only --profile`).

use std::collections::HashMap;
use std::time::Instant;

use tract_onnx::prelude::*;

/// One operator kind's share of a graph run ([`crate::ensemble::Session::profile_prepared`], [`crate::detect::Detector::profile`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// tract's operator name after optimisation, e.g. `OptMatMul` (convolutions and matrix
    /// products), `OptMaxPool`, `Pad`.
    pub op: String,
    /// Median over the runs of this kind's summed node times in one run.
    pub median_ms: f64,
}

/// Runs `input` through the plan `runs` times (at least once), timing every node, and returns each
/// operator kind's median time per run, slowest first.
pub(crate) fn per_operator(
    state: &mut TypedSimpleState,
    input: Tensor,
    runs: usize,
) -> TractResult<Vec<OpTime>> {
    let mut per_run: Vec<HashMap<String, f64>> = Vec::new();
    for _ in 0..runs.max(1) {
        let mut times = HashMap::new();
        state.run_plan_with_eval(tvec!(input.clone().into()), |ctx, state, node, inputs| {
            let start = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
            *times.entry(node.op().name().to_string()).or_insert(0.0) +=
                start.elapsed().as_secs_f64() * 1e3;
            out
        })?;
        per_run.push(times);
    }
    let mut ops: Vec<String> = per_run.iter().flat_map(|t| t.keys().cloned()).collect();
    ops.sort();
    ops.dedup();
    let mut out: Vec<OpTime> = ops
        .into_iter()
        .map(|op| {
            let mut ms: Vec<f64> = per_run
                .iter()
                .map(|t| t.get(&op).copied().unwrap_or(0.0))
                .collect();
            ms.sort_by(f64::total_cmp);
            OpTime {
                median_ms: ms[ms.len() / 2],
                op,
            }
        })
        .collect();
    out.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    Ok(out)
}
