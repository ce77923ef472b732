//! The end of each encoder sub-layer, `dropout(h + bias) + residual`, in one pass, and its
//! backward pass with the bias gradient summed in the same pass (candle: three ops and a mask
//! tensor forward, as many backward).

use super::dropout::{dropout_reference, DropoutOp};
use super::host::{
    add_rows, check_bias, check_shapes, par_rows, rows_and_column_sums, rows_from, rows_of,
    rows_per_chunk, runs_fused, split_bias_grads, Host, HostKernel, Input,
};
use candle_core::{bail, Result, Shape, Tensor};

/// `dropout(h + bias, p, seed) + residual` (the mask of [`super::dropout()`] on `h + bias`),
/// differentiable in all three.
pub fn bias_dropout_add(
    h: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    check_bias(h, bias)?;
    if h.dims() != residual.dims() {
        bail!(
            "bias_dropout_add: shapes {:?} and {:?}",
            h.dims(),
            residual.dims()
        )
    }
    if runs_fused(h) && runs_fused(bias) && runs_fused(residual) && p < 1.0 {
        h.contiguous()?.apply_op3(
            &bias.contiguous()?,
            &residual.contiguous()?,
            Host(BiasDropoutAddOp(DropoutOp::new(p, seed))),
        )
    } else {
        bias_dropout_add_reference(h, bias, residual, p, seed)
    }
}

/// [`bias_dropout_add`] from differentiable candle ops (any device).
pub fn bias_dropout_add_reference(
    h: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    dropout_reference(&h.broadcast_add(bias)?, p, seed)? + residual
}

struct BiasDropoutAddOp(DropoutOp);

impl HostKernel<3> for BiasDropoutAddOp {
    const NAME: &'static str = "newstag-bias-dropout-add";

    fn forward(&self, [h, bias, r]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let (hs, bias, r) = (h.data, bias.data, r.data);
        let n = bias.len();
        rows_of(hs.len(), n, Self::NAME)?;
        check_shapes(r.len() == hs.len(), Self::NAME)?;
        let mut y = vec![0f32; hs.len()];
        par_rows(&mut y, n, rows_per_chunk(n), |first, y| {
            let (h, r) = (rows_from(hs, first, n, y), rows_from(r, first, n, y));
            for (h, y) in h.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                for ((y, &h), &b) in y.iter_mut().zip(h).zip(bias) {
                    *y = h + b;
                }
            }
            self.0.apply_in_place(first * n, y);
            for (y, r) in y.iter_mut().zip(r) {
                *y += r;
            }
        });
        Ok((y, h.shape()))
    }

    fn backward(
        &self,
        [h, bias, _residual]: [&Tensor; 3],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        let (gh, gb) = dropout_bias_backward(h, bias, self.0, grad)?;
        Ok([Some(gh), Some(gb), Some(grad.clone())])
    }
}

/// The gradients of [`bias_dropout_add`]'s `(h, bias)` from its output's gradient `grad` (the
/// residual's is `grad` itself), for the same `p` and `seed` (contiguous `f32` CPU tensors).
pub(crate) fn bias_dropout_add_backward(
    h: &Tensor,
    bias: &Tensor,
    p: f32,
    seed: u64,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    dropout_bias_backward(h, bias, DropoutOp::new(p, seed), grad)
}

fn dropout_bias_backward(
    h: &Tensor,
    bias: &Tensor,
    drop: DropoutOp,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let n = bias.elem_count();
    let g = grad
        .contiguous()?
        .apply_op1_no_bwd(&Host(DropoutBwdSumsOp { drop, n }))?;
    split_bias_grads(&g, h, bias)
}

/// The gradient through a dropout mask, `[rows, n]`, followed by its column sums (a bias
/// gradient).
struct DropoutBwdSumsOp {
    drop: DropoutOp,
    n: usize,
}

impl HostKernel<1> for DropoutBwdSumsOp {
    const NAME: &'static str = "newstag-dropout-bwd-sums";

    fn forward(&self, [g]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let (g, n) = (g.data, self.n);
        let rows = rows_of(g.len(), n, Self::NAME)?;
        let out = rows_and_column_sums(rows, n, 1, |first, gh, part| {
            self.drop.apply(first * n, rows_from(g, first, n, gh), gh);
            add_rows(gh, part);
        });
        Ok((out, Shape::from((rows + 1, n))))
    }
}
