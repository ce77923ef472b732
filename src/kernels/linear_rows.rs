//! The heads' small linear layers at inference, one dot product per output, so that a word's
//! scores do not depend on its batch (see [`linear_rows`]).

use super::host::{par_rows, rows_per_chunk, runs_fused, Host, HostKernel, Input};
use super::math::sum2;
use candle_core::{bail, Result, Shape, Tensor, D};

/// `x weight^T + bias` for `x` `[rows, in]`, `weight` `[out, in]`: every output is one dot product
/// summed in a fixed order, so a row's result does not depend on how many rows come with it (a
/// matrix multiply picks other kernels, hence other summation orders, for other row counts). For
/// the heads at inference, where `out` is small; no gradient.
pub fn linear_rows(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (out, input) = weight.dims2()?;
    if x.dim(D::Minus1)? != input || bias.dims() != [out] {
        bail!("linear_rows: expected x [rows, {input}] and bias [{out}]")
    }
    if runs_fused(x) && runs_fused(weight) && runs_fused(bias) {
        x.contiguous()?.apply_op3_no_bwd(
            &weight.detach().contiguous()?,
            &bias.detach().contiguous()?,
            &Host(LinearRowsOp),
        )
    } else {
        x.broadcast_matmul(&weight.t()?)?.broadcast_add(bias)
    }
}

struct LinearRowsOp;

impl HostKernel<3> for LinearRowsOp {
    const NAME: &'static str = "newstag-linear-rows";

    fn forward(&self, [x, w, b]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let (input, out) = (x.last_dim()?, b.data.len());
        let (w, b) = (w.data, b.data);
        let mut y = vec![0f32; x.data.len() / input * out];
        par_rows(&mut y, out, rows_per_chunk(input * out), |first, y| {
            let x = &x.data[first * input..];
            for (y, x) in y.chunks_exact_mut(out).zip(x.chunks_exact(input)) {
                for ((y, w), &b) in y.iter_mut().zip(w.chunks_exact(input)).zip(b) {
                    *y = sum2(x, w, |x, w| x * w) + b;
                }
            }
        });
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("a last dimension") = out;
        Ok((y, Shape::from(dims)))
    }
}
