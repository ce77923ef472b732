//! Attention heads: the bias addition of the query, key and value projections fused with the
//! split into heads (`[batch * len, hidden]` to `[batch, heads, len, size]`, keys transposed),
//! and the merge back into rows. candle's composition (add, reshape, transpose, copy) makes a
//! pass and a buffer for each step, and its backward pass as many again.

use super::host::{
    add_rows, check_bias, check_shapes, par_rows, rows_and_column_sums, runs_fused,
    split_bias_grads, Host, HostKernel, Input, BLOCK_ROWS,
};
use candle_core::{bail, Result, Shape, Tensor};

/// Per-head layout of attention inputs.
#[derive(Clone, Copy)]
struct Heads {
    batch: usize,
    len: usize,
    heads: usize,
    size: usize,
    /// `[batch, heads, size, len]` instead of `[batch, heads, len, size]`.
    transposed: bool,
}

impl Heads {
    /// The split of `h` `[batch * len, hidden]` into `batch` items of `heads` heads.
    fn of_rows(h: &Tensor, batch: usize, heads: usize, transposed: bool) -> Result<Self> {
        let (rows, hidden) = h.dims2()?;
        if heads == 0 || hidden % heads != 0 || batch == 0 || rows % batch != 0 {
            bail!(
                "bias_split_heads: cannot split [{rows}, {hidden}] into {batch} items of {heads} heads"
            )
        }
        Ok(Heads {
            batch,
            len: rows / batch,
            heads,
            size: hidden / heads,
            transposed,
        })
    }

    fn hidden(&self) -> usize {
        self.heads * self.size
    }

    /// An error unless `x` has as many elements as this layout.
    fn check(&self, x: Input<'_>, op: &str) -> Result<()> {
        check_shapes(x.data.len() == self.batch * self.len * self.hidden(), op)
    }

    fn shape(&self) -> Shape {
        if self.transposed {
            Shape::from((self.batch, self.heads, self.size, self.len))
        } else {
            Shape::from((self.batch, self.heads, self.len, self.size))
        }
    }

    /// Index in the per-head layout of element `(b, t, head, e)`.
    #[inline(always)]
    fn index(&self, b: usize, head: usize, t: usize, e: usize) -> usize {
        let base = (b * self.heads + head) * self.len * self.size;
        if self.transposed {
            base + e * self.len + t
        } else {
            base + t * self.size + e
        }
    }

    /// Rows `[batch * len, hidden]` (plus `bias`) to the per-head layout.
    fn rows_to_heads(&self, h: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (hidden, block) = (self.hidden(), self.len * self.size);
        let mut out = vec![0f32; h.len()];
        par_rows(&mut out, block, 1, |c, out| {
            let (b, head) = (c / self.heads, c % self.heads);
            let first = self.index(b, head, 0, 0);
            for t in 0..self.len {
                let row = &h[(b * self.len + t) * hidden + head * self.size..][..self.size];
                for (e, &v) in row.iter().enumerate() {
                    let v = match bias {
                        Some(bias) => v + bias[head * self.size + e],
                        None => v,
                    };
                    out[self.index(b, head, t, e) - first] = v;
                }
            }
        });
        out
    }

    /// The per-head layout back to rows `[batch * len, hidden]`, followed by their column sums
    /// when `sums` (as [`rows_and_column_sums`]).
    fn heads_to_rows(&self, g: &[f32], sums: bool) -> Vec<f32> {
        let hidden = self.hidden();
        let rows = self.batch * self.len;
        let fill = |first: usize, out: &mut [f32], part: Option<&mut [f32]>| {
            for (r, out) in out.chunks_exact_mut(hidden).enumerate() {
                let (b, t) = ((first + r) / self.len, (first + r) % self.len);
                for head in 0..self.heads {
                    for e in 0..self.size {
                        out[head * self.size + e] = g[self.index(b, head, t, e)];
                    }
                }
            }
            if let Some(part) = part {
                add_rows(out, part);
            }
        };
        if sums {
            rows_and_column_sums(rows, hidden, 1, |first, out, part| {
                fill(first, out, Some(part))
            })
        } else {
            let mut out = vec![0f32; rows * hidden];
            par_rows(&mut out, hidden, BLOCK_ROWS, |first, out| {
                fill(first, out, None)
            });
            out
        }
    }
}

/// `h + bias` (`h`: `[batch * len, heads * size]`) split into attention heads: `[batch, heads,
/// len, size]`, or `[batch, heads, size, len]` when `transposed` (keys, ready for `q k^T`).
pub fn bias_split_heads(
    h: &Tensor,
    bias: &Tensor,
    batch: usize,
    heads: usize,
    transposed: bool,
) -> Result<Tensor> {
    check_bias(h, bias)?;
    let dims = Heads::of_rows(h, batch, heads, transposed)?;
    if runs_fused(h) && runs_fused(bias) {
        h.contiguous()?
            .apply_op2(&bias.contiguous()?, Host(SplitHeadsOp(dims)))
    } else {
        bias_split_heads_reference(h, bias, batch, heads, transposed)
    }
}

