//! The encoder's hand-written CPU kernels, one per file: fused training kernels with real
//! backward passes (LayerNorm, softmax plain and masked, attention probabilities with dropout,
//! exact GELU, dropout, and the bias additions of the linear layers fused with what follows them),
//! and inference kernels (per-window self-attention, the heads' row-by-row linear layers, f32,
//! bf16 and int8 matrix products). `host.rs` holds what they all repeat (inputs, custom-op
//! plumbing, shape checks, the row-parallel loops) and `math.rs` the vectorised sums and
//! `exp`/`erf` they share.
//!
//! Why hand-written: candle builds these from many small broadcast ops when they must be
//! differentiable. A LayerNorm is eight tensor ops forward and about twenty backward, each a pass
//! over memory and a fresh allocation, and its backward pass adds two more passes per op (a zero
//! gradient, then a sum). Here each is one pass forward and one backward, as candle custom ops
//! whose `bwd` is itself a fused kernel. They run on contiguous `f32` CPU tensors, in parallel
//! over rows on rayon's thread pool; every reduction is summed in a fixed order, so results depend
//! neither on the thread count nor on how much padding follows a row.
//!
//! On other devices or dtypes each function falls back to the differentiable composition of
//! candle ops it replaces (the `*_reference` functions, kept public for tests). The model
//! (`crate::model`) calls these; nothing here knows about BERT beyond tensor shapes.

mod attention_probs;
pub mod bf16;
mod bias_dropout_add;
mod bias_gelu;
mod dropout;
mod epilogue;
pub mod fp32;
mod gelu;
mod heads;
pub(crate) mod host;
pub mod int8;
mod layer_norm;
mod linear_rows;
mod masked_softmax;
mod math;
mod self_attention;
mod softmax;

pub use attention_probs::{attention_probs, attention_probs_reference};
pub use bias_dropout_add::{bias_dropout_add, bias_dropout_add_reference};
pub use bias_gelu::{bias_gelu, bias_gelu_on, bias_gelu_reference};
pub use dropout::{device_mask, dropout, dropout_reference};
pub use epilogue::{After, Norm};
pub use gelu::gelu_erf;
pub use heads::{bias_split_heads, bias_split_heads_reference, merge_heads, merge_heads_reference};
pub use host::{runs_fused, Simd};
pub use layer_norm::{layer_norm, layer_norm_on, layer_norm_reference};
pub use linear_rows::linear_rows;
pub use masked_softmax::{masked_softmax, masked_softmax_reference};
pub use math::{erf_f32, exp_f32};
pub use self_attention::{self_attention, self_attention_on};
pub use softmax::{softmax_last_dim, softmax_reference};

/// The backward passes of the fused training kernels, for a forward pass whose backward pass is
/// written out rather than recorded (`crate::model::layers`' training path on CPU).
pub(crate) mod backward {
    pub(crate) use super::attention_probs::attention_probs_backward;
    pub(crate) use super::bias_dropout_add::bias_dropout_add_backward;
    pub(crate) use super::bias_gelu::bias_gelu_backward;
    pub(crate) use super::heads::{bias_split_heads_backward, merge_heads_backward};
    pub(crate) use super::layer_norm::layer_norm_backward;
}
