//! Inverted dropout whose mask is a counter-based stream (a pure function of seed, drop
//! probability and element index): the same on every thread count, and recomputed by the
//! backward pass instead of stored. candle's dropout draws and keeps a mask tensor.

use super::host::{par_rows, rows_from, runs_fused, Host, HostKernel, Input, ELEMWISE_CHUNK};
use candle_core::{DType, Result, Shape, Tensor};

/// wyrand's output function on counter `j` of stream `seed`: 64 well-mixed bits (four 16-bit
/// keep/drop draws) from one 64 x 64 -> 128-bit multiply.
#[inline(always)]
fn mix(seed: u64, j: u64) -> u64 {
    let s = seed.wrapping_add(j.wrapping_add(1).wrapping_mul(0xA076_1D64_78BD_642F));
    let t = (s as u128).wrapping_mul((s ^ 0xE703_7ED1_A0B4_28DB) as u128);
    ((t >> 64) ^ t) as u64
}

/// Inverted dropout with drop probability `p` (quantised to 1/65536): element `i` is kept (and
/// scaled by `1 / (1 - p)`) when 16-bit draw `i` of the counter-based stream `seed` is at least
/// `p * 65536`. The mask is a pure function of `(seed, p, i)`: it is the same on every device and
/// thread count, and the backward pass recomputes it instead of storing it.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    if runs_fused(x) {
        x.contiguous()?.apply_op1(Host(DropoutOp::new(p, seed)))
    } else {
        dropout_reference(x, p, seed)
    }
}

/// [`dropout`] as a product with an explicit mask tensor. On CPU the mask is [`dropout`]'s (the
/// counter stream `seed`), built on the host. On any other device it is drawn there by
/// [`device_mask`] from the device's own generator (`seed` unused): building tens of millions of
/// mask values per training step on one host thread and uploading them would dominate the step.
pub fn dropout_reference(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let mask = if x.device().is_cpu() {
        let mask = DropoutOp::new(p, seed).mask(x.elem_count());
        Tensor::from_vec(mask, x.shape(), x.device())?
    } else {
        device_mask(x, p)?
    };
    x.mul(&mask.to_dtype(x.dtype())?)
}

/// An inverted-dropout mask for `x` (f32, `x`'s shape and device): 0 with probability `p`, else
/// `1 / (1 - p)`, from uniform draws made on `x`'s device by candle's generator (cuRAND on CUDA,
/// seeded with `Device::set_seed`), so no mask value crosses to or from the host. It runs on CPU
/// too (candle's unseeded generator there), which is how its keep rate is tested; CPU training
/// uses the counter stream of [`dropout`] instead.
pub fn device_mask(x: &Tensor, p: f32) -> Result<Tensor> {
    let uniform = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
    // The same f32 scale as the counter-stream kernels.
    let scale = (1.0f32 / (1.0 - p.clamp(0.0, 0.999_999))) as f64;
    uniform
        .ge(p as f64)?
        .to_dtype(DType::F32)?
        .affine(scale, 0.0)
}

#[derive(Clone, Copy)]
pub(super) struct DropoutOp {
    seed: u64,
    threshold: u64,
    scale: f32,
}

impl DropoutOp {
    /// Drop probability `p` in `[0, 1)` (0: the identity).
    pub(super) fn new(p: f32, seed: u64) -> Self {
        let p = p.max(0.0);
        DropoutOp {
            seed,
            threshold: ((p as f64 * 65536.0).round() as u64).min(65535),
            scale: 1.0 / (1.0 - p),
        }
    }

    /// The mask values (0 or `1 / (1 - p)`) of the four elements of mask word `word` (elements
    /// `4 * word..4 * word + 4` of the tensor).
    #[inline(always)]
    fn factors(&self, word: usize) -> [f32; 4] {
        let bits = mix(self.seed, word as u64);
        let f = |lane: u32| {
            if (bits >> (16 * lane)) & 0xFFFF >= self.threshold {
                self.scale
            } else {
                0.0
            }
        };
        [f(0), f(1), f(2), f(3)]
    }

    /// Whether the mask keeps everything unscaled (`p` = 0, as at inference).
    fn is_identity(&self) -> bool {
        self.threshold == 0 && self.scale == 1.0
    }

    /// Calls `f(i, m)` for each run `i..i + m.len()` of the elements `start..start + n` of the
    /// tensor that share a mask word (`i` counted from `start`), with their mask values `m`.
    #[inline(always)]
    fn for_each_word(&self, start: usize, n: usize, mut f: impl FnMut(usize, &[f32])) {
        // Up to the next multiple of 4, then four at a time, then the rest.
        let lane = start % 4;
        let head = if lane == 0 { 0 } else { (4 - lane).min(n) };
        if head > 0 {
            f(0, &self.factors(start / 4)[lane..lane + head]);
        }
        let first = (start + head) / 4;
        let words = (n - head) / 4;
        for w in 0..words {
            f(head + 4 * w, &self.factors(first + w));
        }
        let tail = (n - head) % 4;
        if tail > 0 {
            f(n - tail, &self.factors(first + words)[..tail]);
        }
    }

