//! newstag: tag news articles with named entities and topics using a fine-tuned BERT encoder.
//!
//! ```no_run
//! use newstag::{data::Article, infer::Predictor, model::NewsTagger};
//!
//! let model = NewsTagger::load("runs/conll".as_ref(), &candle_core::Device::Cpu)?;
//! let articles = [Article::from_text("a1", "Tokayev met Mirziyoyev in Tashkent on Monday.")];
//! let predictions = Predictor::new(&model, 32)?.predict(&articles)?;
//! for (article, p) in articles.iter().zip(&predictions) {
//!     for e in &p.entities {
//!         let text = &article.text[article.entity_bytes(&e.entity)];
//!         println!("{text} {} {:.2}", e.entity.label, e.score);
//!     }
//!     println!("{:?}", p.topics_above(model.topics(), model.thresholds()));
//! }
//! # anyhow::Ok(())
//! ```

pub mod cli;
pub mod data;
pub mod device;
pub mod encode;
pub mod eval;
pub mod fsutil;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod outputs;
pub mod page;
pub mod runtime;
pub mod serve;
pub mod train;
