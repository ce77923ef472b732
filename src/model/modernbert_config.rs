//! ModernBERT's `config.json`: its names of BERT's hyper-parameters (`hidden_activation`,
//! `norm_eps`, `mlp_dropout`, `attention_dropout`), read into [`BertConfig`]'s and written back,
//! and its own ([`ModernBertConfig`]). Both spellings transformers has used are read: the Hub's
//! `global_attn_every_n_layers`, `global_rope_theta` and `local_rope_theta`, and transformers 5's
//! `layer_types` and `rope_parameters`; both are written, so that either version loads a saved
//! model. Fields left out take transformers' defaults (`ModernBertConfig`), which differ from
//! BERT's.
//!
//! [`BertConfig`]: super::config::BertConfig

use super::config::Activation;
use serde_json::{json, Map, Value};

/// A layer's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// Over the whole window (`"full_attention"`).
    Global,
    /// Over `local_attention / 2` tokens each side (`"sliding_attention"`).
    Local,
}

impl AttentionKind {
    fn name(self) -> &'static str {
        match self {
            AttentionKind::Global => "full_attention",
            AttentionKind::Local => "sliding_attention",
        }
    }
}

/// ModernBERT's hyper-parameters that BERT has no name for.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertConfig {
    /// Each layer's attention, in order.
    pub layer_types: Vec<AttentionKind>,
    /// The rotary base of global layers.
    pub global_rope_theta: f64,
    /// The rotary base of local layers.
    pub local_rope_theta: f64,
    /// The local attention's whole window (half of it each side of a token).
    pub local_attention: usize,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub embedding_dropout: f64,
    /// The token classifier's `head` (before `classifier`).
    pub classifier_bias: bool,
    pub classifier_activation: Activation,
    pub classifier_dropout: f64,
}

/// ModernBERT's names of BERT's fields, with transformers' defaults.
const RENAMED: [(&str, &str, f64); 3] = [
    ("norm_eps", "layer_norm_eps", 1e-5),
    ("mlp_dropout", "hidden_dropout_prob", 0.0),
    ("attention_dropout", "attention_probs_dropout_prob", 0.0),
];

/// transformers' defaults of the fields both families name alike.
const SIZES: [(&str, u64); 7] = [
    ("vocab_size", 50368),
    ("hidden_size", 768),
    ("intermediate_size", 1152),
    ("num_hidden_layers", 22),
    ("num_attention_heads", 12),
    ("max_position_embeddings", 8192),
    ("pad_token_id", 50283),
];

/// BERT's fields that ModernBERT does not have.
const BERT_ONLY: [&str; 2] = ["type_vocab_size", "position_embedding_type"];

fn number(obj: &Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("{key} is {v}: expected a number")),
    }
}

fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("{key} is {v}: expected true or false")),
    }
}

fn count(obj: &Map<String, Value>, key: &str, default: u64) -> Result<usize, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default as usize),
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("{key} is {v}: expected a whole number")),
    }
}

/// A rotary base from `rope_parameters[kind]`, or the Hub's `legacy` field.
fn rope_theta(
    obj: &Map<String, Value>,
    kind: AttentionKind,
    legacy: &str,
    default: f64,
) -> Result<f64, String> {
    let theta = match obj.get("rope_parameters").and_then(|p| p.get(kind.name())) {
        Some(params) => {
            let params = params
                .as_object()
                .ok_or_else(|| format!("rope_parameters.{} is not an object", kind.name()))?;
            let rope_type = params.get("rope_type").and_then(Value::as_str);
            if rope_type.is_some_and(|t| t != "default") {
                return Err(format!(
                    "rope_parameters.{}.rope_type {:?} is not supported (only \"default\")",
                    kind.name(),
                    rope_type.unwrap_or_default()
                ));
            }
            number(params, "rope_theta", default)
                .map_err(|e| format!("rope_parameters.{}.{e}", kind.name()))?
        }
        None => number(obj, legacy, default)?,
    };
    if !(theta.is_finite() && theta > 0.0) {
        return Err(format!(
            "the {} rotary base is {theta}: it must be positive",
            kind.name()
        ));
    }
    Ok(theta)
}

