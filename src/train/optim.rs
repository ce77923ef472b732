//! AdamW with decoupled weight decay (none on biases and LayerNorm weights), a linear warm-up and
//! decay schedule, and gradient-norm clipping. The moments are kept as named tensors so a killed
//! run resumes with the exact optimiser state.

use candle_core::{backprop::GradStore, Tensor, Var};
use std::collections::BTreeMap;

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

struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over named variables.
pub struct AdamW {
    slots: BTreeMap<String, Slot>,
    config: AdamWConfig,
    step: usize,
}

/// Biases and LayerNorm parameters take no weight decay (as in BERT's recipe).
pub fn takes_decay(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

impl AdamW {
    pub fn new(vars: BTreeMap<String, Var>, config: AdamWConfig) -> candle_core::Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                let decay = takes_decay(&name);
                Ok((name, Slot { var, m, v, decay }))
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

    /// Applies one update with learning rate `lr` (gradients already clipped).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> candle_core::Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for slot in self.slots.values_mut() {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.m = ((&slot.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&slot.m / bc1)? / ((&slot.v / bc2)?.sqrt()? + c.eps)?)?;
            let theta = slot.var.as_tensor();
            let decayed = if slot.decay {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta.clone()
            };
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.slots {
            out.insert(format!("m.{name}"), s.m.clone());
            out.insert(format!("v.{name}"), s.v.clone());
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
            for (key, dst) in [
                (format!("m.{name}"), &mut s.m),
                (format!("v.{name}"), &mut s.v),
            ] {
                let t = state
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("optimiser state lacks {key}"))?;
                anyhow::ensure!(
                    t.shape() == dst.shape(),
                    "optimiser state {key} has shape {:?}, expected {:?}",
                    t.dims(),
                    dst.dims()
                );
                *dst = t.to_device(dst.device())?;
            }
        }
        self.step = steps;
        Ok(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(
    vars: &BTreeMap<String, Var>,
    grads: &mut GradStore,
    max_norm: f64,
) -> candle_core::Result<f64> {
    let mut total = 0f64;
    for var in vars.values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if norm.is_finite() && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for var in vars.values() {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
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
}
