//! brat standoff: a text file `DOC.txt` and its annotations `DOC.ann`, read as one pair or as every
//! pair in a directory. An entity is a text-bound line `T1<TAB>PER 0 7<TAB>Tokayev`; offsets count
//! characters (code points) of the `.txt` file as it is, end exclusive, and the recorded text
//! must match. A discontinuous span (`0 5;9 12`) is refused: newstag's entities are contiguous.
//! Other lines (relations, events, attributes, notes) are skipped, counted. brat has no document
//! labels: topics are lost writing it. The article id is the file stem.

use super::spans::{SpanCollector, Unit};
use super::{located, Losses, ReadOptions};
use crate::data::{blank_reason, Article, DataError, ReadOutcome};
use crate::infer::output::OutputRecord;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Reads a brat pair (`DOC.ann` or `DOC.txt`) or a directory of pairs.
pub fn read(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    let mut out = ReadOutcome::default();
    let pairs = if path.is_dir() {
        pairs_in(path, &mut out)?
    } else {
        vec![path.with_extension("txt")]
    };
    if pairs.is_empty() {
        let msg = "no .txt/.ann pairs in the directory";
        out.problems.push(DataError::new(path, 0, msg));
    }
    let mut skipped = 0;
    for txt in pairs {
        skipped += read_pair(&txt, opts, &mut out);
    }
    if skipped > 0 {
        out.warnings.push(format!(
            "{}: {skipped} annotation line(s) other than text-bound entities (T) skipped",
            path.display()
        ));
    }
    Ok(out)
}

/// The `.txt` files of a directory's pairs, sorted; an `.ann` without its `.txt` is a problem.
fn pairs_in(dir: &Path, out: &mut ReadOutcome) -> anyhow::Result<Vec<PathBuf>> {
    let mut txt = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the directory: {e}", dir.display()))?;
    for entry in entries {
        let p = entry
            .map_err(|e| anyhow::anyhow!("{}: cannot read the directory: {e}", dir.display()))?
            .path();
        match p.extension().and_then(|e| e.to_str()) {
            Some("txt") => txt.push(p),
            Some("ann") if !p.with_extension("txt").is_file() => {
                out.problems.push(DataError::new(
                    &p,
                    0,
                    "no .txt file beside it: brat pairs DOC.txt with DOC.ann",
                ));
            }
            _ => {}
        }
    }
    txt.sort();
    Ok(txt)
}

/// Reads one pair into `out`; returns the count of skipped non-entity lines.
fn read_pair(txt: &Path, opts: ReadOptions, out: &mut ReadOutcome) -> usize {
    let ann = txt.with_extension("ann");
    let id = super::stem(txt);
    let read = |p: &Path| -> Result<String, DataError> {
        let bytes = std::fs::read(p)
            .map_err(|e| DataError::new(p, 0, format!("cannot read: {e}")).in_article(&id))?;
        String::from_utf8(bytes).map_err(|e| {
            DataError::new(
                p,
                0,
                format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to() + 1),
            )
            .in_article(&id)
        })
    };
    let (text, annotations) = match (read(txt), read(&ann)) {
        (Ok(t), Ok(a)) => (t, a),
        (t, a) => {
            out.problems.extend(t.err());
            out.problems.extend(a.err());
            return 0;
        }
    };
    if let Some(why) = blank_reason(&text) {
        out.problems
            .push(DataError::new(txt, 0, format!("empty text ({why})")).in_article(&id));
        return 0;
    }
    let mut article = Article::from_text(&id, text);
    let mut collector = SpanCollector::new(&article, opts.schema, opts.snap);
    let mut problems: Vec<DataError> = Vec::new();
    let mut skipped = 0;
    for (i, line) in annotations.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| DataError::new(&ann, lineno, msg).in_article(&id);
        let mut fields = line.splitn(3, '\t');
        let (tid, body, recorded) = (fields.next().unwrap_or(""), fields.next(), fields.next());
        if !tid.starts_with('T') {
            skipped += 1;
            continue;
        }
        let Some(body) = body else {
            problems.push(bad(format!(
                "{tid}: expected `{tid}<TAB>TYPE START END<TAB>TEXT`"
            )));
            continue;
        };
        let (label, offsets) = body.split_once(' ').unwrap_or((body, ""));
        if offsets.contains(';') {
            problems.push(bad(format!(
                "{tid}: discontinuous span {offsets:?}: newstag's entities are one contiguous span"
            )));
            continue;
        }
        let nums: Vec<Option<usize>> = offsets.split(' ').map(|n| n.parse().ok()).collect();
        let [Some(start), Some(end)] = nums[..] else {
            problems.push(bad(format!(
                "{tid}: offsets {offsets:?} are not `START END` (whole numbers)"
            )));
            continue;
        };
        // brat shows a span's line breaks as spaces in the recorded text.
        let expect = recorded.map(|t| t.replace(['\n', '\r', '\t'], " "));
        let mut one = SpanCollector::new(&article, opts.schema, opts.snap);
        let text_at = one
            .index()
            .to_byte(Unit::CodePoints, start)
            .and_then(|a| Ok((a, one.index().to_byte(Unit::CodePoints, end)?)))
            .ok()
            .filter(|(a, b)| a <= b)
            .map(|(a, b)| article.text[a..b].replace(['\n', '\r', '\t'], " "));
        if let (Some(e), Some(t)) = (&expect, &text_at) {
            if e != t {
                problems.push(bad(format!(
                    "{tid}: the text at {start}..{end} is {t:?}, but the line records {e:?}"
                )));
                continue;
            }
        }
        one.add(tid, start, end, label, Unit::CodePoints, None);
        let (_, p, _) = one.finish();
        if let Some((at, msg)) = p.into_iter().next() {
            problems.push(bad(format!("{at}: {msg}")));
            continue;
        }
        collector.add(
            &format!("{}:{lineno}: {tid}", ann.display()),
            start,
            end,
            label,
            Unit::CodePoints,
            None,
        );
    }
    let (entities, span_problems, notes) = collector.finish();
    for (at, note) in notes {
        out.warnings.push(format!("{at}: article {id:?}: {note}"));
    }
    problems.extend(located(&ann, 0, &id, span_problems));
    if problems.is_empty() {
        article.entities = Some(entities);
        out.articles.push(article);
    } else {
        out.problems.append(&mut problems);
    }
    skipped
}

