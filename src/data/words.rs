//! Word segmentation for raw text.
//!
//! Entities are whole words, so the word boundaries decide which spans are valid. The rules follow
//! BERT's pre-tokenizer: white space separates words, and every punctuation or symbol character is a
//! word of its own. Letters, digits and combining marks form words; each CJK ideograph stands alone.

use std::ops::Range;

/// Byte ranges of the words of `text`, in order.
pub fn split_words(text: &str) -> Vec<Range<usize>> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let end_of_char = i + c.len_utf8();
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(s..i);
            }
        } else if is_word_char(c) {
            if start.is_none() {
                start = Some(i);
            }
        } else {
            if let Some(s) = start.take() {
                words.push(s..i);
            }
            words.push(i..end_of_char);
        }
    }
    if let Some(s) = start {
        words.push(s..text.len());
    }
    words
}

fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() && !is_cjk(c)) || is_combining_mark(c)
}

fn is_combining_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
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
    fn splits_punctuation_and_keeps_letters_together() {
        assert_eq!(
            words("Tokayev's U.S.-backed plan, 1,200 km."),
            [
                "Tokayev", "'", "s", "U", ".", "S", ".", "-", "backed", "plan", ",", "1", ",",
                "200", "km", "."
            ]
        );
    }

    #[test]
    fn handles_accents_cyrillic_emoji_and_cjk() {
        assert_eq!(
            words("Zürich “Москва” 🚀ok 北京"),
            ["Zürich", "“", "Москва", "”", "🚀", "ok", "北", "京"]
        );
        // A decomposed accent stays inside its word.
        assert_eq!(words("Cafe\u{301} noir"), ["Cafe\u{301}", "noir"]);
    }
}
