//! Trainable parameters: loaded from safetensors (only safetensors: no pickle), created with a
//! seeded initialiser when a checkpoint lacks them, and saved atomically.
//!
//! [`ParamStore`] is a candle `SimpleBackend`, so model code asks for tensors through an ordinary
//! `VarBuilder`; every tensor it hands out is a `Var` the optimiser can update.

use anyhow::Context;
use candle_core::{safetensors::Load, DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

/// What to do when a requested tensor is not in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Every tensor must be there (a saved newstag model).
    Error,
    /// Tensors outside the encoder (`bert.`) are created fresh (a base model gets new heads).
    InitHeads,
}

/// Checkpoint tensors a model may leave unused, by canonical name prefix, and why:
/// - `bert.pooler.`: the `[CLS]` pooler of a `BertModel` or pre-training checkpoint, which token
///   classification has no use for (transformers drops it too);
/// - `bert.embeddings.position_ids`, `bert.embeddings.token_type_ids`: index buffers (not weights)
///   that transformers checkpoints before 4.31 carry.
pub const OPTIONAL_TENSORS: [&str; 3] = [
    "bert.pooler.",
    "bert.embeddings.position_ids",
    "bert.embeddings.token_type_ids",
];

/// A checkpoint's tensors under canonical names, and the variables built from them.
pub struct ParamStore {
    source: HashMap<String, Tensor>,
    missing: Missing,
    vars: Mutex<BTreeMap<String, Var>>,
    rng: Mutex<StdRng>,
}

/// The canonical name of a checkpoint tensor: the encoder lives under `bert.`; old checkpoints'
/// LayerNorm `gamma`/`beta` become `weight`/`bias`.
pub fn canonical_name(name: &str) -> String {
    let mut n = name.to_string();
    for (old, new) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if n.contains("LayerNorm") && n.ends_with(old) {
            n.truncate(n.len() - old.len());
            n.push_str(new);
        }
    }
    if n.starts_with("embeddings.") || n.starts_with("encoder.") || n.starts_with("pooler.") {
        n = format!("bert.{n}");
    }
    n
}

impl ParamStore {
    /// A store with no checkpoint: every tensor is initialised from `seed`.
    pub fn fresh(seed: u64) -> Self {
        Self::with_source(HashMap::new(), Missing::InitHeads, seed)
    }

    /// Loads a safetensors file, validating its header before any tensor is read.
    pub fn load(path: &Path, missing: Missing, seed: u64) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display())
        })?;
        let mut source = HashMap::new();
        for (name, view) in tensors.tensors() {
            let t = view
                .load(&Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .with_context(|| format!("{}: tensor {name:?} cannot be read", path.display()))?;
            // x * 0 is 0 for every finite x and NaN for NaN and ±inf.
            let zeros = (&t * 0.0)
                .and_then(|z| z.sum_all()?.to_scalar::<f32>())
                .with_context(|| format!("{}: tensor {name:?} cannot be read", path.display()))?;
            anyhow::ensure!(
                zeros == 0.0,
                "{}: tensor {name:?} holds NaN or infinite values",
                path.display()
            );
            source.insert(canonical_name(&name), t);
        }
        Ok(Self::with_source(source, missing, seed))
    }

    fn with_source(source: HashMap<String, Tensor>, missing: Missing, seed: u64) -> Self {
        ParamStore {
            source,
            missing,
            vars: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Forgets every checkpoint tensor outside the encoder (`bert.`).
    pub fn retain_encoder(&mut self) {
        self.source.retain(|name, _| name.starts_with("bert."));
    }

    /// What happens to tensors the checkpoint lacks.
    pub fn missing(&self) -> Missing {
        self.missing
    }

    /// How many checkpoint tensors belong to the encoder (`bert.`).
    pub fn encoder_tensors(&self) -> usize {
        self.source
            .keys()
            .filter(|n| n.starts_with("bert."))
            .count()
    }

    /// Some checkpoint tensor names, sorted, for messages.
    pub fn sample_names(&self, n: usize) -> Vec<String> {
        let mut names: Vec<String> = self.source.keys().cloned().collect();
        names.sort();
        names.truncate(n);
        names
    }

    /// The number of encoder layers the checkpoint holds (`bert.encoder.layer.N.`: the highest
    /// N plus one), if it holds any.
    pub fn encoder_layers(&self) -> Option<usize> {
        self.source
            .keys()
            .filter_map(|n| n.strip_prefix("bert.encoder.layer.")?.split('.').next())
            .filter_map(|i| i.parse::<usize>().ok())
            .max()
            .map(|i| i + 1)
    }

    /// Checkpoint tensors no variable was built from (besides [`OPTIONAL_TENSORS`]), sorted.
    pub fn unused(&self) -> Vec<String> {
        let vars = self.vars.lock().expect("poisoned");
        let mut unused: Vec<String> = self
            .source
            .keys()
            .filter(|n| !vars.contains_key(*n))
            .filter(|n| !OPTIONAL_TENSORS.iter().any(|o| n.starts_with(o)))
            .cloned()
            .collect();
        unused.sort();
        unused
    }

    /// Variables initialised fresh rather than loaded from the checkpoint, sorted.
    pub fn initialised(&self) -> Vec<String> {
        let vars = self.vars.lock().expect("poisoned");
        vars.keys()
            .filter(|n| !self.source.contains_key(*n))
            .cloned()
            .collect()
    }

    /// Does the checkpoint hold this tensor (canonical name)?
    pub fn has(&self, name: &str) -> bool {
        self.source.contains_key(name)
    }

    /// The tensor stored in the checkpoint under a canonical name.
    pub fn source_tensor(&self, name: &str) -> Option<&Tensor> {
        self.source.get(name)
    }

    /// A `VarBuilder` over this store, on `device`.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'_> {
        VarBuilder::from_backend(Box::new(self), DType::F32, device.clone())
    }

    /// Every variable handed out, by name.
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.vars.lock().expect("poisoned").clone()
    }

    fn init(&self, shape: &Shape, init: Init, dev: &Device) -> candle_core::Result<Tensor> {
        let n = shape.elem_count();
        let data: Vec<f32> = match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Randn { mean, stdev } => {
                let normal =
                    Normal::new(mean as f32, stdev as f32).map_err(candle_core::Error::wrap)?;
                let mut rng = self.rng.lock().expect("poisoned");
                (0..n).map(|_| normal.sample(&mut *rng)).collect()
            }
            other => candle_core::bail!("unsupported initialiser {other:?}"),
        };
        Tensor::from_vec(data, shape.clone(), dev)
    }
}

