//! DeBERTa-v2's own fields of `config.json` and the settings the encoder reads from them, with
//! what newstag does not implement refused by name.

use crate::model::config::BertConfig;
use serde::{Deserialize, Serialize};

/// DeBERTa-v2's own fields of `config.json` (absent from other families' configs), as written:
/// a field left out takes transformers' default, and is left out again on saving.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DebertaV2Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_attention: Option<bool>,
    /// The largest relative distance; below 1, `max_position_embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_relative_positions: Option<i64>,
    /// Relative distances in this many logarithmic buckets per direction; below 1, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_buckets: Option<i64>,
    /// Whether absolute position embeddings are added to the input (transformers: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_biased_input: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos_att_type: Option<PosAttType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_att_key: Option<bool>,
    /// `"layer_norm"` or `"none"` (`|`-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_rel_ebd: Option<String>,
    /// The convolution layer's kernel size (0 or absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_kernel_size: Option<i64>,
    /// Its channel groups (transformers: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_groups: Option<usize>,
    /// Its activation (transformers: `"tanh"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_head_size: Option<usize>,
}

/// `pos_att_type` as configs write it: `["p2c", "c2p"]`, or `"p2c|c2p"` in older ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PosAttType {
    List(Vec<String>),
    Joined(String),
}

impl PosAttType {
    fn kinds(&self) -> Vec<String> {
        match self {
            PosAttType::List(l) => l.iter().map(|k| k.trim().to_lowercase()).collect(),
            PosAttType::Joined(s) => s.split('|').map(|k| k.trim().to_lowercase()).collect(),
        }
    }
}

/// transformers' `DebertaV2Config` defaults where they differ from BERT's, for a `config.json`
/// that leaves them out.
pub fn insert_defaults(obj: &mut serde_json::Map<String, serde_json::Value>) {
    for (name, value) in [
        ("type_vocab_size", serde_json::json!(0)),
        ("layer_norm_eps", serde_json::json!(1e-7)),
        ("max_position_embeddings", serde_json::json!(512)),
        ("vocab_size", serde_json::json!(128100)),
    ] {
        obj.entry(name).or_insert(value);
    }
}

/// Checks a DeBERTa-v2 configuration: BERT's checks (where no token types is allowed) and the
/// attention options, refusing what newstag does not implement by name.
pub fn validate(c: &BertConfig) -> anyhow::Result<()> {
    BertConfig {
        type_vocab_size: c.type_vocab_size.max(1),
        ..c.clone()
    }
    .validate()?;
    Settings::new(c)?;
    Ok(())
}

/// The convolution layer's options.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvSettings {
    pub kernel: usize,
    pub groups: usize,
    pub activation: ConvActivation,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum ConvActivation {
    Tanh,
    /// transformers' `"gelu"` (exact).
    Gelu,
    /// `"gelu_new"` (tanh approximation).
    GeluNew,
    Relu,
}

/// The attention options as the forward pass uses them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub relative: bool,
    pub c2p: bool,
    pub p2c: bool,
    pub share_att_key: bool,
    pub norm_rel_ebd: bool,
    pub position_biased_input: bool,
    /// Relative distances bucketed by [`log_bucket`] when positive.
    pub buckets: i64,
    pub max_relative_positions: i64,
    /// Half the rows of the relative embeddings (transformers' `pos_ebd_size`).
    pub span: usize,
    /// 1 plus the number of relative score kinds.
    pub scale_factor: usize,
    pub conv: Option<ConvSettings>,
}

impl Settings {
    pub fn new(c: &BertConfig) -> anyhow::Result<Self> {
        let o = &c.deberta;
        let conv = match o.conv_kernel_size.filter(|&k| k > 0) {
            Some(k) => Some(conv_settings(c, k)?),
            None => None,
        };
        let head_size = c.hidden_size / c.num_attention_heads.max(1);
        if let Some(s) = o.attention_head_size.filter(|&s| s != head_size) {
            anyhow::bail!(
                "attention_head_size {s} is not supported: newstag's DeBERTa-v2 heads are hidden_size / num_attention_heads = {head_size} wide"
            );
        }
        let kinds = o
            .pos_att_type
            .as_ref()
            .map(|p| p.kinds())
            .unwrap_or_default();
        if let Some(k) = kinds.iter().find(|k| !["c2p", "p2c"].contains(&k.as_str())) {
            anyhow::bail!("pos_att_type {k:?} is not supported (only \"c2p\" and \"p2c\")");
        }
        let norms: Vec<String> = o
            .norm_rel_ebd
            .as_deref()
            .unwrap_or("none")
            .split('|')
            .map(|n| n.trim().to_lowercase())
            .collect();
        if let Some(n) = norms
            .iter()
            .find(|n| !["none", "layer_norm"].contains(&n.as_str()))
        {
            anyhow::bail!("norm_rel_ebd {n:?} is not supported (only \"layer_norm\" or \"none\")");
        }
        let max_relative_positions = match o.max_relative_positions.unwrap_or(-1) {
            m if m < 1 => c.max_position_embeddings as i64,
            m => m,
        };
        let buckets = o.position_buckets.unwrap_or(-1);
        let relative = o.relative_attention.unwrap_or(false);
        anyhow::ensure!(
            !relative || buckets <= 0 || buckets >= 2,
            "position_buckets {buckets} must be at least 2"
        );
        let c2p = kinds.iter().any(|k| k == "c2p");
        let p2c = kinds.iter().any(|k| k == "p2c");
        Ok(Settings {
            relative,
            c2p,
            p2c,
            share_att_key: o.share_att_key.unwrap_or(false),
            norm_rel_ebd: norms.iter().any(|n| n == "layer_norm"),
            position_biased_input: o.position_biased_input.unwrap_or(true),
            buckets,
            max_relative_positions,
            span: if buckets > 0 {
                buckets
            } else {
                max_relative_positions
            } as usize,
            scale_factor: 1 + c2p as usize + p2c as usize,
            conv,
        })
    }
}

