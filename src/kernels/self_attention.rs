//! Self-attention for inference on CPU, one task per window and head, over the window's own
//! tokens only.
//!
//! The batched form (`[batch, heads, len, len]` scores, masked, then multiplied by the values)
//! computes and stores every padded position: for a batch of 32 windows of 256 sub-tokens the
//! scores alone are 100 MB, written and read three times. Here each task multiplies its window's
//! queries and keys into a small buffer, takes the softmax of each row in place and multiplies by
//! the values straight into the context rows, on one thread (the tasks are the parallelism). A
//! window's result depends on its own tokens only, never on its batch-mates or its padding.

use super::host::{par_for, DisjointOut, Host, HostKernel, Input, Simd, SimdBody};
use super::math::{exp_f32, max8, sum1};
use super::softmax::softmax_row_in_place;
use candle_core::{bail, Result, Shape, Tensor};

/// The attention context `[tokens, hidden]` from the projections `qkv` (`[tokens, 3 * hidden]`:
/// queries, keys, values, without their bias) and `bias` (`[3 * hidden]`), where the windows'
/// tokens come one after another: window `w` is the `lengths[w]` rows after the windows before
/// it, and `tokens` is the sum of `lengths`. CPU and `f32` only; no gradient.
pub fn self_attention(
    qkv: &Tensor,
    bias: &Tensor,
    lengths: &[usize],
    heads: usize,
) -> Result<Tensor> {
    self_attention_on(qkv, bias, lengths, heads, Simd::best())
}

/// [`self_attention`] with its loops on the given instructions (the same bits on every one).
pub fn self_attention_on(
    qkv: &Tensor,
    bias: &Tensor,
    lengths: &[usize],
    heads: usize,
    simd: Simd,
) -> Result<Tensor> {
    qkv.contiguous()?.apply_op2_no_bwd(
        &bias.contiguous()?,
        &Host(SelfAttention {
            lengths: lengths.to_vec(),
            heads,
            simd,
        }),
    )
}

/// Lanes of the widest vectors (AVX-512's sixteen).
const LANES: usize = 16;

/// Rows at least this long keep the compiler's vector loop, which unrolls (1,000-word articles,
/// windows of 256: 3.91-3.98 s against 4.02-4.03 s with whole vectors one at a time).
const LONG_ROW: usize = 64;

/// [`super::softmax`]'s row softmax, the same bits, on a row of whole [`LANES`]-wide vectors
/// whose padding is -inf.
#[inline(always)]
fn softmax_padded_row(row: &mut [f32]) {
    let max = max8(row);
    for v in row.chunks_exact_mut(LANES) {
        let v: &mut [f32; LANES] = v.try_into().expect("whole vectors");
        for v in v.iter_mut() {
            *v = exp_f32(*v - max);
        }
    }
    let sum = sum1(row, |v| v);
    for v in row.chunks_exact_mut(LANES) {
        let v: &mut [f32; LANES] = v.try_into().expect("whole vectors");
        for v in v.iter_mut() {
            *v /= sum;
        }
    }
}

struct SelfAttention {
    lengths: Vec<usize>,
    heads: usize,
    simd: Simd,
}

/// One task's share: the shapes, the inputs and where its context block goes.
struct Task<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    /// Hidden size, head size, `1 / sqrt(size)`.
    hidden: usize,
    size: usize,
    scale: f32,
}

/// Attention of the `n` tokens from row `start` in head `head` of `task`, into `out`.
struct Head<'a> {
    task: &'a Task<'a>,
    start: usize,
    head: usize,
    n: usize,
    out: DisjointOut,
}

