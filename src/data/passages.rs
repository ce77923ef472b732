//! Passages: the sentences an article's topics are read from.
//!
//! A topic applies when the headline or at least one full sentence is about it (`TOPICS.md`), so
//! topic evidence is gathered per sentence, not over the whole article. A passage is a run of
//! whole words: every line is one or more passages (the headline is its own), and a line is cut
//! after a word `.`, `!` or `?` when the next word opens a sentence (capital letter, digit or
//! opening quote) after a space, unless the word before the stop is an initial or a title
//! ("J. Smith", "U.S. Steel", "Mr. Li"); cuts that would leave a passage under [`MIN_WORDS`] words
//! are not made, so no passage is a stray fragment. CoNLL articles come with their sentences,
//! which are used as they are.

use super::Article;
use std::ops::Range;

/// The fewest words a cut inside a line leaves on either side.
pub const MIN_WORDS: usize = 6;

/// The passages of `article`, as word ranges in order, covering every word once.
pub fn passages(article: &Article) -> Vec<Range<usize>> {
    let words = article.words();
    if words.is_empty() {
        return Vec::new();
    }
    let mut starts: Vec<usize> = vec![0];
    if !article.sentence_starts().is_empty() {
        starts.extend(article.sentence_starts().iter().copied().filter(|&s| s > 0));
    } else {
        for w in 1..words.len() {
            let between = &article.text[words[w - 1].end..words[w].start];
            let new_line = between.contains('\n');
            let new_sentence = !between.is_empty()
                && w >= 2
                && ends_sentence(article.word(w - 1))
                && !is_abbreviation(article.word(w - 2))
                && opens_sentence(article.word(w))
                && w - starts.last().copied().unwrap_or(0) >= MIN_WORDS
                && line_end(article, w) - w >= MIN_WORDS;
            if new_line || new_sentence {
                starts.push(w);
            }
        }
    }
    starts.dedup();
    let mut out: Vec<Range<usize>> = starts
        .windows(2)
        .map(|p| p[0]..p[1])
        .filter(|r| !r.is_empty())
        .collect();
    out.push(*starts.last().unwrap()..words.len());
    out
}

/// The first word after `w`'s line (or the article's end).
fn line_end(article: &Article, w: usize) -> usize {
    let words = article.words();
    (w + 1..words.len())
        .find(|&v| article.text[words[v - 1].end..words[v].start].contains('\n'))
        .unwrap_or(words.len())
}

fn ends_sentence(word: &str) -> bool {
    matches!(word, "." | "!" | "?")
}

/// An initial or a title that a full stop follows without ending the sentence.
fn is_abbreviation(word: &str) -> bool {
    word.chars().count() == 1
        || matches!(
            word,
            "Mr" | "Mrs"
                | "Ms"
                | "Dr"
                | "St"
                | "Gen"
                | "Lt"
                | "Col"
                | "Sen"
                | "Rep"
                | "Gov"
                | "Prof"
                | "Jr"
                | "Sr"
                | "Inc"
                | "Co"
                | "Corp"
                | "Ltd"
                | "No"
                | "vs"
                | "Mt"
        )
}

fn opens_sentence(word: &str) -> bool {
    word.chars().next().is_some_and(|c| {
        c.is_uppercase() || c.is_ascii_digit() || matches!(c, '"' | '\u{201c}' | '\u{2018}' | '\'')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(a: &Article) -> Vec<String> {
        passages(a)
            .into_iter()
            .map(|r| {
                let bytes = a.words()[r.start].start..a.words()[r.end - 1].end;
                a.text[bytes].to_string()
            })
            .collect()
    }

    #[test]
    fn headline_lines_and_sentences_are_passages() {
        let a = Article::from_text(
            "a",
            "Oil output rises\n\nThe ministry said output rose in May. Exports to China grew \
             faster than expected this year. Ok.\nA second paragraph starts here.",
        );
        assert_eq!(
            texts(&a),
            [
                "Oil output rises",
                "The ministry said output rose in May.",
                // "Ok." is too short to stand alone.
                "Exports to China grew faster than expected this year. Ok.",
                "A second paragraph starts here.",
            ]
        );
    }

    #[test]
    fn abbreviations_rarely_cut_and_every_word_is_covered_once() {
        let a = Article::from_text("a", "Mr. Smith of U.S. Steel said 5 . Then it fell. X");
        let p = passages(&a);
        assert_eq!(p.first().unwrap().start, 0);
        assert_eq!(p.last().unwrap().end, a.words().len());
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(p.len(), 1, "{:?}", texts(&a));
    }

    #[test]
    fn conll_sentences_are_kept() {
        let a = Article::from_sentences("c", &[vec!["EU", "rejects"], vec!["German", "call", "."]]);
        assert_eq!(passages(&a), [0..2, 2..5]);
        assert!(passages(&Article::from_text("e", "  ")).is_empty());
    }
}
