//! Resumable checkpoints. Each is a complete directory `checkpoints/step-N/` (model, optimiser
//! moments, state) written before `checkpoints/latest.json` is atomically pointed at it, so a run
//! killed at any moment leaves the previous checkpoint or the new one, never a broken one. The
//! state saved is the run's [`TrainState`], which the loop updates in place.

use super::optim::AdamW;
use super::state::TrainState;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::model::params::safetensors_bytes;
use crate::model::NewsTagger;
use anyhow::Context;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The checkpoints of one run directory.
pub struct Checkpoint {
    root: PathBuf,
}

impl Checkpoint {
    pub fn new(run: &Path) -> Self {
        Checkpoint {
            root: run.join("checkpoints"),
        }
    }

    /// Writes a checkpoint for `state` and makes it the latest; older ones are removed. Weights
    /// that are no longer finite are refused (an error), so the latest checkpoint stays a good one.
    pub fn save(
        &self,
        model: &NewsTagger,
        optimizer: &AdamW,
        state: &TrainState,
    ) -> anyhow::Result<()> {
        if let Some(name) = first_non_finite(model)? {
            anyhow::bail!(
                "the weights became non-finite at step {} (tensor {name}): stopping; {}. Try a lower --lr.",
                state.step,
                Self::last_good(self.root.parent().unwrap_or(Path::new(".")))
            );
        }
        let name = format!("step-{:07}", state.step);
        let dir = self.root.join(&name);
        model.save(&dir)?;
        write_atomic(
            &dir.join("optimizer.safetensors"),
            &safetensors_bytes(&optimizer.state())?,
        )?;
        let mut state = state.clone();
        state.dir = name.clone();
        write_json_atomic(&self.root.join("latest.json"), &state)?;
        // Only now may older checkpoints go.
        for entry in std::fs::read_dir(&self.root)?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with("step-") && n != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Says which checkpoint a stopped run keeps, for error messages.
    pub fn last_good(run: &Path) -> String {
        match Self::latest(run) {
            Ok(Some((state, dir))) => format!(
                "the last good checkpoint (step {}) is kept in {}",
                state.step,
                dir.display()
            ),
            _ => format!("no checkpoint had been written yet in {}", run.display()),
        }
    }

    /// The latest state of a run, if it has one.
    pub fn latest(run: &Path) -> anyhow::Result<Option<(TrainState, PathBuf)>> {
        let root = run.join("checkpoints");
        let path = root.join("latest.json");
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let state: TrainState = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid checkpoint state", path.display()))?;
        let dir = root.join(&state.dir);
        Ok(Some((state, dir)))
    }

    /// The optimiser moments saved with `state`.
    pub fn load_optimizer(
        run: &Path,
        state: &TrainState,
    ) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let path = run
            .join("checkpoints")
            .join(&state.dir)
            .join("optimizer.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("{}: cannot load optimiser state", path.display()))?;
        Ok(tensors.into_iter().collect())
    }
}

/// The name of the first variable holding a NaN or an infinity, if any.
pub(crate) fn first_non_finite(model: &NewsTagger) -> anyhow::Result<Option<String>> {
    for (name, var) in model.vars() {
        // x * 0 is 0 for every finite x and NaN for NaN and ±inf.
        let zeros = (var.as_tensor() * 0.0)?.sum_all()?.to_scalar::<f32>()?;
        if zeros != 0.0 {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{BertConfig, WindowConfig};
    use crate::model::tiny::tiny_tokenizer;
    use crate::train::optim::{AdamW, AdamWConfig};

    #[test]
    fn non_finite_weights_are_never_checkpointed() {
        let tokenizer = tiny_tokenizer(&["oil"]).unwrap();
        let bert = BertConfig::tiny(tokenizer.get_vocab_size(true));
        let types = ["PER".to_string()];
        let model = NewsTagger::random(
            bert,
            tokenizer,
            &types,
            &[],
            WindowConfig::default(),
            1,
            &Device::Cpu,
        )
        .unwrap();
        let optimizer = AdamW::new(model.vars(), AdamWConfig::default()).unwrap();
        let run = tempfile::tempdir().unwrap();
        let ckpt = Checkpoint::new(run.path());
        let mut state = TrainState {
            step: 3,
            ..TrainState::default()
        };
        ckpt.save(&model, &optimizer, &state).unwrap();
        assert_eq!(Checkpoint::latest(run.path()).unwrap().unwrap().0.step, 3);

        let var = &model.vars()["classifier.bias"];
        let n = var.as_tensor().dims1().unwrap();
        let mut poisoned = vec![0f32; n];
        poisoned[n - 1] = f32::INFINITY;
        var.set(&Tensor::new(poisoned.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
        state.step = 4;
        let err = ckpt
            .save(&model, &optimizer, &state)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the weights became non-finite at step 4 (tensor classifier.bias)")
                && err.contains("the last good checkpoint (step 3) is kept"),
            "{err}"
        );
        let (kept, dir) = Checkpoint::latest(run.path()).unwrap().unwrap();
        assert_eq!(kept.step, 3);
        NewsTagger::load(&dir, &Device::Cpu).unwrap();
        assert!(!run.path().join("checkpoints/step-0000004").exists());
    }
}
