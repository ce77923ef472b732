use crate::data::formats::{brat, conll, csv, label_studio};
use crate::data::input::{id_hash, InputItem, Inputs, Shard};
use crate::data::{Article, CharOffsets, Entity};
use crate::device::parse_device;
use crate::fsutil::{
    create_parent, is_stream, partial_path, write_atomic, write_target, PartialDir,
};
use crate::infer::html::{render_page, PageArticle};
use crate::infer::output::OutputRecord;
use crate::infer::progress::TagProgress;
use crate::infer::Predictor;
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use crate::outputs::RunPaths;
use anyhow::Context;
use clap::Args;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct TagArgs {
    /// Trained model: a directory or a hub id.
    #[arg(long)]
    model: String,
    /// .txt files (one article each), JSONL files with id and text, directories of those, or - for stdin.
    #[arg(default_value = "-")]
    inputs: Vec<PathBuf>,
    /// Write here instead of stdout (for brat: a new or empty directory). The output goes to
    /// OUT.partial first, which becomes OUT when every article is done: an interrupted run leaves
    /// OUT as it was.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format: jsonl (default), html (the --html page), conll (IOB2 tags), brat (a
    /// directory of .txt/.ann pairs, given by --out; scores as annotator notes), label-studio
    /// (tasks with predictions, importable as pre-annotations) or csv (one row per entity).
    #[arg(long, value_enum, default_value_t = TagFormat::Jsonl)]
    format: TagFormat,
    /// Continue an interrupted run: keep the complete lines of OUT.partial (or of OUT), cut off a
    /// torn last line, skip their articles and append the rest. Without either file, starts afresh.
    #[arg(long, requires = "out", conflicts_with = "html")]
    resume: bool,
    /// Tag only shard K of N (0-based: 0/4 .. 3/4), chosen by a stable hash of each article id.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Also write a self-contained HTML page of the tagged articles here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Keep only entities whose score (the probability of that exact span and type) is at least S.
    #[arg(long, value_name = "S", value_parser = probability)]
    min_score: Option<f32>,
    /// Keep only these entity types (comma-separated: PER,ORG).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Topic thresholds instead of the model's: P for every topic, or TOPIC=P (repeatable).
    #[arg(long, value_name = "[TOPIC=]P")]
    topic_threshold: Vec<String>,
    #[command(flatten)]
    run: super::InferenceArgs,
}

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

/// Turns output records into the bytes of the chosen format, a chunk at a time.
struct Emitter {
    format: TagFormat,
    model_version: String,
    records: usize,
}

impl Emitter {
    /// The bytes of one record (brat writes files instead; html collects a page). An article
    /// that failed has no place in CoNLL, Label Studio or CSV output (its error is on stderr).
    fn record(&mut self, article: Option<&Article>, record: &OutputRecord) -> Vec<u8> {
        let first = self.records == 0;
        let out = match (self.format, article) {
            (TagFormat::Jsonl, _) => format!("{}\n", record.to_line()).into_bytes(),
            (TagFormat::Csv, _) => {
                let mut out = if first { csv::header() } else { Vec::new() };
                out.extend(csv::rows(record));
                out
            }
            (TagFormat::Conll, Some(article)) => {
                conll::document(article, &record_entities(article, record)).into_bytes()
            }
            (TagFormat::LabelStudio, Some(article)) => {
                let task = label_studio::prediction_task(article, record, &self.model_version);
                let lead = if first { "[\n" } else { ",\n" };
                format!("{lead}{task}").into_bytes()
            }
            _ => Vec::new(),
        };
        if !out.is_empty() {
            self.records += 1;
        }
        out
    }

    /// The bytes that close the output.
    fn end(&self) -> Vec<u8> {
        match self.format {
            TagFormat::LabelStudio if self.records > 0 => b"\n]\n".to_vec(),
            TagFormat::LabelStudio => b"[]\n".to_vec(),
            TagFormat::Csv if self.records == 0 => csv::header(),
            _ => Vec::new(),
        }
    }
}

