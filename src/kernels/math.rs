//! The arithmetic the kernels share: small vectorisable reductions and `exp`/`erf` for `f32`.
//!
//! The reductions keep eight accumulators, so LLVM may use SIMD lanes. The tail of a row goes into
//! the same lanes as a zero-padded chunk would: a row's sum is then bit-identical however much
//! zero padding follows it (an article's scores do not depend on its batch-mates). `exp` and `erf`
//! are branch-free polynomial forms that LLVM vectorises inside the kernels' loops.

#[inline(always)]
fn combine8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `sum(f(a[i]))`.
#[inline(always)]
pub(crate) fn sum1(a: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[f32; 8] = c.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += f(c[k]);
        }
    }
    for (k, &v) in tail.iter().enumerate() {
        acc[k] += f(v);
    }
    combine8(acc)
}

/// `sum(f(a[i], b[i]))` over `a.len()` elements.
#[inline(always)]
pub(crate) fn sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = ca.remainder().iter().zip(cb.remainder());
    for (a, b) in ca.zip(cb) {
        let a: &[f32; 8] = a.try_into().expect("chunks of 8");
        let b: &[f32; 8] = b.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += f(a[k], b[k]);
        }
    }
    for (k, (&a, &b)) in tails.enumerate() {
        acc[k] += f(a, b);
    }
    combine8(acc)
}

/// `sum(f(a[i], b[i], c[i]))` over `a.len()` elements.
#[inline(always)]
pub(crate) fn sum3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let (b, c) = (&b[..a.len()], &c[..a.len()]);
    let mut acc = [0f32; 8];
    let (ca, cb, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tails = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder());
    for (k, ((&a, &b), &c)) in tails.enumerate() {
        acc[k] += f(a, b, c);
    }
    for ((a, b), c) in ca.zip(cb).zip(cc) {
        let a: &[f32; 8] = a.try_into().expect("chunks of 8");
        let b: &[f32; 8] = b.try_into().expect("chunks of 8");
        let c: &[f32; 8] = c.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += f(a[k], b[k], c[k]);
        }
    }
    combine8(acc)
}

#[inline(always)]
pub(crate) fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in tail {
        m = m.max(v);
    }
    m
}

/// `e^x` for `f32` (Cephes' `expf`: a degree-7 polynomial after reduction by ln 2), within 2 units
/// in the last place, in a form LLVM vectorises; exactly 0 below -87 (so a -1e9 mask bias gives
/// exactly 0, as `expf` does).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer, which its low mantissa bits then hold.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        e * two_n
    }
}

/// erf for `f32`: the rational approximation of Eigen and XLA (`x * P(x^2) / Q(x^2)` on [-4, 4],
/// ±1 beyond), within 4.2e-7 of erf. Branch-free and in `f32`, so LLVM vectorises it 16 lanes
/// wide (in `f64`, to within 1e-7, GELU took a tenth of inference time).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// The standard normal CDF, `(1 + erf(x / sqrt 2)) / 2`.
#[inline(always)]
pub(crate) fn normal_cdf(x: f32) -> f32 {
    (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5
}

/// Exact GELU, `x * normal_cdf(x)`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    normal_cdf(x) * x
}

/// 1 / sqrt(2 pi), the standard normal density at 0.
pub(crate) const INV_SQRT_2PI: f32 = 0.398_942_3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate_to_5e7() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            let want = libm_erf(x);
            let got = erf_f32(x as f32) as f64;
            worst = worst.max((got - want).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction for erfc (beyond).
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut f = 0.0;
            for n in (1..100).rev() {
                f = (n as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 / 10_000.0;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
