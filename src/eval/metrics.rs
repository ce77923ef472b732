//! Counting and scoring: entity chunking, strict entity-level scores, multi-label topic scores,
//! and per-topic decision thresholds.
//!
//! Entity scores follow seqeval 1.2.2 with `zero_division=0` (checked against its own numbers by
//! `tests/seqeval_parity.rs`).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::data::{entities_from_tags, Entity, Tag};

/// How a tag sequence is read into entities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkMode {
    /// seqeval `mode='strict', scheme=IOB2`: only `B-X` starts an entity; a stray `I-X` is dropped.
    Strict,
    /// seqeval's default (conlleval): a stray `I-X` starts an entity too.
    Lenient,
}

/// Entities of one tag sequence: Strict = seqeval mode='strict' scheme=IOB2; Lenient = seqeval
/// default (conlleval).
pub fn chunks(tags: &[Tag], mode: ChunkMode) -> Vec<Entity> {
    match mode {
        ChunkMode::Lenient => entities_from_tags(tags, &[]),
        ChunkMode::Strict => strict_chunks(tags),
    }
}

/// IOB2 as seqeval's strict mode reads it: `B-X` opens an entity that runs over the following
/// `I-X` of the same type; anything else closes it. An `I-` that continues nothing is ignored.
fn strict_chunks(tags: &[Tag]) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tags.len() {
        let Tag::Begin(label) = &tags[i] else {
            i += 1;
            continue;
        };
        let end = i
            + 1
            + tags[i + 1..]
                .iter()
                .take_while(|t| matches!(t, Tag::Inside(l) if l == label))
                .count();
        out.push(Entity {
            words: i..end,
            label: label.clone(),
        });
        i = end;
    }
    out
}

/// True positives, false positives and false negatives of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// Precision, recall and F1 (0 where undefined, as `zero_division=0`), and the gold count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

impl Counts {
    /// Scores of these counts; support is `tp + fn_`.
    pub fn scores(&self) -> Scores {
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        Scores {
            precision,
            recall,
            f1: f1(precision, recall),
            support: self.tp + self.fn_,
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// F1 from precision and recall, written as seqeval computes it so results agree to the last bits.
fn f1(precision: f64, recall: f64) -> f64 {
    let den = precision + recall;
    if den == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / den
    }
}

fn sum_counts<'a>(counts: impl IntoIterator<Item = &'a Counts>) -> Counts {
    let mut total = Counts::default();
    for c in counts {
        total.merge(c);
    }
    total
}

/// Unweighted mean of per-class scores (support is summed); `None` without classes.
fn mean_scores<'a>(counts: impl IntoIterator<Item = &'a Counts>) -> Option<Scores> {
    let all: Vec<Scores> = counts.into_iter().map(Counts::scores).collect();
    if all.is_empty() {
        return None;
    }
    let n = all.len() as f64;
    let mean = |f: fn(&Scores) -> f64| all.iter().map(f).sum::<f64>() / n;
    Some(Scores {
        precision: mean(|s| s.precision),
        recall: mean(|s| s.recall),
        f1: mean(|s| s.f1),
        support: all.iter().map(|s| s.support).sum(),
    })
}

/// Strict entity-level scoring, accumulated over documents (exact span + type match).
#[derive(Default, Debug, Clone)]
pub struct EntityScorer {
    counts: BTreeMap<String, Counts>,
}

impl EntityScorer {
    /// Adds one document's gold and predicted entities. Duplicates count once, as in seqeval,
    /// which compares sets.
    pub fn add(&mut self, gold: &[Entity], pred: &[Entity]) {
        let gold: HashSet<&Entity> = gold.iter().collect();
        let pred: HashSet<&Entity> = pred.iter().collect();
        for e in &gold {
            let c = self.counts.entry(e.label.clone()).or_default();
            if pred.contains(e) {
                c.tp += 1;
            } else {
                c.fn_ += 1;
            }
        }
        for e in pred.difference(&gold) {
            self.counts.entry(e.label.clone()).or_default().fp += 1;
        }
    }

    /// Counts per entity type, for every type seen in gold or predictions.
    pub fn per_type(&self) -> BTreeMap<String, Counts> {
        self.counts.clone()
    }

    /// Scores of the counts summed over types.
    pub fn micro(&self) -> Scores {
        sum_counts(self.counts.values()).scores()
    }

    /// Mean of the per-type scores; `None` when no type appears at all (seqeval's NaN).
    pub fn macro_avg(&self) -> Option<Scores> {
        mean_scores(self.counts.values())
    }
}

/// Multi-label topic scoring over documents that carry topic annotations; `labels` fixes the label
/// set (all are reported, even with zero support).
#[derive(Debug, Clone)]
pub struct TopicScorer {
    counts: BTreeMap<String, Counts>,
    documents: usize,
}

impl TopicScorer {
    /// A scorer for exactly these labels.
    pub fn new(labels: &[String]) -> Self {
        TopicScorer {
            counts: labels
                .iter()
                .map(|l| (l.clone(), Counts::default()))
                .collect(),
            documents: 0,
        }
    }

