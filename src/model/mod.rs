//! The model: an encoder of one of the supported families ([`family::Family`], chosen by
//! `model_type`; one file each: [`bert`], [`electra`], [`distilbert`], [`roberta`],
//! [`deberta_v2`], [`modernbert`]) behind the [`encoder::Encoder`] interface, shared by two heads,
//! token classification over BIO tags and multi-label document topics. A saved model is a
//! directory that Hugging Face transformers loads
//! as its family's `...ForTokenClassification`; the topic head rides along under its own tensor
//! prefix.

pub mod bert;
pub mod calibration;
pub mod config;
pub mod deberta_v2;
pub mod distilbert;
pub mod electra;
pub mod encoder;
pub mod family;
pub mod layers;
pub mod modernbert;
pub mod modernbert_config;
pub mod params;
pub mod roberta;
pub mod source;
pub mod tiny;
pub mod topic_pooling;

use crate::encode::{Batch, SpecialTokens};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::kernels::{self as ops, bf16};
use anyhow::Context;
use candle_core::{Device, Module, Tensor, Var};
use candle_nn::{Init, Linear, VarBuilder};
use config::{BertConfig, ModelConfig, TagSet, WindowConfig};
use encoder::{Encoder, Mode};
use family::Family;
use layers::Prepared;
use params::{Missing, ParamStore};
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::Tokenizer;

/// Tensor prefix of the topic head in `model.safetensors`.
pub const TOPIC_HEAD: &str = "topic_classifier";

/// Encoder, entity head, topic head and tokenizer.
pub struct NewsTagger {
    pub config: ModelConfig,
    pub tags: TagSet,
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
    encoder: Box<dyn Encoder>,
    classifier: Linear,
    /// What the family's token classifier applies before `classifier` ([`Family::token_head`]).
    token_head: Option<modernbert::PredictionHead>,
    topic_head: Option<Linear>,
    store: ParamStore,
    /// The base checkpoint's own heads, left out ([`NewsTagger::from_base`]).
    dropped_base_tensors: Vec<String>,
    device: Device,
}

/// What the encoder and entity head make of one batch.
pub struct Output {
    /// `[words, tags]`, one row per word of `Batch::words`.
    pub entity_logits: Tensor,
    /// `[segments, hidden]`: each segment's sum of hidden states over its sub-tokens
    /// ([`crate::encode::pool`] makes the topic head's inputs from it).
    pub segment_sums: Tensor,
}

/// The number format of inference's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Full `f32`.
    #[default]
    F32,
    /// Weights and activations rounded to bf16, products summed in `f32`
    /// ([`bf16`]; CPUs with AVX512-BF16 only): about 1.7x the multiply speed of `f32`.
    Bf16,
    /// Weights quantised to int8 per output channel, activations per row, products summed in
    /// `i32` ([`crate::kernels::int8`]; fast on CPUs with AVX2, VNNI or AMX, on the CPU only).
    Int8,
}

impl Precision {
    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

/// What `--precision` asks for: a [`Precision`], or the fastest one this machine runs that keeps
/// accuracy ([`PrecisionChoice::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionChoice {
    /// int8 on a CPU with AMX-INT8, VNNI or AVX2 (CoNLL-2003 test F1 0.8673, f32 0.8665, README
    /// recipe), else bf16 on a CPU with AVX512-BF16 (F1 0.8667), else f32; f32 off the CPU and
    /// for the families without reduced precision (DeBERTa-v2, ModernBERT). int8 comes first
    /// because it was the fastest where both run: on an Intel Xeon with AVX512-VNNI and
    /// AVX512-BF16, tagging the CoNLL-2003 test sentences ran at about 1.5x f32 in int8 and 0.6x
    /// f32 in bf16.
    #[default]
    Auto,
    Exactly(Precision),
}

