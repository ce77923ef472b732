//! A `tag` run: the inputs are read, tagged and written a chunk at a time (memory stays flat),
//! each article's record in the chosen format to the output ([`sink`]: a partial file renamed when
//! complete, resumable), optionally with the page of every tagged article. With a shard, only that
//! shard's articles are tagged; with `resume`, those already in the output are skipped.

pub mod sink;

use super::html::{render_page, PageArticle};
use super::output::{Emitter, OutputRecord};
use super::progress::TagProgress;
use super::Predictor;
use crate::data::formats::brat;
use crate::data::input::{id_hash, InputItem, Inputs, Shard};
use crate::fsutil::{write_atomic, PartialDir};
use sink::{Done, Sink};
use std::collections::{HashSet, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `tag` writes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagFormat {
    Jsonl,
    Html,
    Conll,
    Brat,
    LabelStudio,
    Csv,
}

/// How to tag: where the output goes and what it keeps.
#[derive(Debug, Clone)]
pub struct TagOptions {
    pub format: TagFormat,
    /// The output file (a directory for brat); `None`: standard output.
    pub out: Option<PathBuf>,
    /// Continue what an interrupted run left in `out` (JSONL only).
    pub resume: bool,
    pub shard: Option<Shard>,
    /// Also write the page of the tagged articles here.
    pub html: Option<PathBuf>,
    /// Keep only entities scored at least this.
    pub min_score: Option<f32>,
    /// Keep only these entity types (all when empty).
    pub labels: Vec<String>,
    /// Topic thresholds, in the model's topic order.
    pub thresholds: Vec<f32>,
    /// Names the model in Label Studio output.
    pub model_version: String,
    /// Windows per batch (articles are read `32 * batch_size` at a time).
    pub batch_size: usize,
}

/// What a run did, for its closing line and exit code.
#[derive(Debug, Clone, Default)]
pub struct TagSummary {
    pub tagged: usize,
    /// Articles this run could not tag.
    pub failed: usize,
    /// Sub-tokens of the tagged articles.
    pub tokens: usize,
    pub seconds: f64,
    /// The shard tagged, and the articles left to other shards.
    pub shard: Option<(Shard, usize)>,
    /// Input paths skipped.
    pub skipped_paths: usize,
    /// Ids that occur more than once in the inputs.
    pub duplicates: usize,
    /// With `resume`: records already in the output, and how many of them are errors.
    pub resumed: Option<(usize, usize)>,
}

impl TagSummary {
    /// Whether the output holds error records (this run's or resumed ones): exit code 2.
    pub fn any_failed(&self) -> bool {
        self.failed + self.resumed.map_or(0, |(_, failed)| failed) > 0
    }
}

impl std::fmt::Display for TagSummary {
    /// `tagged N article(s), F failed, T sub-tokens in S s (R tokens/s)` and notes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tagged {} article(s), {} failed, {} sub-tokens in {:.2}s ({:.0} tokens/s)",
            self.tagged,
            self.failed,
            self.tokens,
            self.seconds,
            self.tokens as f64 / self.seconds.max(1e-9)
        )?;
        if let Some((shard, n)) = self.shard {
            write!(f, "; shard {shard}: {n} article(s) left to other shards")?;
        }
        if self.skipped_paths > 0 {
            write!(f, "; {} path(s) skipped", self.skipped_paths)?;
        }
        if self.duplicates > 0 {
            write!(f, "; {} repeated id(s) in the inputs", self.duplicates)?;
        }
        if let Some((resumed, failed)) = self.resumed {
            write!(
                f,
                "; {resumed} already in the output ({failed} of them failed)"
            )?;
        }
        Ok(())
    }
}

