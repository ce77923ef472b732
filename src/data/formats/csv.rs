//! CSV for spreadsheets (`tag --format csv`, written only): a header, then one row per entity,
//! `id,start,end,label,text,score`, offsets in characters (code points). Quoting is the `csv`
//! crate's (RFC 4180). Topics and articles without entities have no row.

use crate::infer::output::OutputRecord;

/// The columns.
pub const HEADER: [&str; 6] = ["id", "start", "end", "label", "text", "score"];

fn finish(w: csv::Writer<Vec<u8>>) -> Vec<u8> {
    w.into_inner().expect("writing to memory cannot fail")
}

/// The header row.
pub fn header() -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)
        .expect("writing to memory cannot fail");
    finish(w)
}

/// The rows of one article's entities (none for an article that failed).
pub fn rows(record: &OutputRecord) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if let OutputRecord::Tagged { id, entities, .. } = record {
        for e in entities {
            w.write_record([
                id.as_str(),
                &e.start.to_string(),
                &e.end.to_string(),
                &e.label,
                &e.text,
                &format!("{:.4}", e.score),
            ])
            .expect("writing to memory cannot fail");
        }
    }
    finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::output::OutputEntity;

    #[test]
    fn quotes_commas_quotes_and_line_breaks() {
        let record = OutputRecord::Tagged {
            id: "a,\"1\"".into(),
            entities: vec![OutputEntity {
                span: crate::data::CharSpan {
                    start: 0,
                    end: 9,
                    label: "ORG".into(),
                },
                text: "Acme\n\"Co\"".into(),
                score: 0.5,
            }],
            topics: vec![],
        };
        let mut bytes = header();
        bytes.extend(rows(&record));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "id,start,end,label,text,score\n\"a,\"\"1\"\"\",0,9,ORG,\"Acme\n\"\"Co\"\"\",0.5000\n"
        );
    }
}
