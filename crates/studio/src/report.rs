//! `runs report`: a Markdown comparison with loss charts drawn by plotters (SVG and PNG).

use crate::history::{metric_rows, Axis, Comparison, RunView};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// What was written.
#[derive(Debug, Clone, serde::Serialize, ts_rs::TS)]
#[ts(export, rename = "ReportFiles")]
pub struct Report {
    pub markdown: PathBuf,
    pub charts: Vec<PathBuf>,
    /// Charts that could not be drawn (e.g. no font for PNG text), with the reason.
    pub skipped: Vec<String>,
}

type Series<'a> = Vec<(&'a str, &'a [(i64, f64)])>;

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    series: &Series,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x_max, mut y_min, mut y_max) = (1i64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        if y.is_finite() {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max as f64, (y_min - pad)..(y_max + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("loss")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, s)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.iter().map(|&(x, y)| (x as f64, y)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn table(runs: &[RunView]) -> String {
    let mut md = String::from("| | ");
    md += &runs
        .iter()
        .map(|r| r.id.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    md += " |\n|---|";
    md += &"---:|".repeat(runs.len());
    md += "\n";
    for (name, value) in metric_rows() {
        md += &format!("| {name} | ");
        md += &runs
            .iter()
            .map(|r| value(r).replace('|', "\\|"))
            .collect::<Vec<_>>()
            .join(" | ");
        md += " |\n";
    }
    md
}

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/`), embedded so PNG charts need no
/// system fonts or fontconfig.
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

fn register_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the embedded chart font is unreadable".to_string())
    })
    .clone()
}

/// Write `report.md`, `train-loss.{svg,png}` and `eval-loss.{svg,png}` into `out`.
pub fn write(c: &Comparison, out: &Path, axis: Axis) -> Result<Report, String> {
    let x_desc = match axis {
        Axis::Step => "step",
        Axis::Tokens => "tokens trained on",
    };
    register_font()?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut charts = vec![];
    let mut skipped = vec![];
    let mut md = format!(
        "# Whetstone run comparison\n\nRuns: {}.\n\n",
        c.runs
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    md += &table(&c.runs);
    for (stem, title, pick) in [
        ("train-loss", "Training loss", 0usize),
        ("eval-loss", "Eval loss", 1usize),
    ] {
        let series: Series = c
            .runs
            .iter()
            .zip(&c.curves)
            .map(|(r, cv)| {
                (
                    r.id.as_str(),
                    match (pick, axis) {
                        (0, Axis::Step) => &cv.train[..],
                        (0, Axis::Tokens) => &cv.train_by_tokens[..],
                        (_, Axis::Step) => &cv.eval[..],
                        (_, Axis::Tokens) => &cv.eval_by_tokens[..],
                    },
                )
            })
            .collect();
        md += &format!("\n## {title}\n\n");
        let svg = out.join(format!("{stem}.svg"));
        match draw(
            SVGBackend::new(&svg, (900, 520)).into_drawing_area(),
            title,
            x_desc,
            &series,
        ) {
            Ok(()) => {
                md += &format!("![{title}]({stem}.svg)\n");
                charts.push(svg);
            }
            Err(e) => skipped.push(format!("{}: {e}", svg.display())),
        }
        let png = out.join(format!("{stem}.png"));
        match draw(
            BitMapBackend::new(&png, (900, 520)).into_drawing_area(),
            title,
            x_desc,
            &series,
        ) {
            Ok(()) => {
                md += &format!("\nPNG: [{stem}.png]({stem}.png)\n");
                charts.push(png);
            }
            Err(e) => skipped.push(format!("{}: {e}", png.display())),
        }
    }
    let path = out.join("report.md");
    crate::paths::write_atomically(&path, md.as_bytes())?;
    Ok(Report {
        markdown: path,
        charts,
        skipped,
    })
}
