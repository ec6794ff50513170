//! The int8 ensemble's dense layers: a QLinearMatMul of one row (per batch item) by a constant
//! int8 matrix, as tract declutters it (a quantized `EinSum`). tract's quantized matrix product
//! packs and dispatches per call and, without an int8 kernel for the CPU, took 4.3 ms of the int8
//! ensemble's 13 ms on the x86_64 host for 0.3 M multiply-adds; a plain loop over 32-bit widened
//! weights, which the compiler vectorises, takes microseconds.

/// `y[n] = requantise(bias + sum over k of (x[k] - x_zero) * (w[k][n] - w_zero))`, with
/// onnxruntime's requantisation: float scale `x_scale * w_scale / y_scale`, clamped, rounded half
/// to even.
#[derive(Clone, Debug, PartialEq)]
pub struct QMatVec {
    pub(super) k: usize,
    pub(super) n: usize,
    /// `[k][n]`, the weight zero point already subtracted.
    weights: Vec<i32>,
    /// The bias minus `x_zero * sum over k of w[k][n]`, per output.
    bias: Vec<i32>,
    scale: f32,
    y_zero: i32,
    /// The output's shape: ones, then `n`.
    pub(super) out_shape: Vec<usize>,
}

// The scale is never NaN.
impl Eq for QMatVec {}

/// A QLinearMatMul's parameters.
pub(super) struct QMatVecParams<'a> {
    /// `[k][n]`.
    pub weights: &'a [i8],
    pub k: usize,
    pub n: usize,
    /// One value for all outputs, or one per output.
    pub bias: &'a [i32],
    pub x_zero: i32,
    pub x_scale: f32,
    pub w_zero: i32,
    pub w_scale: f32,
    pub y_zero: i32,
    pub y_scale: f32,
    pub out_shape: Vec<usize>,
}

impl QMatVec {
    pub(super) fn new(p: QMatVecParams) -> Self {
        let weights: Vec<i32> = p.weights.iter().map(|&w| w as i32 - p.w_zero).collect();
        let bias = (0..p.n)
            .map(|j| {
                let sum: i32 = (0..p.k).map(|i| weights[i * p.n + j]).sum();
                p.bias[if p.bias.len() == 1 { 0 } else { j }] - p.x_zero * sum
            })
            .collect();
        QMatVec {
            k: p.k,
            n: p.n,
            weights,
            bias,
            scale: p.x_scale * p.w_scale / p.y_scale,
            y_zero: p.y_zero,
            out_shape: p.out_shape,
        }
    }

    /// One row: `x` holds `k` values, `y` gets `n`. `acc` is scratch of `n` values.
    pub(super) fn run_row(&self, x: &[i8], y: &mut [i8], acc: &mut Vec<i32>) {
        assert!(x.len() == self.k && y.len() == self.n);
        acc.clear();
        acc.extend_from_slice(&self.bias);
        for (&xk, row) in x.iter().zip(self.weights.chunks_exact(self.n)) {
            let xk = xk as i32;
            for (a, &w) in acc.iter_mut().zip(row) {
                *a += xk * w;
            }
        }
        let lo = (i8::MIN as i32 - self.y_zero) as f32;
        let hi = (i8::MAX as i32 - self.y_zero) as f32;
        for (out, &a) in y.iter_mut().zip(acc.iter()) {
            let v = (a as f32 * self.scale).clamp(lo, hi).round_ties_even() as i32 + self.y_zero;
            *out = v as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_onnx_definition_with_zero_points_and_saturation() {
        let (k, n) = (5, 3);
        let weights: Vec<i8> = (0..k * n).map(|i| ((i * 37) % 100) as i8 - 50).collect();
        let x: Vec<i8> = vec![-128, -3, 0, 77, 127];
        let p = QMatVecParams {
            weights: &weights,
            k,
            n,
            bias: &[100, -200, 300],
            x_zero: -7,
            x_scale: 0.05,
            w_zero: 2,
            w_scale: 0.01,
            y_zero: 4,
            y_scale: 0.02,
            out_shape: vec![n],
        };
        let scale = p.x_scale * p.w_scale / p.y_scale;
        let want: Vec<i8> = (0..n)
            .map(|j| {
                let mut acc = p.bias[j];
                for i in 0..k {
                    acc += (x[i] as i32 + 7) * (weights[i * n + j] as i32 - 2);
                }
                ((acc as f32 * scale).round_ties_even() as i32 + 4).clamp(-128, 127) as i8
            })
            .collect();
        let op = QMatVec::new(p);
        let mut y = vec![0i8; n];
        op.run_row(&x, &mut y, &mut Vec::new());
        assert_eq!(y, want);
        assert!(want.iter().any(|&v| v != 127 && v != -128), "{want:?}");
        // Saturates rather than wraps.
        let big = QMatVec::new(QMatVecParams {
            weights: &[127],
            k: 1,
            n: 1,
            bias: &[0],
            x_zero: 0,
            x_scale: 1.0,
            w_zero: 0,
            w_scale: 1.0,
            y_zero: 0,
            y_scale: 1.0,
            out_shape: vec![1],
        });
        big.run_row(&[127], &mut y[..1], &mut Vec::new());
        assert_eq!(y[0], 127);
    }
}
