//! The reliability diagram of the `eval --html` page: per score bin, the fraction of predictions
//! that were right against the bin's mean score, with the diagonal a calibrated model follows.
//! Plain inline SVG (a few rectangles and a line), so the page stays one self-contained file.

use super::calibration::{Calibration, Reliability};
use crate::infer::html::Esc;
use std::fmt::{self, Write};

const SIZE: f64 = 220.0;
const PAD: f64 = 30.0;

/// A section with one diagram per scored part (entities, topics) and its ECE; nothing when
/// neither was scored.
pub fn write_reliability(out: &mut String, calibration: &Calibration) -> fmt::Result {
    let parts: Vec<(&str, &Reliability)> = [
        ("Entities", calibration.entities.as_ref()),
        ("Topics", calibration.topics.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.map(|r| (name, r)))
    .collect();
    if parts.is_empty() {
        return Ok(());
    }
    out.push_str("<section>\n<h2>Calibration</h2>\n<p class=\"meta\">Bars: the fraction right in each score bin; the line: where a calibrated model's bars end (a score of 0.8 right four times in five). ECE: the bins' gaps, weighted by their share of predictions.</p>\n<div class=\"reliability\">\n");
    for (name, r) in parts {
        write_diagram(out, name, r)?;
    }
    out.push_str("</div>\n</section>\n");
    Ok(())
}

fn write_diagram(out: &mut String, name: &str, r: &Reliability) -> fmt::Result {
    let full = SIZE + 2.0 * PAD;
    let x = |v: f64| PAD + v * SIZE;
    let y = |v: f64| PAD + (1.0 - v) * SIZE;
    writeln!(
        out,
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{full}\" height=\"{full}\" role=\"img\" aria-label=\"{} reliability diagram\">",
        Esc(name)
    )?;
    writeln!(
        out,
        "<rect x=\"{PAD}\" y=\"{PAD}\" width=\"{SIZE}\" height=\"{SIZE}\" fill=\"none\" stroke=\"#999\"/>"
    )?;
    for b in r.bins.iter().filter(|b| b.count > 0) {
        let width = (b.high - b.low) * SIZE - 2.0;
        writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"#4a7ebb\"><title>{:.1}-{:.1}: {} prediction(s), mean score {:.3}, right {:.3}</title></rect>",
            x(b.low) + 1.0,
            y(b.accuracy),
            b.accuracy * SIZE,
            b.low,
            b.high,
            b.count,
            b.mean_score,
            b.accuracy
        )?;
    }
    writeln!(
        out,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#c33\" stroke-dasharray=\"4 3\"/>",
        x(0.0),
        y(0.0),
        x(1.0),
        y(1.0)
    )?;
    writeln!(
        out,
        "<text x=\"{PAD}\" y=\"{:.0}\" font-size=\"11\">0</text><text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\">score 1</text><text x=\"2\" y=\"{:.0}\" font-size=\"11\">1</text>",
        full - 10.0,
        x(1.0) - 36.0,
        full - 10.0,
        PAD + 4.0
    )?;
    writeln!(
        out,
        "</svg><figcaption>{}: ECE {:.4} over {} prediction(s)</figcaption></figure>",
        Esc(name),
        r.ece,
        r.count
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ReliabilityScorer;

    #[test]
    fn one_diagram_per_scored_part_with_a_bar_per_non_empty_bin() {
        let mut s = ReliabilityScorer::default();
        s.add(0.95, true);
        s.add(0.15, false);
        let c = Calibration {
            entities: s.reliability(),
            topics: None,
        };
        let mut out = String::new();
        write_reliability(&mut out, &c).unwrap();
        assert_eq!(out.matches("<svg").count(), 1);
        assert_eq!(out.matches("<title>").count(), 2);
        assert!(
            out.contains("Entities: ECE 0.1000 over 2 prediction(s)"),
            "{out}"
        );
        let mut empty = String::new();
        write_reliability(&mut empty, &Calibration::default()).unwrap();
        assert!(empty.is_empty());
    }
}
