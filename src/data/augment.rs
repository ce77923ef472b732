//! Document-level augmentation that stays true to the topic definition (`data/README.md`): two
//! articles one after the other carry the union of their topics, and a paragraph moved within an
//! article keeps the article's topics. Training adds such articles so that the topic head learns
//! that one passage carrying a topic is enough, wherever it sits in however long an article,
//! rather than learning how the corpus's articles are laid out.

use super::{Article, Entity};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::ops::Range;

/// Joined articles are kept within the corpus's own lengths (`data/` articles run to about 1,600
/// words), so augmentation teaches position and mixture, not unusual length.
const MAX_JOINED_WORDS: usize = 1_600;

/// `a` followed by `b`, with both articles' entities (when both are annotated) and the union of
/// their topics. `None` unless both carry topics and both or neither come split into sentences
/// (CoNLL), so the result is read by one rule.
pub fn concatenate(a: &Article, b: &Article) -> Option<Article> {
    let (ta, tb) = (a.topics.as_ref()?, b.topics.as_ref()?);
    if a.sentence_starts.is_empty() != b.sentence_starts.is_empty() {
        return None;
    }
    // A blank line between raw articles; one line break between sentence-split ones, as CoNLL
    // articles are written.
    let separator = if a.sentence_starts.is_empty() {
        "\n\n"
    } else {
        "\n"
    };
    let shift = a.text.len() + separator.len();
    let word_shift = a.words.len();
    let mut topics = ta.clone();
    topics.extend(tb.iter().filter(|t| !ta.contains(t)).cloned());
    let entities = match (&a.entities, &b.entities) {
        (Some(ea), Some(eb)) => Some(
            ea.iter()
                .cloned()
                .chain(eb.iter().map(|e| Entity {
                    words: e.words.start + word_shift..e.words.end + word_shift,
                    label: e.label.clone(),
                }))
                .collect(),
        ),
        _ => None,
    };
    Some(Article {
        id: format!("{}+{}", a.id, b.id),
        text: format!("{}{separator}{}", a.text, b.text),
        words: a
            .words
            .iter()
            .cloned()
            .chain(b.words.iter().map(|w| w.start + shift..w.end + shift))
            .collect(),
        sentence_starts: a
            .sentence_starts
            .iter()
            .copied()
            .chain(b.sentence_starts.iter().map(|s| s + word_shift))
            .collect(),
        entities,
        topics: Some(topics),
    })
}

/// `a` with its body line `from` moved to position `to` among the body lines (the headline, the
/// first line, stays first; blank lines and line breaks stay where they were). Lines are counted
/// after the headline from 0. `None` when an index is out of range or an entity crosses a line.
pub fn move_line(a: &Article, from: usize, to: usize) -> Option<Article> {
    let lines = lines(&a.text);
    let body = lines.len().checked_sub(1)?;
    if from >= body || to >= body {
        return None;
    }
    let line_of = |byte: usize| lines.partition_point(|l| l.end <= byte);
    let word_lines: Vec<usize> = a.words.iter().map(|w| line_of(w.start)).collect();
    let entities_fit =
        a.entities.iter().flatten().all(|e| {
            e.words.is_empty() || word_lines[e.words.start] == word_lines[e.words.end - 1]
        });
    if !entities_fit {
        return None;
    }
    let mut order: Vec<usize> = (1..lines.len()).collect();
    let moved = order.remove(from);
    order.insert(to, moved);
    order.insert(0, 0);

    let mut text = String::with_capacity(a.text.len());
    let mut words = Vec::with_capacity(a.words.len());
    let mut new_index = vec![0usize; a.words.len()];
    let mut sentence_starts = Vec::new();
    for (slot, &line) in order.iter().enumerate() {
        // What stood before the line in this position (line breaks, blank lines) stays.
        let gap_start = if slot == 0 { 0 } else { lines[slot - 1].end };
        text.push_str(&a.text[gap_start..lines[slot].start]);
        let offset = text.len() as isize - lines[line].start as isize;
        let first = words.len();
        for (w, range) in a
            .words
            .iter()
            .enumerate()
            .filter(|(w, _)| word_lines[*w] == line)
        {
            new_index[w] = words.len();
            words.push(
                (range.start as isize + offset) as usize..(range.end as isize + offset) as usize,
            );
        }
        if !a.sentence_starts.is_empty() && words.len() > first {
            sentence_starts.push(first);
        }
        text.push_str(&a.text[lines[line].clone()]);
    }
    text.push_str(&a.text[lines.last().map_or(0, |l| l.end)..]);
    let entities = a.entities.as_ref().map(|es| {
        let mut moved: Vec<Entity> = es
            .iter()
            .map(|e| {
                let start = new_index[e.words.start];
                Entity {
                    words: start..start + e.words.len(),
                    label: e.label.clone(),
                }
            })
            .collect();
        moved.sort_by_key(|e| e.words.start);
        moved
    });
    Some(Article {
        id: format!("{}~{from}-{to}", a.id),
        text,
        words,
        sentence_starts,
        entities,
        topics: a.topics.clone(),
    })
}

