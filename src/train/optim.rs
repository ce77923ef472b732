//! AdamW with decoupled weight decay (none on biases and LayerNorm weights), a linear warm-up and
//! decay schedule, and gradient-norm clipping. The moments are saved as named tensors so a killed
//! run resumes with the exact optimiser state.
//!
//! On CPU (f32 variables) each parameter is updated in one fused parallel pass over its value,
//! gradient and moments, in place; elsewhere the update is composed from tensor ops.

use crate::kernels::host::par_chunks_mut;
use candle_core::{
    backprop::GradStore, CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor, Var,
};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Elements per parallel chunk of the fused optimiser passes.
const CHUNK: usize = 1 << 14;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments of one variable.
enum Moments {
    /// Host vectors, updated in place by the fused CPU step.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Tensors on the variable's device, replaced by the tensor-op step.
    Tensors { m: Tensor, v: Tensor },
}

struct Slot {
    var: Var,
    moments: Moments,
    decay: bool,
}

/// AdamW over named variables.
pub struct AdamW {
    slots: BTreeMap<String, Slot>,
    config: AdamWConfig,
    step: usize,
}

/// Can the fused step update this variable (a CPU f32 tensor)?
fn host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

fn host_moments(var: &Var, m: &Tensor, v: &Tensor) -> candle_core::Result<Moments> {
    let host = |t: &Tensor| {
        t.to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let (m, v) = (host(m)?, host(v)?);
    if m.len() != var.elem_count() || v.len() != var.elem_count() {
        candle_core::bail!("optimiser moments do not match their variable")
    }
    Ok(Moments::Host { m, v })
}

/// Reads a contiguous CPU f32 tensor's data and passes it to `f`.
fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) =
        (&*storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("expected a contiguous f32 CPU tensor")
    };
    Ok(f(&data[a..b]))
}

/// The per-step constants of the AdamW update, as `f32` (as candle's affine ops use them).
#[derive(Clone, Copy)]
struct Coefficients {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bc1: f32,
    inv_bc2: f32,
    eps: f32,
    lr: f32,
    /// `1 - lr * weight_decay`, or 1 for a variable without decay.
    decay: f32,
}

/// The fused update of one variable, in place: moments, then the decayed parameter.
struct FusedUpdate<'a> {
    grad: &'a [f32],
    /// Multiplies each gradient element as it is read (gradient clipping).
    grad_scale: f32,
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    k: Coefficients,
}

impl InplaceOp1 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "newstag-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(data), Some((a, b))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("adamw: expected a contiguous f32 variable")
        };
        let theta = &mut data[a..b];
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        let (m, v): (&mut [f32], &mut [f32]) = (&mut m, &mut v);
        if theta.len() != self.grad.len() || m.len() != theta.len() || v.len() != theta.len() {
            candle_core::bail!("adamw: gradient or moments do not match the variable")
        }
        let (g, k, scale) = (self.grad, self.k, self.grad_scale);
        par_chunks_mut(
            [(theta, CHUNK), (m, CHUNK), (v, CHUNK)],
            |c, [theta, m, v]| {
                let g = &g[c * CHUNK..][..theta.len()];
                for (((theta, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
                    // `scale` 1 leaves `g` exact: the unclipped update is unchanged.
                    let g = g * scale;
                    *m = *m * k.beta1 + g * k.one_minus_beta1;
                    *v = *v * k.beta2 + g * g * k.one_minus_beta2;
                    let update = (*m * k.inv_bc1) / ((*v * k.inv_bc2).sqrt() + k.eps);
                    *theta = *theta * k.decay - update * k.lr;
                }
            },
        );
        Ok(())
    }
}

