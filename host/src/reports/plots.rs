//! Plots of a comparison's aggregates ([`crate::runs::compare::Comparison`]) with `plotters`, each written as PNG and
//! SVG: accuracy-matrix heat maps, ACC vs tasks seen, α per task, and ACC vs bytes kept.
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (no fontconfig/freetype C libraries):
//! `$EDGELEARN_FONT`, else DejaVu Sans from Debian's `fonts-dejavu-core`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::reports::{Aggregate, acc_curve};

/// Where the plot font is looked for when `$EDGELEARN_FONT` is not set.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const FONT: &str = "sans-serif";

/// Register the plot font once (plotters keeps a `'static` reference to its bytes).
fn ensure_font() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = std::env::var_os("EDGELEARN_FONT").map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("plot font {}: {e} (install Debian's fonts-dejavu-core or set EDGELEARN_FONT)", path.display())
            })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("plot font {}: not a TrueType font", path.display()))
        })
        .clone()
        .map_err(Error::Invalid)
}

fn plot_err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Invalid(format!("plot {what}: {e:?}"))
}

/// A fixed, colour-blind-friendly palette (Okabe–Ito, then Tol's muted), cycled.
fn colour(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 14] = [
        (0, 114, 178),
        (213, 94, 0),
        (0, 158, 115),
        (204, 121, 167),
        (230, 159, 0),
        (86, 180, 233),
        (0, 0, 0),
        (240, 228, 66),
        (136, 34, 85),
        (68, 170, 153),
        (153, 153, 51),
        (51, 34, 136),
        (170, 68, 153),
        (221, 204, 119),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

/// Accuracy 0 → white, 1 → dark blue.
fn heat(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

/// Streams in first-appearance order with their aggregates.
fn by_stream(aggregates: &[Aggregate]) -> Vec<(String, Vec<&Aggregate>)> {
    let mut out: Vec<(String, Vec<&Aggregate>)> = Vec::new();
    for a in aggregates {
        match out.iter_mut().find(|(s, _)| *s == a.stream) {
            Some((_, v)) => v.push(a),
            None => out.push((a.stream.clone(), vec![a])),
        }
    }
    out
}

/// Mean accuracy matrix over an aggregate's runs.
fn mean_matrix(agg: &Aggregate) -> Vec<Vec<f64>> {
    let Some(first) = agg.runs.first() else { return Vec::new() };
    let n = agg.runs.len() as f64;
    let mut m = vec![vec![0.0; first.matrix.rows.len()]; first.matrix.rows.len()];
    for r in &agg.runs {
        for (i, row) in r.matrix.rows.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                m[i][j] += v / n;
            }
        }
    }
    m
}

fn heatmaps<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, stream: &str, aggs: &[&Aggregate]) -> Result<()> {
    let e = plot_err::<DrawingAreaErrorKind<DB::ErrorType>>;
    root.fill(&WHITE).map_err(e("background"))?;
    let body =
        root.titled(&format!("{stream}: accuracy matrix A[i][j] (mean over seeds)"), (FONT, 22)).map_err(e("title"))?;
    let cols = aggs.len().clamp(1, 4);
    let rows = aggs.len().div_ceil(cols).max(1);
    for (agg, panel) in aggs.iter().zip(body.split_evenly((rows, cols))) {
        let m = mean_matrix(agg);
        let t = m.len();
        let mut chart = ChartBuilder::on(&panel)
            .caption(format!("{} (ACC {:.1})", agg.method, 100.0 * agg.acc.mean), (FONT, 15))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(28)
            .build_cartesian_2d(0..t, 0..t)
            .map_err(e("heat map axes"))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("task j")
            .y_desc("after i")
            .label_style((FONT, 10))
            .draw()
            .map_err(e("heat map mesh"))?;
        chart
            .draw_series(m.iter().enumerate().flat_map(|(i, row)| {
                row.iter().enumerate().filter(move |(j, _)| *j <= i).map(move |(j, &v)| {
                    // Row i drawn top-down: task 0 at the top.
                    Rectangle::new([(j, t - 1 - i), (j + 1, t - i)], heat(v).filled())
                })
            }))
            .map_err(e("heat map cells"))?;
    }
    root.present().map_err(e("present"))
}

