//! The reliability diagram of the `eval --html` page: per score bin, the fraction of predictions
//! that were right against the bin's mean score, with the diagonal a calibrated model follows.
//! Plain inline SVG (a few rectangles and a line) in the page's maud template, so the page stays
//! one self-contained file.

use super::calibration::{Calibration, Reliability};
use maud::{html, Markup};

const SIZE: f64 = 220.0;
const PAD: f64 = 30.0;

/// A section with one diagram per scored part (entities, topics) and its ECE; nothing when
/// neither was scored.
pub fn reliability(calibration: &Calibration) -> Markup {
    let parts: Vec<(&str, &Reliability)> = [
        ("Entities", calibration.entities.as_ref()),
        ("Topics", calibration.topics.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.map(|r| (name, r)))
    .collect();
    html! {
        @if !parts.is_empty() {
            section {
                h2 { "Calibration" }
                p class="meta" {
                    "Bars: the fraction right in each score bin; the line: where a calibrated \
                     model's bars end (a score of 0.8 right four times in five). ECE: the bins' \
                     gaps, weighted by their share of predictions."
                }
                div class="reliability" {
                    @for (name, r) in parts { (diagram(name, r)) }
                }
            }
        }
    }
}

/// One decimal, as the diagram places its shapes.
fn dec1(x: f64) -> String {
    format!("{x:.1}")
}

fn diagram(name: &str, r: &Reliability) -> Markup {
    let full = SIZE + 2.0 * PAD;
    let x = |v: f64| PAD + v * SIZE;
    let y = |v: f64| PAD + (1.0 - v) * SIZE;
    let whole = |v: f64| format!("{v:.0}");
    html! {
        figure {
            svg xmlns="http://www.w3.org/2000/svg" width=(full) height=(full) role="img"
                aria-label=(format!("{name} reliability diagram")) {
                rect x=(PAD) y=(PAD) width=(SIZE) height=(SIZE) fill="none" stroke="#999" {}
                @for b in r.bins.iter().filter(|b| b.count > 0) {
                    rect x=(dec1(x(b.low) + 1.0)) y=(dec1(y(b.accuracy)))
                        width=(dec1((b.high - b.low) * SIZE - 2.0)) height=(dec1(b.accuracy * SIZE))
                        fill="#4a7ebb" {
                        title {
                            (dec1(b.low)) "-" (dec1(b.high)) ": " (b.count)
                            " prediction(s), mean score " (format!("{:.3}", b.mean_score))
                            ", right " (format!("{:.3}", b.accuracy))
                        }
                    }
                }
                line x1=(x(0.0)) y1=(y(0.0)) x2=(x(1.0)) y2=(y(1.0)) stroke="#c33"
                    stroke-dasharray="4 3" {}
                text x=(PAD) y=(whole(full - 10.0)) font-size="11" { "0" }
                text x=(whole(x(1.0) - 36.0)) y=(whole(full - 10.0)) font-size="11" { "score 1" }
                text x="2" y=(whole(PAD + 4.0)) font-size="11" { "1" }
            }
            figcaption {
                (name) ": ECE " (format!("{:.4}", r.ece)) " over " (r.count) " prediction(s)"
            }
        }
    }
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
        let out = reliability(&c).into_string();
        assert_eq!(out.matches("<svg").count(), 1);
        assert_eq!(out.matches("<title>").count(), 2);
        assert!(
            out.contains("Entities: ECE 0.1000 over 2 prediction(s)"),
            "{out}"
        );
        // Every SVG element is closed: inside <svg> an open <rect> would swallow what follows.
        assert_eq!(out.matches("<rect").count(), out.matches("</rect>").count());
        assert!(reliability(&Calibration::default())
            .into_string()
            .is_empty());
    }
}