/// An output record's entities as word ranges of its article.
fn record_entities(article: &Article, record: &OutputRecord) -> Vec<Entity> {
    let OutputRecord::Tagged { entities, .. } = record else {
        return Vec::new();
    };
    let chars = CharOffsets::new(&article.text);
    entities
        .iter()
        .filter_map(|e| {
            let bytes = chars.to_byte(e.start)?..chars.to_byte(e.end)?;
            let words = article.words_of_bytes(bytes).ok()?;
            Some(Entity {
                words,
                label: e.label.clone(),
            })
        })
        .collect()
}

pub fn run(a: TagArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !a.resume || a.format == TagFormat::Jsonl,
        "--resume continues JSONL output only (--format jsonl)"
    );
    anyhow::ensure!(
        a.format != TagFormat::Brat || a.out.is_some(),
        "--format brat writes a directory of .txt/.ann pairs: give it with --out DIR"
    );
    let device = parse_device(&a.run.device)?;
    let model_dir = resolve_model_dir(&a.model, None)?;
    let mut paths = RunPaths::new();
    for input in &a.inputs {
        paths.reads("the input", input)?;
    }
    paths.reads_model("--model", &model_dir)?;
    match &a.out {
        Some(out) if a.format == TagFormat::Brat => {
            paths.writes_run("--out", out)?;
            paths.writes_run("--out's partial directory", &partial_path(out))?;
        }
        Some(out) => {
            paths.writes("--out", out)?;
            paths.writes("--out's partial file", &partial_path(out))?;
        }
        None => {}
    }
    if let Some(html) = &a.html {
        paths.writes("--html", html)?;
    }
    paths.check()?;
    let model = NewsTagger::load(&model_dir, &device)?;
    let thresholds = topic_thresholds(&a.topic_threshold, model.topics(), model.thresholds())?;
    let types = model.tags.types();
    if let Some(unknown) = a.labels.iter().find(|l| !types.contains(l)) {
        anyhow::bail!(
            "--labels {unknown}: the model has no such entity type (it predicts {})",
            types.join(", ")
        );
    }
    let predictor = Predictor::with_precision(&model, a.run.batch_size, a.run.precision)?;
    let mut inputs = Inputs::open(&a.inputs)?;
    if a.inputs.iter().any(|p| p.as_os_str() == "-") && std::io::stdin().is_terminal() {
        eprintln!("reading articles from standard input (JSONL lines or text; end with Ctrl-D)");
    }
    for w in &inputs.warnings {
        eprintln!("warning: {w}");
    }
    for s in &inputs.skipped {
        eprintln!("warning: {}: skipped ({})", s.path.display(), s.reason);
    }
    let (mut sink, done) = match &a.out {
        Some(p) if a.format == TagFormat::Brat => {
            (Sink::Dir(PartialDir::open(p)?), Done::default())
        }
        Some(p) => Sink::open(p, a.resume)?,
        None => (Sink::Stdout(std::io::stdout().lock()), Done::default()),
    };
    let mut select = Select::new(a.shard, done);
    let started = Instant::now();
    let (mut tagged, mut failed, mut tokens) = (0usize, 0usize, 0usize);
    // The page needs every article's text; only kept when a page is asked for.
    let mut page: Vec<(String, OutputRecord)> = Vec::new();
    let keep_page = a.html.is_some() || a.format == TagFormat::Html;
    let mut emitter = Emitter {
        format: a.format,
        model_version: format!("newstag {}: {}", env!("CARGO_PKG_VERSION"), a.model),
        records: 0,
    };
    let mut brat_names = HashSet::new();
    // Articles are read, tagged and written a chunk at a time: memory stays flat, and a chunk
    // of many batches lets batches be formed of windows of similar lengths (little padding).
    let chunk_size = a.run.batch_size.max(1) * 32;
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
                        failed += 1;
                        let error = "empty article (no word the model can read)".to_string();
                        progress.println(&format!("error: {}: {error}", article.id));
                        OutputRecord::Failed {
                            id: article.id.clone(),
                            error,
                        }
                    } else {
                        tagged += 1;
                        tokens += p.tokens;
                        let mut p = p;
                        p.entities.retain(|e| {
                            a.min_score.is_none_or(|m| e.score >= m)
                                && (a.labels.is_empty() || a.labels.contains(&e.entity.label))
                        });
                        OutputRecord::tagged(article, &p, model.topics(), &thresholds)
                    }
                }
                InputItem::Failed { id, error } => {
                    failed += 1;
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
                (a.format, article, &record)
            {
                let name = brat::file_name(&art.id, &mut brat_names);
                sink.write_file(&format!("{name}.txt"), art.text.as_bytes())?;
                sink.write_file(
                    &format!("{name}.ann"),
                    brat::prediction_ann(&record).as_bytes(),
                )?;
            }
            if keep_page {
                let text = if let InputItem::Article(art) = item {
                    art.text.clone()
                } else {
                    String::new()
                };
                page.push((text, record));
            }
        }
        sink.write(&lines)?;
        progress.advance(select.seen, tokens);
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
        if let (TagFormat::Html, Some(html)) = (a.format, &rendered) {
            end.extend(html.as_bytes());
        }
        sink.write(&end)?;
        sink.finish()?;
    }
    if let (Some(path), Some(html)) = (&a.html, &rendered) {
        write_atomic(path, html.as_bytes())?;
    }
    if matches!(a.format, TagFormat::Brat | TagFormat::Csv) && tagged > 0 {
        eprintln!("note: {:?} output holds no topics", a.format);
    }
    for p in &inputs.empty {
        eprintln!("warning: {}: no articles (the file is empty)", p.display());
    }
    anyhow::ensure!(
        select.seen > 0,
        "no articles in the inputs ({})",
        a.inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let unmatched: usize = select.done.ids.values().map(VecDeque::len).sum();
    if unmatched > 0 {
        eprintln!(
            "warning: {}: {unmatched} line(s) have ids that are not among the inputs (another input or --shard?)",
            a.out.as_deref().unwrap_or(Path::new("-")).display()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let mut notes = String::new();
    if let Some(shard) = a.shard {
        notes.push_str(&format!(
            "; shard {shard}: {} article(s) left to other shards",
            select.other_shards
        ));
    }
    if !inputs.skipped.is_empty() {
        notes.push_str(&format!("; {} path(s) skipped", inputs.skipped.len()));
    }
    if select.duplicates > 0 {
        notes.push_str(&format!(
            "; {} repeated id(s) in the inputs",
            select.duplicates
        ));
    }
    if a.resume {
        notes.push_str(&format!(
            "; {} already in the output ({} of them failed)",
            select.resumed, select.resumed_failed
        ));
    }
    eprintln!("tagged {tagged} article(s), {failed} failed, {tokens} sub-tokens in {secs:.2}s ({:.0} tokens/s){notes}", tokens as f64 / secs.max(1e-9));
    // The exit code speaks for the whole output file, including lines kept by --resume.
    let failed = failed + select.resumed_failed;
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A probability, 0 to 1.
fn probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(_) => Err("must be a probability, from 0 to 1".into()),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// The model's thresholds with `--topic-threshold` overrides applied: `P` for every topic, then
/// `TOPIC=P` for one.
fn topic_thresholds(
    overrides: &[String],
    topics: &[String],
    model: &[f32],
) -> anyhow::Result<Vec<f32>> {
    let mut out = model.to_vec();
    for o in overrides {
        let (name, value) = match o.split_once('=') {
            Some((n, v)) => (Some(n), v),
            None => (None, o.as_str()),
        };
        let p = probability(value).map_err(|e| anyhow::anyhow!("--topic-threshold {o:?}: {e}"))?;
        match name {
            None => out.iter_mut().for_each(|t| *t = p),
            Some(n) => {
                let i = topics.iter().position(|t| t == n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--topic-threshold {o:?}: the model has no topic {n:?} (its topics: {})",
                        topics.join(", ")
                    )
                })?;
                out[i] = p;
            }
        }
    }
    Ok(out)
}

/// Where the output lines go. A file is written as OUT.partial and renamed to OUT when the run is
/// complete, so an interrupted run never leaves a half-written OUT (and `--resume` continues the
/// partial file); standard output and streams (a FIFO, `/dev/stdout`) are written as they come.
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    Stream {
        file: File,
        path: PathBuf,
    },
    Partial {
        file: File,
        partial: PathBuf,
        target: PathBuf,
        /// The mode of the OUT being replaced, kept.
        mode: Option<std::fs::Permissions>,
    },
    /// A directory of files (brat), written whole.
    Dir(PartialDir),
}

