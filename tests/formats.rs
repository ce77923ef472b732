//! The annotation tools' formats: fixtures shaped as each tool exports (Label Studio, doccano,
//! Prodigy, brat), round trips from newstag JSONL through every format, `convert`, and `tag
//! --format` on a tiny random model.

mod common;

use common::{newstag, s, stderr};
use newstag::data::formats::{self, Format, Output, ReadOptions};
use newstag::data::jsonl::{parse_jsonl, ReadOptions as JsonlOptions};
use newstag::data::{Article, ReadOutcome, Schema};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/formats")
        .join(name)
}

fn read(format: Format, path: &Path, opts: ReadOptions) -> ReadOutcome {
    formats::read(format, path, opts).unwrap()
}

/// (id, entity texts with labels, topics) of each article.
fn summary(articles: &[Article]) -> Vec<(String, Vec<String>, Option<Vec<String>>)> {
    articles
        .iter()
        .map(|a| {
            let ents = a
                .entities
                .iter()
                .flatten()
                .map(|e| format!("{} {}", &a.text[a.entity_bytes(e)], e.label))
                .collect();
            (a.id.clone(), ents, a.topics.clone())
        })
        .collect()
}

fn kz() -> Vec<String> {
    ["Gazprom ORG", "Europe LOC", "Tokayev PER", "Astana LOC"]
        .map(String::from)
        .to_vec()
}

fn kg() -> Vec<String> {
    ["Japarov PER", "Rahmon PER", "Dushanbe LOC"]
        .map(String::from)
        .to_vec()
}

fn topics(t: &str) -> Option<Vec<String>> {
    Some(vec![t.to_string()])
}

#[test]
fn each_tools_export_reads_to_the_same_articles() {
    let schema = Schema::default();
    let opts = ReadOptions {
        schema: Some(&schema),
        ..Default::default()
    };
    // Label Studio: the second task has two annotators (and one cancelled annotation).
    let ls = fixture("label_studio_export.json");
    assert_eq!(Format::detect(&ls), Format::LabelStudio);
    let out = read(Format::LabelStudio, &ls, opts);
    let msg = out.problems[0].to_string();
    assert!(
        msg.ends_with("label_studio_export.json: article \"kg-0002\": [1]: 2 annotations (annotations[0] by 1, annotations[1] by 2): choose whose to read with --annotator ID (a user id or e-mail); newstag does not merge annotators"),
        "{msg}"
    );
    let out = read(
        Format::LabelStudio,
        &ls,
        ReadOptions {
            annotator: Some("1"),
            ..opts
        },
    );
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let expect = vec![
        ("kz-0001".to_string(), kz(), topics("energy")),
        ("kg-0002".to_string(), kg(), topics("borders")),
    ];
    assert_eq!(summary(&out.articles), expect);
    // doccano, Prodigy and brat hold the same annotations, with their own ids.
    let dc = read(Format::Doccano, &fixture("doccano.jsonl"), opts);
    assert!(dc.problems.is_empty(), "{:?}", dc.problems);
    let with_ids = |articles: &[Article], names: [&str; 2]| {
        let mut got = summary(articles);
        for (g, n) in got.iter_mut().zip(names) {
            assert_eq!(g.0, n);
        }
        got.iter_mut()
            .zip(&expect)
            .for_each(|(g, e)| g.0 = e.0.clone());
        got
    };
    assert_eq!(with_ids(&dc.articles, ["1", "2"]), expect);
    let pr_path = fixture("prodigy.jsonl");
    assert_eq!(Format::detect(&pr_path), Format::Prodigy);
    let pr = read(Format::Prodigy, &pr_path, opts);
    assert!(pr.problems.is_empty(), "{:?}", pr.problems);
    assert_eq!(with_ids(&pr.articles, ["news-1", "news-2"]), expect);
    let warned = pr.warnings.join("\n");
    assert!(
        warned.contains("1 rejected task(s) not read")
            && warned.contains("1 ignored task(s) not read"),
        "{warned}"
    );
    let br = read(Format::Brat, &fixture("brat"), opts);
    assert!(br.problems.is_empty(), "{:?}", br.problems);
    let mut got = summary(&br.articles);
    got.sort();
    let no_topics: Vec<_> = expect
        .iter()
        .map(|(i, e, _)| (i.clone(), e.clone(), None))
        .rev()
        .collect();
    assert_eq!(got, no_topics);
    assert!(
        br.warnings[0].contains("2 annotation line(s) other than text-bound entities (T) skipped"),
        "{:?}",
        br.warnings
    );
    // One brat pair named by its .ann.
    let one = read(Format::Brat, &fixture("brat/kz-0001.ann"), opts);
    assert_eq!(summary(&one.articles)[0].1, kz());
}