/// A file name for an article id: letters, digits, `.`, `_` and `-` kept, anything else `_`,
/// made unique among `taken`.
pub fn file_name(id: &str, taken: &mut HashSet<String>) -> String {
    let mut base: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.starts_with('.') {
        base.insert_str(0, "article");
    }
    let mut name = base.clone();
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// The `.ann` lines of entities given as `(start, end, label, text, score)` in code points.
fn ann_lines<'a>(
    spans: impl Iterator<Item = (usize, usize, &'a str, &'a str, Option<f32>)>,
) -> String {
    let mut out = String::new();
    for (k, (s, e, label, text, score)) in spans.enumerate() {
        let text = text.replace(['\n', '\r', '\t'], " ");
        out.push_str(&format!("T{}\t{label} {s} {e}\t{text}\n", k + 1));
        if let Some(score) = score {
            out.push_str(&format!(
                "#{}\tAnnotatorNotes T{}\tscore {score:.4}\n",
                k + 1,
                k + 1
            ));
        }
    }
    out
}

/// The files of a brat directory of `articles`, and what brat cannot hold.
pub fn write(articles: &[Article]) -> (Vec<(String, Vec<u8>)>, Losses) {
    let mut losses = Losses::default();
    let mut taken = HashSet::new();
    let mut files = Vec::new();
    for a in articles {
        let name = file_name(&a.id, &mut taken);
        if name != a.id {
            losses.add(
                "article id(s) changed to make file names (read back as the file stem)",
                1,
            );
        }
        if a.topics.is_some() {
            losses.add("topic list(s) (brat has no document labels)", 1);
        }
        if a.entities.is_none() {
            losses.add(
                "article(s) without entity annotation (read back as annotated, no entities)",
                1,
            );
        }
        let entities = a.entities.as_deref().unwrap_or(&[]);
        let spans = super::spans::spans_in(a, entities, Unit::CodePoints);
        let ann = ann_lines(
            spans
                .iter()
                .zip(entities)
                .map(|((s, e, t), ent)| (*s, *e, ent.label.as_str(), t.as_str(), None)),
        );
        files.push((format!("{name}.txt"), a.text.clone().into_bytes()));
        files.push((format!("{name}.ann"), ann.into_bytes()));
    }
    (files, losses)
}

/// The `.ann` of `tag`'s output for one article: its entities, each score as an annotator note.
pub fn prediction_ann(record: &OutputRecord) -> String {
    match record {
        OutputRecord::Tagged { entities, .. } => ann_lines(entities.iter().map(|e| {
            (
                e.start,
                e.end,
                e.label.as_str(),
                e.text.as_str(),
                Some(e.score),
            )
        })),
        OutputRecord::Failed { .. } => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), "🚀 Tokayev met Japarov.\n").unwrap();
        std::fs::write(
            d.join("a.ann"),
            "T1\tPER 2 9\tTokayev\nT2\tPER 14 21\tJapaorv\nT3\tPER 2 5;6 9\tTok ye\nR1\tMeets Arg1:T1 Arg2:T2\n#1\tAnnotatorNotes T1\tx\n",
        )
        .unwrap();
        std::fs::write(d.join("orphan.ann"), "").unwrap();
        let out = read(d, ReadOptions::default()).unwrap();
        let msgs: Vec<String> = out.problems.iter().map(|p| p.to_string()).collect();
        let ann = d.join("a.ann").display().to_string();
        assert!(
            msgs.iter().any(|m| m
                .ends_with("orphan.ann: no .txt file beside it: brat pairs DOC.txt with DOC.ann")),
            "{msgs:?}"
        );
        assert!(msgs.contains(&format!("{ann}:2: article \"a\": T2: the text at 14..21 is \"Japarov\", but the line records \"Japaorv\"")), "{msgs:?}");
        assert!(msgs.contains(&format!("{ann}:3: article \"a\": T3: discontinuous span \"2 5;6 9\": newstag's entities are one contiguous span")), "{msgs:?}");
        assert_eq!(out.warnings.len(), 1);
        let mut taken = HashSet::new();
        assert_eq!(file_name("a/b c", &mut taken), "a_b_c");
        assert_eq!(file_name("a/b c", &mut taken), "a_b_c-2");
        assert_eq!(file_name("..", &mut taken), "article..");
    }
}
