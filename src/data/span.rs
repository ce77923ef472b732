//! An entity as files give it: character offsets into the article's text and a type. Articles
//! JSONL, `tag` output (which adds the text and a score) and predictions files all write entities
//! this way; inside newstag an entity is a range of whole words ([`Entity`]), and this module
//! converts between the two.

use super::{Article, CharOffsets, Entity};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// An entity over characters `start..end` of an article's text (Unicode scalar values, as Python
/// counts them; end exclusive), of type `label`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharSpan {
    pub start: usize,
    pub end: usize,
    pub label: String,
}

/// Why characters `start..end` are no range of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// `start == end`.
    Empty,
    /// `end < start`.
    Reversed,
    /// The range runs past the end of the text, which has this many characters.
    OutsideText(usize),
}

impl CharOffsets {
    /// The bytes of characters `start..end`, when they are a non-empty range of the text.
    pub fn byte_range(&self, start: usize, end: usize) -> Result<Range<usize>, RangeError> {
        if end <= start {
            return Err(if end == start {
                RangeError::Empty
            } else {
                RangeError::Reversed
            });
        }
        match (self.to_byte(start), self.to_byte(end)) {
            (Some(b0), Some(b1)) => Ok(b0..b1),
            _ => Err(RangeError::OutsideText(self.len())),
        }
    }
}

impl Article {
    /// The character span of one of this article's entities; `chars` are the article's offsets.
    pub fn char_span(&self, chars: &CharOffsets, entity: &Entity) -> CharSpan {
        let b = self.entity_bytes(entity);
        CharSpan {
            start: chars.to_char(b.start),
            end: chars.to_char(b.end),
            label: entity.label.clone(),
        }
    }

    /// The entity a character span gives, or `None` when it is not a range of whole words.
    pub fn span_entity(&self, chars: &CharOffsets, span: &CharSpan) -> Option<Entity> {
        let bytes = chars.byte_range(span.start, span.end).ok()?;
        Some(Entity {
            words: self.words_of_bytes(bytes).ok()?,
            label: span.label.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_entities_convert_both_ways() {
        // Words: Zoë(0) met(1) Anna(2) Berg(3) in(4) Kazakhstan(5) '(6) s(7) capital(8) .(9)
        let a = Article::from_text("a", "Zoë met Anna Berg in Kazakhstan's capital.");
        let chars = CharOffsets::new(&a.text);
        let span = |start, end| CharSpan {
            start,
            end,
            label: "LOC".into(),
        };
        let e = a.span_entity(&chars, &span(8, 17)).unwrap();
        assert_eq!(e.words, 2..4);
        assert_eq!(a.char_span(&chars, &e), span(8, 17));
        assert_eq!(a.span_entity(&chars, &span(21, 31)).unwrap().words, 5..6);
        assert_eq!(a.span_entity(&chars, &span(21, 27)), None, "Kazakh");
        assert_eq!(chars.byte_range(0, 3), Ok(0..4), "ë is two bytes");
        assert_eq!(chars.byte_range(3, 3), Err(RangeError::Empty));
        assert_eq!(chars.byte_range(5, 3), Err(RangeError::Reversed));
        assert_eq!(chars.byte_range(40, 50), Err(RangeError::OutsideText(42)));
        assert_eq!(chars.byte_range(40, 42), Ok(41..43));
    }
}