/// Articles with astral-plane characters before and inside spans, topics or none, entities or none.
fn sample() -> Vec<Article> {
    let lines = [
        r#"{"id": "a/1", "text": "🛢️ Gazprom cut gas to Europe 🇪🇺, Tokayev said.\nTalks in 𝔸stana went on.", "entities": [{"start": 3, "end": 10, "label": "ORG"}, {"start": 22, "end": 28, "label": "LOC"}, {"start": 33, "end": 40, "label": "PER"}, {"start": 56, "end": 62, "label": "LOC"}], "topics": ["energy", "trade"]}"#,
        r#"{"id": "b2", "text": "Japarov met Rahmon.", "entities": [{"start": 0, "end": 7, "label": "PER"}, {"start": 12, "end": 18, "label": "PER"}], "topics": []}"#,
        r#"{"id": "c3", "text": "Markets were quiet 😐 today.", "entities": []}"#,
        r#"{"id": "d4", "text": "Oil rose.", "topics": ["energy"]}"#,
        r#"{"id": "e5", "text": "Nothing annotated here."}"#,
    ];
    let out = parse_jsonl(
        Path::new("s.jsonl"),
        lines.join("\n").as_bytes(),
        JsonlOptions::default(),
    );
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    out.articles
}

/// Writes `articles` in `format` under `dir` and reads them back.
fn round_trip(format: Format, articles: &[Article], dir: &Path) -> (Vec<Article>, Vec<String>) {
    let enc = formats::write(format, articles, format == Format::Conll);
    let path = match enc.output {
        Output::File(bytes) => {
            let p = dir.join(format!("out.{format}"));
            std::fs::write(&p, bytes).unwrap();
            p
        }
        Output::Dir(files) => {
            let d = dir.join("brat-out");
            std::fs::create_dir(&d).unwrap();
            for (name, bytes) in files {
                std::fs::write(d.join(name), bytes).unwrap();
            }
            d
        }
    };
    let sidecar = enc.sidecar.map(|b| {
        let p = dir.join("out.topics.jsonl");
        std::fs::write(&p, b).unwrap();
        p
    });
    let opts = ReadOptions {
        topics: sidecar.as_deref(),
        ..Default::default()
    };
    let out = read(format, &path, opts);
    assert!(out.problems.is_empty(), "{format}: {:?}", out.problems);
    (out.articles, enc.losses.lines())
}