impl candle_nn::var_builder::SimpleBackend for &ParamStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = match self.source.get(name) {
            Some(t) if t.shape() != &s => candle_core::bail!(
                "tensor {name:?} has shape {:?} in the checkpoint but the config implies {:?}",
                t.dims(),
                s.dims()
            ),
            Some(t) => t.to_device(dev)?.to_dtype(dtype)?,
            None if self.missing == Missing::Error
                || (name.starts_with("bert.") && !self.source.is_empty()) =>
            {
                candle_core::bail!("tensor {name:?} is missing from the checkpoint")
            }
            None => self.init(&s, h, dev)?.to_dtype(dtype)?,
        };
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        self.vars
            .lock()
            .expect("poisoned")
            .insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.source.get(name) {
            Some(t) => t.to_device(dev)?.to_dtype(dtype),
            None => candle_core::bail!("tensor {name:?} is missing from the checkpoint"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source.contains_key(name)
    }
}

/// Serialises named tensors to safetensors bytes.
pub fn safetensors_bytes(tensors: &BTreeMap<String, Tensor>) -> anyhow::Result<Vec<u8>> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(safetensors::serialize(
        cpu.iter().map(|(k, t)| (k.as_str(), t)),
        None,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(
            canonical_name("encoder.layer.0.output.LayerNorm.gamma"),
            "bert.encoder.layer.0.output.LayerNorm.weight"
        );
        assert_eq!(
            canonical_name("bert.embeddings.LayerNorm.beta"),
            "bert.embeddings.LayerNorm.bias"
        );
        assert_eq!(canonical_name("classifier.weight"), "classifier.weight");
    }

    #[test]
    fn seeded_init_is_reproducible_and_vars_are_recorded() {
        let dev = Device::Cpu;
        let a = ParamStore::fresh(7);
        let b = ParamStore::fresh(7);
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let ta = a
            .var_builder(&dev)
            .get_with_hints((3, 4), "w", init)
            .unwrap();
        let tb = b
            .var_builder(&dev)
            .get_with_hints((3, 4), "w", init)
            .unwrap();
        assert_eq!(ta.to_vec2::<f32>().unwrap(), tb.to_vec2::<f32>().unwrap());
        assert_eq!(a.vars().len(), 1);
    }

    #[test]
    fn rejects_garbage_and_hostile_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        std::fs::write(&p, b"not a safetensors file").unwrap();
        let err = ParamStore::load(&p, Missing::Error, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");
        // A header declaring a huge tensor past the end of the file.
        let header =
            br#"{"w":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&p, &bytes).unwrap();
        let err = ParamStore::load(&p, Missing::Error, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");
    }
}
