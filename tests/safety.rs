//! Nothing a user types destroys a file or kills the process with a panic: outputs that would
//! overwrite an input, a model or each other are refused before anything is written; outputs are
//! written through links, as streams to devices, with the usual mode; numeric options are checked
//! by clap; a closed stdout or stderr ends the run as it ends `cat`. Every case is listed in
//! docs/reliability.md.

mod common;

use common::{newstag, random_model, s, stderr};
use std::path::Path;
use std::process::{Command, Stdio};

fn tagged_input(d: &Path) -> std::path::PathBuf {
    let input = d.join("articles.jsonl");
    std::fs::write(&input, common::corpus_jsonl(6)).unwrap();
    input
}

/// Runs newstag and expects a refusal (exit 1) whose message contains `expect`.
fn refused(args: &[&str], expect: &str) {
    let out = newstag(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(expect), "{args:?}: {err}");
}

#[test]
fn an_output_that_names_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let input = tagged_input(d);
    let before = std::fs::read(&input).unwrap();
    let config = std::fs::read(model.join("config.json")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(&input, d.join("link.jsonl")).unwrap();
    std::fs::hard_link(&input, d.join("hard.jsonl")).unwrap();
    let dotted = d.join("sub/../articles.jsonl");
    for out in [
        input.clone(),
        dotted,
        d.join("link.jsonl"),
        d.join("hard.jsonl"),
    ] {
        for flag in ["--out", "--html"] {
            refused(
                &["tag", "--model", s(&model), s(&input), flag, s(&out)],
                &format!("{flag} {} is the same file as the input", s(&out)),
            );
        }
    }
    // Into the directory being read, as a file it would read; into the model; twice in one run.
    let inputs = d.join("inbox");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::copy(&input, inputs.join("a.jsonl")).unwrap();
    let into_inbox = inputs.join("tagged.jsonl");
    refused(
        &[
            "tag",
            "--model",
            s(&model),
            s(&inputs),
            "--out",
            s(&into_inbox),
        ],
        "would be read back as an input: it lies in the input",
    );
    let into_model = model.join("config.json");
    refused(
        &[
            "tag",
            "--model",
            s(&model),
            s(&input),
            "--out",
            s(&into_model),
        ],
        "lies inside the model directory --model",
    );
    let x = d.join("x");
    refused(
        &[
            "tag",
            "--model",
            s(&model),
            s(&input),
            "--out",
            s(&x),
            "--html",
            s(&x),
        ],
        "are the same file",
    );
    assert!(!x.exists(), "nothing written");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(std::fs::read(model.join("config.json")).unwrap(), config);
}

#[test]
fn eval_never_writes_over_its_data_predictions_or_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let gold = tagged_input(d);
    let before = std::fs::read(&gold).unwrap();
    let m = s(&model);
    let g = s(&gold);
    refused(&["eval", "--model", m, "--data", g, "--json", g], "--json");
    refused(
        &["eval", "--model", m, "--data", g, "--html", g],
        "is the same file as --data",
    );
    let report = d.join("r.json");
    let r = s(&report);
    refused(
        &["eval", "--model", m, "--data", g, "--json", r, "--html", r],
        "--html",
    );
    let cfg = model.join("config.json");
    refused(
        &["eval", "--model", m, "--data", g, "--json", s(&cfg)],
        "lies inside the model directory",
    );
    refused(
        &["eval", "--predictions", g, "--data", g, "--json", g],
        "is the same file as",
    );
    assert_eq!(std::fs::read(&gold).unwrap(), before);
}

