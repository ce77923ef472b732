//! Inputs for tagging: `.txt` files (one article each), JSONL files with `id` and `text`,
//! directories of those (one level deep), and `-` for standard input. A special file named on the
//! command line (`/dev/null`, a FIFO, `<(cmd)`) is read as standard input is; inside a directory
//! it is skipped, as subdirectories are. Articles are streamed in input order, so memory stays flat
//! however many there are.
//!
//! [`Shard`] picks a deterministic part of the articles by a stable hash of their ids, so that
//! several processes can share one batch without coordinating.

use super::jsonl::{parse_line, ReadOptions};
use super::{blank_reason, Article};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A stable 64-bit hash of an article id: FNV-1a over its UTF-8 bytes, then the splitmix64
/// finaliser (FNV's low bits are weak). Fixed forever: shard assignments must not change between
/// versions, machines or runs.
pub fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Shard `index` of `count` (0-based: `0/4`, `1/4`, `2/4`, `3/4`). An article belongs to shard
/// `id_hash(id) % count`, whatever the order of the inputs or the files they are spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Does the article with this id belong to this shard?
    pub fn contains(&self, id: &str) -> bool {
        id_hash(id) % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// Parses `K/N` with `0 <= K < N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let usage = "expected K/N with shards numbered from 0 (0/4, 1/4, 2/4, 3/4 for four shards)";
        let (k, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: {usage}"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{s:?}: {what} {v:?} is not a whole number; {usage}"))
        };
        let (index, count) = (parse(k, "K")?, parse(n, "N")?);
        if count == 0 {
            return Err(format!("{s:?}: N must be at least 1; {usage}"));
        }
        if index >= count {
            return Err(format!(
                "{s:?}: K must be below N (shards are numbered 0 to {}); {usage}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

/// One input article, or the reason it could not be read (the batch goes on without it).
#[derive(Debug)]
pub enum InputItem {
    Article(Article),
    Failed { id: String, error: String },
}

impl InputItem {
    pub fn id(&self) -> &str {
        match self {
            InputItem::Article(a) => &a.id,
            InputItem::Failed { id, .. } => id,
        }
    }
}

enum Source {
    Text(PathBuf),
    Jsonl(PathBuf),
    /// Standard input, or a path that is not a regular file (`/dev/null`, a FIFO, `<(cmd)`): read
    /// once, front to back, as JSONL when it starts with `{`, else as one text article.
    Stream(PathBuf),
    /// A path found in a directory that cannot be read (a dangling symbolic link): an error record.
    Unreadable {
        path: PathBuf,
        error: String,
    },
}

/// Why a path found in a directory was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A regular file that is neither `.txt` nor `.jsonl`.
    NotAnInput,
    /// A subdirectory: directories are read one level deep.
    Directory,
    /// A FIFO, socket or device: reading it could block forever.
    NotARegularFile(&'static str),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotAnInput => write!(f, "neither .txt nor .jsonl"),
            SkipReason::Directory => write!(f, "a subdirectory: only the top level is read"),
            SkipReason::NotARegularFile(kind) => {
                write!(
                    f,
                    "{kind}, not a regular file: reading it could wait forever"
                )
            }
        }
    }
}

/// A path passed over inside a directory, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// The JSONL source being read.
struct Reading {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    lines: usize,
    records: usize,
}

/// Streams articles from a list of input paths.
pub struct Inputs {
    pending: VecDeque<Source>,
    current: Option<Reading>,
    /// Paths passed over inside directories, with the reason.
    pub skipped: Vec<Skipped>,
    /// Notes about paths that are read all the same (a file name that is not UTF-8).
    pub warnings: Vec<String>,
    /// JSONL inputs and streams read to the end without a single record (known once iteration
    /// reached them).
    pub empty: Vec<PathBuf>,
}

impl Inputs {
    /// Resolves paths (expanding directories, sorted) without reading any article yet. A path
    /// given that does not exist is an error; everything found in a directory is either read, an
    /// error record, or listed in [`Inputs::skipped`].
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
        let mut inputs = Inputs {
            pending: VecDeque::new(),
            current: None,
            skipped: Vec::new(),
            warnings: Vec::new(),
            empty: Vec::new(),
        };
        for p in paths {
            if p.as_os_str() == "-" {
                inputs.pending.push_back(Source::Stream(p.clone()));
                continue;
            }
            inputs.note_name(p);
            let meta = std::fs::metadata(p).map_err(|e| given_path_error(p, &e))?;
            if meta.is_dir() {
                inputs.add_directory(p)?;
            } else if meta.is_file() {
                let source = source_for(p).unwrap_or_else(|| Source::Text(p.clone()));
                inputs.pending.push_back(source);
            } else {
                // Named on purpose: read it as a stream, as a Unix filter reads `<(cmd)`.
                inputs.pending.push_back(Source::Stream(p.clone()));
            }
        }
        Ok(inputs)
    }

    fn add_directory(&mut self, dir: &Path) -> anyhow::Result<()> {
        let listing_error =
            |e: std::io::Error| anyhow::anyhow!("{}: cannot list directory: {e}", dir.display());
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(listing_error)? {
            entries.push(entry.map_err(listing_error)?.path());
        }
        entries.sort();
        for path in entries {
            self.note_name(&path);
            // Follows symbolic links: a link is what it points to.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    if source_for(&path).is_some() {
                        let error = format!("cannot read: {}", unreadable_reason(&path, &e));
                        self.pending.push_back(Source::Unreadable { path, error });
                    } else {
                        self.skipped.push(Skipped {
                            path,
                            reason: SkipReason::NotAnInput,
                        });
                    }
                    continue;
                }
            };
            let reason = if meta.is_dir() {
                SkipReason::Directory
            } else if !meta.is_file() {
                SkipReason::NotARegularFile(special_kind(&meta))
            } else if let Some(source) = source_for(&path) {
                self.pending.push_back(source);
                continue;
            } else {
                SkipReason::NotAnInput
            };
            self.skipped.push(Skipped { path, reason });
        }
        Ok(())
    }

    /// Warns about a path whose name is not UTF-8: ids and messages show it with U+FFFD.
    fn note_name(&mut self, path: &Path) {
        if path.to_str().is_none() {
            self.warnings.push(format!(
                "{}: the file name is not valid UTF-8; its id shows the bad bytes as \u{FFFD}",
                path.display()
            ));
        }
    }

    /// How many items the inputs not yet opened will yield: one per non-blank line of each JSONL
    /// file, one per text file or unreadable path. Counted ahead by reading the JSONL files;
    /// `None` when standard input or another stream is among them (it can be read only once).
    /// Call it before iterating for the total of the whole run.
    pub fn estimated_total(&self) -> Option<usize> {
        let mut total = 0;
        for source in &self.pending {
            total += match source {
                Source::Stream(_) => return None,
                Source::Text(_) | Source::Unreadable { .. } => 1,
                Source::Jsonl(p) => match File::open(p) {
                    Ok(f) => count_records(BufReader::new(f)),
                    Err(_) => 1,
                },
            };
        }
        Some(total)
    }
}

