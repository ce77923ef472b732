//! Word segmentation for raw text.
//!
//! Entities are whole words, so the word boundaries decide which spans are valid, for every model
//! alike (a file that validates does so whatever the tokenizer). The rule is BERT's pre-tokenizer
//! made safe for any tokenizer: white space separates words, every punctuation or symbol is a word
//! of its own, letters, digits and marks form words, and each CJK ideograph stands alone. Two
//! things keep a word from breaking inside what a tokenizer treats as one piece:
//! - the text is read in grapheme clusters (`unicode-segmentation`), so a combining mark, a
//!   virama or an emoji ZWJ sequence is never cut from its base;
//! - format characters (soft hyphen, zero-width space, joiners, word joiner, variation selectors)
//!   between two word characters join them: `Kazakh\u{ad}stan` is one word, as BERT's normaliser
//!   sees it. Elsewhere they belong to no word, like white space.

use std::ops::Range;
use unicode_segmentation::UnicodeSegmentation;

/// What a grapheme cluster is to the word rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    /// Starts with white space (CRLF, or a space carrying a stray combining mark).
    Space,
    /// Format and control characters only: joins the word characters on both sides.
    Invisible,
    /// Part of a word: starts with a letter, digit or mark.
    Word,
    /// A word of its own: punctuation, a symbol or emoji, a CJK ideograph.
    Alone,
}

fn classify(cluster: &str) -> Cluster {
    let first = cluster.chars().next().unwrap_or(' ');
    if first.is_whitespace() {
        Cluster::Space
    } else if cluster.chars().all(super::is_invisible) {
        Cluster::Invisible
    } else if (first.is_alphanumeric() && !is_cjk(first)) || is_mark(first) {
        Cluster::Word
    } else {
        Cluster::Alone
    }
}

/// Byte ranges of the words of `text`, in order. Every word is a run of whole grapheme clusters
/// (cut before any white space inside one, see [`clusters`]).
pub fn split_words(text: &str) -> Vec<Range<usize>> {
    let mut words = Vec::new();
    // The word being read. It grows on word clusters only, so invisible characters join it when
    // a word cluster follows them, and are left out when anything else does.
    let mut open: Option<Range<usize>> = None;
    for (i, g) in clusters(text) {
        let end = i + g.len();
        match classify(g) {
            Cluster::Word => match &mut open {
                Some(w) => w.end = end,
                None => open = Some(i..end),
            },
            Cluster::Invisible => {}
            kind => {
                words.extend(open.take());
                if kind == Cluster::Alone {
                    words.push(i..end);
                }
            }
        }
    }
    words.extend(open);
    words
}

/// The grapheme clusters of `text` with their byte offsets, except that a cluster holding white
/// space after its first character is cut before it: a prepended character (Arabic number signs,
/// Kawi repha) clusters with whatever follows it, a space included, and a word must not hold one.
fn clusters(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.grapheme_indices(true).flat_map(|(i, g)| {
        let cut = g
            .char_indices()
            .skip(1)
            .find(|(_, c)| c.is_whitespace())
            .map(|(j, _)| j);
        let (head, tail) = match cut {
            Some(j) => (&g[..j], Some((i + j, &g[j..]))),
            None => (g, None),
        };
        std::iter::once((i, head)).chain(tail)
    })
}

/// Unicode marks (Mn, Mc, Me): a word may begin with one where it has no base (text start).
fn is_mark(c: char) -> bool {
    use unicode_categories::UnicodeCategories;
    c.is_mark_nonspacing() || c.is_mark_spacing_combining() || c.is_mark_enclosing()
}

/// The CJK blocks that BERT's tokenizer splits into single characters.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        split_words(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn a_prepended_character_does_not_carry_the_space_after_it_into_a_word() {
        // U+0600 (Arabic number sign, a format character) and U+11F02 (Kawi repha, a letter)
        // cluster with what follows them.
        assert_eq!(words("\u{600} 5"), ["5"]);
        assert_eq!(words("\u{11F02}\u{a0}"), ["\u{11F02}"]);
        assert_eq!(words("\u{600}5 km"), ["\u{600}5", "km"]);
    }

    #[test]
    fn splits_punctuation_and_keeps_letters_together() {
        assert_eq!(
            words("Tokayev's U.S.-backed plan, 1,200 km."),
            [
                "Tokayev", "'", "s", "U", ".", "S", ".", "-", "backed", "plan", ",", "1", ",",
                "200", "km", "."
            ]
        );
        assert_eq!(words("€5bn"), ["€", "5bn"]);
    }

    #[test]
    fn handles_accents_cyrillic_emoji_and_cjk() {
        assert_eq!(
            words("Zürich “Москва” 🚀ok 北京"),
            ["Zürich", "“", "Москва", "”", "🚀", "ok", "北", "京"]
        );
        // A decomposed accent stays inside its word.
        assert_eq!(words("Cafe\u{301} noir"), ["Cafe\u{301}", "noir"]);
        assert_eq!(
            words("Қазақстан ʻOʻzbekiston"),
            ["Қазақстан", "ʻOʻzbekiston"]
        );
    }

    #[test]
    fn format_characters_join_the_word_they_sit_in() {
        assert_eq!(words("Kazakh\u{ad}stan oil"), ["Kazakh\u{ad}stan", "oil"]);
        assert_eq!(words("Tash\u{200b}kent"), ["Tash\u{200b}kent"]);
        assert_eq!(words("a\u{200c}\u{2060}b"), ["a\u{200c}\u{2060}b"]);
        // At a word's edge they belong to no word; alone they are no word at all.
        assert_eq!(
            words("\u{200b}Astana\u{ad}, \u{feff} x"),
            ["Astana", ",", "x"]
        );
        assert!(words("\u{ad} \u{200b}").is_empty());
    }

    #[test]
    fn grapheme_clusters_never_split() {
        // Devanagari with viramas and vowel signs: one word.
        assert_eq!(words("क्षत्रिय नमस्ते"), ["क्षत्रिय", "नमस्ते"]);
        // An emoji ZWJ sequence and a flag are one symbol each; a keycap too.
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(
            words(&format!("{family}🇰🇿1\u{fe0f}\u{20e3}")),
            [family, "🇰🇿", "1\u{fe0f}\u{20e3}"]
        );
        // CRLF is one cluster of white space; a mark after a space stays with the space.
        assert_eq!(words("a\r\nb \u{301}c"), ["a", "b", "c"]);
        assert_eq!(words("\u{301}a"), ["\u{301}a"]);
    }
}
