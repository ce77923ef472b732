//! Inputs for tagging: `.txt` files (one article each), JSONL files with `id` and `text`,
//! directories of those, and `-` for standard input. Articles are streamed in input order, so
//! memory stays flat however many there are.
//!
//! [`Shard`] picks a deterministic part of the articles by a stable hash of their ids, so that
//! several processes can share one batch without coordinating.

use super::jsonl::{parse_line, ReadOptions};
use super::{Article, DataError};
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
    Stdin,
}

/// Streams articles from a list of input paths.
pub struct Inputs {
    pending: VecDeque<Source>,
    /// The JSONL source being read: path, reader, lines read, records yielded.
    current: Option<(PathBuf, Box<dyn BufRead>, usize, usize)>,
    /// Files passed over inside directories (neither `.txt` nor `.jsonl`).
    pub skipped: Vec<PathBuf>,
    /// JSONL inputs read to the end without a single record (known once iteration reached them).
    pub empty: Vec<PathBuf>,
}

impl Inputs {
    /// Resolves paths (expanding directories, sorted) without reading any article yet.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
        let mut pending = VecDeque::new();
        let mut skipped = Vec::new();
        for p in paths {
            if p.as_os_str() == "-" {
                pending.push_back(Source::Stdin);
            } else if p.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| anyhow::anyhow!("{}: cannot list directory: {e}", p.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                entries.sort();
                for e in entries {
                    match source_for(&e) {
                        Some(s) => pending.push_back(s),
                        None => skipped.push(e),
                    }
                }
            } else if p.is_file() {
                pending.push_back(source_for(p).unwrap_or_else(|| Source::Text(p.clone())));
            } else {
                anyhow::bail!("{}: no such file or directory", p.display());
            }
        }
        Ok(Inputs {
            pending,
            current: None,
            skipped,
            empty: Vec::new(),
        })
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
        Ok(text) if text.trim().is_empty() => failed("empty article".into()),
        Ok(text) => InputItem::Article(Article::from_text(id, text)),
        Err(e) => failed(format!(
            "invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        )),
    }
}

impl Iterator for Inputs {
    type Item = InputItem;

    fn next(&mut self) -> Option<InputItem> {
        loop {
            if let Some((path, reader, lineno, records)) = &mut self.current {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => {
                        if *records == 0 {
                            self.empty.push(path.clone());
                        }
                        self.current = None;
                    }
                    Ok(_) => {
                        *lineno += 1;
                        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
                        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                        let raw = if *lineno == 1 {
                            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
                        } else {
                            raw
                        };
                        if raw.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let opts = ReadOptions {
                            schema: None,
                            require_id: false,
                        };
                        let (id, parsed) = parse_line(path, *lineno, raw, opts);
                        let id = id.unwrap_or_else(|| format!("{}:{lineno}", path.display()));
                        *records += 1;
                        return Some(match parsed {
                            Ok(a) if a.text.trim().is_empty() => InputItem::Failed {
                                id,
                                error: "empty article".into(),
                            },
                            Ok(a) => InputItem::Article(a),
                            Err(problems) => InputItem::Failed {
                                id,
                                error: problems_text(&problems),
                            },
                        });
                    }
                    Err(e) => {
                        let id = format!("{}:{}", path.display(), *lineno + 1);
                        self.current = None;
                        return Some(InputItem::Failed {
                            id,
                            error: format!("read error: {e}"),
                        });
                    }
                }
                continue;
            }
            match self.pending.pop_front()? {
                Source::Text(p) => {
                    let id = p.display().to_string();
                    return Some(match std::fs::read(&p) {
                        Ok(bytes) => text_article(id, bytes),
                        Err(e) => InputItem::Failed {
                            id,
                            error: format!("cannot read: {e}"),
                        },
                    });
                }
                Source::Jsonl(p) => match File::open(&p) {
                    Ok(f) => self.current = Some((p, Box::new(BufReader::new(f)), 0, 0)),
                    Err(e) => {
                        return Some(InputItem::Failed {
                            id: p.display().to_string(),
                            error: format!("cannot read: {e}"),
                        })
                    }
                },
                Source::Stdin => {
                    let mut reader = BufReader::new(std::io::stdin());
                    let starts_json = match reader.fill_buf() {
                        Ok(buf) => buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
                        Err(_) => false,
                    };
                    if starts_json {
                        self.current = Some((PathBuf::from("-"), Box::new(reader), 0, 0));
                    } else {
                        let mut bytes = Vec::new();
                        return Some(match reader.read_to_end(&mut bytes) {
                            Ok(_) => text_article("-".into(), bytes),
                            Err(e) => InputItem::Failed {
                                id: "-".into(),
                                error: format!("cannot read stdin: {e}"),
                            },
                        });
                    }
                }
            }
        }
    }
}

fn problems_text(problems: &[DataError]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
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