fn acc_curves<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, stream: &str, aggs: &[&Aggregate]) -> Result<()> {
    let e = plot_err::<DrawingAreaErrorKind<DB::ErrorType>>;
    root.fill(&WHITE).map_err(e("background"))?;
    let curves: Vec<(String, Vec<f64>)> = aggs.iter().map(|a| (a.method.clone(), acc_curve(a))).collect();
    let t = curves.iter().map(|(_, c)| c.len()).max().unwrap_or(1).max(2);
    let lo = curves.iter().flat_map(|(_, c)| c.iter().copied()).fold(1.0f64, f64::min).min(0.9);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{stream}: ACC over the tasks seen so far"), (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(1f64..t as f64, (100.0 * lo - 1.0).max(0.0)..100.0)
        .map_err(e("axes"))?;
    chart.configure_mesh().x_desc("tasks seen").y_desc("ACC (%)").label_style((FONT, 14)).draw().map_err(e("mesh"))?;
    for (k, (name, c)) in curves.iter().enumerate() {
        let col = colour(k);
        let pts: Vec<(f64, f64)> = c.iter().enumerate().map(|(i, v)| ((i + 1) as f64, 100.0 * v)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(e("line"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(e("points"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(e("legend"))?;
    root.present().map_err(e("present"))
}

fn alphas<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, stream: &str, aggs: &[&Aggregate]) -> Result<()> {
    let e = plot_err::<DrawingAreaErrorKind<DB::ErrorType>>;
    root.fill(&WHITE).map_err(e("background"))?;
    let series: Vec<(usize, &Aggregate)> = aggs
        .iter()
        .enumerate()
        .filter(|(_, a)| a.alpha.iter().skip(1).any(Option::is_some))
        .map(|(k, a)| (k, *a))
        .collect();
    let t = aggs.iter().map(|a| a.alpha.len()).max().unwrap_or(2).max(2);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{stream}: merge weight on the new task model, per task"), (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(1f64..t as f64, 0f64..1.0)
        .map_err(e("axes"))?;
    chart.configure_mesh().x_desc("task").y_desc("α").label_style((FONT, 14)).draw().map_err(e("mesh"))?;
    for (k, agg) in series {
        let col = colour(k);
        // Task 1 has no merge (α = 1 or none) for every rule: start at task 2.
        let pts: Vec<(f64, f64)> =
            agg.alpha.iter().enumerate().skip(1).filter_map(|(i, a)| a.map(|a| ((i + 1) as f64, a.mean))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(e("line"))?
            .label(agg.method.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(e("points"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(e("legend"))?;
    root.present().map_err(e("present"))
}

fn acc_vs_memory<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, stream: &str, aggs: &[&Aggregate]) -> Result<()> {
    let e = plot_err::<DrawingAreaErrorKind<DB::ErrorType>>;
    root.fill(&WHITE).map_err(e("background"))?;
    // Methods that keep nothing are drawn at 1 byte (the log axis has no 0).
    let pts: Vec<(f64, f64, &str)> =
        aggs.iter().map(|a| (a.bytes_kept.max(1.0), 100.0 * a.acc.mean, a.method.as_str())).collect();
    let xmax = pts.iter().map(|p| p.0).fold(10.0, f64::max) * 4.0;
    let lo = pts.iter().map(|p| p.1).fold(100.0, f64::min);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{stream}: ACC vs bytes kept between tasks (0 B drawn at 1 B)"), (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d((1f64..xmax).log_scale(), (lo - 2.0).max(0.0)..100.0)
        .map_err(e("axes"))?;
    chart.configure_mesh().x_desc("bytes kept").y_desc("ACC (%)").label_style((FONT, 14)).draw().map_err(e("mesh"))?;
    for (k, &(x, y, name)) in pts.iter().enumerate() {
        let col = colour(k);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((x, y))
                    + Circle::new((0, 0), 5, col.filled())
                    + Text::new(name.to_string(), (7, -6), (FONT, 12)),
            ))
            .map_err(e("point"))?;
    }
    root.present().map_err(e("present"))
}

type Painter = fn(&DrawingArea<SVGBackend<'_>, Shift>, &str, &[&Aggregate]) -> Result<()>;
type BitmapPainter = fn(&DrawingArea<BitMapBackend<'_>, Shift>, &str, &[&Aggregate]) -> Result<()>;

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// Write one figure as `<out>/<stem>.svg` and `<out>/<stem>.png`.
fn both(
    out: &Path,
    stem: &str,
    size: (u32, u32),
    svg: Painter,
    png: BitmapPainter,
    stream: &str,
    aggs: &[&Aggregate],
) -> Result<()> {
    let svg_path = out.join(format!("{stem}.svg"));
    svg(&SVGBackend::new(&svg_path, size).into_drawing_area(), stream, aggs)?;
    let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        png(&root, stream, aggs)?;
    }
    let png_path = out.join(format!("{stem}.png"));
    image::save_buffer(&png_path, &buf, size.0, size.1, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Invalid(format!("{}: {e}", png_path.display())))
}

/// Every plot of a comparison's aggregates, per stream: `heatmaps-`, `acc-curve-`, `alpha-`, `acc-vs-memory-<stream>`,
/// each `.png` and `.svg`, in `out`.
pub fn write_all(aggregates: &[Aggregate], out: &Path) -> Result<()> {
    ensure_font()?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    // One closure per backend: each instantiates the generic plot function for that backend, which a fn item
    // alone cannot (the drawing area's lifetime is higher-ranked).
    macro_rules! figure {
        ($stem:expr, $size:expr, $plot:ident, $stream:expr, $aggs:expr) => {
            both(out, &$stem, $size, |r, s, a| $plot(r, s, a), |r, s, a| $plot(r, s, a), $stream, $aggs)
        };
    }
    for (stream, aggs) in by_stream(aggregates) {
        let s = slug(&stream);
        let rows = aggs.len().div_ceil(4).max(1) as u32;
        figure!(format!("heatmaps-{s}"), (1200, 40 + 300 * rows), heatmaps, &stream, &aggs)?;
        figure!(format!("acc-curve-{s}"), (900, 560), acc_curves, &stream, &aggs)?;
        figure!(format!("alpha-{s}"), (900, 560), alphas, &stream, &aggs)?;
        figure!(format!("acc-vs-memory-{s}"), (900, 560), acc_vs_memory, &stream, &aggs)?;
    }
    Ok(())
}
