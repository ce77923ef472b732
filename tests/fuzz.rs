//! Property tests: the readers never panic on arbitrary bytes, word splitting is sound on arbitrary
//! text, and every entity a (random, tiny) model outputs quotes exactly the characters its offsets
//! name, whatever the scripts, emoji, combining marks or quotes around it. Case counts are small
//! enough for the whole file to run in seconds.

mod common;

use candle_core::Device;
use newstag::data::conll::{parse_conll, parse_topics_sidecar};
use newstag::data::input::{InputItem, Inputs};
use newstag::data::jsonl::{parse_jsonl, to_json_line, ReadOptions};
use newstag::data::words::split_words;
use newstag::data::{Article, Schema};
use newstag::infer::output::OutputRecord;
use newstag::infer::Predictor;
use newstag::model::config::{BertConfig, WindowConfig};
use newstag::model::tiny::tiny_tokenizer;
use newstag::model::NewsTagger;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::cell::Cell;
use std::path::Path;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces of news text that stress offsets: scripts of every width, emoji (with ZWJ sequences,
/// skin tones and flags), combining marks (also with nothing to combine with), curly quotes,
/// dashes, odd spaces, characters that change length when lowercased, and control characters.
const FRAGMENTS: &[&str] = &[
    "Tokayev",
    "Mirziyoyev",
    "Astana",
    "Gazprom",
    "met",
    "in",
    "oil",
    "exports",
    "rose",
    "the",
    "Zürich",
    "Москва",
    "Ελλάδα",
    "北京",
    "東京都",
    "서울",
    "القاهرة",
    "नई दिल्ली",
    "Đặng",
    "Şahin",
    "İstanbul",
    "STRASSE",
    "Straße",
    "ΣΟΦΙΑ",
    "café",
    "naïve",
    "Cafe\u{301}",
    "\u{301}",
    "e\u{308}\u{301}",
    "🚀",
    "👩‍👩‍👧",
    "👍🏽",
    "🇰🇿",
    "1,200",
    "U.S.",
    "Tokayev’s",
    "“",
    "”",
    "‘",
    "’",
    "«",
    "»",
    "—",
    "–",
    "-",
    "\"",
    "'",
    ".",
    ",",
    ";",
    "(",
    ")",
    "\u{a0}",
    "\u{200b}",
    "\u{ad}",
    "\u{feff}",
    "\u{2028}",
    "\t",
    "\n",
    "\r\n",
    "\u{7}",
    "ｆｕｌｌ",
    "ﬁ",
    "½",
    "x²",
];

fn news_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(FRAGMENTS),
            prop::sample::select(&["", " ", " ", "  ", "\n"][..]),
        ),
        1..40,
    )
    .prop_map(|parts| parts.into_iter().flat_map(|(a, b)| [a, b]).collect())
}

fn opts() -> ReadOptions<'static> {
    ReadOptions::default()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn conll_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_conll(Path::new("f.conll"), &bytes, None);
        let _ = parse_conll(Path::new("f.conll"), &bytes, Some(&Schema::default()));
        let _ = parse_topics_sidecar(Path::new("t.jsonl"), &bytes, 3);
    }

    #[test]
    fn jsonl_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_jsonl(Path::new("f.jsonl"), &bytes, opts());
    }

    #[test]
    fn split_words_is_sound(text in any::<String>()) {
        let words = split_words(&text);
        let mut prev_end = 0;
        for w in &words {
            prop_assert!(w.start >= prev_end && w.start < w.end && w.end <= text.len());
            prop_assert!(text.is_char_boundary(w.start) && text.is_char_boundary(w.end));
            prop_assert!(!text[w.clone()].chars().any(char::is_whitespace));
            prev_end = w.end;
        }
        // Everything between words is nothing a reader sees: grapheme clusters that start with
        // white space (a stray combining mark on a space rides with it) or hold only control and
        // format characters (a zero-width space at a word's edge).
        let unseen = |gap: &str| {
            use unicode_categories::UnicodeCategories;
            use unicode_segmentation::UnicodeSegmentation;
            gap.graphemes(true).all(|g| {
                g.starts_with(char::is_whitespace)
                    || g.chars().all(|c| {
                        c.is_other_control()
                            || c.is_other_format()
                            || matches!(c as u32, 0xFE00..=0xFE0F | 0xE0100..=0xE01EF)
                    })
            })
        };
        let mut covered = 0;
        for w in &words {
            prop_assert!(unseen(&text[covered..w.start]), "{:?}", &text[covered..w.start]);
            covered = w.end;
        }
        prop_assert!(unseen(&text[covered..]), "{:?}", &text[covered..]);
    }
}

