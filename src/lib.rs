//! newstag: tag news articles with named entities and topics using a fine-tuned BERT encoder.

pub mod cli;
pub mod data;
pub mod device;
pub mod eval;
pub mod fsutil;
pub mod infer;
pub mod model;
pub mod train;