    /// `y = mask * x` for elements `start..start + x.len()` of the tensor.
    #[inline(always)]
    pub(super) fn apply(&self, start: usize, x: &[f32], y: &mut [f32]) {
        let y = &mut y[..x.len()];
        if self.is_identity() {
            y.copy_from_slice(x);
            return;
        }
        self.for_each_word(start, x.len(), |i, m| {
            for ((y, &x), &m) in y[i..].iter_mut().zip(&x[i..]).zip(m) {
                *y = x * m;
            }
        });
    }

    /// `y = mask * y` in place, for elements `start..start + y.len()` of the tensor.
    #[inline(always)]
    pub(super) fn apply_in_place(&self, start: usize, y: &mut [f32]) {
        if self.is_identity() {
            return;
        }
        self.for_each_word(start, y.len(), |i, m| {
            for (y, &m) in y[i..].iter_mut().zip(m) {
                *y *= m;
            }
        });
    }

    /// The mask itself (for devices without the fused kernel).
    pub(super) fn mask(&self, n: usize) -> Vec<f32> {
        let ones = vec![1f32; n];
        let mut m = vec![0f32; n];
        self.apply(0, &ones, &mut m);
        m
    }
}

impl HostKernel<1> for DropoutOp {
    const NAME: &'static str = "newstag-dropout";

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let mut y = vec![0f32; x.data.len()];
        par_rows(&mut y, 1, ELEMWISE_CHUNK, |start, y| {
            self.apply(start, rows_from(x.data, start, 1, y), y);
        });
        Ok((y, x.shape()))
    }

    fn backward(
        &self,
        _x: [&Tensor; 1],
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        // Dropout is linear: the gradient goes through the same mask.
        Ok([Some(grad.contiguous()?.apply_op1_no_bwd(&Host(*self))?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_drops_about_p_and_is_deterministic() {
        let op = DropoutOp::new(0.1, 42);
        let m = op.mask(100_000);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "{dropped}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(m, DropoutOp::new(0.1, 42).mask(100_000));
        assert_ne!(m, DropoutOp::new(0.1, 43).mask(100_000));
    }

    #[test]
    fn device_masks_keep_one_minus_p_at_the_right_scale() {
        // The mask GPUs draw, drawn here through the same candle ops on CPU.
        let x = Tensor::zeros((200, 1000), DType::F32, &candle_core::Device::Cpu).unwrap();
        for p in [0.1f32, 0.5] {
            let m = device_mask(&x, p).unwrap();
            assert_eq!(m.dims(), x.dims());
            let m = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = 1.0 / (1.0 - p);
            assert!(m.iter().all(|&v| v == 0.0 || v == scale), "p {p}");
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
            // 200,000 draws: the standard deviation of the rate is at most 0.0012.
            assert!(
                (kept - (1.0 - p as f64)).abs() < 0.006,
                "p {p}: kept {kept}"
            );
        }
        // Inverted dropout keeps the mean: E[mask] = 1.
        let m = device_mask(&x, 0.1).unwrap().mean_all().unwrap();
        assert!((m.to_scalar::<f32>().unwrap() - 1.0).abs() < 0.01);
    }

    #[test]
    fn cpu_dropout_reference_keeps_the_counter_stream() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::ones((37, 53), DType::F32, &dev).unwrap();
        let got = dropout_reference(&x, 0.1, 7).unwrap();
        let want = DropoutOp::new(0.1, 7).mask(37 * 53);
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    }
    #[test]
    fn a_slice_at_any_offset_gets_its_part_of_the_mask() {
        let op = DropoutOp::new(0.3, 11);
        let whole: Vec<f32> = (0..64).map(|i| op.factors(i / 4)[i % 4]).collect();
        assert_eq!(op.mask(64), whole);
        for start in 0..9 {
            for n in 0..12 {
                let x: Vec<f32> = (0..n).map(|i| 1.5 + i as f32).collect();
                let want: Vec<f32> = x.iter().zip(&whole[start..]).map(|(x, m)| x * m).collect();
                let mut y = vec![0f32; n];
                op.apply(start, &x, &mut y);
                assert_eq!(y, want, "start {start}, {n} elements");
                let mut y = x.clone();
                op.apply_in_place(start, &mut y);
                assert_eq!(y, want, "in place: start {start}, {n} elements");
            }
        }
    }
}