/// Biases and LayerNorm parameters take no weight decay (as in BERT's recipe).
pub fn takes_decay(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

impl AdamW {
    pub fn new(vars: BTreeMap<String, Var>, config: AdamWConfig) -> candle_core::Result<Self> {
        // Training starts: keep the large buffers every step allocates for reuse.
        crate::runtime::tune_allocator(crate::runtime::Workload::Training);
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let moments = if host_f32(&var) {
                    let n = var.elem_count();
                    Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    Moments::Tensors {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    }
                };
                let decay = takes_decay(&name);
                Ok((
                    name,
                    Slot {
                        var,
                        moments,
                        decay,
                    },
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(AdamW {
            slots,
            config,
            step: 0,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Updates with the tensor-op formula instead of the fused CPU pass (for tests and
    /// benchmarks; both give the same result up to float rounding).
    pub fn use_tensor_ops(&mut self) -> candle_core::Result<()> {
        for slot in self.slots.values_mut() {
            if let Moments::Host { m, v } = &slot.moments {
                let (shape, dev) = (slot.var.shape(), slot.var.device());
                slot.moments = Moments::Tensors {
                    m: Tensor::from_slice(m, shape, dev)?,
                    v: Tensor::from_slice(v, shape, dev)?,
                };
            }
        }
        Ok(())
    }

    /// Applies one update with learning rate `lr` (gradients already clipped).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> candle_core::Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`clip_grad_norm`] then [`AdamW::step`], with the clipping factor applied inside the
    /// update instead of to copies of the gradients first (the same result: one pass over them
    /// and their memory fewer). Returns the norm before clipping; when it is not finite nothing
    /// is updated.
    pub fn step_clipped(
        &mut self,
        grads: &GradStore,
        lr: f64,
        max_norm: f64,
    ) -> candle_core::Result<f64> {
        let present: Vec<&Tensor> = self
            .slots
            .values()
            .filter_map(|s| grads.get(s.var.as_tensor()))
            .collect();
        let on_host = present.iter().all(|g| host_f32(g));
        let norm = global_norm(&present, !on_host)?;
        if norm.is_finite() {
            self.step_scaled(grads, lr, clip_scale(norm, max_norm).unwrap_or(1.0))?;
        }
        Ok(norm)
    }

    /// One update from the gradients multiplied by `grad_scale`.
    fn step_scaled(
        &mut self,
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> candle_core::Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for slot in self.slots.values_mut() {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            match &mut slot.moments {
                Moments::Host { m, v } if host_f32(g) => {
                    let k = Coefficients {
                        beta1: c.beta1 as f32,
                        one_minus_beta1: (1.0 - c.beta1) as f32,
                        beta2: c.beta2 as f32,
                        one_minus_beta2: (1.0 - c.beta2) as f32,
                        inv_bc1: (1.0 / bc1) as f32,
                        inv_bc2: (1.0 / bc2) as f32,
                        eps: c.eps as f32,
                        lr: lr as f32,
                        decay: if slot.decay {
                            (1.0 - lr * c.weight_decay) as f32
                        } else {
                            1.0
                        },
                    };
                    with_host_f32(g, |grad| {
                        slot.var.as_tensor().inplace_op1(&FusedUpdate {
                            grad,
                            grad_scale: grad_scale as f32,
                            m: RefCell::new(m),
                            v: RefCell::new(v),
                            k,
                        })
                    })??;
                }
                Moments::Host { .. } => {
                    candle_core::bail!("a gradient on another device than its CPU variable")
                }
                Moments::Tensors { m, v } => {
                    let scaled;
                    let g = if grad_scale == 1.0 {
                        g
                    } else {
                        scaled = (g * grad_scale)?;
                        &scaled
                    };
                    *m = ((&*m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
                    *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let update = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + c.eps)?)?;
                    let theta = slot.var.as_tensor();
                    let decayed = if slot.decay {
                        (theta * (1.0 - lr * c.weight_decay))?
                    } else {
                        theta.clone()
                    };
                    slot.var.set(&(decayed - (update * lr)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// Moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.slots {
            let (m, v) = match &s.moments {
                Moments::Host { m, v } => {
                    let (shape, dev) = (s.var.shape(), s.var.device());
                    let t = |x: &[f32]| {
                        Tensor::from_slice(x, shape, dev).expect("moments match their variable")
                    };
                    (t(m), t(v))
                }
                Moments::Tensors { m, v } => (m.clone(), v.clone()),
            };
            out.insert(format!("m.{name}"), m);
            out.insert(format!("v.{name}"), v);
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] after `steps` steps.
    pub fn restore(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        steps: usize,
    ) -> anyhow::Result<()> {
        for (name, s) in self.slots.iter_mut() {
            let mut loaded = Vec::with_capacity(2);
            for key in [format!("m.{name}"), format!("v.{name}")] {
                let t = state
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("optimiser state lacks {key}"))?;
                anyhow::ensure!(
                    t.shape() == s.var.shape(),
                    "optimiser state {key} has shape {:?}, expected {:?}",
                    t.dims(),
                    s.var.dims()
                );
                loaded.push(t.to_device(s.var.device())?);
            }
            let (m, v) = (&loaded[0], &loaded[1]);
            s.moments = match s.moments {
                Moments::Host { .. } => host_moments(&s.var, m, v)?,
                Moments::Tensors { .. } => Moments::Tensors {
                    m: m.clone(),
                    v: v.clone(),
                },
            };
        }
        self.step = steps;
        Ok(())
    }
}

/// Sum of squares of a CPU f32 slice: f32 within fixed chunks, f64 across them (deterministic).
fn sum_squares(x: &[f32]) -> f64 {
    let mut partial = vec![0f32; x.len().div_ceil(CHUNK)];
    par_chunks_mut([(&mut partial[..], 1)], |c, [p]| {
        let x = &x[c * CHUNK..x.len().min((c + 1) * CHUNK)];
        let mut acc = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        for c8 in chunks {
            for k in 0..8 {
                acc[k] += c8[k] * c8[k];
            }
        }
        p[0] = acc.iter().sum::<f32>() + tail;
    });
    partial.iter().map(|&p| p as f64).sum()
}

/// The sum of the squares of every element of `grads`, added up on their device (in f32) and
/// read back once: the only host round trip gradient clipping makes on a GPU. Runs on any device.
pub fn fused_sum_squares(grads: &[&Tensor]) -> candle_core::Result<f64> {
    let mut total: Option<Tensor> = None;
    for g in grads {
        let s = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
        total = Some(match total {
            Some(t) => (t + s)?,
            None => s,
        });
    }
    match total {
        Some(t) => Ok(t.to_scalar::<f32>()? as f64),
        None => Ok(0.0),
    }
}

/// `x * scale` into a new CPU tensor of `shape`, in parallel.
fn scaled(x: &[f32], scale: f32, shape: &candle_core::Shape) -> candle_core::Result<Tensor> {
    let mut out = vec![0f32; x.len()];
    par_chunks_mut([(&mut out[..], CHUNK)], |c, [o]| {
        for (o, &v) in o.iter_mut().zip(&x[c * CHUNK..]) {
            *o = v * scale;
        }
    });
    Tensor::from_vec(out, shape, &candle_core::Device::Cpu)
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before clipping.
///
/// With every gradient a CPU f32 tensor (CPU training), the sum of squares is taken on the host
/// per tensor, in f64 across chunks (deterministic, as before). Otherwise (a GPU) it is
/// [`fused_sum_squares`]: one device reduction per tensor added up on the device, and one scalar
/// read for the whole step instead of one synchronisation per tensor.
pub fn clip_grad_norm(
    vars: &BTreeMap<String, Var>,
    grads: &mut GradStore,
    max_norm: f64,
) -> candle_core::Result<f64> {
    let on_host = vars
        .values()
        .filter_map(|var| grads.get(var.as_tensor()))
        .all(host_f32);
    clip_grad_norm_by(vars, grads, max_norm, !on_host)
}

/// [`clip_grad_norm`] with the norm taken by [`fused_sum_squares`] (`fused`) or per tensor on
/// the host (only for CPU f32 gradients).
fn clip_grad_norm_by(
    vars: &BTreeMap<String, Var>,
    grads: &mut GradStore,
    max_norm: f64,
    fused: bool,
) -> candle_core::Result<f64> {
    let present: Vec<&Tensor> = vars
        .values()
        .filter_map(|var| grads.get(var.as_tensor()))
        .collect();
    let norm = global_norm(&present, fused)?;
    if let Some(scale) = clip_scale(norm, max_norm) {
        for var in vars.values() {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = if host_f32(g) {
                    with_host_f32(g, |x| scaled(x, scale as f32, g.shape()))??
                } else {
                    (g * scale)?
                };
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// The L2 norm of all of `grads` together: per tensor on the host, or with [`fused_sum_squares`].
fn global_norm(grads: &[&Tensor], fused: bool) -> candle_core::Result<f64> {
    let total = if !fused {
        let mut total = 0f64;
        for g in grads {
            total += with_host_f32(g, sum_squares)?;
        }
        total
    } else {
        fused_sum_squares(grads)?
    };
    Ok(total.sqrt())
}

/// The factor that brings gradients of global norm `norm` down to `max_norm`, if they are above.
fn clip_scale(norm: f64, max_norm: f64) -> Option<f64> {
    (norm.is_finite() && norm > max_norm).then(|| max_norm / (norm + 1e-6))
}

/// Linear warm-up over `warmup` steps to `peak`, then linear decay to zero at `total`.
pub fn learning_rate(step: usize, warmup: usize, total: usize, peak: f64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        peak * (total.saturating_sub(step)) as f64 / (total - warmup).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((learning_rate(0, 10, 100, 1.0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 10, 100, 1.0) - 1.0).abs() < 1e-12);
        assert!((learning_rate(55, 10, 100, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(learning_rate(100, 10, 100, 1.0), 0.0);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_skips_decay_on_biases() {
        let dev = Device::Cpu;
        let w = Var::new(&[3.0f32, -2.0], &dev).unwrap();
        let b = Var::new(&[1.0f32], &dev).unwrap();
        let vars = BTreeMap::from([
            ("x.weight".to_string(), w.clone()),
            ("x.bias".to_string(), b.clone()),
        ]);
        let mut opt = AdamW::new(
            vars.clone(),
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..300 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let mut grads = loss.backward().unwrap();
            clip_grad_norm(&vars, &mut grads, 1.0).unwrap();
            opt.step(&grads, 0.1).unwrap();
        }
        let w = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!(w.iter().all(|x| x.abs() < 0.05), "{w:?}");
        assert_eq!(
            b.as_tensor().to_vec1::<f32>().unwrap(),
            [1.0],
            "no gradient and no decay on a bias"
        );
        assert_eq!(opt.state().len(), 4);
    }

    /// Two variables and a loss whose gradients are `c1` and `c2` (seeded, about 0.5 in size).
    fn two_gradients(seed: u64) -> (BTreeMap<String, Var>, Tensor) {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw = |n: usize| {
            (0..n)
                .map(|_| rng.random::<f32>() - 0.5)
                .collect::<Vec<_>>()
        };
        let (c1, c2) = (draw(10_000), draw(37 * 11));
        let w1 = Var::from_tensor(&Tensor::zeros(10_000, DType::F32, &dev).unwrap()).unwrap();
        let w2 = Var::from_tensor(&Tensor::zeros((37, 11), DType::F32, &dev).unwrap()).unwrap();
        let c1 = Tensor::from_vec(c1, 10_000, &dev).unwrap();
        let c2 = Tensor::from_vec(c2, (37, 11), &dev).unwrap();
        let loss = ((w1.as_tensor() * &c1).unwrap().sum_all().unwrap()
            + (w2.as_tensor() * &c2).unwrap().sum_all().unwrap())
        .unwrap();
        let vars = BTreeMap::from([("a.weight".to_string(), w1), ("b.weight".to_string(), w2)]);
        (vars, loss)
    }

    #[test]
    fn clipping_by_the_fused_norm_equals_clipping_by_per_tensor_norms() {
        for max_norm in [1.0, 1e6] {
            let (vars, loss) = two_gradients(3);
            let (mut host, mut fused) = (loss.backward().unwrap(), loss.backward().unwrap());
            // CPU f32 gradients take the per-tensor host path.
            let n_host = clip_grad_norm(&vars, &mut host, max_norm).unwrap();
            let n_fused = clip_grad_norm_by(&vars, &mut fused, max_norm, true).unwrap();
            assert!(n_host > 1.0, "{n_host}");
            assert!(
                ((n_fused - n_host) / n_host).abs() < 1e-6,
                "{n_fused} vs {n_host}"
            );
            for var in vars.values() {
                let a = host.get(var.as_tensor()).unwrap();
                let b = fused.get(var.as_tensor()).unwrap();
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-6 * x.abs().max(1e-3), "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn clipping_inside_the_update_gives_the_bits_of_clipping_first() {
        for max_norm in [1.0, 1e6] {
            let config = AdamWConfig {
                lr: 1e-2,
                ..Default::default()
            };
            let (vars_a, loss_a) = two_gradients(4);
            let (vars_b, loss_b) = two_gradients(4);
            let mut first = AdamW::new(vars_a.clone(), config).unwrap();
            let mut inside = AdamW::new(vars_b.clone(), config).unwrap();
            for _ in 0..3 {
                let mut grads = loss_a.backward().unwrap();
                let n_first = clip_grad_norm(&vars_a, &mut grads, max_norm).unwrap();
                first.step(&grads, 1e-2).unwrap();
                let grads = loss_b.backward().unwrap();
                let n_inside = inside.step_clipped(&grads, 1e-2, max_norm).unwrap();
                assert_eq!(n_first, n_inside);
            }
            for (a, b) in vars_a.values().zip(vars_b.values()) {
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(a, b, "max norm {max_norm}");
            }
        }
    }

    #[test]
    fn a_gradient_norm_that_is_not_finite_updates_nothing() {
        let (vars, loss) = two_gradients(5);
        let mut opt = AdamW::new(vars.clone(), AdamWConfig::default()).unwrap();
        let loss = (loss * f64::NAN).unwrap();
        let norm = opt
            .step_clipped(&loss.backward().unwrap(), 1e-2, 1.0)
            .unwrap();
        assert!(norm.is_nan());
        for var in vars.values() {
            let v = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|&x| x == 0.0));
        }
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn the_fused_norm_adds_up_every_tensor() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[3f32, 4.0], &dev).unwrap();
        let b = Tensor::new(&[[12f32]], &dev).unwrap();
        assert_eq!(fused_sum_squares(&[&a, &b]).unwrap(), 169.0);
        assert_eq!(fused_sum_squares(&[]).unwrap(), 0.0);
    }
}
