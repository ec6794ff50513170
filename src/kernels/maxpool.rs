//! 2x2 max-pools, plain NCHW, for BlazeFace. tract's DepthWiseConv and OptMaxPool took about 40 %
//! of the detector graph's time for 12 % of its multiply-adds (the depthwise convolutions are in
//! `depthwise.rs`). The ensemble's 3x3 max-pools run inside its chains (`conv_chain.rs`).

use super::Backend;

/// 2x2 max-pool, stride 2, no padding (odd trailing rows and columns are dropped, as ONNX does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPool2x2 {
    pub(super) backend: Backend,
}

impl MaxPool2x2 {
    pub(super) fn run_plane(&self, input: &[f32], w: usize, output: &mut [f32]) {
        let ow = w / 2;
        run_backend(self.backend, || {
            for (oy, out) in output.chunks_exact_mut(ow).enumerate() {
                let top = &input[2 * oy * w..][..w];
                let bottom = &input[(2 * oy + 1) * w..][..w];
                for (x, o) in out.iter_mut().enumerate() {
                    *o = top[2 * x]
                        .max(top[2 * x + 1])
                        .max(bottom[2 * x].max(bottom[2 * x + 1]));
                }
            }
        });
    }
}

/// Runs `body` compiled for the backend's vector width: inside an AVX-512 function for
/// [`Backend::Avx512`], an AVX2 one for [`Backend::Avx2`], as is elsewhere (NEON is the aarch64
/// baseline).
#[inline(always)]
fn run_backend(backend: Backend, body: impl FnOnce()) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => {
            /// # Safety
            ///
            /// The CPU has AVX-512F.
            #[target_feature(enable = "avx512f")]
            unsafe fn wide(body: impl FnOnce()) {
                body()
            }
            // SAFETY: `backend` is an op's (only `MaxPool2x2::run_plane` calls this), and an op's
            // backend is available (the module's invariant): this CPU has AVX-512F.
            unsafe { wide(body) }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => {
            /// # Safety
            ///
            /// The CPU has AVX2 and FMA.
            #[target_feature(enable = "avx2,fma")]
            unsafe fn narrow(body: impl FnOnce()) {
                body()
            }
            // SAFETY: as above: this CPU has AVX2 and FMA.
            unsafe { narrow(body) }
        }
        _ => body(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{backends, values};

    #[test]
    fn max_pool_2x2_drops_odd_edges() {
        let (h, w) = (5, 7);
        let input = values(h * w, 11);
        for backend in backends() {
            let mut got = vec![f32::NAN; (h / 2) * (w / 2)];
            MaxPool2x2 { backend }.run_plane(&input, w, &mut got);
            for oy in 0..h / 2 {
                for ox in 0..w / 2 {
                    let at = |y: usize, x: usize| input[y * w + x];
                    let want = at(2 * oy, 2 * ox)
                        .max(at(2 * oy, 2 * ox + 1))
                        .max(at(2 * oy + 1, 2 * ox))
                        .max(at(2 * oy + 1, 2 * ox + 1));
                    assert_eq!(got[oy * (w / 2) + ox], want, "{backend:?}");
                }
            }
        }
    }
}
