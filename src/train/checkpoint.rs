//! Resumable checkpoints. Each is a complete directory `checkpoints/step-N/` (model, optimiser
//! moments, state) written before `checkpoints/latest.json` is atomically pointed at it, so a run
//! killed at any moment leaves the previous checkpoint or the new one, never a broken one.

use super::optim::AdamW;
use super::EpochRecord;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::model::params::safetensors_bytes;
use crate::model::NewsTagger;
use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a run stands: everything besides weights and moments that resuming needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Current epoch (0-based) and batches of it already done.
    pub epoch: usize,
    pub batch: usize,
    pub best_score: Option<f64>,
    pub bad_epochs: usize,
    pub history: Vec<EpochRecord>,
    /// Real sub-tokens trained on and seconds spent in training steps (for tokens/s).
    pub tokens: usize,
    pub train_seconds: f64,
    /// The checkpoint directory (under `checkpoints/`) holding this state's weights.
    pub dir: String,
}

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

    /// Writes a checkpoint for `state` and makes it the latest; older ones are removed.
    pub fn save(
        &self,
        model: &NewsTagger,
        optimizer: &AdamW,
        state: &TrainState,
    ) -> anyhow::Result<()> {
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