impl PrecisionChoice {
    /// The precision to run a `family` encoder on `device`, with, for `auto`, a line saying
    /// which and why.
    pub fn resolve(self, device: &Device, family: Family) -> (Precision, Option<String>) {
        if let PrecisionChoice::Exactly(p) = self {
            return (p, None);
        }
        let kernel = crate::kernels::int8::Int8Kernel::best();
        let (precision, why) = if !device.is_cpu() {
            (Precision::F32, "the model is not on the CPU".to_string())
        } else if !family.reduced_precision() {
            (
                Precision::F32,
                format!("the {} encoder runs in f32 only", family.name()),
            )
        } else if kernel.is_fast() {
            (Precision::Int8, format!("this CPU has {}", kernel.name()))
        } else if bf16::supported() {
            (
                Precision::Bf16,
                "this CPU has AVX512-BF16 but no AVX2".to_string(),
            )
        } else {
            (
                Precision::F32,
                "this CPU has neither AVX2 nor AVX512-BF16".to_string(),
            )
        };
        let line = format!("precision auto: {precision} ({why}; --precision f32 for full f32)");
        (precision, Some(line))
    }
}

impl std::str::FromStr for PrecisionChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PrecisionChoice::Auto),
            _ => s
                .parse()
                .map(PrecisionChoice::Exactly)
                .map_err(|_| format!("unknown precision {s:?} (expected auto, f32, bf16 or int8)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision {s:?} (expected f32, bf16 or int8)"
            )),
        }
    }
}

/// Loads a tokenizer with truncation and padding off: newstag windows articles itself.
pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .with_padding(None);
    Ok(tokenizer)
}

fn read_config(dir: &Path) -> anyhow::Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let invalid =
        |e: serde_json::Error| anyhow::anyhow!("{}: invalid model config: {e}", path.display());
    // The model type first: another architecture's config lacks BERT's fields, and saying which
    // field is missing would hide what is wrong.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(invalid)?;
    if let Some(t) = value.get("model_type").and_then(|t| t.as_str()) {
        anyhow::ensure!(
            Family::from_model_type(t).is_some(),
            "{}: model_type {t:?} is not supported (supported: {})",
            path.display(),
            Family::supported()
        );
    }
    let config = ModelConfig::from_json(value).map_err(invalid)?;
    config
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// The topic head's tensor prefix a configuration names (the default one without a newstag
/// section, so that a stray head is noticed there too).
fn topic_head_prefix(config: &ModelConfig) -> &str {
    config
        .newstag
        .as_ref()
        .map_or(TOPIC_HEAD, |n| n.topic_head.as_str())
}

/// What is wrong with a base checkpoint without a `family` encoder: it names some of its tensors,
/// and the family they belong to when they are another's.
fn no_encoder_error(family: Family, store: &ParamStore, weights: &Path) -> anyhow::Error {
    let all = store.sample_names(usize::MAX);
    let looks_like = Family::ALL.into_iter().find(|f| {
        all.iter()
            .any(|n| n.starts_with(&format!("{}.", f.prefix())))
    });
    let hint = match looks_like {
        Some(f) => format!(
            "; its tensors are named as {}'s (model_type {:?}): is config.json's model_type right?",
            f.name(),
            f.model_type()
        ),
        None => String::new(),
    };
    anyhow::anyhow!(
        "{}: not a {} checkpoint: no tensor under {}. or {} (it holds {}); config.json's model_type {:?} chooses the architecture{hint}",
        weights.display(),
        family.name(),
        family.prefix(),
        family.bare_roots().join(", "),
        store.sample_names(3).join(", "),
        family.model_type()
    )
}