    /// Adds one document's gold and predicted topics. Topics outside the label set are ignored:
    /// the schema rejects them on input, so they can only be a caller's leftovers.
    pub fn add(&mut self, gold: &[String], pred: &[String]) {
        self.documents += 1;
        for (label, c) in &mut self.counts {
            match (gold.contains(label), pred.contains(label)) {
                (true, true) => c.tp += 1,
                (true, false) => c.fn_ += 1,
                (false, true) => c.fp += 1,
                (false, false) => {}
            }
        }
    }

    /// Counts per label, every label of the set included.
    pub fn per_label(&self) -> BTreeMap<String, Counts> {
        self.counts.clone()
    }

    /// Scores of the counts summed over labels.
    pub fn micro(&self) -> Scores {
        sum_counts(self.counts.values()).scores()
    }

    /// Mean of the per-label scores (all zero for an empty label set).
    pub fn macro_avg(&self) -> Scores {
        mean_scores(self.counts.values()).unwrap_or(Scores {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0,
        })
    }

    /// Number of documents added.
    pub fn documents(&self) -> usize {
        self.documents
    }
}

/// Decision thresholds that maximise each topic's F1 on held-out data. `probs[d][k]` is document d's
/// probability for topic k, `gold[d][k]` whether it has it. Candidate thresholds: midpoints between
/// sorted distinct probabilities (and 0.5 when a topic has no positive example); ties -> the
/// threshold closest to 0.5. Returns one threshold per topic.
///
/// A topic is predicted when its probability is `>=` the threshold. The probabilities are bracketed
/// by 0 and 1 before taking midpoints, so "predict every document" is a candidate too (otherwise a
/// topic that every held-out document has could never reach F1 = 1). Without documents, the
/// number of topics is unknown and the result is empty.
pub fn best_thresholds(probs: &[Vec<f32>], gold: &[Vec<bool>]) -> Vec<f32> {
    assert_eq!(probs.len(), gold.len(), "one gold row per probability row");
    let topics = probs.first().map_or(0, Vec::len);
    (0..topics)
        .map(|k| {
            let column: Vec<(f32, bool)> =
                probs.iter().zip(gold).map(|(p, g)| (p[k], g[k])).collect();
            best_threshold(column)
        })
        .collect()
}

