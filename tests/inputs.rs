//! What the readers do with unusual input, through the `newstag` binary: labels that cannot be
//! entity types, articles with nothing for the model, every kind of path `tag` may meet, CoNLL files
//! with empty documents, and messages that name a location once. Every case here is listed in
//! docs/reliability.md.

mod common;

use common::{newstag, newstag_within, s, stderr};

fn stdout_records(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `train` (which reads without a schema) and `validate` refuse labels that are not entity types,
/// naming file, line and article; a well-formed new type is trained and the run reloads.
#[test]
fn labels_that_cannot_be_types_are_refused_by_train_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::tiny_base(&d.join("base"));
    let line = |label: &str| {
        format!(
            r#"{{"id": "a", "text": "Tokayev met Japarov", "entities": [{{"start": 0, "end": 7, "label": {}}}]}}"#,
            serde_json::to_string(label).unwrap()
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("lower.jsonl", line("per"), "lower.jsonl:1: article \"a\": entity 0..7: entity type \"per\" is not upper case (types look like PER, ORG, WORK_OF_ART)"),
        ("o.jsonl", line("O"), "o.jsonl:1: article \"a\": entity 0..7: \"O\" is not an entity type: it marks words outside entities"),
        ("bio.jsonl", line("B-X"), "bio.jsonl:1: article \"a\": entity 0..7: entity type \"B-X\" has a BIO prefix (labels name the type alone)"),
        ("space.jsonl", line("PER SON"), "space.jsonl:1: article \"a\": entity 0..7: entity type \"PER SON\" contains white space (U+0020)"),
        ("blank.jsonl", line(""), "blank.jsonl:1: article \"a\": entity 0..7: entity type is empty"),
        ("ctrl.jsonl", line("PER\u{7}"), "ctrl.jsonl:1: article \"a\": entity 0..7: entity type \"PER\\u{7}\" contains a control character (U+0007)"),
        ("topics.jsonl", r#"{"id": "a", "text": "Oil", "topics": ["energy", "energy"]}"#.into(), "topics.jsonl:1: article \"a\": topic \"energy\" is listed twice"),
        ("tspace.jsonl", r#"{"id": "a", "text": "Oil", "topics": ["oil prices"]}"#.into(), "tspace.jsonl:1: article \"a\": topic \"oil prices\" contains white space (U+0020)"),
        ("lower.conll", "Tokayev B-per\nmet O\n".into(), "lower.conll:1: tag \"B-per\": entity type \"per\" is not upper case"),
        ("bbx.conll", "Tokayev O\nmet B-B-X\n".into(), "bbx.conll:2: tag \"B-B-X\": entity type \"B-X\" has a BIO prefix"),
        ("io.conll", "Tokayev I-O\n".into(), "io.conll:1: tag \"I-O\": \"O\" is not an entity type"),
    ];
    for (name, content, expect) in &cases {
        let path = d.join(name);
        std::fs::write(&path, content).unwrap();
        let run = d.join(format!("run-{name}"));
        let out = newstag(&[
            "train",
            "--base",
            s(&d.join("base")),
            "--train",
            s(&path),
            "--out",
            s(&run),
            "--max-steps",
            "1",
        ]);
        assert_eq!(out.status.code(), Some(1), "train {name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expect),
            "train {name}: {}",
            stderr(&out)
        );
        assert!(!run.join("config.json").exists(), "train {name} left a run");
        let out = newstag(&["validate", s(&path)]);
        assert_eq!(out.status.code(), Some(1), "validate {name}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains(expect), "validate {name}: {said}");
    }

    // A well-formed new type is trained as a new label, and the run directory loads again.
    let new_type = d.join("new.jsonl");
    let mut data = common::corpus_jsonl(6);
    data.push_str(
        r#"{"id": "w", "text": "Tokayev read War and Peace", "entities": [{"start": 13, "end": 26, "label": "WORK_OF_ART"}]}"#,
    );
    std::fs::write(&new_type, data).unwrap();
    let run = d.join("run-new");
    let out = newstag(&[
        "train",
        "--base",
        s(&d.join("base")),
        "--train",
        s(&new_type),
        "--out",
        s(&run),
        "--max-steps",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let labels: Vec<&str> = config["id2label"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"B-WORK_OF_ART") && labels.contains(&"I-WORK_OF_ART"),
        "{labels:?}"
    );
    let txt = d.join("a.txt");
    std::fs::write(&txt, "Tokayev met Japarov.").unwrap();
    let out = newstag(&["tag", "--model", s(&run), s(&txt)]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// An article of white space and invisible characters is an empty article: an error record in
/// `tag`, a problem in annotated files. So is one whose words the tokenizer drops entirely.
#[test]
fn articles_with_nothing_for_the_model_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::random_model(d);
    let zw = d.join("zw.txt");
    std::fs::write(&zw, "\u{feff}\u{200b}\u{200b} \u{ad}\n").unwrap();
    let lines = d.join("lines.jsonl");
    std::fs::write(
        &lines,
        concat!(
            "{\"id\": \"nul\", \"text\": \"\\u0000\\u2060\"}\n",
            "{\"id\": \"accent\", \"text\": \"\\u0301 \\u0301\"}\n",
            "{\"id\": \"ok\", \"text\": \"Tokayev met Japarov.\"}\n",
        ),
    )
    .unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&zw), s(&lines)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let records = stdout_records(&out);
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["id"], s(&zw));
    assert_eq!(
        records[0]["error"],
        "empty article (only white space and invisible characters: U+200B, U+00AD)"
    );
    assert_eq!(records[1]["id"], "nul");
    assert_eq!(
        records[1]["error"],
        "empty article (only white space and invisible characters: U+0000, U+2060)"
    );
    // Words, but none the tokenizer keeps (it strips accents): no topic scores made up.
    assert_eq!(records[2]["id"], "accent");
    assert_eq!(
        records[2]["error"],
        "empty article (no word the model can read)"
    );
    assert!(records[3]["topics"].is_array());
    assert!(stderr(&out).contains("tagged 1 article(s), 3 failed"));

    let gold = d.join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"id\": \"z\", \"text\": \"\\u200b\\ufeff\", \"topics\": [\"energy\"]}\n",
    )
    .unwrap();
    let out = newstag(&["validate", s(&gold)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "gold.jsonl:1: article \"z\": empty \"text\" (only white space and invisible characters: U+200B, U+FEFF)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every path `tag` finds in a directory is tagged, an error record, or skipped with a warning;
/// nothing hangs on a FIFO.
#[test]
fn every_path_in_a_directory_is_accounted_for() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::random_model(d);
    let inputs = d.join("in");
    std::fs::create_dir_all(inputs.join("sub")).unwrap();
    std::fs::write(inputs.join("sub/x.txt"), "Not read.").unwrap();
    std::fs::write(inputs.join("a.txt"), "Tokayev met Japarov.").unwrap();
    std::os::unix::fs::symlink(d.join("moved.txt"), inputs.join("b.txt")).unwrap();
    let fifo = inputs.join("c.jsonl");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        inputs.join(std::ffi::OsStr::from_bytes(b"d\xe9.txt")),
        "Rahmon met Tokayev.",
    )
    .unwrap();
    let out = newstag_within(120, &["tag", "--model", s(&model), s(&inputs)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let records = stdout_records(&out);
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let base = s(&inputs);
    assert_eq!(
        ids,
        [
            format!("{base}/a.txt"),
            format!("{base}/b.txt"),
            format!("{base}/d\u{FFFD}.txt")
        ]
    );
    assert_eq!(
        records[1]["error"],
        format!(
            "cannot read: a symbolic link to {}, which does not exist",
            s(&d.join("moved.txt"))
        )
    );
    assert!(
        records[2]["entities"].is_array(),
        "a non-UTF-8 name is still read"
    );
    let err = stderr(&out);
    for expect in [
        format!("warning: {base}/c.jsonl: skipped (a FIFO, not a regular file: reading it could wait forever)"),
        format!("warning: {base}/sub: skipped (a subdirectory: only the top level is read)"),
        format!("warning: {base}/d\u{FFFD}.txt: the file name is not valid UTF-8; its id shows the bad bytes as \u{FFFD}"),
        format!("error: {base}/b.txt: cannot read: a symbolic link to "),
    ] {
        assert!(err.contains(&expect), "missing {expect:?} in\n{err}");
    }
}

/// Special files named on the command line are read like standard input: `/dev/null` is no
/// articles (as an empty file is), `<(cmd)` and a FIFO are tagged.
#[test]
fn dev_null_fifos_and_process_substitution_work_like_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::random_model(d);
    let out = newstag_within(60, &["tag", "--model", s(&model), "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("warning: /dev/null: no articles (the file is empty)")
            && err.contains("no articles in the inputs (/dev/null)")
            && !err.contains("no such file"),
        "{err}"
    );

    let jsonl = d.join("a.jsonl");
    std::fs::write(&jsonl, common::corpus_jsonl(3)).unwrap();
    let txt = d.join("b.txt");
    std::fs::write(&txt, "Tokayev met Japarov in Bishkek.").unwrap();
    let script = format!(
        "exec {} tag --model {} <(cat {}) <(cat {})",
        env!("CARGO_BIN_EXE_newstag"),
        s(&model),
        s(&jsonl),
        s(&txt)
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let records = stdout_records(&out);
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..3], ["doc0", "doc1", "doc2"]);
    assert!(
        ids[3].starts_with("/dev/fd/"),
        "a text stream is named by its path: {ids:?}"
    );
    assert!(records.iter().all(|r| r["entities"].is_array()));

    let fifo = d.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let (fifo, text) = (fifo.clone(), common::corpus_jsonl(2));
        std::thread::spawn(move || std::fs::write(fifo, text).unwrap())
    };
    let out = newstag_within(60, &["tag", "--model", s(&model), s(&fifo)]);
    writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_records(&out).len(), 2);
}

/// A CoNLL file with empty documents (in the middle, and a bare `-DOCSTART-` at the end as in
/// WikiGold) is read with one warning; its sidecar's topics stay on their own documents.
#[test]
fn conll_empty_documents_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::random_model(d);
    let conll = d.join("wiki.conll");
    std::fs::write(
        &conll,
        "-DOCSTART- O\n\nTokayev B-PER\nmet O\nJaparov B-PER\n\n-DOCSTART- O\n\n-DOCSTART- O\n\nOil O\nrose O\nin O\nAstana B-LOC\n\n-DOCSTART- O\n",
    )
    .unwrap();
    let sidecar = d.join("wiki.topics.jsonl");
    std::fs::write(
        &sidecar,
        "{\"doc\": 0, \"topics\": []}\n{\"doc\": 1, \"topics\": [\"borders\"]}\n{\"doc\": 2, \"topics\": [\"energy\"]}\n{\"doc\": 3, \"topics\": []}\n",
    )
    .unwrap();
    let warning = "wiki.conll:7: document 1 is empty: skipped (2 empty document(s) in the file)";
    let out = newstag(&["validate", s(&conll), "--topics", s(&sidecar)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(warning),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("2 valid articles, 3 entity mentions, 0 problem(s)"));

    let report = d.join("report.json");
    let out = newstag(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&conll),
        "--topics",
        s(&sidecar),
        "--json",
        s(&report),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["documents"], 2);
    // Document 2 (the second article) keeps "energy"; "borders" belonged to the empty document 1.
    assert_eq!(r["topics"]["per_label"]["energy"]["support"], 1, "{r}");
    assert_eq!(r["topics"]["per_label"]["borders"]["support"], 0, "{r}");

    // Only empty documents: still no documents at all.
    let bare = d.join("bare.conll");
    std::fs::write(&bare, "-DOCSTART- -X- O\n\n").unwrap();
    let out = newstag(&["validate", s(&bare)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("bare.conll: no documents (1 empty document(s), read 2 lines)"));
}

/// A bad line names its location once, keeps its own id, and never shows an internal type name.
#[test]
fn bad_lines_name_their_location_once_and_keep_their_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::random_model(d);
    let types = d.join("types.jsonl");
    std::fs::write(
        &types,
        concat!(
            "{\"id\": true, \"text\": \"Oil\"}\n",
            "{\"id\": {\"n\": 1}, \"text\": \"Oil\"}\n",
            "{\"id\": \"k\", \"text\": [\"Oil\"]}\n",
            "{oops\n",
        ),
    )
    .unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&types)]);
    assert_eq!(out.status.code(), Some(2));
    let p = s(&types);
    let records = stdout_records(&out);
    assert_eq!(records[0]["id"], format!("{p}:1"));
    assert_eq!(
        records[0]["error"],
        "\"id\" must be a string or a number, not true"
    );
    assert_eq!(
        records[1]["error"],
        "\"id\" must be a string or a number, not an object"
    );
    assert_eq!(records[2]["id"], "k");
    assert_eq!(
        records[2]["error"],
        format!("{p}:3: \"text\" must be a string: invalid type: sequence, expected a string")
    );
    assert!(records[3]["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON: "));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: {p}:1: \"id\" must be a string or a number, not true"
        )),
        "{err}"
    );
    assert!(
        !err.contains(&format!("{p}:1: {p}:1"))
            && !err.contains("untagged")
            && !err.contains("RawId"),
        "{err}"
    );

    // validate and train say the same, with the article's id where the line has one.
    let out = newstag(&["validate", p]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("types.jsonl:1: \"id\" must be a string or a number, not true")
            && said.contains("types.jsonl:3: article \"k\": \"text\" must be a string"),
        "{said}"
    );
}