/// CoNLL-shaped input: real tokens and tags mixed with broken ones, blank lines, CRLF and
/// -DOCSTART-. Whatever is accepted is internally consistent.
fn conll_text() -> impl Strategy<Value = String> {
    let token =
        prop::sample::select(&["Paris", "EU", "Zürich", "🚀", "“", "a b", "", "-DOCSTART-"][..]);
    let tag = prop::sample::select(
        &[
            "O", "B-LOC", "I-LOC", "B-PER", "I-PER", "I-", "X-PER", "B-", "PER", "B-FOO",
        ][..],
    );
    let line = prop_oneof![
        (
            token,
            prop::sample::select(&["", " NNP", " NNP NP"][..]),
            tag
        )
            .prop_map(|(t, mid, g)| format!("{t}{mid} {g}")),
        Just(String::new()),
        Just("-DOCSTART- -X- O".to_string()),
    ];
    (prop::collection::vec(line, 0..30), any::<bool>())
        .prop_map(|(lines, crlf)| lines.join(if crlf { "\r\n" } else { "\n" }))
}

/// JSONL-shaped input: real articles whose spans are random (in range or not, reversed,
/// overlapping, cutting words), with random ids and labels.
fn jsonl_text() -> impl Strategy<Value = String> {
    let span = (
        0usize..30,
        0usize..30,
        prop::sample::select(&["PER", "LOC", "XYZ", ""][..]),
    )
        .prop_map(|(s, e, l)| format!(r#"{{"start": {s}, "end": {e}, "label": "{l}"}}"#));
    let record = (
        prop::sample::select(&["\"a\"", "\"b\"", "7", "null", "[1]"][..]),
        news_text(),
        prop::collection::vec(span, 0..4),
        prop::sample::select(
            &[
                "",
                r#", "topics": ["energy"]"#,
                r#", "topics": ["sport"]"#,
                r#", "topics": 3"#,
            ][..],
        ),
    )
        .prop_map(|(id, text, spans, topics)| {
            format!(
                r#"{{"id": {id}, "text": {}, "entities": [{}]{topics}}}"#,
                serde_json::to_string(&text).unwrap(),
                spans.join(", ")
            )
        });
    prop::collection::vec(
        prop_oneof![4 => record, 1 => Just("{oops".to_string())],
        0..6,
    )
    .prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn structured_conll_is_read_consistently(text in conll_text()) {
        let out = parse_conll(Path::new("f.conll"), text.as_bytes(), Some(&Schema::default()));
        for a in &out.articles {
            for e in a.entities.as_ref().unwrap() {
                prop_assert!(e.words.start < e.words.end && e.words.end <= a.words().len());
                prop_assert!(Schema::default().check_type(&e.label).is_ok());
            }
        }
        for p in &out.problems {
            prop_assert!(p.to_string().starts_with("f.conll"));
        }
    }

    #[test]
    fn accepted_jsonl_spans_are_the_characters_they_name(text in jsonl_text()) {
        let out = parse_jsonl(Path::new("f.jsonl"), text.as_bytes(), ReadOptions {
            schema: Some(&Schema::default()),
            require_id: false,
        });
        for a in &out.articles {
            // Writing an accepted article and reading it back gives the same article.
            let line = to_json_line(a);
            let again = parse_jsonl(Path::new("g.jsonl"), line.as_bytes(), opts());
            prop_assert!(again.problems.is_empty(), "{:?}", again.problems);
            prop_assert_eq!(&again.articles[0].entities, &a.entities);
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            let chars: Vec<char> = a.text.chars().collect();
            for (e, span) in a.entities.as_ref().unwrap().iter().zip(record["entities"].as_array().unwrap()) {
                let (s, t) = (span["start"].as_u64().unwrap() as usize, span["end"].as_u64().unwrap() as usize);
                prop_assert_eq!(chars[s..t].iter().collect::<String>(), &a.text[a.entity_bytes(e)]);
            }
        }
    }

    #[test]
    fn input_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), jsonl in jsonl_text()) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), &bytes).unwrap();
        std::fs::write(d.join("b.jsonl"), &bytes).unwrap();
        std::fs::write(d.join("c.jsonl"), jsonl.as_bytes()).unwrap();
        std::fs::write(d.join("d.bin"), &bytes).unwrap();
        let items: Vec<InputItem> = Inputs::open(&[d.to_path_buf()]).unwrap().collect();
        // One item for the .txt, at most one per line of each JSONL file; d.bin is skipped.
        let lines = |b: &[u8]| b.split(|&c| c == b'\n').count();
        prop_assert!(!items.is_empty() && items.len() <= 1 + lines(&bytes) + lines(jsonl.as_bytes()));
        for item in &items {
            if let InputItem::Article(a) = item {
                prop_assert!(!a.text.trim().is_empty());
            }
        }
    }
}

