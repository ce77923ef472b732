//! Training attention's probabilities, `dropout(softmax(scores * scale + mask))`, in one op whose
//! backward pass recomputes the softmax rows instead of keeping them (the probabilities are the
//! largest activations of a training step).

use super::dropout::{dropout_reference, DropoutOp};
use super::host::{
    check_shapes, map_rows, par_rows, rows_from, rows_per_chunk, Host, HostKernel, Input,
};
use super::masked_softmax::{fits, masked_softmax, masked_softmax_reference, MaskedScores};
use super::math::sum2;
use super::softmax::{softmax_bwd, softmax_row_in_place};
use candle_core::{Result, Shape, Tensor};

/// `dropout(softmax(scores * scale + mask), p, seed)`: the attention probabilities of
/// [`masked_softmax`] with the dropout of [`super::dropout()`] (the same mask), in one op whose
/// backward pass recomputes the softmax instead of keeping it.
pub fn attention_probs(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    if p <= 0.0 {
        return masked_softmax(scores, mask, scale);
    }
    if fits(scores, mask)? && p < 1.0 {
        scores.contiguous()?.apply_op2(
            &mask.contiguous()?,
            Host(AttentionProbsOp {
                scale: scale as f32,
                drop: DropoutOp::new(p, seed),
            }),
        )
    } else {
        attention_probs_reference(scores, mask, scale, p, seed)
    }
}

/// [`attention_probs`] from differentiable candle ops (any device).
pub fn attention_probs_reference(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    dropout_reference(&masked_softmax_reference(scores, mask, scale)?, p, seed)
}

#[derive(Clone, Copy)]
struct AttentionProbsOp {
    scale: f32,
    drop: DropoutOp,
}

impl HostKernel<2> for AttentionProbsOp {
    const NAME: &'static str = "newstag-attention-probs";

    fn forward(&self, [x, mask]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let s = MaskedScores::new(x, mask, Self::NAME)?;
        let k = s.keys;
        let y = map_rows([s.scores], k, |row, [x], y| {
            s.scale_add(row, x, self.scale, y);
            softmax_row_in_place(y);
            self.drop.apply_in_place(row * k, y);
        });
        Ok((y, x.shape()))
    }

    fn backward(
        &self,
        [scores, mask]: [&Tensor; 2],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let g = scores.apply_op3_no_bwd(
            mask,
            &grad.contiguous()?,
            &Host(AttentionProbsBwdOp(*self)),
        )?;
        Ok([Some(g), None])
    }
}

/// The gradient of [`attention_probs`]'s `scores` from its output `probs` and that output's
/// gradient `grad`, for the same `mask`, `scale`, `p` and `seed` (contiguous `f32` CPU tensors,
/// the mask `[batch, 1, 1, keys]`).
pub(crate) fn attention_probs_backward(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    p: f32,
    seed: u64,
    probs: &Tensor,
    grad: &Tensor,
) -> Result<Tensor> {
    if p <= 0.0 {
        return softmax_bwd(probs, grad, scale as f32);
    }
    let op = AttentionProbsOp {
        scale: scale as f32,
        drop: DropoutOp::new(p, seed),
    };
    scores.apply_op3_no_bwd(mask, &grad.contiguous()?, &Host(AttentionProbsBwdOp(op)))
}

/// Backward of [`AttentionProbsOp`] from `(scores, mask, grad)`: recomputes each softmax row `y`,
/// takes the gradient through the dropout mask (`g'`), then `scale * y * (g' - sum(g' * y))`.
struct AttentionProbsBwdOp(AttentionProbsOp);

impl HostKernel<3> for AttentionProbsBwdOp {
    const NAME: &'static str = "newstag-attention-probs-bwd";

    fn forward(&self, [x, mask, g]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let s = MaskedScores::new(x, mask, Self::NAME)?;
        let (k, g) = (s.keys, g.data);
        check_shapes(g.len() == s.scores.len(), Self::NAME)?;
        let AttentionProbsOp { scale, drop } = self.0;
        let mut gx = vec![0f32; g.len()];
        par_rows(&mut gx, k, rows_per_chunk(k), |first, gx| {
            let (x, g) = (
                rows_from(s.scores, first, k, gx),
                rows_from(g, first, k, gx),
            );
            let mut gd = vec![0f32; k];
            for (r, ((x, g), y)) in x
                .chunks_exact(k)
                .zip(g.chunks_exact(k))
                .zip(gx.chunks_exact_mut(k))
                .enumerate()
            {
                let row = first + r;
                s.scale_add(row, x, scale, y);
                softmax_row_in_place(y);
                drop.apply(row * k, g, &mut gd);
                let dot = sum2(&gd, y, |g, y| g * y);
                for (y, &g) in y.iter_mut().zip(&gd) {
                    *y = scale * (*y * (g - dot));
                }
            }
        });
        Ok((gx, x.shape()))
    }
}