/// Lines the reader will parse: those with anything but white space (and a leading BOM). A read
/// error counts as the one error record it becomes.
fn count_records(mut reader: impl BufRead) -> usize {
    let mut count = 0;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return count,
            Ok(_) => {
                let raw = if first {
                    line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&line)
                } else {
                    &line
                };
                first = false;
                if !raw.iter().all(u8::is_ascii_whitespace) {
                    count += 1;
                }
            }
            Err(_) => return count + 1,
        }
    }
}

/// The error for a path given on the command line that cannot be opened.
fn given_path_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_err() {
        return anyhow::anyhow!("{}: no such file or directory", path.display());
    }
    anyhow::anyhow!(
        "{}: cannot read: {}",
        path.display(),
        unreadable_reason(path, e)
    )
}

/// Why a path cannot be read, naming the target of a dangling symbolic link.
fn unreadable_reason(path: &Path, e: &std::io::Error) -> String {
    match std::fs::read_link(path) {
        Ok(target) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "a symbolic link to {}, which does not exist",
            target.display()
        ),
        _ => e.to_string(),
    }
}

/// What kind of special file `meta` describes, for messages.
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

fn source_for(p: &Path) -> Option<Source> {
    match p.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => Some(Source::Jsonl(p.to_path_buf())),
        Some("txt") => Some(Source::Text(p.to_path_buf())),
        _ => None,
    }
}