fn layer_types(obj: &Map<String, Value>, layers: usize) -> Result<Vec<AttentionKind>, String> {
    let kinds = match obj.get("layer_types") {
        Some(Value::Array(types)) => types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("full_attention") => Ok(AttentionKind::Global),
                Some("sliding_attention") => Ok(AttentionKind::Local),
                _ => Err(format!(
                    "layer_types[{i}] is {t}: expected \"full_attention\" or \"sliding_attention\""
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => {
            let every = count(obj, "global_attn_every_n_layers", 3)?;
            if every == 0 {
                return Err("global_attn_every_n_layers must be positive".into());
            }
            (0..layers)
                .map(|i| match i % every {
                    0 => AttentionKind::Global,
                    _ => AttentionKind::Local,
                })
                .collect()
        }
        Some(v) => return Err(format!("layer_types is {v}: expected a list")),
    };
    if kinds.len() != layers {
        return Err(format!(
            "layer_types lists {} layers but num_hidden_layers is {layers}",
            kinds.len()
        ));
    }
    Ok(kinds)
}

impl ModernBertConfig {
    /// Reads a ModernBERT `config.json` object: puts BERT's names (and transformers' defaults)
    /// where [`super::config::BertConfig`] reads them, and returns ModernBERT's own fields.
    pub fn read(obj: &mut Map<String, Value>) -> Result<Self, String> {
        for (own, bert, default) in RENAMED {
            let v = obj.remove(own).unwrap_or_else(|| default.into());
            obj.insert(bert.into(), v);
        }
        let act = obj
            .remove("hidden_activation")
            .unwrap_or_else(|| "gelu".into());
        obj.insert("hidden_act".into(), act);
        for (key, default) in SIZES {
            obj.entry(key).or_insert_with(|| default.into());
        }
        let layers = count(obj, "num_hidden_layers", 22)?;
        let (hidden, heads) = (
            count(obj, "hidden_size", 768)?,
            count(obj, "num_attention_heads", 12)?,
        );
        if heads > 0 && hidden % heads == 0 && (hidden / heads) % 2 != 0 {
            return Err(format!(
                "hidden_size {hidden} / num_attention_heads {heads} is odd: rotary positions turn pairs of dimensions"
            ));
        }
        if obj.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is not supported".into());
        }
        let local_attention = count(obj, "local_attention", 128)?;
        if local_attention < 2 {
            return Err(format!(
                "local_attention is {local_attention}: the window must be at least 2 tokens"
            ));
        }
        let classifier_activation = obj
            .get("classifier_activation")
            .cloned()
            .unwrap_or_else(|| "gelu".into());
        let classifier_activation: Activation = serde_json::from_value(classifier_activation)
            .map_err(|e| format!("classifier_activation: {e}"))?;
        let config = ModernBertConfig {
            layer_types: layer_types(obj, layers)?,
            global_rope_theta: rope_theta(
                obj,
                AttentionKind::Global,
                "global_rope_theta",
                160_000.0,
            )?,
            local_rope_theta: rope_theta(obj, AttentionKind::Local, "local_rope_theta", 10_000.0)?,
            local_attention,
            norm_bias: flag(obj, "norm_bias")?,
            attention_bias: flag(obj, "attention_bias")?,
            mlp_bias: flag(obj, "mlp_bias")?,
            embedding_dropout: number(obj, "embedding_dropout", 0.0)?,
            classifier_bias: flag(obj, "classifier_bias")?,
            classifier_activation,
            classifier_dropout: number(obj, "classifier_dropout", 0.0)?,
        };
        for (name, p) in [
            ("embedding_dropout", config.embedding_dropout),
            ("classifier_dropout", config.classifier_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} must be at least 0 and below 1 (got {p})"));
            }
        }
        Ok(config)
    }

    /// Writes a ModernBERT `config.json` object from one in BERT's names
    /// ([`ModernBertConfig::read`] undone, plus ModernBERT's own fields).
    pub fn write(&self, obj: &mut Map<String, Value>) {
        for name in BERT_ONLY {
            obj.remove(name);
        }
        for (own, bert, _) in RENAMED {
            if let Some(v) = obj.remove(bert) {
                obj.insert(own.into(), v);
            }
        }
        if let Some(v) = obj.remove("hidden_act") {
            obj.insert("hidden_activation".into(), v);
        }
        let names: Vec<&str> = self.layer_types.iter().map(|k| k.name()).collect();
        obj.insert("layer_types".into(), json!(names));
        if let Some(every) = self.every_n_layers() {
            obj.insert("global_attn_every_n_layers".into(), every.into());
        }
        let rope = |theta: f64| json!({"rope_theta": theta, "rope_type": "default"});
        obj.insert(
            "rope_parameters".into(),
            json!({
                "full_attention": rope(self.global_rope_theta),
                "sliding_attention": rope(self.local_rope_theta),
            }),
        );
        obj.insert("global_rope_theta".into(), self.global_rope_theta.into());
        obj.insert("local_rope_theta".into(), self.local_rope_theta.into());
        obj.insert("local_attention".into(), self.local_attention.into());
        for (key, value) in [
            ("norm_bias", self.norm_bias),
            ("attention_bias", self.attention_bias),
            ("mlp_bias", self.mlp_bias),
            ("classifier_bias", self.classifier_bias),
        ] {
            obj.insert(key.into(), value.into());
        }
        obj.insert("embedding_dropout".into(), self.embedding_dropout.into());
        obj.insert("classifier_dropout".into(), self.classifier_dropout.into());
        obj.insert(
            "classifier_activation".into(),
            serde_json::to_value(self.classifier_activation).unwrap_or_else(|_| "gelu".into()),
        );
    }

    /// The `global_attn_every_n_layers` that makes [`ModernBertConfig::layer_types`], if one does.
    fn every_n_layers(&self) -> Option<usize> {
        let n = self.layer_types.len();
        (1..=n.max(1)).find(|&every| {
            self.layer_types
                .iter()
                .enumerate()
                .all(|(i, k)| (*k == AttentionKind::Global) == i.is_multiple_of(every))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value) -> Result<(Map<String, Value>, ModernBertConfig), String> {
        let mut obj = v.as_object().unwrap().clone();
        let c = ModernBertConfig::read(&mut obj)?;
        Ok((obj, c))
    }

    #[test]
    fn the_hubs_and_transformers_5s_spellings_read_alike_and_both_are_written() {
        let hub = json!({"num_hidden_layers": 4, "global_attn_every_n_layers": 2,
            "global_rope_theta": 1000.0, "local_rope_theta": 50.0, "local_attention": 16});
        let (mut out, a) = read(hub).unwrap();
        let v5 = json!({"num_hidden_layers": 4, "local_attention": 16,
            "layer_types": ["full_attention", "sliding_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {"full_attention": {"rope_theta": 1000.0, "rope_type": "default"},
                "sliding_attention": {"rope_theta": 50.0, "rope_type": "default"}}});
        let (_, b) = read(v5).unwrap();
        assert_eq!(a, b);
        use AttentionKind::{Global, Local};
        assert_eq!(a.layer_types, [Global, Local, Global, Local]);
        a.write(&mut out);
        assert_eq!(out["norm_eps"], 1e-5);
        assert!(out.get("layer_norm_eps").is_none());
        assert_eq!(out["global_attn_every_n_layers"], 2);
        assert_eq!(out["global_rope_theta"], 1000.0);
        assert_eq!(
            out["rope_parameters"]["sliding_attention"]["rope_theta"],
            50.0
        );
        assert_eq!(read(Value::Object(out)).unwrap().1, a);
    }

    #[test]
    fn transformers_defaults_fill_what_a_config_leaves_out() {
        let (obj, c) = read(json!({})).unwrap();
        assert_eq!(obj["layer_norm_eps"], 1e-5);
        assert_eq!(obj["hidden_dropout_prob"], 0.0);
        assert_eq!(obj["max_position_embeddings"], 8192);
        assert_eq!(obj["hidden_act"], "gelu");
        assert_eq!(c.layer_types.len(), 22);
        assert_eq!(c.layer_types[3], AttentionKind::Global);
        assert_eq!(c.layer_types[4], AttentionKind::Local);
        assert_eq!(
            (c.global_rope_theta, c.local_rope_theta),
            (160_000.0, 10_000.0)
        );
        assert_eq!(c.local_attention, 128);
    }

    #[test]
    fn what_newstag_cannot_run_is_refused_by_name() {
        let e = |v: Value| read(v).unwrap_err();
        assert!(
            e(json!({"num_hidden_layers": 2, "layer_types": ["full_attention"]}))
                .contains("layer_types lists 1 layers but num_hidden_layers is 2")
        );
        assert!(
            e(json!({"num_hidden_layers": 1, "layer_types": ["chunked"]}))
                .contains("layer_types[0] is \"chunked\"")
        );
        assert!(
            e(json!({"rope_parameters": {"full_attention": {"rope_type": "yarn"}}}))
                .contains("rope_type \"yarn\" is not supported")
        );
        assert!(e(json!({"hidden_size": 12, "num_attention_heads": 4})).contains("is odd"));
        assert!(e(json!({"classifier_activation": "swish"})).contains("classifier_activation"));
        assert!(e(json!({"global_attn_every_n_layers": 0})).contains("must be positive"));
    }
}
