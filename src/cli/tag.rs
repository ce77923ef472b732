use crate::data::input::{InputItem, Inputs};
use crate::device::parse_device;
use crate::fsutil::write_atomic;
use crate::infer::html::{render_page, PageArticle};
use crate::infer::output::OutputRecord;
use crate::infer::Predictor;
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
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
    /// Write JSONL here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a self-contained HTML page of the tagged articles here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Windows per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: TagArgs) -> anyhow::Result<ExitCode> {
    let device = parse_device(&a.device)?;
    let model = NewsTagger::load(&resolve_model_dir(&a.model, None)?, &device)?;
    let predictor = Predictor::new(&model, a.batch_size);
    let mut inputs = Inputs::open(&a.inputs)?;
    for s in &inputs.skipped {
        eprintln!(
            "warning: {}: skipped (neither .txt nor .jsonl)",
            s.display()
        );
    }
    let mut sink: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let started = Instant::now();
    let (mut tagged, mut failed, mut tokens) = (0usize, 0usize, 0usize);
    // The page needs every article's text; only kept when a page is asked for.
    let mut page: Vec<(String, OutputRecord)> = Vec::new();
    // Articles are read, tagged and written a chunk at a time: memory stays flat.
    let chunk_size = a.batch_size.max(1) * 4;
    loop {
        let chunk: Vec<InputItem> = inputs.by_ref().take(chunk_size).collect();
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
        let mut lines = String::new();
        for item in &chunk {
            let record = match item {
                InputItem::Article(_) => {
                    let (article, p) = preds.next().expect("one prediction per article");
                    tagged += 1;
                    tokens += p.tokens;
                    OutputRecord::tagged(article, &p, model.topics(), model.thresholds())
                }
                InputItem::Failed { id, error } => {
                    failed += 1;
                    eprintln!("error: {id}: {error}");
                    OutputRecord::Failed {
                        id: id.clone(),
                        error: error.clone(),
                    }
                }
            };
            lines.push_str(&record.to_line());
            lines.push('\n');
            if a.html.is_some() {
                let text = if let InputItem::Article(art) = item {
                    art.text.clone()
                } else {
                    String::new()
                };
                page.push((text, record));
            }
        }
        sink.write_all(lines.as_bytes())
            .and_then(|_| sink.flush())
            .context("cannot write output")?;
    }
    if let Some(path) = &a.html {
        let articles: Vec<PageArticle> = page
            .iter()
            .map(|(text, record)| PageArticle { text, record })
            .collect();
        write_atomic(
            path,
            render_page("newstag: tagged articles", &articles).as_bytes(),
        )?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("tagged {tagged} article(s), {failed} failed, {tokens} sub-tokens in {secs:.1}s ({:.0} tokens/s)", tokens as f64 / secs.max(1e-9));
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