/// Checks that `config.json` and the checkpoint in `store` describe the same model, before any
/// module is built from them (a tensor's shape is checked as it is taken).
fn check_agreement(
    config: &ModelConfig,
    store: &ParamStore,
    config_path: &Path,
    weights: &Path,
) -> anyhow::Result<()> {
    if let Some(layers) = store.encoder_layers() {
        anyhow::ensure!(
            layers == config.bert.num_hidden_layers,
            "{}: num_hidden_layers is {} but {} has {layers} encoder layers",
            config_path.display(),
            config.bert.num_hidden_layers,
            weights.display()
        );
    }
    let topics = config.newstag.as_ref().map_or(&[][..], |n| &n.topics[..]);
    let head = format!("{}.weight", topic_head_prefix(config));
    match store.source_tensor(&head).map(|t| t.dims().to_vec()) {
        Some(dims) if topics.is_empty() => anyhow::bail!(
            "{}: lists no topics, but {} has a topic head with {} outputs ({head}): list its topics in newstag.topics, in head order",
            config_path.display(),
            weights.display(),
            dims.first().copied().unwrap_or(0)
        ),
        Some(dims) if dims.first() != Some(&topics.len()) => anyhow::bail!(
            "{}: lists {} topics, but the topic head in {} has {} outputs ({head:?} has shape {dims:?})",
            config_path.display(),
            topics.len(),
            weights.display(),
            dims.first().copied().unwrap_or(0)
        ),
        None if !topics.is_empty() && store.missing() == Missing::Error => anyhow::bail!(
            "{}: lists {} topics, but {} has no topic head ({head} is missing)",
            config_path.display(),
            topics.len(),
            weights.display()
        ),
        _ => anyhow::Ok(()),
    }?;
    if let Some(n) = config.newstag.as_ref().filter(|n| !n.topics.is_empty()) {
        n.topic_pooling
            .validate(n.topics.len())
            .with_context(|| format!("{}", config_path.display()))?;
    }
    Ok(())
}

impl NewsTagger {
    /// A fresh tagger on a pretrained encoder (`base` holds config.json, model.safetensors and
    /// tokenizer.json); the heads are initialised from `seed`.
    pub fn from_base(
        base: &Path,
        entity_types: &[String],
        topics: &[String],
        window: WindowConfig,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let tags = TagSet::from_types(entity_types);
        let base_config = read_config(base)?;
        let family = base_config
            .family()
            .with_context(|| format!("{}/config.json", base.display()))?;
        let config = ModelConfig::for_tagger(family, base_config.bert, &tags, topics, window);
        let weights = base.join("model.safetensors");
        let mut store = ParamStore::load_family(&weights, family, Missing::InitHeads, seed)?;
        // Without an encoder in the checkpoint every encoder weight would be initialised at
        // random and trained from scratch: not what a base model is for.
        if store.encoder_tensors() == 0 {
            return Err(no_encoder_error(family, &store, &weights));
        }
        // A base model's own heads (another task's classifier, a masked-LM head) are never reused.
        let dropped = store.retain_encoder();
        let tokenizer = load_tokenizer(&base.join("tokenizer.json"))?;
        let mut model = Self::build(config, tags, tokenizer, store, device, &weights)?;
        model.dropped_base_tensors = dropped;
        Ok(model)
    }

    /// A tagger with every weight random, for tests and benchmarks.
    pub fn random(
        bert: BertConfig,
        tokenizer: Tokenizer,
        entity_types: &[String],
        topics: &[String],
        window: WindowConfig,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let tags = TagSet::from_types(entity_types);
        let config = ModelConfig::for_tagger(Family::Bert, bert, &tags, topics, window);
        Self::build(
            config,
            tags,
            tokenizer,
            ParamStore::fresh(seed),
            device,
            Path::new("(random weights)"),
        )
    }