/// The best threshold of one topic, by a sweep from the highest probability down.
fn best_threshold(mut column: Vec<(f32, bool)>) -> f32 {
    column.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = column.iter().filter(|(_, g)| *g).count();
    let f1_at = |tp: usize, fp: usize| ratio(2 * tp, tp + fp + positives);

    let mut candidates: Vec<(f32, f64)> = Vec::new();
    if positives == 0 {
        candidates.push((0.5, 0.0));
    }
    if let Some(&(max, _)) = column.first() {
        if max < 1.0 {
            candidates.push((midpoint(max, 1.0), 0.0)); // predict nothing
        }
    }
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < column.len() {
        let value = column[i].0;
        // Take in every document with this probability: a threshold cannot split them. Compared
        // bit for bit, so that a NaN (equal to nothing, itself included) is taken in too.
        while i < column.len() && column[i].0.total_cmp(&value).is_eq() {
            if column[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let below = column.get(i).map_or(0.0, |&(p, _)| p);
        if below < value {
            candidates.push((midpoint(below, value), f1_at(tp, fp)));
        }
    }

    let mut best = (0.5_f32, f64::NEG_INFINITY);
    for (t, f) in candidates {
        let closer = (t - 0.5).abs() < (best.0 - 0.5).abs();
        if f > best.1 || (f == best.1 && closer) {
            best = (t, f);
        }
    }
    best.0
}

/// A threshold strictly above `lo` and at most `hi`, so that `p >= t` separates them even when the
/// two are adjacent floats and their midpoint rounds down to `lo`.
fn midpoint(lo: f32, hi: f32) -> f32 {
    let t = ((lo as f64 + hi as f64) / 2.0) as f32;
    if t <= lo {
        hi
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<Tag> {
        s.split_whitespace()
            .map(|t| Tag::parse(t).unwrap())
            .collect()
    }

    fn spans(tags_: &str, mode: ChunkMode) -> Vec<(std::ops::Range<usize>, String)> {
        chunks(&tags(tags_), mode)
            .into_iter()
            .map(|e| (e.words, e.label))
            .collect()
    }

    fn ent(words: std::ops::Range<usize>, label: &str) -> Entity {
        Entity {
            words,
            label: label.into(),
        }
    }

    fn strings(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn b_b_gives_two_entities_in_both_modes() {
        for mode in [ChunkMode::Strict, ChunkMode::Lenient] {
            assert_eq!(
                spans("B-PER B-PER", mode),
                [(0..1, "PER".into()), (1..2, "PER".into())]
            );
        }
    }

    #[test]
    fn stray_inside_is_dropped_in_strict_and_starts_an_entity_in_lenient() {
        assert!(spans("O I-PER I-PER O", ChunkMode::Strict).is_empty());
        assert_eq!(
            spans("O I-PER I-PER O", ChunkMode::Lenient),
            [(1..3, "PER".into())]
        );
    }

    #[test]
    fn inside_of_other_type_ends_the_entity_in_strict() {
        assert_eq!(
            spans("B-PER I-LOC I-LOC B-ORG I-ORG", ChunkMode::Strict),
            [(0..1, "PER".into()), (3..5, "ORG".into())]
        );
        assert_eq!(
            spans("B-PER I-LOC I-LOC", ChunkMode::Lenient),
            [(0..1, "PER".into()), (1..3, "LOC".into())]
        );
    }

    #[test]
    fn entity_scores_need_exact_span_and_type() {
        let mut s = EntityScorer::default();
        s.add(
            &[ent(0..2, "PER"), ent(3..4, "LOC")],
            &[ent(0..2, "PER"), ent(3..5, "LOC"), ent(6..7, "ORG")],
        );
        let per = s.per_type();
        assert_eq!(
            per["PER"],
            Counts {
                tp: 1,
                fp: 0,
                fn_: 0
            }
        );
        assert_eq!(
            per["LOC"],
            Counts {
                tp: 0,
                fp: 1,
                fn_: 1
            }
        );
        assert_eq!(
            per["ORG"],
            Counts {
                tp: 0,
                fp: 1,
                fn_: 0
            }
        );
        let micro = s.micro();
        assert_eq!(
            (micro.precision, micro.recall, micro.support),
            (1.0 / 3.0, 0.5, 2)
        );
        assert_eq!(s.macro_avg().unwrap().f1, 1.0 / 3.0);
        assert_eq!(EntityScorer::default().macro_avg(), None);
    }

    #[test]
    fn topic_micro_and_macro() {
        let mut s = TopicScorer::new(&strings("energy trade defense"));
        s.add(&strings("energy trade"), &strings("energy"));
        s.add(&strings("energy"), &strings("energy trade"));
        s.add(&[], &strings("trade"));
        assert_eq!(s.documents(), 3);
        let per = s.per_label();
        assert_eq!(
            per["energy"],
            Counts {
                tp: 2,
                fp: 0,
                fn_: 0
            }
        );
        assert_eq!(
            per["trade"],
            Counts {
                tp: 0,
                fp: 2,
                fn_: 1
            }
        );
        assert_eq!(per["defense"], Counts::default());
        // micro: tp 2, fp 2, fn 1 -> P 0.5, R 2/3, F1 4/7.
        let micro = s.micro();
        assert_eq!((micro.precision, micro.support), (0.5, 3));
        assert!((micro.f1 - 4.0 / 7.0).abs() < 1e-12);
        // macro: energy 1, trade 0, defense 0 (zero support still counts).
        let macro_ = s.macro_avg();
        assert!((macro_.f1 - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(macro_.support, 3);
    }

    #[test]
    fn thresholds_maximise_f1_per_topic() {
        let probs = vec![
            vec![0.9, 0.2, 0.3],
            vec![0.6, 0.1, 0.7],
            vec![0.4, 0.3, 0.8],
            vec![0.1, 0.05, 0.9],
        ];
        let gold = vec![
            vec![true, false, true],
            vec![true, false, true],
            vec![false, false, true],
            vec![false, false, true],
        ];
        let t = best_thresholds(&probs, &gold);
        // Topic 0: any cut in (0.4, 0.6) is perfect; the midpoint is 0.5.
        assert_eq!(t[0], 0.5);
        // Topic 1: no positives, every cut has F1 0 -> 0.5.
        assert_eq!(t[1], 0.5);
        // Topic 2: all positive -> below the lowest probability, (0 + 0.3) / 2.
        assert_eq!(t[2], 0.15);
    }

    #[test]
    fn best_threshold_wins_and_ties_go_to_the_one_closest_to_half() {
        // 0.9(+) 0.3(-) 0.2(+): cut 0.6 -> F1 2/3; cut 0.25 -> 1/2; cut 0.1 -> 4/5 (no tie).
        assert_eq!(
            best_thresholds(
                &[vec![0.9], vec![0.3], vec![0.2]],
                &[vec![true], vec![false], vec![true]]
            ),
            [0.1]
        );
        // 0.8(+) 0.6(-) 0.4(-) 0.2(+): cut 0.7 -> 2/3, cut 0.1 -> 2/3 (tp2 fp2). 0.7 is closer.
        let probs = [vec![0.8], vec![0.6], vec![0.4], vec![0.2]];
        let gold = [vec![true], vec![false], vec![false], vec![true]];
        let t = best_thresholds(&probs, &gold);
        assert!((t[0] - 0.7).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn threshold_search_ends_on_nan_probabilities() {
        // Before the fix a NaN never compared equal to itself and the sweep never advanced.
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let probs = [vec![f32::NAN], vec![0.4], vec![f32::NAN]];
            let gold = [vec![true], vec![false], vec![false]];
            send.send(best_thresholds(&probs, &gold)).unwrap();
        });
        let t = receive
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the threshold search ends");
        assert!((0.0..=1.0).contains(&t[0]), "{t:?}");
    }
}