/// Reads a whole text file as one article, refusing binary and empty files.
fn text_article(id: String, bytes: Vec<u8>) -> InputItem {
    let failed = |error: String| InputItem::Failed {
        id: id.clone(),
        error,
    };
    if bytes.contains(&0) {
        return failed("binary file (contains NUL bytes)".into());
    }
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    match String::from_utf8(bytes) {
        Ok(text) => match blank_reason(&text) {
            Some(why) => failed(format!("empty article ({why})")),
            None => InputItem::Article(Article::from_text(id, text)),
        },
        Err(e) => failed(format!(
            "invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        )),
    }
}

impl Inputs {
    /// The next item of the JSONL source being read, or `None` at its end (closing it).
    fn next_line(&mut self) -> Option<InputItem> {
        let r = self.current.as_mut()?;
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    if r.records == 0 {
                        self.empty.push(r.path.clone());
                    }
                    self.current = None;
                    return None;
                }
                Ok(_) => {
                    r.lines += 1;
                    let raw = line.strip_suffix(b"\n").unwrap_or(&line);
                    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                    let raw = if r.lines == 1 {
                        raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
                    } else {
                        raw
                    };
                    if raw.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    r.records += 1;
                    return Some(line_item(&r.path, r.lines, raw));
                }
                Err(e) => {
                    let id = format!("{}:{}", r.path.display(), r.lines + 1);
                    self.current = None;
                    return Some(InputItem::Failed {
                        id,
                        error: format!("read error: {e}"),
                    });
                }
            }
        }
    }

    /// Opens a stream: JSONL becomes the current source; anything else is one text article, or
    /// nothing at all when it is blank (as an empty file is).
    fn open_stream(&mut self, path: PathBuf) -> Option<InputItem> {
        let id = path.display().to_string();
        let file: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            match File::open(&path) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    return Some(InputItem::Failed {
                        id,
                        error: format!("cannot read: {e}"),
                    })
                }
            }
        };
        let mut reader = BufReader::new(file);
        let starts_json = match reader.fill_buf() {
            Ok(buf) => buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
            Err(_) => false,
        };
        if starts_json {
            self.current = Some(Reading {
                path,
                reader: Box::new(reader),
                lines: 0,
                records: 0,
            });
            return None;
        }
        let mut bytes = Vec::new();
        if let Err(e) = reader.read_to_end(&mut bytes) {
            return Some(InputItem::Failed {
                id,
                error: format!("cannot read: {e}"),
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            self.empty.push(path);
            return None;
        }
        Some(text_article(id, bytes))
    }
}

/// The item of one non-blank JSONL line. A failed line keeps the article's own id when it has one
/// (its message then gives file and line); otherwise its id is `FILE:LINE` and the message the
/// problem alone, so that the location is named once.
fn line_item(path: &Path, lineno: usize, raw: &[u8]) -> InputItem {
    let opts = ReadOptions {
        schema: None,
        require_id: false,
    };
    let (own_id, parsed) = parse_line(path, lineno, raw, opts);
    let failed = |error: String| InputItem::Failed {
        id: own_id
            .clone()
            .unwrap_or_else(|| format!("{}:{lineno}", path.display())),
        error,
    };
    match parsed {
        Ok(a) => match blank_reason(&a.text) {
            Some(why) => InputItem::Failed {
                id: a.id,
                error: format!("empty article ({why})"),
            },
            None => InputItem::Article(a),
        },
        Err(problems) => {
            let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            let messages = messages.join("; ");
            failed(if own_id.is_some() {
                format!("{}:{lineno}: {messages}", path.display())
            } else {
                messages
            })
        }
    }
}

impl Iterator for Inputs {
    type Item = InputItem;