#[test]
fn newstag_to_each_format_and_back_is_identical_where_the_format_can_hold_it() {
    let articles = sample();
    let dir = tempfile::tempdir().unwrap();
    // JSONL, doccano and Prodigy hold everything an article holds.
    for format in [Format::Jsonl, Format::Doccano, Format::Prodigy] {
        let (back, losses) = round_trip(format, &articles, dir.path());
        assert_eq!(back, articles, "{format}");
        assert!(losses.is_empty(), "{format}: {losses:?}");
    }
    // Label Studio: everything, except that topics without entity annotation come back with an
    // empty entity list (one annotation holds both), as the losses say.
    let (back, losses) = round_trip(Format::LabelStudio, &articles, dir.path());
    for (b, a) in back.iter().zip(&articles) {
        assert_eq!((&b.id, &b.text, &b.topics), (&a.id, &a.text, &a.topics));
        let expect = if a.id == "d4" {
            Some(vec![])
        } else {
            a.entities.clone()
        };
        assert_eq!(b.entities, expect, "{}", a.id);
    }
    assert_eq!(losses, ["1 article(s) with topics but no entity annotation (read back with an empty entity list)"]);
    // brat: the text and entities; no topics, ids become file names.
    let (back, losses) = round_trip(Format::Brat, &articles, dir.path());
    let mut back = back;
    back.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back[0].id, "a_1");
    for (b, a) in back.iter().zip(&articles) {
        assert_eq!(b.text, a.text);
        assert_eq!(
            b.entities.clone().unwrap_or_default(),
            a.entities.clone().unwrap_or_default()
        );
        assert_eq!(b.topics, None);
    }
    assert_eq!(
        losses,
        [
            "1 article id(s) changed to make file names (read back as the file stem)",
            "3 topic list(s) (brat has no document labels)",
            "2 article(s) without entity annotation (read back as annotated, no entities)",
        ]
    );
    // CoNLL: words, entities and (sidecar) topics; spacing and ids are lost.
    let (back, losses) = round_trip(Format::Conll, &articles, dir.path());
    for (b, a) in back.iter().zip(&articles) {
        let words = |x: &Article| {
            (0..x.words().len())
                .map(|i| x.word(i).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(words(b), words(a));
        assert_eq!(
            b.entities.clone().unwrap_or_default(),
            a.entities.clone().unwrap_or_default()
        );
        assert_eq!(
            b.topics.clone().unwrap_or_default(),
            a.topics.clone().unwrap_or_default()
        );
    }
    assert_eq!(back[0].id, "out#0");
    assert!(losses[0].starts_with("5 article id(s)"), "{losses:?}");
}

#[test]
fn every_reader_names_file_location_and_article_and_snap_widens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let msgs = |out: ReadOutcome| {
        out.problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    };
    // Label Studio: a span cutting a word, after an emoji (UTF-16 offsets), and a bad label list.
    let ls = write(
        "ls.json",
        r#"[{"id": 5, "data": {"text": "🚀 Kazakhstan oil"}, "annotations": [{"completed_by": 1, "result": [
            {"type": "labels", "value": {"start": 3, "end": 9, "labels": ["LOC"]}},
            {"type": "labels", "value": {"start": 14, "end": 17, "labels": ["MISC", "LOC"]}}]}]}]"#,
    );
    let got = msgs(read(Format::LabelStudio, &ls, ReadOptions::default()));
    assert_eq!(
        got,
        [
            format!("{}: article \"5\": [0].annotations[0].result[1]: value.labels has 2 types (MISC, LOC): newstag gives a span one type", s(&ls)),
            format!("{}: article \"5\": [0].annotations[0].result[0]: entity 3..9 LOC (\"Kazakh\") ends inside the word \"Kazakhstan\" (split as \"Kazakh\" + \"stan\")", s(&ls)),
        ]
    );
    let ls_ok = write(
        "ls2.json",
        r#"[{"id": 5, "data": {"text": "🚀 Kazakhstan oil"}, "annotations": [{"result": [{"type": "labels", "value": {"start": 3, "end": 9, "labels": ["LOC"]}}]}]}]"#,
    );
    let out = read(
        Format::LabelStudio,
        &ls_ok,
        ReadOptions {
            snap: true,
            ..Default::default()
        },
    );
    assert_eq!(summary(&out.articles)[0].1, ["Kazakhstan LOC"]);
    assert!(out.warnings[0].contains("[0].annotations[0].result[0]: entity 3..9 LOC (\"Kazakh\") ends inside the word \"Kazakhstan\" (split as \"Kazakh\" + \"stan\"): snapped to the words 3..13 (\"Kazakhstan\") (--snap)"), "{:?}", out.warnings);
    // doccano and Prodigy: line and article.
    let dc = write("d.jsonl", "{\"id\": \"x\", \"text\": \"Paris\", \"label\": [[0, 9, \"LOC\"]]}\n{\"text\": \"Rome\", \"label\": [[0, 4, \"loc\"]]}\n");
    assert_eq!(
        msgs(read(Format::Doccano, &dc, ReadOptions::default())),
        [
            format!("{}:1: article \"x\": label[0]: entity 0..9 LOC lies outside the text (5 characters)", s(&dc)),
            format!("{}:2: article \"d:2\": label[0]: entity 0..4: entity type \"loc\" is not upper case (types look like PER, ORG, WORK_OF_ART)", s(&dc)),
        ]
    );
    let pr = write("p.jsonl", "{\"text\": \"Paris\", \"spans\": [{\"start\": 0, \"end\": 5, \"label\": \"LOC\"}], \"accept\": [\"sport\"], \"answer\": \"accept\", \"meta\": {\"id\": \"m1\"}}\n{\"text\": \"x\", \"answer\": \"maybe\"}\n");
    let schema = Schema::default();
    assert_eq!(
        msgs(read(Format::Prodigy, &pr, ReadOptions { schema: Some(&schema), ..Default::default() })),
        [
            format!("{}:1: article \"m1\": accept: unknown topic \"sport\" (known: energy, borders, defense, trade)", s(&pr)),
            format!("{}:2: \"answer\" \"maybe\" is not accept, reject or ignore", s(&pr)),
        ]
    );
    // brat: overlapping spans, named by their line.
    std::fs::write(d.join("b.txt"), "New York City").unwrap();
    let ann = write("b.ann", "T1\tLOC 0 8\tNew York\nT2\tLOC 4 13\tYork City\n");
    assert_eq!(
        msgs(read(Format::Brat, &ann, ReadOptions::default())),
        [format!(
            "{}: article \"b\": entity 4..13 LOC overlaps entity 0..8 LOC",
            s(&ann)
        )]
    );
    let bad_json = write("bad.json", "[{\"data\": {\"text\": \"x\"}},\n  oops]");
    assert!(
        msgs(read(Format::LabelStudio, &bad_json, ReadOptions::default()))[0]
            .starts_with(&format!("{}:2: malformed JSON", s(&bad_json)))
    );
}