impl Sink {
    /// Opens `--out` (with `resume`: what an earlier run left, and the ids it holds).
    fn open(out: &Path, resume: bool) -> anyhow::Result<(Sink, Done)> {
        let (target, existing) = write_target(out)?;
        if existing.as_ref().is_some_and(is_stream) {
            anyhow::ensure!(
                !resume,
                "--out {}: --resume needs a regular file, not a stream",
                out.display()
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("{}: cannot open for writing", out.display()))?;
            let path = out.to_path_buf();
            return Ok((Sink::Stream { file, path }, Done::default()));
        }
        create_parent(&target)?;
        let partial = partial_path(&target);
        let mode = existing.as_ref().map(|m| m.permissions());
        let (file, done) = if resume {
            // Continue the partial file, or else what OUT holds (complete, or torn by an older
            // newstag), copied into the partial file: OUT stays as it is until the run is complete.
            let from = if partial.exists() || existing.is_none() {
                &partial
            } else {
                &target
            };
            open_for_resume(from, &partial)?
        } else {
            if partial.exists() {
                eprintln!(
                    "warning: {}: left by an interrupted run; starting afresh (--resume would continue it)",
                    partial.display()
                );
            }
            let file = File::create(&partial)
                .with_context(|| format!("{}: cannot create", partial.display()))?;
            (file, Done::default())
        };
        let sink = Sink::Partial {
            file,
            partial,
            target,
            mode,
        };
        Ok((sink, done))
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let (out, name): (&mut dyn Write, String) = match self {
            Sink::Stdout(s) => (s, "standard output".into()),
            Sink::Stream { file, path } => (file, path.display().to_string()),
            Sink::Partial { file, partial, .. } => (file, partial.display().to_string()),
            Sink::Dir(_) => return Ok(()),
        };
        out.write_all(bytes)
            .and_then(|_| out.flush())
            .with_context(|| format!("{name}: cannot write"))
    }