/// The convolution layer's options for kernel size `kernel`.
fn conv_settings(c: &BertConfig, kernel: i64) -> anyhow::Result<ConvSettings> {
    let o = &c.deberta;
    anyhow::ensure!(
        kernel % 2 == 1,
        "conv_kernel_size {kernel} is not supported: the convolution keeps the length only with an odd kernel"
    );
    let groups = o.conv_groups.unwrap_or(1);
    anyhow::ensure!(
        groups > 0 && c.hidden_size.is_multiple_of(groups),
        "conv_groups {groups} does not divide hidden_size {}",
        c.hidden_size
    );
    let activation = match o.conv_act.as_deref().unwrap_or("tanh") {
        "tanh" => ConvActivation::Tanh,
        "gelu" => ConvActivation::Gelu,
        "gelu_new" => ConvActivation::GeluNew,
        "relu" => ConvActivation::Relu,
        other => anyhow::bail!(
            "conv_act {other:?} is not supported (only \"tanh\", \"gelu\", \"gelu_new\" and \"relu\")"
        ),
    };
    Ok(ConvSettings {
        kernel: kernel as usize,
        groups,
        activation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_options_are_refused_by_name() {
        let with = |edit: &dyn Fn(&mut DebertaV2Options)| {
            let mut c = BertConfig::tiny(10);
            c.type_vocab_size = 0;
            edit(&mut c.deberta);
            validate(&c).map_err(|e| e.to_string())
        };
        with(&|_| {}).unwrap();
        with(&|o| o.conv_kernel_size = Some(3)).unwrap();
        assert!(with(&|o| o.conv_kernel_size = Some(4))
            .unwrap_err()
            .contains("conv_kernel_size 4 is not supported"));
        assert!(with(&|o| {
            o.conv_kernel_size = Some(3);
            o.conv_act = Some("swish".into());
        })
        .unwrap_err()
        .contains("conv_act \"swish\" is not supported"));
        assert!(with(&|o| {
            o.conv_kernel_size = Some(3);
            o.conv_groups = Some(5);
        })
        .unwrap_err()
        .contains("conv_groups 5 does not divide hidden_size 32"));
        assert!(
            with(&|o| o.pos_att_type = Some(PosAttType::Joined("p2c|p2p".into())))
                .unwrap_err()
                .contains("pos_att_type \"p2p\" is not supported")
        );
        assert!(with(&|o| o.norm_rel_ebd = Some("batch_norm".into()))
            .unwrap_err()
            .contains("norm_rel_ebd \"batch_norm\""));
        assert!(with(&|o| o.attention_head_size = Some(64))
            .unwrap_err()
            .contains("attention_head_size 64"));
    }

    #[test]
    fn configs_take_transformers_defaults_and_write_back_what_they_read() {
        use crate::model::config::ModelConfig;
        use crate::model::family::Family;
        let json = serde_json::json!({"model_type": "deberta-v2", "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "relative_attention": true, "pos_att_type": "p2c|c2p", "position_buckets": 4});
        let c = ModelConfig::from_json(json).unwrap();
        assert_eq!(c.family().unwrap(), Family::DebertaV2);
        c.validate().unwrap();
        assert_eq!(c.bert.type_vocab_size, 0);
        assert_eq!(c.bert.layer_norm_eps, 1e-7);
        assert_eq!(c.bert.max_position_embeddings, 512);
        let out = c.to_json().unwrap();
        assert_eq!(out["pos_att_type"], "p2c|c2p");
        assert_eq!(out["position_buckets"], 4);
        assert!(out.get("share_att_key").is_none(), "{out}");
        assert_eq!(ModelConfig::from_json(out).unwrap(), c);
        // Another family's config gains none of these fields.
        let bert = serde_json::to_value(BertConfig::tiny(10)).unwrap();
        for key in ["relative_attention", "pos_att_type", "conv_kernel_size"] {
            assert!(bert.get(key).is_none(), "{key} in {bert}");
        }
    }
}