#[test]
fn convert_writes_every_format_refuses_its_input_and_says_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ls = fixture("label_studio_export.json");
    let jsonl = d.join("news.jsonl");
    let out = newstag(&["convert", s(&ls), s(&jsonl), "--annotator", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("converted 2 article(s), 7 entities, 2 with topics"),
        "{}",
        stderr(&out)
    );
    // To brat (a directory), then train-style validation of that directory reads it back.
    let brat = d.join("brat");
    let out = newstag(&["convert", s(&jsonl), s(&brat)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: brat cannot hold: 2 topic list(s)"),
        "{}",
        stderr(&out)
    );
    assert!(brat.join("kz-0001.ann").is_file() && !d.join("brat.partial").exists());
    let out = newstag(&["validate", s(&brat)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 valid articles, 7 entity mentions, 0 problem(s)"),
        "{}",
        stderr(&out)
    );
    // A non-empty directory is not replaced; the input is never the output.
    let again = newstag(&["convert", s(&jsonl), s(&brat)]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("not empty: the files go into a new or empty directory"),
        "{}",
        stderr(&again)
    );
    let same = newstag(&["convert", s(&jsonl), s(&jsonl), "--to", "doccano"]);
    assert!(
        stderr(&same).contains("is the same file as the input"),
        "{}",
        stderr(&same)
    );
    let inside = newstag(&["convert", s(&brat), s(&brat.join("x.jsonl"))]);
    assert!(
        stderr(&inside).contains("would be read back as an input"),
        "{}",
        stderr(&inside)
    );
    // CoNLL with its sidecar, and eval/train's --format for a doccano file named .jsonl.
    let conll = d.join("news.conll");
    let side = d.join("news.topics.jsonl");
    let out = newstag(&["convert", s(&jsonl), s(&conll), "--topics-out", s(&side)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = d.join("back.jsonl");
    let out = newstag(&["convert", s(&conll), s(&back), "--topics", s(&side)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dc = d.join("dc.jsonl");
    let out = newstag(&["convert", s(&back), s(&dc), "--to", "doccano"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = newstag(&["validate", "--format", "doccano", s(&dc)]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn tag_writes_csv_conll_label_studio_brat_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::random_model(d);
    let input = d.join("in.jsonl");
    std::fs::write(&input, "{\"id\": \"a,1\", \"text\": \"🚀 Tokayev met Japarov in Astana on Monday.\"}\n{\"id\": \"b\", \"text\": \"Gazprom oil exports rose.\"}\n").unwrap();
    let run = |format: &str, out: &Path| {
        let o = newstag(&[
            "tag",
            "--model",
            s(&model),
            s(&input),
            "--format",
            format,
            "--out",
            s(out),
        ]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
    };
    let csv_out = d.join("t.csv");
    run("csv", &csv_out);
    let mut rows = csv::Reader::from_path(&csv_out).unwrap();
    assert_eq!(
        rows.headers().unwrap(),
        vec!["id", "start", "end", "label", "text", "score"]
    );
    let text = "🚀 Tokayev met Japarov in Astana on Monday.";
    for r in rows.records() {
        let r = r.unwrap();
        if &r[0] == "a,1" {
            let (s0, e0): (usize, usize) = (r[1].parse().unwrap(), r[2].parse().unwrap());
            let got: String = text.chars().skip(s0).take(e0 - s0).collect();
            assert_eq!(got, &r[4]);
        }
    }
    let ls_out = d.join("t.json");
    run("label-studio", &ls_out);
    let tasks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ls_out).unwrap()).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 2);
    let p = &tasks[0]["predictions"][0];
    assert!(p["model_version"].as_str().unwrap().starts_with("newstag"));
    let utf16: Vec<u16> = text.encode_utf16().collect();
    for r in p["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "labels")
    {
        let v = &r["value"];
        let (a, b) = (
            v["start"].as_u64().unwrap() as usize,
            v["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            String::from_utf16(&utf16[a..b]).unwrap(),
            v["text"].as_str().unwrap()
        );
        assert!(r["score"].is_number());
    }
    let conll_out = d.join("t.conll");
    run("conll", &conll_out);
    let conll = std::fs::read_to_string(&conll_out).unwrap();
    assert_eq!(conll.matches("-DOCSTART-").count(), 2);
    let brat = d.join("brat");
    run("brat", &brat);
    assert!(brat.join("a_1.txt").is_file() && brat.join("b.ann").is_file());
    let html = newstag(&["tag", "--model", s(&model), s(&input), "--format", "html"]);
    assert!(
        String::from_utf8_lossy(&html.stdout).contains("<html"),
        "{}",
        stderr(&html)
    );
    // brat needs a directory; --resume is JSONL's; a brat directory must not hold the input.
    let o = newstag(&["tag", "--model", s(&model), s(&input), "--format", "brat"]);
    assert!(
        stderr(&o).contains("--format brat writes a directory"),
        "{}",
        stderr(&o)
    );
    let o = newstag(&[
        "tag",
        "--model",
        s(&model),
        s(&input),
        "--format",
        "csv",
        "--resume",
        "--out",
        s(&d.join("r.csv")),
    ]);
    assert!(
        stderr(&o).contains("--resume continues JSONL output only"),
        "{}",
        stderr(&o)
    );
    let o = newstag(&[
        "tag",
        "--model",
        s(&model),
        s(&input),
        "--format",
        "brat",
        "--out",
        s(d),
    ]);
    assert!(
        stderr(&o).contains("lies inside the run directory"),
        "{}",
        stderr(&o)
    );
}
