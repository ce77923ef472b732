//! bf16 matrix products for inference on CPUs with AVX512-BF16 (`vdpbf16ps`): inputs rounded to
//! bf16, products summed in f32. Twice the multiply-adds per instruction of f32 FMA, for weights
//! and activations rounded to 8 significant bits.
//!
//! No maintained Rust crate has such a kernel (`gemm` widens bf16 to f32), so this is a small one:
//! weights packed once into panels of 32 columns with pairs of consecutive rows interleaved (the
//! layout `vdpbf16ps` reads), activations rounded a row at a time, and a 12 x 32 register-blocked
//! kernel. Every output is summed over the inner dimension in the same order whatever the number
//! of rows, so a row's result does not depend on its batch.

use super::host::{product_shape, Host, HostKernel, Input};
use candle_core::{bail, Result, Shape, Tensor};
use std::sync::Arc;

/// Columns per packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per kernel call.
const MR: usize = 12;

/// Whether this CPU runs the bf16 kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `f32` to bf16 bits, rounding to nearest even (as `vcvtne2ps2bf16`; NaN stays NaN).
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// A weight `[k, n]` (rows: inputs, columns: outputs) rounded to bf16 and packed for the kernel.
#[derive(Debug)]
pub struct PackedWeight {
    k: usize,
    n: usize,
    /// Panel `j`, row pair `p`, column `c` at `(j * pairs + p) * NR + c`: the bf16 of rows `2p`
    /// (low half) and `2p + 1` (high half) of column `j * NR + c`; zero beyond `k` and `n`.
    data: Vec<u32>,
}

impl PackedWeight {
    /// Packs `w`, `[k, n]` row-major.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "PackedWeight::new: a [{k}, {n}] weight");
        let (pairs, panels) = (k.div_ceil(2), n.div_ceil(NR));
        let mut data = vec![0u32; panels * pairs * NR];
        let at = |row: usize, col: usize| {
            if row < k {
                to_bf16(w[row * n + col]) as u32
            } else {
                0
            }
        };
        for j in 0..panels {
            for p in 0..pairs {
                for c in 0..NR.min(n - j * NR) {
                    let col = j * NR + c;
                    data[(j * pairs + p) * NR + c] = at(2 * p, col) | (at(2 * p + 1, col) << 16);
                }
            }
        }
        PackedWeight { k, n, data }
    }

    /// Packs a `[k, n]` tensor.
    pub fn from_tensor(w: &Tensor) -> Result<Self> {
        let (k, n) = w.dims2()?;
        let v = w.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::new(&v, k, n))
    }
}

/// `x w` for `x` `[rows, k]` (f32) with the packed bf16 weight `w`: f32 `[rows, n]`.
pub fn matmul(x: &Tensor, w: &Arc<PackedWeight>) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&Host(Bf16Matmul(Arc::clone(w))))
}

struct Bf16Matmul(Arc<PackedWeight>);