/// A tiny random tagger with small windows, so that texts span several of them.
fn random_tagger() -> NewsTagger {
    let tokenizer = tiny_tokenizer(&common::vocabulary()).unwrap();
    let bert = BertConfig::tiny(tokenizer.get_vocab_size(true));
    let types = ["PER", "ORG", "LOC"].map(String::from);
    let topics = ["energy"].map(String::from);
    let window = WindowConfig {
        max_tokens: 12,
        overlap: 2,
    };
    NewsTagger::random(bert, tokenizer, &types, &topics, window, 9, &Device::Cpu).unwrap()
}

fn check_entities(model: &NewsTagger, texts: &[String]) -> Result<usize, TestCaseError> {
    let articles: Vec<Article> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Article::from_text(format!("t{i}"), t.clone()))
        .collect();
    let predictions = Predictor::new(model, 4)
        .and_then(|p| p.predict(&articles))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut seen = 0;
    for (article, p) in articles.iter().zip(&predictions) {
        let record = OutputRecord::tagged(article, p, model.topics(), model.thresholds());
        // The line written is the line read back.
        let back: OutputRecord = serde_json::from_str(&record.to_line()).unwrap();
        prop_assert_eq!(&back, &record);
        let OutputRecord::Tagged { entities, .. } = record else {
            return Err(TestCaseError::fail("not tagged"));
        };
        let chars: Vec<char> = article.text.chars().collect();
        let mut prev_end = 0;
        for e in &entities {
            prop_assert!(e.start >= prev_end && e.start < e.end && e.end <= chars.len());
            prop_assert_eq!(
                chars[e.start..e.end].iter().collect::<String>(),
                e.text.clone()
            );
            prop_assert!(!e.text.starts_with(char::is_whitespace));
            prop_assert!(!e.text.ends_with(char::is_whitespace));
            prop_assert!((0.0..=1.0).contains(&e.score));
            prev_end = e.end;
        }
        seen += entities.len();
    }
    Ok(seen)
}

#[test]
fn tagged_entities_quote_their_exact_characters() {
    let model = random_tagger();
    let mut runner = TestRunner::new(config(96));
    let total = Cell::new(0);
    runner
        .run(&prop::collection::vec(news_text(), 1..4), |texts| {
            total.set(total.get() + check_entities(&model, &texts)?);
            Ok(())
        })
        .unwrap();
    assert!(
        total.get() > 0,
        "a random model should predict some entities"
    );
    // Arbitrary Unicode too, not only news-like text.
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&prop::collection::vec("\\PC{1,60}", 1..3), |texts| {
            check_entities(&model, &texts).map(|_| ())
        })
        .unwrap();
}
