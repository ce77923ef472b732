//! A run's pictures: `curves.svg` (training loss, dev F1 per entity type, entity and topic micro-F1,
//! per epoch) and `index.html` (the curves, links to the run's files, the epochs, and the last dev
//! evaluation as tables). Both are rewritten atomically after every evaluation, from the run's
//! history (the records of `metrics.jsonl`).
//!
//! The SVG is drawn with plotters' SVG backend: its text is SVG `<text>` that the browser sets in
//! its own sans-serif font, so no font files are needed to draw it.

use super::EpochRecord;
use crate::eval::html::report_tables;
use crate::eval::Report;
use crate::fsutil::write_atomic;
use crate::page::{document, type_accent, type_order, Style};
use maud::{html, Markup, PreEscaped};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Size of `curves.svg` in pixels.
pub const SIZE: (u32, u32) = (1060, 400);
/// Width of the legend beside the F1 chart.
const LEGEND_WIDTH: u32 = 190;

/// Rewrites `curves.svg` and `index.html` in the run directory `out`. A failure is reported as a
/// warning on stderr and otherwise ignored: pictures never stop a training run.
pub fn update(out: &Path, history: &[EpochRecord]) {
    if let Err(e) = write_run_pages(out, history) {
        eprintln!("warning: cannot draw the training curves: {e:#}");
    }
}

/// Writes `curves.svg` and `index.html` into `out`, each atomically.
pub fn write_run_pages(out: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let svg = curves_svg(history)?;
    write_atomic(&out.join("curves.svg"), svg.as_bytes())?;
    let title = out
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| out.display().to_string());
    let files: Vec<&str> = LINKED_FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists() || *f == "curves.svg")
        .collect();
    write_atomic(
        &out.join("index.html"),
        index_html(&title, history, &svg, &files, &saved_topics(out)).as_bytes(),
    )
}

/// The topics of the model saved in `out` (empty when there is none yet).
fn saved_topics(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|c| serde_json::from_value(c["newstag"]["topics"].clone()).ok())
        .unwrap_or_default()
}

/// The run's files the index links to (those that exist).
const LINKED_FILES: [&str; 8] = [
    "metrics.jsonl",
    "config.json",
    "training_args.json",
    "curves.svg",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "checkpoints/latest.json",
];

/// The dev report of a record, if it has one that reads as a [`Report`].
fn dev_report(r: &EpochRecord) -> Option<Report> {
    serde_json::from_value(r.dev.clone()?).ok()
}

