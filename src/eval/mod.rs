//! Evaluation: strict entity-level and multi-label topic scores, calibration, the error analysis,
//! the report that holds them, and the `eval --html` page that shows them.

pub mod calibration;
pub mod errors;
pub mod html;
pub mod metrics;
pub mod reliability_page;
pub mod report;
pub mod run;

pub use calibration::{Calibration, Reliability, ReliabilityScorer};
pub use errors::ErrorAnalysis;
pub use metrics::{best_thresholds, chunks, ChunkMode, Counts, EntityScorer, Scores, TopicScorer};
pub use report::{EntityReport, Prf, Report, TopicReport};
pub use run::{evaluate, score, Compared, Evaluation, Scored};