impl HostKernel<1> for Bf16Matmul {
    const NAME: &'static str = "newstag-bf16-matmul";

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let w = &self.0;
        let (rows, shape) = product_shape("bf16 matmul", &x, w.k, w.n)?;
        if !supported() {
            bail!("bf16 matmul: this CPU lacks AVX512-BF16")
        }
        let mut y = vec![0f32; rows * w.n];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked above).
        unsafe {
            kernel::matmul(x.data, rows, w, &mut y)
        };
        Ok((y, shape))
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{to_bf16, PackedWeight, MR, NR};
    use crate::kernels::host::{par_blocks, DisjointOut};
    use std::arch::x86_64::*;

    /// `y = x w` (see [`super::matmul`]).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `x` is `[rows, w.k]`, `y` is `[rows, w.n]`.
    pub(super) unsafe fn matmul(x: &[f32], rows: usize, w: &PackedWeight, y: &mut [f32]) {
        let (k, n) = (w.k, w.n);
        let pairs = k.div_ceil(2);
        // Activations rounded to bf16, row pairs interleaved as the weight's, rows padded to MR.
        let row_blocks = rows.div_ceil(MR);
        let mut xb = vec![0u32; row_blocks * MR * pairs];
        for (r, row) in x.chunks_exact(k).enumerate() {
            // SAFETY: the caller's promise about the CPU.
            unsafe { round_row(row, &mut xb[r * pairs..][..pairs]) };
        }
        let out = DisjointOut::new(y);
        par_blocks((rows, k, n), (MR, NR), 1, |rb, j, _| {
            let panel = &w.data[j * pairs * NR..][..pairs * NR];
            let cols = NR.min(n - j * NR);
            let a = &xb[rb * MR * pairs..][..MR * pairs];
            let valid = MR.min(rows - rb * MR);
            // SAFETY: the CPU (the caller's promise); this call alone writes rows `rb * MR..` up
            // to `valid` and columns `j * NR..` up to `cols` of `y`.
            unsafe {
                block(
                    a,
                    panel,
                    pairs,
                    out.at(rb * MR * n + j * NR),
                    n,
                    valid,
                    cols,
                )
            };
        });
    }

    /// Rounds a row of `f32` to bf16 pairs (a zero pads an odd length).
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn round_row(row: &[f32], out: &mut [u32]) {
        let mut chunks = row.chunks_exact(32);
        let mut o = 0;
        for c in &mut chunks {
            // SAFETY: `c` has 32 elements and `out` 16 more from `o` (it has k / 2 rounded up).
            unsafe {
                let lo = _mm512_loadu_ps(c.as_ptr());
                let hi = _mm512_loadu_ps(c.as_ptr().add(16));
                let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(out.as_mut_ptr().add(o).cast(), b);
            }
            o += 16;
        }
        for (p, pair) in chunks.remainder().chunks(2).enumerate() {
            let hi = pair.get(1).map_or(0, |&v| to_bf16(v) as u32);
            out[o + p] = to_bf16(pair[0]) as u32 | (hi << 16);
        }
    }

    /// One MR x NR block of `y`: rows of `a` (MR rows of `pairs` bf16 pairs) times a weight panel;
    /// stores the first `valid` rows and `cols` columns at `y` (row stride `ldy`).
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn block(
        a: &[u32],
        panel: &[u32],
        pairs: usize,
        y: *mut f32,
        ldy: usize,
        valid: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..pairs {
            // SAFETY: `panel` holds `pairs * NR` values, `a` holds `MR * pairs`.
            unsafe {
                let w0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(panel.as_ptr().add(p * NR).cast()));
                let w1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(panel.as_ptr().add(p * NR + 16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                        *a.get_unchecked(r * pairs + p) as i32,
                    ));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                }
            }
        }
        let mask0 = if cols >= 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        let mask1 = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for (r, acc) in acc.iter().enumerate().take(valid) {
            // SAFETY: row `r < valid` and the masked columns lie inside `y` (the caller's promise).
            unsafe {
                let row = y.add(r * ldy);
                _mm512_mask_storeu_ps(row, mask0, acc[0]);
                _mm512_mask_storeu_ps(row.add(16), mask1, acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::host::AWKWARD_SHAPES;
    use candle_core::Device;

    fn from_bf16(b: u16) -> f32 {
        f32::from_bits((b as u32) << 16)
    }

    /// `x w` from the packed weight, one output at a time in f64: what the kernel computes up to
    /// the order of its f32 sums.
    fn reference(x: &[f32], rows: usize, w: &PackedWeight) -> Vec<f32> {
        let (k, n, pairs) = (w.k, w.n, w.k.div_ceil(2));
        let mut y = vec![0f32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                let (j, col) = (c / NR, c % NR);
                let mut s = 0f64;
                for p in 0..pairs {
                    let packed = w.data[(j * pairs + p) * NR + col];
                    for (half, row) in [(packed & 0xffff, 2 * p), (packed >> 16, 2 * p + 1)] {
                        if row < k {
                            let a = from_bf16(to_bf16(x[r * k + row]));
                            s += a as f64 * from_bf16(half as u16) as f64;
                        }
                    }
                }
                y[r * n + c] = s as f32;
            }
        }
        y
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // A little above halfway rounds up.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 0x3f81);
        // Halfway from an odd value rounds up to the even one.
        assert_eq!(to_bf16(from_bf16(0x3f81) + 1.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(
            to_bf16(f32::MAX),
            0x7f80,
            "overflows to infinity, as the hardware does"
        );
    }

    #[test]
    fn packing_keeps_every_weight_rounded_in_its_place() {
        // Odd k and n not a multiple of the panel width.
        let (k, n) = (7, 37);
        let w: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let packed = PackedWeight::new(&w, k, n);
        // The identity picks the rows of w back out.
        let eye: Vec<f32> = (0..k * k)
            .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
            .collect();
        let got = reference(&eye, k, &packed);
        let want: Vec<f32> = w.iter().map(|&v| from_bf16(to_bf16(v))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn kernel_matches_the_reference_at_awkward_shapes() {
        if !supported() {
            eprintln!("skipped: this CPU lacks AVX512-BF16");
            return;
        }
        for (rows, k, n) in AWKWARD_SHAPES {
            let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let w: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.07).sin()).collect();
            let packed = Arc::new(PackedWeight::new(&w, k, n));
            let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
            let got = matmul(&xt, &packed).unwrap();
            assert_eq!(got.dims(), [rows, n]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = reference(&x, rows, &packed);
            for (g, r) in got.iter().zip(&want) {
                assert!(
                    (g - r).abs() <= 1e-5 * (1.0 + r.abs()),
                    "{rows}x{k}x{n}: {g} vs {r}"
                );
            }
            // A row alone gives the same bits as among others.
            let last = xt.narrow(0, rows - 1, 1).unwrap();
            let alone = matmul(&last, &packed).unwrap().flatten_all().unwrap();
            assert_eq!(alone.to_vec1::<f32>().unwrap(), got[(rows - 1) * n..]);
        }
    }

    #[test]
    fn a_mismatched_input_is_an_error() {
        let packed = Arc::new(PackedWeight::new(&[0.0; 6], 2, 3));
        let x = Tensor::zeros((4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(matmul(&x, &packed).is_err());
    }
}