impl SimdBody for Head<'_> {
    type Out = ();

    #[inline(always)]
    fn call(self) {
        let Head {
            task,
            start,
            head,
            n,
            out,
        } = self;
        let (hidden, size) = (task.hidden, task.size);
        let width = 3 * hidden;
        // This head's queries, keys and values with their bias, contiguous.
        let mut qkv_head = Vec::with_capacity(3 * n * size);
        for part in 0..3 {
            let col = part * hidden + head * size;
            let bias = &task.bias[col..][..size];
            for token in start..start + n {
                let src = &task.qkv[token * width + col..][..size];
                qkv_head.extend(src.iter().zip(bias).map(|(&x, &b)| x + b));
            }
        }
        let (q, kv) = qkv_head.split_at(n * size);
        let (k, v) = kv.split_at(n * size);
        // Rows of scores padded to whole vectors, the padding scoring -inf: the softmax then runs
        // on whole vectors (on a window's 20-odd tokens the compiler's vector loop never ran), and
        // the padding adds exact zeros to the row's sum, whose bits it leaves as they were.
        let stride = n.next_multiple_of(LANES);
        let mut probs = vec![f32::NEG_INFINITY; n * stride];
        // SAFETY: every pointer and stride stays inside its buffer: `probs` is n x stride, `q`,
        // `k` and `v` are n x size, and this task's context block (rows `start ..
        // start + n`, columns `head * size ..` of `hidden`) belongs to it alone.
        unsafe {
            // probs = scale * q k^T (k read transposed: row stride 1, column stride `size`).
            gemm::gemm(
                n,
                n,
                size,
                probs.as_mut_ptr(),
                1,
                stride as isize,
                false,
                q.as_ptr(),
                1,
                size as isize,
                k.as_ptr(),
                size as isize,
                1,
                0.0,
                task.scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            for row in probs.chunks_exact_mut(stride) {
                if n < LONG_ROW {
                    softmax_padded_row(row);
                } else {
                    softmax_row_in_place(&mut row[..n]);
                }
            }
            let dst = out.at(start * hidden + head * size);
            gemm::gemm(
                n,
                size,
                n,
                dst,
                1,
                hidden as isize,
                false,
                probs.as_ptr(),
                1,
                stride as isize,
                v.as_ptr(),
                1,
                size as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

impl HostKernel<2> for SelfAttention {
    const NAME: &'static str = "newstag-self-attention";

    fn forward(&self, [qkv, bias]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let (rows, width) = qkv.shape().dims2()?;
        let (qkv, bias) = (qkv.data, bias.data);
        let windows = self.lengths.len();
        let hidden = width / 3;
        if width % 3 != 0
            || bias.len() != width
            || self.heads == 0
            || hidden % self.heads != 0
            || self.lengths.iter().sum::<usize>() != rows
        {
            bail!(
                "self_attention: {rows} rows of {width} for {windows} windows of {:?} tokens, \
                 {} heads",
                self.lengths,
                self.heads
            )
        }
        let size = hidden / self.heads;
        let starts: Vec<usize> = self
            .lengths
            .iter()
            .scan(0, |at, &n| Some(std::mem::replace(at, *at + n)))
            .collect();
        let task = Task {
            qkv,
            bias,
            hidden,
            size,
            scale: 1.0 / (size as f32).sqrt(),
        };
        // Every row is a window's token, and every head writes its columns of its window's rows.
        let mut context = Vec::with_capacity(rows * hidden);
        let out = DisjointOut::spare(&mut context);
        let work: usize = self.lengths.iter().map(|&n| n * n * size).sum();
        par_for(windows * self.heads, work * self.heads, |t| {
            let (w, head) = (t / self.heads, t % self.heads);
            let n = self.lengths[w];
            if n > 0 {
                self.simd.run(Head {
                    task: &task,
                    start: starts[w],
                    head,
                    n,
                    out,
                });
            }
        });
        // SAFETY: the windows' rows are all `rows` (checked above), and each (window, head) task
        // stored its `n x size` block without reading it (`gemm` with `read_dst` false).
        unsafe { context.set_len(rows * hidden) };
        Ok((context, Shape::from((rows, hidden))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_padded_softmax_gives_the_bits_of_the_plain_one() {
        for n in [1usize, 5, 16, 20, 33, 63] {
            let row: Vec<f32> = (0..n).map(|i| (i as f32 * 0.71).sin() * 6.0).collect();
            let mut plain = row.clone();
            softmax_row_in_place(&mut plain);
            let mut padded = row.clone();
            padded.resize(n.next_multiple_of(LANES), f32::NEG_INFINITY);
            softmax_padded_row(&mut padded);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&padded[..n]), bits(&plain), "{n} tokens");
            assert!(padded[n..].iter().all(|&p| p == 0.0), "{n} tokens: padding");
        }
    }
}