    fn next(&mut self) -> Option<InputItem> {
        loop {
            if self.current.is_some() {
                if let Some(item) = self.next_line() {
                    return Some(item);
                }
                continue;
            }
            let item = match self.pending.pop_front()? {
                Source::Text(p) => {
                    let id = p.display().to_string();
                    Some(match std::fs::read(&p) {
                        Ok(bytes) => text_article(id, bytes),
                        Err(e) => InputItem::Failed {
                            id,
                            error: format!("cannot read: {e}"),
                        },
                    })
                }
                Source::Jsonl(p) => match File::open(&p) {
                    Ok(f) => {
                        self.current = Some(Reading {
                            path: p,
                            reader: Box::new(BufReader::new(f)),
                            lines: 0,
                            records: 0,
                        });
                        None
                    }
                    Err(e) => Some(InputItem::Failed {
                        id: p.display().to_string(),
                        error: format!("cannot read: {e}"),
                    }),
                },
                Source::Stream(p) => self.open_stream(p),
                Source::Unreadable { path, error } => Some(InputItem::Failed {
                    id: path.display().to_string(),
                    error,
                }),
            };
            if item.is_some() {
                return item;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_text_jsonl_and_directories_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), "\u{feff}Tokayev met Mirziyoyev.").unwrap();
        std::fs::write(
            d.join("b.jsonl"),
            "{\"id\": \"x\", \"text\": \"Oil\"}\n\n{\"text\": \"\"}\nnope\n",
        )
        .unwrap();
        std::fs::write(d.join("c.bin"), [0u8, 1, 2]).unwrap();
        std::fs::write(d.join("d.txt"), [0xffu8, 0xfe]).unwrap();
        std::fs::write(d.join("e.txt"), "  \n").unwrap();
        let inputs = Inputs::open(&[d.to_path_buf()]).unwrap();
        let items: Vec<InputItem> = inputs.collect();
        let summary: Vec<(String, bool)> = items
            .iter()
            .map(|i| {
                (
                    i.id().rsplit('/').next().unwrap().to_string(),
                    matches!(i, InputItem::Article(_)),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a.txt".into(), true),
                ("x".into(), true),
                ("b:3".into(), false),
                ("b.jsonl:4".into(), false),
                ("d.txt".into(), false),
                ("e.txt".into(), false)
            ]
        );
        if let InputItem::Article(a) = &items[0] {
            assert_eq!(a.text, "Tokayev met Mirziyoyev.");
        }
    }

    /// Makes a FIFO at `path` (with `mkfifo`, as a user would).
    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", path.display());
    }

