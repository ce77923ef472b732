//! Trainable parameters: loaded from safetensors (only safetensors: no pickle), created with a
//! seeded initialiser when a checkpoint lacks them, and saved atomically.
//!
//! [`ParamStore`] is a candle `SimpleBackend`, so model code asks for tensors through an ordinary
//! `VarBuilder`; every tensor it hands out is a `Var` the optimiser can update.

use super::family::Family;
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
    /// Tensors outside the encoder (the family's prefix) are created fresh (a base model gets
    /// new heads); an encoder tensor must be there unless the checkpoint is empty.
    InitHeads,
}

/// A checkpoint's tensors under canonical names ([`Family::canonical_name`]), and the variables
/// built from them.
pub struct ParamStore {
    source: HashMap<String, Tensor>,
    family: Family,
    missing: Missing,
    vars: Mutex<BTreeMap<String, Var>>,
    rng: Mutex<StdRng>,
}

impl ParamStore {
    /// A store with no checkpoint: every tensor is initialised from `seed`.
    pub fn fresh(seed: u64) -> Self {
        Self::with_source(HashMap::new(), Family::Bert, Missing::InitHeads, seed)
    }

    /// Loads a BERT checkpoint ([`ParamStore::load_family`]).
    pub fn load(path: &Path, missing: Missing, seed: u64) -> anyhow::Result<Self> {
        Self::load_family(path, Family::Bert, missing, seed)
    }

    /// Loads a safetensors file of a `family` encoder, validating its header before any tensor
    /// is read.
    pub fn load_family(
        path: &Path,
        family: Family,
        missing: Missing,
        seed: u64,
    ) -> anyhow::Result<Self> {
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
            source.insert(family.canonical_name(&name), t);
        }
        Ok(Self::with_source(source, family, missing, seed))
    }

    fn with_source(
        source: HashMap<String, Tensor>,
        family: Family,
        missing: Missing,
        seed: u64,
    ) -> Self {
        ParamStore {
            source,
            family,
            missing,
            vars: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The encoder's tensor-name prefix, with its dot (`bert.`).
    fn encoder_prefix(&self) -> String {
        format!("{}.", self.family.prefix())
    }

    /// Forgets every checkpoint tensor outside the encoder (a base model's own heads: a
    /// masked-LM or discriminator head, another task's classifier), returning their names, sorted.
    pub fn retain_encoder(&mut self) -> Vec<String> {
        let prefix = self.encoder_prefix();
        let mut dropped: Vec<String> = self
            .source
            .keys()
            .filter(|n| !n.starts_with(&prefix))
            .cloned()
            .collect();
        dropped.sort();
        self.source.retain(|name, _| name.starts_with(&prefix));
        dropped
    }

    /// What happens to tensors the checkpoint lacks.
    pub fn missing(&self) -> Missing {
        self.missing
    }

    /// How many checkpoint tensors belong to the encoder (under the family's prefix).
    pub fn encoder_tensors(&self) -> usize {
        let prefix = self.encoder_prefix();
        self.source
            .keys()
            .filter(|n| n.starts_with(&prefix))
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
        let prefix = self.family.layer_prefix();
        self.source
            .keys()
            .filter_map(|n| n.strip_prefix(&prefix)?.split('.').next())
            .filter_map(|i| i.parse::<usize>().ok())
            .max()
            .map(|i| i + 1)
    }

    /// Checkpoint tensors no variable was built from (besides [`Family::optional_tensors`]),
    /// sorted.
    pub fn unused(&self) -> Vec<String> {
        let vars = self.vars.lock().expect("poisoned");
        let optional = self.family.optional_tensors();
        let mut unused: Vec<String> = self
            .source
            .keys()
            .filter(|n| !vars.contains_key(*n))
            .filter(|n| !optional.iter().any(|o| n.starts_with(o.as_str())))
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
                || (name.starts_with(&self.encoder_prefix()) && !self.source.is_empty()) =>
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
        let bert = |n| Family::Bert.canonical_name(n);
        assert_eq!(
            bert("encoder.layer.0.output.LayerNorm.gamma"),
            "bert.encoder.layer.0.output.LayerNorm.weight"
        );
        assert_eq!(
            bert("bert.embeddings.LayerNorm.beta"),
            "bert.embeddings.LayerNorm.bias"
        );
        assert_eq!(bert("classifier.weight"), "classifier.weight");
        // A bare encoder's names take the family's prefix (XLM-RoBERTa's is `roberta`).
        assert_eq!(
            Family::DistilBert.canonical_name("transformer.layer.1.ffn.lin1.weight"),
            "distilbert.transformer.layer.1.ffn.lin1.weight"
        );
        assert_eq!(
            Family::XlmRoberta.canonical_name("embeddings.word_embeddings.weight"),
            "roberta.embeddings.word_embeddings.weight"
        );
        assert_eq!(
            Family::Electra.canonical_name("discriminator_predictions.dense.weight"),
            "discriminator_predictions.dense.weight"
        );
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