    /// Loads a saved model directory: newstag's own, or a Hugging Face `...ForTokenClassification`
    /// of a supported family (entities only).
    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        for f in source::MODEL_FILES {
            anyhow::ensure!(
                dir.join(f).is_file(),
                "{}: not a model directory: {f} is missing",
                dir.display()
            );
        }
        let config = read_config(dir)?;
        let tags = TagSet::from_id2label(&config.id2label)
            .with_context(|| format!("{}/config.json", dir.display()))?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let weights = dir.join("model.safetensors");
        let family = config.family()?;
        let store = ParamStore::load_family(&weights, family, Missing::Error, 0)?;
        Self::build(config, tags, tokenizer, store, device, &weights)
    }

    fn build(
        config: ModelConfig,
        tags: TagSet,
        tokenizer: Tokenizer,
        store: ParamStore,
        device: &Device,
        weights: &Path,
    ) -> anyhow::Result<Self> {
        let config_path = weights.with_file_name("config.json");
        config
            .validate()
            .with_context(|| format!("{}", config_path.display()))?;
        check_agreement(&config, &store, &config_path, weights)?;
        let vocab = tokenizer.get_vocab_size(true);
        anyhow::ensure!(
            vocab <= config.bert.vocab_size,
            "the tokenizer has {vocab} tokens but the model's vocabulary has {}: they do not belong together",
            config.bert.vocab_size
        );
        let special = SpecialTokens::from_tokenizer(&tokenizer)?;
        let family = config.family()?;
        // Shape mismatches between config.json and the weights are reported against the weights file.
        let build_modules = || -> candle_core::Result<_> {
            let vb = store.var_builder(device);
            let h = config.bert.hidden_size;
            let encoder = family.load(vb.pp(family.prefix()), &config.bert)?;
            let token_head = family.token_head(vb.clone(), &config.bert)?;
            let classifier = head(h, tags.len(), vb.pp("classifier"))?;
            let topic_head = match &config.newstag {
                Some(n) if !n.topics.is_empty() => {
                    Some(head(h, n.topics.len(), vb.pp(&n.topic_head))?)
                }
                _ => None,
            };
            Ok((encoder, token_head, classifier, topic_head))
        };
        let (encoder, token_head, classifier, topic_head) =
            build_modules().with_context(|| format!("{}", weights.display()))?;
        // Every tensor of the checkpoint must have gone into the model: one left over means the
        // config describes a different model (fewer layers, no topics) that would tag garbage.
        let unused = store.unused();
        if let Some(first) = unused.first() {
            anyhow::bail!(
                "{}: {} tensor(s) are not part of the model {} describes, such as {first:?}: the two files do not belong together",
                weights.display(),
                unused.len(),
                config_path.display()
            );
        }
        Ok(NewsTagger {
            config,
            tags,
            tokenizer,
            special,
            encoder,
            classifier,
            token_head,
            topic_head,
            store,
            dropped_base_tensors: Vec::new(),
            device: device.clone(),
        })
    }

    /// The heads initialised fresh rather than loaded (by tensor prefix, such as `classifier`):
    /// empty for a saved model, the new heads for one made [`NewsTagger::from_base`].
    pub fn initialised_heads(&self) -> Vec<String> {
        tensor_prefixes(&self.store.initialised())
    }

    /// The base checkpoint's own heads (by tensor prefix, such as `discriminator_predictions.dense`)
    /// that a model made [`NewsTagger::from_base`] leaves out; empty for a saved model.
    pub fn dropped_base_heads(&self) -> Vec<String> {
        tensor_prefixes(&self.dropped_base_tensors)
    }

    /// The base checkpoint's tensors outside its encoder (its own heads: a masked-LM or
    /// discriminator head, another task's classifier), which a model made
    /// [`NewsTagger::from_base`] leaves out; empty for a saved model.
    pub fn dropped_base_tensors(&self) -> &[String] {
        &self.dropped_base_tensors
    }

    /// The encoder, for its hidden states.
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// The encoder's family.
    pub fn family(&self) -> Family {
        self.config.family().unwrap_or(Family::Bert)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Topic labels, in head order (empty for an entities-only model).
    pub fn topics(&self) -> &[String] {
        self.config.newstag.as_ref().map_or(&[], |n| &n.topics)
    }

    pub fn thresholds(&self) -> &[f32] {
        self.config.newstag.as_ref().map_or(&[], |n| &n.thresholds)
    }

    /// The score corrections fitted on dev, if any.
    pub fn calibration(&self) -> Option<&calibration::ScoreCalibration> {
        self.config.newstag.as_ref()?.calibration.as_ref()
    }

    pub fn set_calibration(&mut self, c: Option<calibration::ScoreCalibration>) {
        if let Some(n) = &mut self.config.newstag {
            n.calibration = c;
        }
    }

    /// How the topic head's passage scores become the article's (mean pooling for a model
    /// without topics).
    pub fn topic_pooling(&self) -> &topic_pooling::TopicPooling {
        const MEAN: topic_pooling::TopicPooling = topic_pooling::TopicPooling::Mean;
        self.config
            .newstag
            .as_ref()
            .map_or(&MEAN, |n| &n.topic_pooling)
    }

    pub fn set_topic_pooling(&mut self, pooling: topic_pooling::TopicPooling) {
        if let Some(n) = &mut self.config.newstag {
            n.topic_pooling = pooling;
        }
    }

    pub fn set_thresholds(&mut self, thresholds: Vec<f32>) {
        if let Some(n) = &mut self.config.newstag {
            n.thresholds = thresholds;
        }
    }

    /// Replaces the topic head: `weight` is `[hidden, topics]` row-major, `bias` `[topics]`.
    pub fn set_topic_head(&mut self, weight: &[f32], bias: &[f32]) -> anyhow::Result<()> {
        let prefix = match &self.config.newstag {
            Some(n) if !n.topics.is_empty() => n.topic_head.clone(),
            _ => anyhow::bail!("the model has no topic head"),
        };
        let (h, k) = (self.config.bert.hidden_size, bias.len());
        let vars = self.vars();
        let w = Tensor::from_slice(weight, (h, k), &self.device)?
            .t()?
            .contiguous()?;
        vars[&format!("{prefix}.weight")].set(&w)?;
        vars[&format!("{prefix}.bias")].set(&Tensor::from_slice(bias, k, &self.device)?)?;
        Ok(())
    }

    /// The window the model was trained with; for a model saved without newstag's section (a
    /// transformers `...ForTokenClassification`), the default one shrunk to the encoder's positions.
    pub fn window(&self) -> WindowConfig {
        let positions = self.config.positions(self.family());
        self.config
            .newstag
            .as_ref()
            .map_or_else(|| WindowConfig::within(positions), |n| n.window)
    }

    /// Every trainable variable by name.
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.store.vars()
    }

    /// Runs the encoder and both heads on a batch.
    pub fn forward(&self, batch: &Batch, mode: &mut Mode) -> anyhow::Result<Output> {
        self.forward_prepared(batch, None, mode)
    }

    /// Inference copies of the encoder's weights at `precision` for
    /// [`NewsTagger::forward_prepared`]; prepare again after the weights change. bf16 needs the
    /// model on a CPU with AVX512-BF16, or on a CUDA GPU (bf16 products through cuBLAS, LayerNorm
    /// and softmax in f32); int8 needs the model on the CPU (fast with AVX2, portable elsewhere).
    pub fn prepare(&self, precision: Precision) -> anyhow::Result<Prepared> {
        let family = self.family();
        if precision != Precision::F32 && !family.reduced_precision() {
            anyhow::bail!(
                "the {} encoder runs in f32 only (use --precision f32 or auto)",
                family.name()
            )
        }
        if precision == Precision::Bf16 {
            let why = if self.device.is_cpu() {
                (!bf16::supported()).then_some("this CPU lacks it")
            } else if self.device.is_cuda() {
                None
            } else {
                Some("this model is on a device other than the CPU or a CUDA GPU")
            };
            if let Some(why) = why {
                anyhow::bail!(
                    "bf16 inference runs on CPUs with AVX512-BF16 (Intel Cooper Lake, Sapphire \
                     Rapids and later; AMD Zen 4 and later) and on CUDA GPUs; {why} (use \
                     --precision f32)"
                )
            }
        }
        if precision == Precision::Int8 && !self.device.is_cpu() {
            anyhow::bail!("int8 inference runs on the CPU only (use --precision f32 or bf16)")
        }
        Ok(self.encoder.prepare(precision)?)
    }

    /// [`NewsTagger::forward`] with prepared inference weights (used at inference only).
    pub fn forward_prepared(
        &self,
        batch: &Batch,
        prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> anyhow::Result<Output> {
        let hidden =
            self.encoder
                .forward(&batch.ids, &batch.type_ids, &batch.mask, prepared, mode)?;
        let (b, t, h) = hidden.dims3()?;
        let flat = hidden.reshape((b * t, h))?;
        let word_states = self.token_head(flat.index_select(&batch.word_positions, 0)?, mode)?;
        let entity_logits = apply_head(&self.classifier, &mode.dropout(&word_states)?, mode)?;
        let owned = flat.index_select(&batch.owned_positions, 0)?;
        let segment_sums = Tensor::zeros((batch.segments.len(), h), owned.dtype(), owned.device())?
            .index_add(&batch.owned_segments, &owned, 0)?;
        Ok(Output {
            entity_logits,
            segment_sums,
        })
    }

    /// The entity head's logits `[batch, len, tags]` on every token of a batch of token ids
    /// `[batch, len]` (`attention_mask` 1 on tokens, 0 on padding), as transformers'
    /// `...ForTokenClassification` gives them: for checking a model against it.
    pub fn token_logits(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        attention_mask: &Tensor,
        mode: &mut Mode,
    ) -> anyhow::Result<Tensor> {
        let hidden = self
            .encoder
            .forward(ids, type_ids, attention_mask, None, mode)?;
        let (b, t, h) = hidden.dims3()?;
        let states = self.token_head(hidden.reshape((b * t, h))?, mode)?;
        let logits = apply_head(&self.classifier, &states, mode)?;
        Ok(logits.reshape((b, t, self.tags.len()))?)
    }

    /// Hidden states `[rows, hidden]` as the entity classifier reads them: through the family's
    /// token head where it has one ([`Family::token_head`]), else as they are.
    fn token_head(&self, states: Tensor, mode: &Mode) -> candle_core::Result<Tensor> {
        match &self.token_head {
            Some(head) => head.forward(&states, mode),
            None => Ok(states),
        }
    }

    /// Topic logits `[items, topics]` from pooled states, or `None` for a model without topics.
    pub fn topic_logits(&self, pooled: &Tensor, mode: &mut Mode) -> anyhow::Result<Option<Tensor>> {
        match &self.topic_head {
            Some(head) => Ok(Some(apply_head(head, &mode.dropout(pooled)?, mode)?)),
            None => Ok(None),
        }
    }

    /// Saves config.json, model.safetensors, tokenizer.json and tokenizer_config.json into `dir`,
    /// each atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let tensors: BTreeMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        write_atomic(
            &dir.join("model.safetensors"),
            &params::safetensors_bytes(&tensors)?,
        )?;
        let tok = self
            .tokenizer
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("cannot serialise tokenizer: {e}"))?;
        write_atomic(&dir.join("tokenizer.json"), tok.as_bytes())?;
        write_json_atomic(&dir.join("tokenizer_config.json"), &self.tokenizer_config())?;
        write_json_atomic(&dir.join("config.json"), &self.config.to_json()?)
    }

    /// What transformers' `AutoTokenizer` needs to load tokenizer.json as it is: without it,
    /// transformers rebuilds the family's tokenizer from its own defaults (BERT's lowercases), and
    /// a cased tokenizer would split the text differently there than here.
    fn tokenizer_config(&self) -> serde_json::Value {
        let name = |id: u32| self.tokenizer.id_to_token(id);
        let find = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find(|t| self.tokenizer.token_to_id(t).is_some())
        };
        let positions = self.config.positions(self.family());
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "cls_token": name(self.special.cls),
            "sep_token": name(self.special.sep),
            "pad_token": name(self.special.pad),
            "unk_token": find(["[UNK]", "<unk>"]),
            "mask_token": find(["[MASK]", "<mask>"]),
            "model_max_length": positions,
        })
    }
}

/// The distinct prefixes of sorted tensor names (`classifier` for `classifier.weight`).
fn tensor_prefixes(names: &[String]) -> Vec<String> {
    let mut prefixes: Vec<String> = names
        .iter()
        .map(|n| {
            n.rsplit_once('.')
                .map_or(n.as_str(), |(p, _)| p)
                .to_string()
        })
        .collect();
    prefixes.dedup();
    prefixes
}

/// A head's output. At inference on CPU row by row ([`ops::linear_rows`]): a word's or an
/// article's scores do not depend on what it is batched with.
fn apply_head(head: &Linear, x: &Tensor, mode: &Mode) -> candle_core::Result<Tensor> {
    match head.bias() {
        Some(bias) if !mode.is_train() => ops::linear_rows(x, head.weight(), bias),
        _ => head.forward(x),
    }
}

fn head(input: usize, output: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints(
        (output, input),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    let b = vb.get_with_hints(output, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}