#[test]
fn train_never_writes_over_its_base_data_or_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = tagged_input(d);
    let base_weights = std::fs::read(base.join("model.safetensors")).unwrap();
    let train = |out: &Path| {
        newstag(&[
            "train",
            "--base",
            s(&base),
            "--train",
            s(&data),
            "--out",
            s(out),
            "--max-steps",
            "1",
            "--window",
            "16",
            "--overlap",
            "4",
        ])
    };
    for (out, expect) in [
        (base.clone(), "--out"),
        (base.join("run"), "lies inside the model directory --base"),
        (d.to_path_buf(), "lies inside the run directory --out"),
        (data.clone(), "is a file"),
    ] {
        let o = train(&out);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{out:?}: {}", stderr(&o));
    }
    // A directory of someone else's files.
    let foreign = d.join("project");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("config.json"), "{\"mine\": true}").unwrap();
    let o = train(&foreign);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a directory that is not a newstag run"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("config.json")).unwrap(),
        "{\"mine\": true}"
    );
    assert_eq!(
        std::fs::read(base.join("model.safetensors")).unwrap(),
        base_weights
    );
    // A new directory, parents and all, is fine; resuming with other flags says what is ignored.
    let run = d.join("runs/new/run");
    let o = train(&run);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = newstag(&["train", "--resume", s(&run), "--epochs", "9", "--lr", "0.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ignoring --epochs, --lr"),
        "{}",
        stderr(&o)
    );
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn outputs_go_through_links_to_devices_and_new_directories_with_the_usual_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let input = tagged_input(d);
    // --out and --html create their directories; files are 0644 under umask 022.
    let out = d.join("new/deeper/tagged.jsonl");
    let html = d.join("pages/tagged.html");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; exec \"$0\" tag --model {} {} --out {} --html {}",
            s(&model),
            s(&input),
            s(&out),
            s(&html)
        ))
        .arg(env!("CARGO_BIN_EXE_newstag"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 6);
    assert_eq!((mode(&out), mode(&html)), (0o644, 0o644));
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no partial or temp file left");
    // Through a symbolic link: the link stays, its target gets the output.
    let target = d.join("real.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let link = d.join("link-out.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = newstag(&["tag", "--model", s(&model), s(&input), "--out", s(&link)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&out).unwrap()
    );
    // A device is written to, not replaced.
    let o = Command::new(env!("CARGO_BIN_EXE_newstag"))
        .args([
            "tag",
            "--model",
            s(&model),
            s(&input),
            "--out",
            "/dev/stdout",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(&out).unwrap());
    let o = newstag(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&input),
        "--json",
        "/dev/null",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
}

#[test]
fn an_interrupted_tag_leaves_out_as_it_was_and_resume_continues_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let input = tagged_input(d);
    let full = d.join("full.jsonl");
    assert!(
        newstag(&["tag", "--model", s(&model), s(&input), "--out", s(&full)])
            .status
            .success()
    );
    let full_bytes = std::fs::read(&full).unwrap();
    // What a killed run leaves: OUT untouched, OUT.partial with some lines and a torn one.
    let out = d.join("out.jsonl");
    std::fs::write(&out, "yesterday's results\n").unwrap();
    let partial = d.join("out.jsonl.partial");
    let cut = full_bytes
        .iter()
        .take(full_bytes.len() / 2)
        .copied()
        .collect::<Vec<u8>>();
    std::fs::write(&partial, &cut).unwrap();
    let o = newstag(&[
        "tag",
        "--model",
        s(&model),
        s(&input),
        "--out",
        s(&out),
        "--resume",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already in the output"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), full_bytes);
    assert!(!partial.exists());
    // Without --resume, a partial file is replaced, and said to be.
    std::fs::write(&partial, &cut).unwrap();
    let o = newstag(&["tag", "--model", s(&model), s(&input), "--out", s(&out)]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("left by an interrupted run"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), full_bytes);
}

#[test]
fn numeric_options_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let input = tagged_input(d);
    let (m, i) = (s(&model), s(&input));
    let base = ["train", "--base", m, "--train", i, "--out", "run"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["tag", "--model", m, i, "--batch-size", "0"],
            "must be at least 1",
        ),
        (
            vec!["tag", "--model", m, i, "--batch-size=-1"],
            "is not a whole number",
        ),
        (
            vec!["eval", "--model", m, "--data", i, "--batch-size", "0"],
            "must be at least 1",
        ),
        (
            [&base[..], &["--batch-size", "0"]].concat(),
            "must be at least 1",
        ),
        (
            [&base[..], &["--epochs", "0"]].concat(),
            "must be at least 1",
        ),
        (
            [&base[..], &["--max-steps", "0"]].concat(),
            "must be at least 1",
        ),
        (
            [&base[..], &["--lr", "nan"]].concat(),
            "must be a finite number",
        ),
        (
            [&base[..], &["--lr", "inf"]].concat(),
            "must be a finite number",
        ),
        ([&base[..], &["--lr", "0"]].concat(), "must be above 0"),
        ([&base[..], &["--lr=-1e-4"]].concat(), "must be above 0"),
        (
            [&base[..], &["--topic-weight=-1"]].concat(),
            "must be 0 or more",
        ),
        (
            [&base[..], &["--topic-weight", "NaN"]].concat(),
            "must be a finite number",
        ),
        ([&base[..], &["--window", "x"]].concat(), "invalid value"),
        (
            [&base[..], &["--window", "4"]].concat(),
            "must be at least 8",
        ),
        (
            vec!["validate", i, "--entity-type", "per"],
            "is not upper case",
        ),
        (
            vec!["validate", i, "--topic", "oil prices"],
            "contains white space",
        ),
    ];
    for (args, expect) in cases {
        let o = newstag(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    assert!(!Path::new("run").exists());
}

#[test]
fn a_closed_stderr_or_stdout_ends_the_run_like_cat_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let input = tagged_input(d);
    let out = d.join("out.jsonl");
    for close_stdout in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_newstag"));
        cmd.args(["tag", "--model", s(&model), s(&input)]);
        if !close_stdout {
            cmd.args(["--out", s(&out)]);
        }
        // A pipe whose reader is gone before the first write.
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        if close_stdout {
            drop(child.stdout.take());
        }
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_ne!(status.code(), Some(101), "no panic");
        assert!(
            status.success() || status.signal() == Some(13),
            "ended by SIGPIPE or done: {status:?}"
        );
        if !close_stdout {
            // Whatever was written is whole lines, in OUT or in OUT.partial.
            let partial = d.join("out.jsonl.partial");
            let written = std::fs::read_to_string(&out)
                .or_else(|_| std::fs::read_to_string(&partial))
                .unwrap_or_default();
            assert!(written.is_empty() || written.ends_with('\n'));
        }
    }
}

#[test]
fn user_errors_print_no_backtrace_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    // More layers in the config than in the weights.
    let cfg = model.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["num_hidden_layers"] = 3.into();
    std::fs::write(&cfg, c.to_string()).unwrap();
    let input = tagged_input(d);
    let o = Command::new(env!("CARGO_BIN_EXE_newstag"))
        .args(["tag", "--model", s(&model), s(&input)])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
}

