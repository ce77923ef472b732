//! Evaluation: strict entity-level and multi-label topic scores, and the report that shows them.

pub mod calibration;
pub mod metrics;
pub mod report;

pub use calibration::{Calibration, Reliability, ReliabilityScorer};
pub use metrics::{best_thresholds, chunks, ChunkMode, Counts, EntityScorer, Scores, TopicScorer};
pub use report::{EntityReport, Prf, Report, TopicReport};
pub mod html;
pub mod reliability_page;
pub mod run;
pub use run::{evaluate, score, Evaluation};