/// Tags every article of the inputs (files, directories, `-` for stdin; see [`Inputs`]) with
/// `predictor` and writes the output `options` ask for; see the module documentation. Fails when
/// the inputs hold no article.
pub fn tag(
    predictor: &Predictor,
    input_paths: &[PathBuf],
    options: &TagOptions,
) -> anyhow::Result<TagSummary> {
    let model = predictor.model();
    let mut inputs = Inputs::open(input_paths)?;
    if input_paths.iter().any(|p| p.as_os_str() == "-") && std::io::stdin().is_terminal() {
        eprintln!("reading articles from standard input (JSONL lines or text; end with Ctrl-D)");
    }
    for w in &inputs.warnings {
        eprintln!("warning: {w}");
    }
    for s in &inputs.skipped {
        eprintln!("warning: {}: skipped ({})", s.path.display(), s.reason);
    }
    let (mut sink, done) = match &options.out {
        Some(p) if options.format == TagFormat::Brat => {
            (Sink::Dir(PartialDir::open(p)?), Done::default())
        }
        Some(p) => Sink::open(p, options.resume)?,
        None => (Sink::Stdout(std::io::stdout().lock()), Done::default()),
    };
    let mut select = Select::new(options.shard, done);
    let started = Instant::now();
    let mut summary = TagSummary::default();
    // The page needs every article's text; only kept when a page is asked for.
    let mut page: Vec<(String, OutputRecord)> = Vec::new();
    let keep_page = options.html.is_some() || options.format == TagFormat::Html;
    let mut emitter = Emitter::new(options.format, &options.model_version);
    let mut brat_names = HashSet::new();
    // A chunk of many batches lets batches be formed of windows of similar lengths (little
    // padding).
    let chunk_size = options.batch_size.max(1) * 32;
    // Counting ahead reads the inputs once more: only worth it for a bar someone watches.
    let total = std::io::stderr()
        .is_terminal()
        .then(|| inputs.estimated_total())
        .flatten();
    let progress = TagProgress::new(total);
    loop {
        let chunk: Vec<InputItem> = inputs
            .by_ref()
            .filter(|item| select.keep(item))
            .take(chunk_size)
            .collect();
        for note in select.notes.drain(..) {
            progress.println(&note);
        }
        if chunk.is_empty() {
            break;
        }
        let articles: Vec<_> = chunk
            .iter()
            .filter_map(|i| {
                if let InputItem::Article(a) = i {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect();
        let predictions = predictor.predict(&articles)?;
        let mut preds = articles.iter().zip(predictions);
        let mut lines: Vec<u8> = Vec::new();
        for item in &chunk {
            let record = match item {
                InputItem::Article(_) => {
                    let (article, p) = preds.next().ok_or_else(|| {
                        anyhow::anyhow!("the model gave fewer predictions than articles")
                    })?;
                    if p.tokens == 0 {
                        // Nothing reached the model (every word dropped by the tokenizer).
                        summary.failed += 1;
                        let error = "empty article (no word the model can read)".to_string();
                        progress.println(&format!("error: {}: {error}", article.id));
                        OutputRecord::Failed {
                            id: article.id.clone(),
                            error,
                        }
                    } else {
                        summary.tagged += 1;
                        summary.tokens += p.tokens;
                        let mut p = p;
                        p.entities.retain(|e| {
                            options.min_score.is_none_or(|m| e.score >= m)
                                && (options.labels.is_empty()
                                    || options.labels.contains(&e.entity.label))
                        });
                        OutputRecord::tagged(article, &p, model.topics(), &options.thresholds)
                    }
                }
                InputItem::Failed { id, error } => {
                    summary.failed += 1;
                    progress.println(&format!("error: {id}: {error}"));
                    OutputRecord::Failed {
                        id: id.clone(),
                        error: error.clone(),
                    }
                }
            };
            let article = match item {
                InputItem::Article(art) => Some(art),
                InputItem::Failed { .. } => None,
            };
            lines.extend(emitter.record(article, &record));
            if let (TagFormat::Brat, Some(art), OutputRecord::Tagged { .. }) =
                (options.format, article, &record)
            {
                let name = brat::file_name(&art.id, &mut brat_names);
                sink.write_file(&format!("{name}.txt"), art.text.as_bytes())?;
                sink.write_file(
                    &format!("{name}.ann"),
                    brat::prediction_ann(&record).as_bytes(),
                )?;
            }
            if keep_page {
                let text = article.map(|a| a.text.clone()).unwrap_or_default();
                page.push((text, record));
            }
        }
        sink.write(&lines)?;
        progress.advance(select.seen, summary.tokens);
    }
    progress.finish();
    let rendered = keep_page.then(|| {
        let articles: Vec<PageArticle> = page
            .iter()
            .map(|(text, record)| PageArticle { text, record })
            .collect();
        render_page("newstag: tagged articles", &articles)
    });
    if select.seen == 0 {
        sink.discard();
    } else {
        let mut end = emitter.end();
        if let (TagFormat::Html, Some(html)) = (options.format, &rendered) {
            end.extend(html.as_bytes());
        }
        sink.write(&end)?;
        sink.finish()?;
    }
    if let (Some(path), Some(html)) = (&options.html, &rendered) {
        write_atomic(path, html.as_bytes())?;
    }
    if matches!(options.format, TagFormat::Brat | TagFormat::Csv) && summary.tagged > 0 {
        eprintln!("note: {:?} output holds no topics", options.format);
    }
    for p in &inputs.empty {
        eprintln!("warning: {}: no articles (the file is empty)", p.display());
    }
    anyhow::ensure!(
        select.seen > 0,
        "no articles in the inputs ({})",
        input_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let unmatched: usize = select.done.ids.values().map(VecDeque::len).sum();
    if unmatched > 0 {
        eprintln!(
            "warning: {}: {unmatched} line(s) have ids that are not among the inputs (another input or --shard?)",
            options.out.as_deref().unwrap_or(Path::new("-")).display()
        );
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.shard = options.shard.map(|s| (s, select.other_shards));
    summary.skipped_paths = inputs.skipped.len();
    summary.duplicates = select.duplicates;
    summary.resumed = options
        .resume
        .then_some((select.resumed, select.resumed_failed));
    Ok(summary)
}

/// Repeated ids named one by one before only their count is kept.
const DUPLICATES_NAMED: usize = 5;

/// Decides which input articles this run tags: those of its shard not already in the output.
struct Select {
    shard: Option<Shard>,
    done: Done,
    /// Input items read, before any selection.
    seen: usize,
    other_shards: usize,
    resumed: usize,
    resumed_failed: usize,
    /// Hashes of the ids read so far (8 bytes an article: memory stays small on long streams).
    ids: HashSet<u64>,
    duplicates: usize,
    /// Warnings to print (the caller prints them around its progress bar).
    notes: Vec<String>,
}

impl Select {
    fn new(shard: Option<Shard>, done: Done) -> Self {
        Select {
            shard,
            done,
            seen: 0,
            other_shards: 0,
            resumed: 0,
            resumed_failed: 0,
            ids: HashSet::new(),
            duplicates: 0,
            notes: Vec::new(),
        }
    }

    fn keep(&mut self, item: &InputItem) -> bool {
        self.seen += 1;
        let id = item.id();
        if !self.ids.insert(id_hash(id)) {
            self.duplicates += 1;
            if self.duplicates <= DUPLICATES_NAMED {
                self.notes.push(format!(
                    "warning: id {id:?} occurs more than once in the inputs: each is tagged, and their output lines share the id"
                ));
            }
        }
        if self.shard.is_some_and(|s| !s.contains(id)) {
            self.other_shards += 1;
            return false;
        }
        // A multiset: an id that occurs twice in the inputs is skipped only as often as it is done.
        if let Some(queue) = self.done.ids.get_mut(id) {
            if let Some(was_error) = queue.pop_front() {
                if queue.is_empty() {
                    self.done.ids.remove(id);
                }
                self.resumed += 1;
                self.resumed_failed += usize::from(was_error);
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_skips_done_ids_as_a_multiset_and_other_shards() {
        let mut done = Done::default();
        done.ids.entry("a".into()).or_default().push_back(false);
        let mut select = Select::new(None, done);
        let item = |id: &str| InputItem::Failed {
            id: id.into(),
            error: String::new(),
        };
        assert!(!select.keep(&item("a")));
        assert!(select.keep(&item("a")), "the second \"a\" is not done yet");
        assert!(select.keep(&item("b")));
        assert_eq!((select.seen, select.resumed), (3, 1));
        select.shard = Some("0/2".parse().unwrap());
        let kept = (0..100)
            .filter(|i| select.keep(&item(&format!("x{i}"))))
            .count();
        assert_eq!(kept + select.other_shards, 100);
        assert!(kept > 30 && kept < 70, "{kept}");
    }

    #[test]
    fn the_summary_line_names_what_the_run_did() {
        let mut s = TagSummary {
            tagged: 3,
            failed: 1,
            tokens: 200,
            seconds: 2.0,
            ..Default::default()
        };
        assert_eq!(
            s.to_string(),
            "tagged 3 article(s), 1 failed, 200 sub-tokens in 2.00s (100 tokens/s)"
        );
        assert!(s.any_failed());
        s.failed = 0;
        assert!(!s.any_failed());
        s.resumed = Some((4, 1));
        s.duplicates = 2;
        assert!(s.any_failed(), "a resumed error line counts");
        assert!(s.to_string().ends_with(
            "; 2 repeated id(s) in the inputs; 4 already in the output (1 of them failed)"
        ));
    }
}