/// [`bias_split_heads`] from differentiable candle ops (any device).
pub fn bias_split_heads_reference(
    h: &Tensor,
    bias: &Tensor,
    batch: usize,
    heads: usize,
    transposed: bool,
) -> Result<Tensor> {
    let (rows, hidden) = h.dims2()?;
    let t = h
        .broadcast_add(bias)?
        .reshape((batch, rows / batch, heads, hidden / heads))?
        .transpose(1, 2)?;
    if transposed {
        t.transpose(2, 3)?.contiguous()
    } else {
        t.contiguous()
    }
}

/// Attention heads `[batch, heads, len, size]` merged back into rows `[batch * len, heads * size]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (batch, heads, len, size) = x.dims4()?;
    let dims = Heads {
        batch,
        len,
        heads,
        size,
        transposed: false,
    };
    if runs_fused(x) {
        x.contiguous()?.apply_op1(Host(MergeHeadsOp(dims)))
    } else {
        merge_heads_reference(x)
    }
}

/// [`merge_heads`] from differentiable candle ops (any device).
pub fn merge_heads_reference(x: &Tensor) -> Result<Tensor> {
    let (batch, heads, len, size) = x.dims4()?;
    x.transpose(1, 2)?.reshape((batch * len, heads * size))
}

struct SplitHeadsOp(Heads);

impl HostKernel<2> for SplitHeadsOp {
    const NAME: &'static str = "newstag-bias-split-heads";

    fn forward(&self, [h, bias]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let d = self.0;
        d.check(h, Self::NAME)?;
        check_shapes(bias.data.len() == d.hidden(), Self::NAME)?;
        Ok((d.rows_to_heads(h.data, Some(bias.data)), d.shape()))
    }

    fn backward(
        &self,
        [h, bias]: [&Tensor; 2],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let (gh, gb) = split_heads_backward(self.0, h, bias, grad)?;
        Ok([Some(gh), Some(gb)])
    }
}

/// The gradients of [`bias_split_heads`]'s `(h, bias)` from its output's gradient `grad`, for the
/// same `batch`, `heads` and `transposed` (contiguous `f32` CPU tensors).
pub(crate) fn bias_split_heads_backward(
    h: &Tensor,
    bias: &Tensor,
    batch: usize,
    heads: usize,
    transposed: bool,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    split_heads_backward(Heads::of_rows(h, batch, heads, transposed)?, h, bias, grad)
}

fn split_heads_backward(
    dims: Heads,
    h: &Tensor,
    bias: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let g = grad
        .contiguous()?
        .apply_op1_no_bwd(&Host(HeadsToRowsOp { dims, sums: true }))?;
    split_bias_grads(&g, h, bias)
}

struct MergeHeadsOp(Heads);

impl HostKernel<1> for MergeHeadsOp {
    const NAME: &'static str = "newstag-merge-heads";

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let d = self.0;
        let out = d.heads_to_rows(x.data, false);
        Ok((out, Shape::from((d.batch * d.len, d.hidden()))))
    }

    fn backward(
        &self,
        _x: [&Tensor; 1],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        Ok([Some(rows_to_heads(self.0, grad)?)])
    }
}

/// The gradient of [`merge_heads`]'s input `[batch, heads, len, size]` from its output's gradient
/// `grad` `[batch * len, heads * size]` (a contiguous `f32` CPU tensor).
pub(crate) fn merge_heads_backward(grad: &Tensor, batch: usize, heads: usize) -> Result<Tensor> {
    rows_to_heads(Heads::of_rows(grad, batch, heads, false)?, grad)
}

fn rows_to_heads(dims: Heads, grad: &Tensor) -> Result<Tensor> {
    grad.contiguous()?
        .apply_op1_no_bwd(&Host(RowsToHeadsOp(dims)))
}

/// Per-head layout to rows, with their column sums when `sums` (a backward pass).
struct HeadsToRowsOp {
    dims: Heads,
    sums: bool,
}

impl HostKernel<1> for HeadsToRowsOp {
    const NAME: &'static str = "newstag-heads-to-rows";

    fn forward(&self, [g]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let d = self.dims;
        d.check(g, Self::NAME)?;
        let rows = d.batch * d.len + usize::from(self.sums);
        Ok((
            d.heads_to_rows(g.data, self.sums),
            Shape::from((rows, d.hidden())),
        ))
    }
}

/// Rows to the per-head layout, without bias (a backward pass).
struct RowsToHeadsOp(Heads);

impl HostKernel<1> for RowsToHeadsOp {
    const NAME: &'static str = "newstag-rows-to-heads";

    fn forward(&self, [g]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let d = self.0;
        d.check(g, Self::NAME)?;
        Ok((d.rows_to_heads(g.data, None), d.shape()))
    }
}
