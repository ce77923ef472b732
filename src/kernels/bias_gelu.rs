//! The feed-forward layer's `gelu(h + bias)` in one pass, and its backward pass with the bias
//! gradient summed in the same pass (candle: an addition, the GELU, and their backward ops).

use super::host::{
    check_bias, check_shapes, map_rows_on, rows_and_column_sums, rows_from, rows_of, runs_fused,
    split_bias_grads, Host, HostKernel, Input, Rows, Simd,
};
use super::math::{exp_f32, gelu, normal_cdf, INV_SQRT_2PI};
use candle_core::{Result, Shape, Tensor};

/// `gelu_erf(h + bias)` over the last dimension, differentiable in `h` and `bias`.
pub fn bias_gelu(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    bias_gelu_on(h, bias, Simd::best())
}

/// [`bias_gelu`] with its forward loops on the given instructions (the same bits on every one).
pub fn bias_gelu_on(h: &Tensor, bias: &Tensor, simd: Simd) -> Result<Tensor> {
    check_bias(h, bias)?;
    if runs_fused(h) && runs_fused(bias) {
        h.contiguous()?
            .apply_op2(&bias.contiguous()?, Host(BiasGeluOp(simd)))
    } else {
        bias_gelu_reference(h, bias)
    }
}

/// [`bias_gelu`] from differentiable candle ops (any device).
pub fn bias_gelu_reference(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    h.broadcast_add(bias)?.gelu_erf()
}

/// The derivative of GELU. Its last product is `(x * e) * c`, where the backward pass of
/// [`super::gelu_erf`] takes `x * (e * c)`: kept apart so that training stays bit for bit as it
/// was.
#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    normal_cdf(x) + x * exp_f32(-0.5 * x * x) * INV_SQRT_2PI
}

struct BiasGeluOp(Simd);

/// `gelu(h + bias)`, row by row.
struct GeluRows<'a>(&'a [f32]);

impl Rows<1> for GeluRows<'_> {
    #[inline(always)]
    fn row(&self, _: usize, [h]: [&[f32]; 1], y: &mut [f32]) {
        for ((y, &h), &b) in y.iter_mut().zip(h).zip(self.0) {
            *y = gelu(h + b);
        }
    }
}

impl HostKernel<2> for BiasGeluOp {
    const NAME: &'static str = "newstag-bias-gelu";

    fn forward(&self, [h, bias]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let bias = bias.data;
        let y = map_rows_on(self.0, [h.data], bias.len(), &GeluRows(bias));
        Ok((y, h.shape()))
    }

    fn backward(
        &self,
        [h, bias]: [&Tensor; 2],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let (gh, gb) = bias_gelu_backward(h, bias, grad)?;
        Ok([Some(gh), Some(gb)])
    }
}

/// The gradients of [`bias_gelu`]'s `(h, bias)` from its output's gradient `grad` (contiguous
/// `f32` CPU tensors).
pub(crate) fn bias_gelu_backward(
    h: &Tensor,
    bias: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let g = h.apply_op3_no_bwd(bias, &grad.contiguous()?, &Host(BiasGeluBwdOp))?;
    split_bias_grads(&g, h, bias)
}

/// Backward of [`BiasGeluOp`] from `(h, bias, grad)`: `[rows + 1, n]`, the gradient of `h` then
/// that of `bias`.
struct BiasGeluBwdOp;

impl HostKernel<3> for BiasGeluBwdOp {
    const NAME: &'static str = "newstag-bias-gelu-bwd";

    fn forward(&self, [h, bias, g]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let (h, bias, g) = (h.data, bias.data, g.data);
        let n = bias.len();
        let rows = rows_of(h.len(), n, Self::NAME)?;
        check_shapes(g.len() == h.len(), Self::NAME)?;
        let out = rows_and_column_sums(rows, n, 1, |first, gh, part| {
            let (h, g) = (rows_from(h, first, n, gh), rows_from(g, first, n, gh));
            for ((h, g), gh) in h
                .chunks_exact(n)
                .zip(g.chunks_exact(n))
                .zip(gh.chunks_exact_mut(n))
            {
                for ((((gh, &h), &g), &b), p) in
                    gh.iter_mut().zip(h).zip(g).zip(bias).zip(part.iter_mut())
                {
                    *gh = g * gelu_grad(h + b);
                    *p += *gh;
                }
            }
        });
        Ok((out, Shape::from((rows + 1, n))))
    }
}