    /// Writes one file of a directory output.
    fn write_file(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::Dir(dir) => dir.write(name, bytes),
            _ => Ok(()),
        }
    }

    /// Makes the output whole: the partial file, synced, becomes OUT (with OUT's old mode).
    fn finish(self) -> anyhow::Result<()> {
        if let Sink::Dir(dir) = self {
            return dir.finish();
        }
        if let Sink::Partial {
            file,
            partial,
            target,
            mode,
        } = self
        {
            if let Some(mode) = mode {
                let _ = file.set_permissions(mode);
            }
            file.sync_all()
                .with_context(|| format!("{}: cannot write", partial.display()))?;
            std::fs::rename(&partial, &target).with_context(|| {
                format!(
                    "{}: cannot rename to {}",
                    partial.display(),
                    target.display()
                )
            })?;
            if let Some(dir) = target.parent().and_then(|d| File::open(d).ok()) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// Drops an output that received nothing, leaving OUT as it was.
    fn discard(self) {
        match self {
            Sink::Partial { partial, .. } => {
                let _ = std::fs::remove_file(partial);
            }
            Sink::Dir(dir) => dir.discard(),
            _ => {}
        }
    }
}

/// Ids already in the output (kept by --resume), in order, with whether each line was an error.
#[derive(Debug, Default)]
struct Done {
    ids: HashMap<String, VecDeque<bool>>,
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

/// The id of a complete output line, and whether it records an error.
fn complete_record(line: &[u8]) -> Option<(String, bool)> {
    let body = line.strip_suffix(b"\n")?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id")?.as_str()?.to_string();
    Some((id, value.get("error").is_some()))
}

/// Opens an output file to resume: keeps every complete line (newline-terminated JSON with an id),
/// cuts off a torn tail, and positions for appending. A damaged line followed by good ones is an
/// error, and the file is left untouched: that is not what an interrupted run leaves. The file read
/// is `path`; once it checks out, it is copied to `append_to` (the partial file) when that differs,
/// and only the copy is cut and appended to.
fn open_for_resume(path: &Path, append_to: &Path) -> anyhow::Result<(File, Done)> {
    let mut done = Done::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = File::create(append_to)
                .with_context(|| format!("{}: cannot create", append_to.display()))?;
            return Ok((f, done));
        }
        Err(e) => return Err(anyhow::anyhow!("{}: cannot read: {e}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let (mut good_end, mut offset, mut lineno) = (0u64, 0u64, 0usize);
    let mut first_bad: Option<usize> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        offset += n as u64;
        match (complete_record(&line), first_bad) {
            (Some((id, error)), None) => {
                done.ids.entry(id).or_default().push_back(error);
                good_end = offset;
            }
            (Some(_), Some(bad)) => anyhow::bail!(
                "{}:{bad}: not a complete JSON line with an id, yet line {lineno} after it is: the file is damaged, not merely cut short; repair it or tag afresh without --resume",
                path.display()
            ),
            (None, None) => first_bad = Some(lineno),
            (None, Some(_)) => {}
        }
    }
    if path != append_to {
        // A copy: OUT stays whole under its name until the resumed run replaces it.
        std::fs::copy(path, append_to).with_context(|| {
            format!("{}: cannot copy to {}", path.display(), append_to.display())
        })?;
    }
    if let Some(bad) = first_bad {
        eprintln!(
            "warning: {}:{bad}: cut off {} byte(s) of incomplete output; those articles are tagged again",
            path.display(),
            offset - good_end
        );
        OpenOptions::new()
            .write(true)
            .open(append_to)
            .and_then(|f| f.set_len(good_end))
            .with_context(|| format!("{}: cannot truncate", append_to.display()))?;
    }
    let file = OpenOptions::new()
        .append(true)
        .open(append_to)
        .with_context(|| format!("{}: cannot open for appending", append_to.display()))?;
    Ok((file, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume(content: &[u8]) -> (anyhow::Result<Done>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, content).unwrap();
        let result = open_for_resume(&p, &p).map(|(mut f, done)| {
            f.write_all(b"NEXT\n").unwrap();
            done
        });
        (result, std::fs::read(&p).unwrap())
    }

    #[test]
    fn resume_keeps_complete_lines_and_cuts_a_torn_tail() {
        let (done, after) =
            resume(b"{\"id\": \"a\", \"entities\": []}\n{\"id\": \"b\", \"error\": \"x\"}\n{\"id\": \"c\", \"ent");
        let done = done.unwrap();
        assert_eq!(
            after,
            b"{\"id\": \"a\", \"entities\": []}\n{\"id\": \"b\", \"error\": \"x\"}\nNEXT\n"
        );
        assert_eq!(done.ids["a"], [false]);
        assert_eq!(done.ids["b"], [true]);
        assert!(!done.ids.contains_key("c"));
        // A complete-looking record without its newline is cut too: it may be short of bytes.
        let (_, after) = resume(b"{\"id\": \"a\"}\n{\"id\": \"b\"}");
        assert_eq!(after, b"{\"id\": \"a\"}\nNEXT\n");
        // Zeros left by a crash count as a torn tail.
        let (_, after) = resume(b"{\"id\": \"a\"}\n\0\0\0\n\0\0");
        assert_eq!(after, b"{\"id\": \"a\"}\nNEXT\n");
        let (done, after) = resume(b"");
        assert!(done.unwrap().ids.is_empty());
        assert_eq!(after, b"NEXT\n");
    }

    #[test]
    fn resume_refuses_a_damaged_middle() {
        let (done, after) = resume(b"{\"id\": \"a\"}\ngarbage\n{\"id\": \"b\"}\n");
        let err = done.unwrap_err().to_string();
        assert!(
            err.contains("out.jsonl:2: not a complete JSON line"),
            "{err}"
        );
        assert_eq!(
            after, b"{\"id\": \"a\"}\ngarbage\n{\"id\": \"b\"}\n",
            "left untouched"
        );
    }

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
}
