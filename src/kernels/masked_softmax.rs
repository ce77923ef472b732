//! Attention's `softmax(scores * scale + mask)` in one pass: candle composes a scaling, a
//! broadcast addition and the softmax, each a pass over the `[batch, heads, queries, keys]`
//! scores and a fresh buffer.

use super::host::{map_rows, runs_fused, Host, HostKernel, Input};
use super::softmax::{softmax_bwd, softmax_row_in_place};
use candle_core::{bail, Result, Shape, Tensor, D};

/// `softmax(scores * scale + mask)` over the last dimension, differentiable in `scores`, for
/// attention: `scores` is `[batch, heads, queries, keys]` and `mask` (no gradient) is
/// `[batch, 1, 1, keys]`.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    if fits(scores, mask)? {
        scores.contiguous()?.apply_op2(
            &mask.contiguous()?,
            Host(MaskedSoftmaxOp {
                scale: scale as f32,
            }),
        )
    } else {
        masked_softmax_reference(scores, mask, scale)
    }
}

/// [`masked_softmax`] from differentiable candle ops (any device).
pub fn masked_softmax_reference(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(mask)?, D::Minus1)
}

/// Whether the fused kernels take `scores` `[b, h, q, k]` and `mask`: both on the host in `f32`,
/// the mask `[b, 1, 1, k]`.
pub(super) fn fits(scores: &Tensor, mask: &Tensor) -> Result<bool> {
    let (b, _, _, k) = scores.dims4()?;
    Ok(runs_fused(scores) && runs_fused(mask) && mask.dims() == [b, 1, 1, k])
}

/// `y = x * scale + m`.
#[inline(always)]
fn scale_add(x: &[f32], scale: f32, m: &[f32], y: &mut [f32]) {
    for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
        *y = x * scale + m;
    }
}

/// The scores of one attention op and its mask.
pub(super) struct MaskedScores<'a> {
    pub(super) scores: &'a [f32],
    mask: &'a [f32],
    /// Softmax rows per batch item (`heads * queries`).
    rows_per_item: usize,
    /// Keys, the length of a row.
    pub(super) keys: usize,
}

impl<'a> MaskedScores<'a> {
    /// Scores `[b, h, q, k]` and a mask of `b * k` elements.
    pub(super) fn new(scores: Input<'a>, mask: Input<'a>, op: &str) -> Result<Self> {
        let &[b, h, q, k] = scores.dims() else {
            bail!("{op}: expected scores [batch, heads, queries, keys]")
        };
        if mask.data.len() != b * k || k == 0 {
            bail!("{op}: expected a mask [batch, 1, 1, keys]")
        }
        Ok(MaskedScores {
            scores: scores.data,
            mask: mask.data,
            rows_per_item: h * q,
            keys: k,
        })
    }

    /// `y = x * scale + mask` for softmax row `row`, whose scores are `x`.
    #[inline(always)]
    pub(super) fn scale_add(&self, row: usize, x: &[f32], scale: f32, y: &mut [f32]) {
        let k = self.keys;
        scale_add(x, scale, &self.mask[row / self.rows_per_item * k..][..k], y);
    }
}

struct MaskedSoftmaxOp {
    scale: f32,
}

impl HostKernel<2> for MaskedSoftmaxOp {
    const NAME: &'static str = "newstag-masked-softmax";

    fn forward(&self, [x, mask]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let s = MaskedScores::new(x, mask, Self::NAME)?;
        let y = map_rows([s.scores], s.keys, |row, [x], y| {
            s.scale_add(row, x, self.scale, y);
            softmax_row_in_place(y);
        });
        Ok((y, x.shape()))
    }

    fn backward(
        &self,
        _inputs: [&Tensor; 2],
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        Ok([Some(softmax_bwd(y, grad, self.scale)?), None])
    }
}
