//! Encoding, the same for training and inference: article → sub-tokens ([`subtokens`]) →
//! windows ([`windows`]) → units, runs of one article's windows ([`units`](mod@units)) →
//! length-bucketed batches ([`batches`]) → tensors ([`tensors`]); and back from the encoder's
//! window states to an article's topic input ([`pool`], the one place that pooling is decided).

pub mod batches;
pub mod pool;
pub mod subtokens;
pub mod tensors;
pub mod units;
pub mod windows;

pub use batches::{epoch_batches, inference_batches};
pub use subtokens::{encode_article, EncodedArticle, SpecialTokens};
pub use tensors::Batch;
pub use units::{units, Unit};
pub use windows::{plan_windows, Window, WindowConfig};