/// Run in a child process of this test binary (std decides once per process whether errors
/// capture backtraces): a candle error, which prints its backtrace with its message when one was
/// captured, made after `set_up_process` or (`control`) without it.
#[test]
fn candle_error_display() {
    let Ok(mode) = std::env::var("NEWSTAG_BACKTRACE_CHILD") else {
        return; // only as a child of the test below
    };
    if mode == "set-up" {
        let cli = <newstag::cli::Cli as clap::Parser>::parse_from(["newstag", "validate", "x"]);
        // SAFETY: the only test running in this process (--exact), before any error is made.
        unsafe { newstag::cli::set_up_process(&cli) };
    }
    let shown = candle_core::Error::Msg("bad input".into()).bt().to_string();
    println!("LINES={}", shown.lines().count());
}

#[test]
fn the_process_set_up_keeps_backtraces_out_of_error_messages() {
    let lines = |mode: &str| {
        let o = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "candle_error_display",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("NEWSTAG_BACKTRACE_CHILD", mode)
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{out}");
        out.lines()
            .find_map(|l| l.split("LINES=").nth(1))
            .unwrap_or_else(|| panic!("{out}"))
            .parse::<usize>()
            .unwrap()
    };
    assert!(
        lines("control") > 3,
        "without the set-up candle shows a backtrace"
    );
    assert_eq!(lines("set-up"), 1, "with it, the message alone");
}

#[test]
fn tag_and_eval_say_what_they_could_not_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    // Repeated ids are tagged, and said to be repeated.
    let input = d.join("twice.jsonl");
    let line = "{\"id\": \"a\", \"text\": \"Tokayev met Japarov.\"}\n";
    std::fs::write(&input, line.repeat(3)).unwrap();
    let o = newstag(&["tag", "--model", s(&model), s(&input)]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    assert_eq!(
        stderr(&o).matches("id \"a\" occurs more than once").count(),
        2,
        "{}",
        stderr(&o)
    );
    // No articles at all: an error, and no output file comes into being.
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let out = d.join("never.jsonl");
    let o = newstag(&["tag", "--model", s(&model), s(&empty), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no articles in the inputs"));
    assert!(!out.exists() && !d.join("never.jsonl.partial").exists());
    // Gold without "entities": its entities are not scored, and eval says so.
    let gold = d.join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"id\": \"a\", \"text\": \"Tokayev met Japarov.\", \"topics\": []}\n",
    )
    .unwrap();
    let preds = d.join("preds.jsonl");
    std::fs::write(
        &preds,
        "{\"id\": \"a\", \"entities\": [], \"topics\": []}\n",
    )
    .unwrap();
    let o = newstag(&["eval", "--predictions", s(&preds), "--data", s(&gold)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 1 --data article(s) carry no \"entities\""),
        "{}",
        stderr(&o)
    );
}
