//! newstag's articles JSONL ([`crate::data::jsonl`]): what it reads and writes is all an article
//! holds, so nothing is lost either way. Offsets count characters (code points).

use super::ReadOptions;
use crate::data::jsonl::{read_jsonl, to_json_line};
use crate::data::{Article, ReadOutcome};
use std::path::Path;

/// Reads an articles JSONL file (`--snap` does not apply: the file is newstag's own).
pub fn read(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    read_jsonl(
        path,
        crate::data::jsonl::ReadOptions {
            schema: opts.schema,
            require_id: false,
        },
    )
}

/// The JSONL lines of `articles`.
pub fn write(articles: &[Article]) -> Vec<u8> {
    let mut out = String::new();
    for a in articles {
        out.push_str(&to_json_line(a));
        out.push('\n');
    }
    out.into_bytes()
}