    #[test]
    fn every_path_in_a_directory_is_read_skipped_or_an_error() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub.txt")).unwrap();
        std::fs::write(d.join("sub.txt/x.txt"), "Not read.").unwrap();
        std::os::unix::fs::symlink(d.join("gone.txt"), d.join("dangling.txt")).unwrap();
        std::os::unix::fs::symlink(d.join("gone"), d.join("dangling.md")).unwrap();
        mkfifo(&d.join("pipe.jsonl"));
        let latin1 = d.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
        std::fs::write(&latin1, "Oil rose.").unwrap();
        std::fs::write(d.join("notes.md"), "not an input").unwrap();
        let mut inputs = Inputs::open(&[d.to_path_buf()]).unwrap();
        assert_eq!(inputs.estimated_total(), Some(2));
        let items: Vec<InputItem> = inputs.by_ref().collect();
        assert_eq!(items.len(), 2);
        let InputItem::Article(a) = &items[0] else {
            panic!("{:?}", items[0]);
        };
        assert!(a.id.ends_with("caf\u{FFFD}.txt"), "{}", a.id);
        let InputItem::Failed { id, error } = &items[1] else {
            panic!("{:?}", items[1]);
        };
        assert!(id.ends_with("dangling.txt"));
        assert!(
            error.starts_with("cannot read: a symbolic link to ")
                && error.ends_with("gone.txt, which does not exist"),
            "{error}"
        );
        let skipped: Vec<(String, String)> = inputs
            .skipped
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, s.reason.to_string())
            })
            .collect();
        assert_eq!(
            skipped,
            [
                ("dangling.md".into(), "neither .txt nor .jsonl".into()),
                ("notes.md".into(), "neither .txt nor .jsonl".into()),
                (
                    "pipe.jsonl".into(),
                    "a FIFO, not a regular file: reading it could wait forever".into()
                ),
                (
                    "sub.txt".into(),
                    "a subdirectory: only the top level is read".into()
                ),
            ]
        );
        assert_eq!(inputs.warnings.len(), 1);
        assert!(
            inputs.warnings[0].ends_with(
                "the file name is not valid UTF-8; its id shows the bad bytes as \u{FFFD}"
            ),
            "{}",
            inputs.warnings[0]
        );
    }

    #[test]
    fn special_files_given_by_name_are_read_as_streams() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                std::fs::write(
                    &fifo,
                    "{\"id\": \"p\", \"text\": \"Oil\"}\n\n{\"id\": \"q\", \"text\": \"Gas\"}\n",
                )
                .unwrap()
            })
        };
        let mut inputs = Inputs::open(&[fifo, PathBuf::from("/dev/null")]).unwrap();
        assert_eq!(
            inputs.estimated_total(),
            None,
            "a stream cannot be counted ahead"
        );
        let ids: Vec<String> = inputs.by_ref().map(|i| i.id().to_string()).collect();
        writer.join().unwrap();
        assert_eq!(ids, ["p", "q"]);
        assert_eq!(inputs.empty, [PathBuf::from("/dev/null")]);
        let missing = Inputs::open(&[dir.path().join("nope.txt")]).err().unwrap();
        assert!(missing
            .to_string()
            .ends_with("nope.txt: no such file or directory"));
    }

    #[test]
    fn estimated_total_counts_what_the_iterator_yields() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), "").unwrap();
        std::fs::write(
            d.join("b.jsonl"),
            "\u{feff}\n{\"text\": \"x\"}\r\n  \n{oops\n{\"text\": \"y\"}",
        )
        .unwrap();
        std::fs::write(d.join("c.jsonl"), "\n\n").unwrap();
        let paths = [d.to_path_buf(), d.join("a.txt")];
        let inputs = Inputs::open(&paths).unwrap();
        let estimate = inputs.estimated_total();
        assert_eq!(estimate, Some(5));
        assert_eq!(Some(inputs.count()), estimate);
    }

    #[test]
    fn failed_lines_name_their_location_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("types.jsonl");
        std::fs::write(
            &path,
            "{oops\n{\"id\": \"k\", \"text\": \"Oil\", \"entities\": [{\"start\": 0, \"end\": 3, \"label\": \"per\"}]}\n{\"id\": [1], \"text\": \"x\"}\n{\"id\": \"z\", \"text\": \"\\u200b\"}\n",
        )
        .unwrap();
        let p = path.display().to_string();
        let items: Vec<(String, String)> = Inputs::open(&[path])
            .unwrap()
            .map(|i| match i {
                InputItem::Failed { id, error } => (id, error),
                InputItem::Article(a) => panic!("{} read", a.id),
            })
            .collect();
        assert_eq!(items[0].0, format!("{p}:1"));
        assert!(items[0].1.starts_with("malformed JSON: "), "{}", items[0].1);
        assert_eq!(items[1].0, "k");
        assert_eq!(
            items[1].1,
            format!("{p}:2: entity 0..3: entity type \"per\" is not upper case (types look like PER, ORG, WORK_OF_ART)")
        );
        assert_eq!(
            items[2],
            (
                format!("{p}:3"),
                "\"id\" must be a string or a number, not a list".into()
            )
        );
        assert_eq!(
            items[3],
            (
                "z".into(),
                "empty article (only white space and invisible characters: U+200B)".into()
            )
        );
    }

    #[test]
    fn empty_jsonl_files_are_noted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        std::fs::write(&a, "\n  \n").unwrap();
        std::fs::write(&b, "{\"id\": \"x\", \"text\": \"Oil\"}\n").unwrap();
        let mut inputs = Inputs::open(&[a.clone(), b]).unwrap();
        assert_eq!(inputs.by_ref().count(), 1);
        assert_eq!(inputs.empty, [a]);
    }

    #[test]
    fn id_hash_is_pinned() {
        // These values must never change: they decide which shard an article goes to.
        assert_eq!(id_hash(""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(id_hash("b1-001"), 0x2879_9ea5_3f40_bb6f);
        assert_eq!(id_hash("doc0"), 0x4c8c_0a1d_88a1_661b);
        assert_eq!(id_hash("Zürich 🚀"), 0xd2d9_0984_dd6b_f4fa);
    }

    #[test]
    fn shards_parse_partition_and_balance() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        for bad in ["4/4", "5/4", "1/0", "x/4", "1", "-1/4", "1/4/2"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("K/N"), "{bad}: {err}");
        }
        assert!("4/4"
            .parse::<Shard>()
            .unwrap_err()
            .contains("K must be below N"));
        let shards: Vec<Shard> = (0..4).map(|k| Shard { index: k, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for i in 0..4000 {
            let id = format!("article-{i}");
            let owners: Vec<usize> = (0..4).filter(|&k| shards[k].contains(&id)).collect();
            assert_eq!(owners.len(), 1, "{id} belongs to exactly one shard");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (850..1150).contains(&n)), "{sizes:?}");
    }
}