/// One curve: a name, a colour, and (epoch, value) points.
struct Curve {
    name: String,
    colour: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn rgb(hex: &str) -> RGBColor {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0);
    RGBColor((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

/// The dev F1 curves: one per entity type, entity micro-F1 and topic micro-F1.
fn f1_curves(history: &[EpochRecord]) -> Vec<Curve> {
    let mut per_type: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let (mut entity_micro, mut topic_micro) = (Vec::new(), Vec::new());
    for r in history {
        let Some(report) = dev_report(r) else {
            continue;
        };
        let x = r.epoch as f64;
        if let Some(e) = &report.entities {
            entity_micro.push((x, e.micro.f1));
            for (t, s) in &e.per_type {
                per_type.entry(t.clone()).or_default().push((x, s.f1));
            }
        }
        if let Some(t) = &report.topics {
            topic_micro.push((x, t.micro.f1));
        }
    }
    let mut types: Vec<(String, Vec<(f64, f64)>)> = per_type.into_iter().collect();
    types.sort_by(|a, b| type_order(&a.0).cmp(&type_order(&b.0)));
    let mut curves: Vec<Curve> = types
        .into_iter()
        .map(|(t, points)| Curve {
            colour: rgb(type_accent(&t)),
            name: format!("{t} F1"),
            dashed: false,
            points,
        })
        .collect();
    if !entity_micro.is_empty() {
        curves.push(Curve {
            name: "entity micro-F1".into(),
            colour: RGBColor(0x1f, 0x23, 0x28),
            dashed: true,
            points: entity_micro,
        });
    }
    if !topic_micro.is_empty() {
        curves.push(Curve {
            name: "topic micro-F1".into(),
            colour: RGBColor(0x7e, 0x22, 0xce),
            dashed: true,
            points: topic_micro,
        });
    }
    curves
}

/// `curves.svg`: training loss per epoch (left) and dev F1 per epoch (right).
pub fn curves_svg(history: &[EpochRecord]) -> anyhow::Result<String> {
    let loss: Vec<(f64, f64)> = history
        .iter()
        .filter(|r| r.train_loss.is_finite())
        .map(|r| (r.epoch as f64, r.train_loss))
        .collect();
    let f1 = f1_curves(history);
    let last_epoch = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(2) as f64;
    let x_range = 0.8..last_epoch + 0.2;
    let epochs = last_epoch as usize;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (left, right) = root.split_horizontally((SIZE.0 - LEGEND_WIDTH) * 9 / 20);
        let (right, legend) = right.split_horizontally(right.dim_in_pixel().0 - LEGEND_WIDTH);
        let label_font = ("sans-serif", 14);

        let loss_max = loss.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let y_top = if loss_max > 0.0 { loss_max * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(&left)
            .caption("training loss", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x_range.clone(), 0.0..y_top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("mean loss")
            .x_labels(epochs.min(12) + 1)
            .x_label_formatter(&epoch_label)
            .label_style(label_font)
            .axis_desc_style(label_font)
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_error)?;
        let blue = RGBColor(0x1d, 0x4e, 0xd8);
        chart
            .draw_series(LineSeries::new(loss.iter().copied(), blue.stroke_width(2)))
            .map_err(plot_error)?;
        chart
            .draw_series(loss.iter().map(|&p| Circle::new(p, 3, blue.filled())))
            .map_err(plot_error)?;

        let mut chart = ChartBuilder::on(&right)
            .caption("dev F1", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(45)
            .build_cartesian_2d(x_range, 0.0..1.0)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("F1")
            .x_labels(epochs.min(12) + 1)
            .y_labels(6)
            .x_label_formatter(&epoch_label)
            .label_style(label_font)
            .axis_desc_style(label_font)
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_error)?;
        for (i, c) in f1.iter().enumerate() {
            let style = c.colour.stroke_width(2);
            if c.dashed {
                chart.draw_series(DashedLineSeries::new(c.points.iter().copied(), 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(c.points.iter().copied(), style))
            }
            .map_err(plot_error)?;
            // The legend: a swatch and the name, one per line, beside the chart.
            let y = 50 + 24 * i as i32;
            let swatch = vec![(8, y), (36, y)];
            if c.dashed {
                legend
                    .draw(&PathElement::new(vec![(8, y), (18, y)], style))
                    .and_then(|_| legend.draw(&PathElement::new(vec![(24, y), (36, y)], style)))
            } else {
                legend.draw(&PathElement::new(swatch, style))
            }
            .map_err(plot_error)?;
            legend
                .draw(&Text::new(
                    c.name.clone(),
                    (44, y - 8),
                    ("sans-serif", 14).into_font().color(&BLACK),
                ))
                .map_err(plot_error)?;
            chart
                .draw_series(
                    c.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, c.colour.filled())),
                )
                .map_err(plot_error)?;
        }
        if f1.is_empty() {
            chart
                .draw_series(std::iter::once(Text::new(
                    "no dev evaluation",
                    (1.0, 0.5),
                    ("sans-serif", 16),
                )))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting failed: {e}")
}

/// `index.html` of a run: the curves (inline SVG), links to `files`, a table of the epochs, and the
/// last dev evaluation.
/// `topics` names the thresholds (the model's topics, in order; empty when unknown).
pub fn index_html(
    title: &str,
    history: &[EpochRecord],
    svg: &str,
    files: &[&str],
    topics: &[String],
) -> String {
    let best = history.iter().filter(|r| r.score.is_some()).max_by(|a, b| {
        a.score
            .partial_cmp(&b.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.epoch.cmp(&a.epoch))
    });
    let last_dev = history
        .iter()
        .rev()
        .find_map(|r| dev_report(r).map(|rep| (r, rep)));
    let body = html! {
        @if let Some(last) = history.last() {
            p class="meta" {
                (history.len()) " evaluation" (if history.len() == 1 { "" } else { "s" })
                "; last: epoch " (last.epoch) ", step " (last.step) ", "
                (format!("{:.0}", last.elapsed_s)) " s, " (format!("{:.0}", last.tokens_per_s))
                " tokens/s."
                @if let (Some(b), Some(s)) = (best, best.and_then(|b| b.score)) {
                    " The saved model is from epoch " (b.epoch) " (best dev score "
                    (format!("{s:.4}")) ")."
                }
            }
        }
        section {
            h2 { "Training curves" }
            // plotters' SVG: its text is escaped by plotters.
            div class="scroll" { (PreEscaped(svg.trim())) }
        }
        section {
            h2 { "Files" }
            ul {
                @for f in files {
                    li { a href=(f) { (f) } }
                }
            }
        }
        (epochs(history))
        section {
            h2 { "Last evaluation" }
            @match &last_dev {
                Some((r, report)) => {
                    p class="meta" {
                        "dev set after epoch " (r.epoch) " (step " (r.step)
                        "); topic thresholds chosen on dev."
                    }
                    (report_tables(report))
                    @if !r.thresholds.is_empty() {
                        p class="meta" {
                            "topic thresholds chosen on dev: " (thresholds_text(&r.thresholds, topics))
                        }
                    }
                }
                None => p { "No dev evaluation in this run." },
            }
        }
    };
    document(&format!("newstag run: {title}"), Style::Report, body)
}

/// `energy 0.250, trade 0.400`: thresholds named by the model's topics (in its order, as in
/// config.json) when those are known, else bare.
fn thresholds_text(thresholds: &[f32], topics: &[String]) -> String {
    let named = topics.len() == thresholds.len();
    thresholds
        .iter()
        .enumerate()
        .map(|(i, t)| match topics.get(i).filter(|_| named) {
            Some(name) => format!("{name} {t:.3}"),
            None => format!("{t:.3}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn epochs(history: &[EpochRecord]) -> Markup {
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.4}"));
    html! {
        section {
            h2 { "Epochs" }
            div class="scroll" {
                table {
                    thead { tr {
                        th { "epoch" } th { "step" } th { "train loss" } th { "lr" }
                        th { "dev score" } th { "entity micro-F1" } th { "topic micro-F1" }
                        th { "tokens/s" } th { "elapsed s" }
                    } }
                    tbody {
                        @for r in history {
                            @let report = dev_report(r);
                            @let entity = report.as_ref().and_then(|d| d.entities.as_ref()).map(|e| e.micro.f1);
                            @let topic = report.as_ref().and_then(|d| d.topics.as_ref()).map(|t| t.micro.f1);
                            tr {
                                td { (r.epoch) } td { (r.step) }
                                td { (opt(Some(r.train_loss).filter(|l| l.is_finite()))) }
                                td { (format!("{:.2e}", r.lr)) } td { (opt(r.score)) }
                                td { (opt(entity)) } td { (opt(topic)) }
                                td { (format!("{:.0}", r.tokens_per_s)) }
                                td { (format!("{:.1}", r.elapsed_s)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(epoch: usize, loss: f64, per: f64, topics: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch * 10,
            train_loss: loss,
            lr: 1e-4,
            note: None,
            elapsed_s: epoch as f64,
            tokens_per_s: 1000.0,
            dev: Some(json!({
                "documents": 4,
                "entities": {
                    "micro": {"precision": per, "recall": per, "f1": per},
                    "macro": {"precision": per, "recall": per, "f1": per},
                    "per_type": {
                        "PER": {"precision": per, "recall": per, "f1": per, "support": 3},
                        "<X&Y>": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
                    }
                },
                "topics": {
                    "micro": {"precision": topics, "recall": topics, "f1": topics},
                    "macro": {"precision": topics, "recall": topics, "f1": topics},
                    "per_label": {"energy": {"precision": topics, "recall": topics, "f1": topics, "support": 2}},
                    "documents": 4
                }
            })),
            score: Some((per + topics) / 2.0),
            thresholds: vec![0.25],
        }
    }

    #[test]
    fn curves_have_every_series_and_escape_labels() {
        let history = [
            record(1, 2.0, 0.25, 0.5),
            record(2, 1.0, 0.5, 0.75),
            record(3, 0.5, 0.75, 1.0),
        ];
        let curves = f1_curves(&history);
        let names: Vec<&str> = curves.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["PER F1", "<X&Y> F1", "entity micro-F1", "topic micro-F1"]
        );
        assert_eq!(curves[0].points, [(1.0, 0.25), (2.0, 0.5), (3.0, 0.75)]);
        assert_eq!(curves[3].points[2], (3.0, 1.0));

        let svg = curves_svg(&history).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in [
            "training loss",
            "dev F1",
            "PER F1",
            "topic micro-F1",
            "epoch",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("&lt;X&amp;Y&gt; F1") && !svg.contains("<X&Y>"));

        let page = index_html(
            "run",
            &history,
            &svg,
            &["metrics.jsonl", "config.json"],
            &["energy".to_string()],
        );
        assert!(page.contains("<a href=\"metrics.jsonl\">metrics.jsonl</a>"));
        assert!(page.contains("The saved model is from epoch 3 (best dev score 0.8750)."));
        assert!(page.contains("dev set after epoch 3 (step 30)"));
        assert!(page.contains("<tr><td>PER</td><td>0.7500</td>"), "{page}");
        assert!(page.contains("<td>energy</td><td>1.0000</td>"));
        assert!(page.contains("topic thresholds chosen on dev: energy 0.250"));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn runs_without_dev_or_with_one_epoch_still_draw() {
        let mut r = record(1, 0.7, 0.0, 0.0);
        r.dev = None;
        r.score = None;
        let svg = curves_svg(&[r.clone()]).unwrap();
        assert!(svg.contains("no dev evaluation"));
        let page = index_html("run", &[r], &svg, &[], &[]);
        assert!(page.contains("No dev evaluation in this run."));
        let mut nan = record(1, f64::NAN, 0.5, 0.5);
        nan.score = None;
        assert!(curves_svg(&[nan]).unwrap().contains("PER F1"));
        assert!(curves_svg(&[]).is_ok());
    }

    #[test]
    fn pages_are_written_into_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), "").unwrap();
        write_run_pages(dir.path(), &[record(1, 1.0, 0.5, 0.5)]).unwrap();
        let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(page.contains("href=\"metrics.jsonl\"") && !page.contains("href=\"config.json\""));
        assert!(dir.path().join("curves.svg").exists());
    }
}
