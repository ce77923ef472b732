//! CoNLL ([`crate::data::conll`]) with its topics sidecar: one token per line, the IOB2 tag last,
//! `-DOCSTART-` between articles. The format holds words, not text: writing loses the spacing
//! (read back, words are joined by spaces and sentences by newlines) and the article ids (read
//! back as `STEM#N`).

use super::{Losses, ReadOptions};
use crate::data::conll::{read_conll, read_topics_sidecar};
use crate::data::{tags_from_entities, Article, DataError, Entity, ReadOutcome, Tag};
use std::path::Path;

/// Reads a CoNLL file and, when given, its topics sidecar (`--snap` does not apply: tokens are
/// whole words already).
pub fn read(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    let conll = read_conll(path, opts.schema)?;
    let mut outcome = conll.read;
    let Some(sidecar) = opts.topics else {
        return Ok(outcome);
    };
    // The sidecar counts every document, empty and broken ones too: each article takes the topics
    // of its own document number.
    match read_topics_sidecar(sidecar, conll.documents)? {
        Ok(topics) => {
            for (a, &n) in outcome.articles.iter_mut().zip(&conll.numbers) {
                let doc = &topics[n];
                if let Some(s) = opts.schema {
                    for topic in &doc.topics {
                        if let Err(msg) = s.check_topic(topic) {
                            outcome
                                .problems
                                .push(DataError::new(sidecar, doc.line, msg).in_article(&a.id));
                        }
                    }
                }
                a.topics = Some(doc.topics.clone());
            }
        }
        Err(mut problems) => outcome.problems.append(&mut problems),
    }
    Ok(outcome)
}

/// Sentences of an article as word ranges: its own (CoNLL input), or else split where the text
/// has a line break between two words that no entity spans.
fn sentences(article: &Article, entities: &[Entity]) -> Vec<std::ops::Range<usize>> {
    let n = article.words().len();
    let mut starts: Vec<usize> = if article.sentence_starts().is_empty() {
        let words = article.words();
        (1..n)
            .filter(|&i| article.text[words[i - 1].end..words[i].start].contains('\n'))
            .filter(|&i| {
                !entities
                    .iter()
                    .any(|e| e.words.start < i && i < e.words.end)
            })
            .collect()
    } else {
        article.sentence_starts().to_vec()
    };
    starts.retain(|&s| s > 0 && s < n);
    starts.insert(0, 0);
    starts.push(n);
    starts.dedup();
    starts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The CoNLL lines of one article's words and tags, after its `-DOCSTART-` line.
pub fn document(article: &Article, entities: &[Entity]) -> String {
    let tags: Vec<Tag> = tags_from_entities(article.words().len(), entities);
    let mut out = String::from("-DOCSTART- O\n");
    for sentence in sentences(article, entities) {
        out.push('\n');
        for i in sentence {
            out.push_str(&format!("{} {}\n", article.word(i), tags[i]));
        }
    }
    out.push('\n');
    out
}

/// A CoNLL file of `articles`, its topics sidecar, and what CoNLL cannot hold.
pub fn write(articles: &[Article]) -> (Vec<u8>, Vec<u8>, Losses) {
    let (mut out, mut sidecar, mut losses) = (String::new(), String::new(), Losses::default());
    for (n, a) in articles.iter().enumerate() {
        out.push_str(&document(a, a.entities.as_deref().unwrap_or(&[])));
        let line = serde_json::json!({"doc": n, "topics": a.topics.as_deref().unwrap_or(&[])});
        sidecar.push_str(&format!("{line}\n"));
    }
    losses.add(
        "article id(s) (CoNLL numbers documents: read back as STEM#N)",
        articles.len(),
    );
    losses.add(
        "article(s) whose spacing is not one space between words (CoNLL keeps words only)",
        articles
            .iter()
            .filter(|a| {
                let rebuilt = Article::from_sentences(
                    "",
                    &sentences(a, a.entities.as_deref().unwrap_or(&[]))
                        .into_iter()
                        .map(|s| s.map(|i| a.word(i)).collect::<Vec<_>>())
                        .collect::<Vec<_>>(),
                );
                rebuilt.text != a.text
            })
            .count(),
    );
    losses.add(
        "article(s) without entity annotation written as all O (read back as annotated, no entities)",
        articles.iter().filter(|a| a.entities.is_none()).count(),
    );
    (out.into_bytes(), sidecar.into_bytes(), losses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::conll::parse_conll;

    #[test]
    fn writes_documents_sentences_at_line_breaks_and_reads_them_back() {
        let mut a = Article::from_text("x", "Tokayev met\nJaparov in Astana.");
        a.entities = Some(vec![
            Entity {
                words: 0..1,
                label: "PER".into(),
            },
            Entity {
                words: 2..3,
                label: "PER".into(),
            },
        ]);
        let (bytes, _, losses) = write(std::slice::from_ref(&a));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "-DOCSTART- O\n\nTokayev B-PER\nmet O\n\nJaparov B-PER\nin O\nAstana O\n. O\n\n"
        );
        let back = parse_conll(Path::new("w.conll"), &bytes, None);
        assert_eq!(back.articles[0].entities, a.entities);
        assert_eq!(back.articles[0].text, "Tokayev met\nJaparov in Astana .");
        assert!(losses
            .lines()
            .iter()
            .any(|l| l.starts_with("1 article(s) whose spacing")));
    }
}
