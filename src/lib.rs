//! newstag: tag news articles with named entities and topics using a fine-tuned BERT encoder.

pub mod data;
pub mod fsutil;
pub mod model;