/// Byte ranges of the non-blank lines of `text`, without their line breaks.
fn lines(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        if !content.trim().is_empty() {
            out.push(start..start + content.len());
        }
        start += line.len();
    }
    out
}

/// The articles training adds to `articles` (seeded, so a resumed run adds the same ones): a
/// quarter as many joined pairs as there are topic-annotated articles, and an eighth as many with
/// a paragraph moved.
pub fn augmented(articles: &[Article], seed: u64) -> Vec<Article> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0061_7567_6d65_6e74);
    let mut order: Vec<usize> = (0..articles.len())
        .filter(|&i| articles[i].topics.is_some())
        .collect();
    order.shuffle(&mut rng);
    let n = order.len();
    let mut out = Vec::new();
    let mut used = vec![false; articles.len()];
    for (k, &i) in order.iter().enumerate() {
        if out.len() >= n / 4 {
            break;
        }
        if used[i] {
            continue;
        }
        // The next unused article that keeps the pair within the corpus's lengths.
        let partner = order[k + 1..].iter().take(20).copied().find(|&j| {
            !used[j] && articles[i].words.len() + articles[j].words.len() <= MAX_JOINED_WORDS
        });
        if let Some(j) = partner {
            if let Some(joined) = concatenate(&articles[i], &articles[j]) {
                used[i] = true;
                used[j] = true;
                out.push(joined);
            }
        }
    }
    let joined = out.len();
    order.shuffle(&mut rng);
    for &i in &order {
        if out.len() - joined >= n / 8 {
            break;
        }
        let body = lines(&articles[i].text).len().saturating_sub(1);
        if body < 3 {
            continue;
        }
        let from = rng.random_range(0..body);
        let to = (from + rng.random_range(1..body)) % body;
        if let Some(moved) = move_line(&articles[i], from, to) {
            out.push(moved);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(id: &str, text: &str, entity: &str, label: &str, topics: &[&str]) -> Article {
        let mut a = Article::from_text(id, text);
        let start = text.find(entity).unwrap();
        let words = a.words_of_bytes(start..start + entity.len()).unwrap();
        a.entities = Some(vec![Entity {
            words,
            label: label.into(),
        }]);
        a.topics = Some(topics.iter().map(|t| t.to_string()).collect());
        a
    }

    fn entity_texts(a: &Article) -> Vec<String> {
        a.entities
            .iter()
            .flatten()
            .map(|e| a.text[a.entity_bytes(e)].to_string())
            .collect()
    }

    /// Words are where a fresh split of the text puts them.
    fn words_match_text(a: &Article) {
        assert_eq!(
            a.words,
            super::super::words::split_words(&a.text),
            "{:?}",
            a.text
        );
    }

    #[test]
    fn joined_articles_keep_every_entity_and_unite_their_topics() {
        let a = annotated(
            "a",
            "Oil in Baku\n\nGas rose in Baku.",
            "Baku",
            "LOC",
            &["energy"],
        );
        let b = annotated(
            "b",
            "Tariffs\nAcme Corp cut tariffs.",
            "Acme Corp",
            "ORG",
            &["trade", "energy"],
        );
        let j = concatenate(&a, &b).unwrap();
        words_match_text(&j);
        assert_eq!(
            j.text,
            "Oil in Baku\n\nGas rose in Baku.\n\nTariffs\nAcme Corp cut tariffs."
        );
        assert_eq!(entity_texts(&j), ["Baku", "Acme Corp"]);
        assert_eq!(j.topics.as_deref().unwrap(), ["energy", "trade"]);
        // Without topics there is nothing to unite.
        let plain = Article::from_text("c", "text");
        assert!(concatenate(&a, &plain).is_none());
    }

    #[test]
    fn joined_sentence_split_articles_keep_their_sentences() {
        let mut a = Article::from_sentences("a", &[vec!["Oil", "rose"], vec!["Gas", "fell"]]);
        let mut b = Article::from_sentences("b", &[vec!["Tariffs", "rose"]]);
        a.topics = Some(vec!["energy".into()]);
        b.topics = Some(vec!["trade".into()]);
        let j = concatenate(&a, &b).unwrap();
        assert_eq!(j.text, "Oil rose\nGas fell\nTariffs rose");
        assert_eq!(j.sentence_starts(), [0, 2, 4]);
        assert!(concatenate(
            &a,
            &Article {
                topics: Some(vec![]),
                ..Article::from_text("c", "Raw text.")
            }
        )
        .is_none());
    }

    #[test]
    fn a_moved_line_carries_its_entities_and_the_layout_stays() {
        let text = "Headline here\n\nFirst line by Ann Lee.\nSecond line.\n\nThird from Acme.\n";
        let mut a = annotated("a", text, "Ann Lee", "PER", &["defense"]);
        let acme = text.find("Acme").unwrap();
        let acme = a.words_of_bytes(acme..acme + 4).unwrap();
        a.entities.as_mut().unwrap().push(Entity {
            words: acme,
            label: "ORG".into(),
        });
        let m = move_line(&a, 0, 2).unwrap();
        assert_eq!(
            m.text,
            "Headline here\n\nSecond line.\nThird from Acme.\n\nFirst line by Ann Lee.\n"
        );
        words_match_text(&m);
        assert_eq!(entity_texts(&m), ["Acme", "Ann Lee"]);
        assert_eq!(m.topics, a.topics);
        assert!(move_line(&a, 3, 0).is_none());
        // Moving a line back where it was gives the article again.
        let back = move_line(&m, 2, 0).unwrap();
        assert_eq!(back.text, a.text);
        assert_eq!(entity_texts(&back), ["Ann Lee", "Acme"]);
    }

    #[test]
    fn an_entity_across_a_line_break_is_never_cut() {
        let text = "Head\nOne two Ann\nLee three.\nFour.";
        let a = annotated("a", text, "Ann\nLee", "PER", &[]);
        assert!(move_line(&a, 0, 2).is_none());
    }

    #[test]
    fn augmentation_is_seeded_and_bounded() {
        let articles: Vec<Article> = (0..40)
            .map(|i| {
                annotated(
                    &format!("a{i}"),
                    &format!("Head {i}\nOne by Ann.\nTwo here.\nThree there.\nFour."),
                    "Ann",
                    "PER",
                    &[["energy", "trade"][i % 2]],
                )
            })
            .collect();
        let one = augmented(&articles, 7);
        let texts = |v: &[Article]| v.iter().map(|a| a.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&one), texts(&augmented(&articles, 7)));
        assert_ne!(texts(&one), texts(&augmented(&articles, 8)));
        assert_eq!(one.iter().filter(|a| a.id.contains('+')).count(), 10);
        assert_eq!(one.iter().filter(|a| a.id.contains('~')).count(), 5);
        for a in &one {
            words_match_text(a);
            assert!(entity_texts(a).iter().all(|t| t == "Ann"));
        }
    }
}
