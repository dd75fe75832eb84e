//! The study report's PNG plots, drawn with plotters into an RGB buffer that the image crate
//! encodes (as the training run's plots are).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// A complete trial's colour; pruned ones are grey.
const COMPLETE: RGBColor = RGBColor(40, 90, 200);
const PRUNED: RGBColor = RGBColor(175, 175, 175);
const BEST: RGBColor = RGBColor(210, 40, 40);

/// One point of a trial: x, y, and whether the trial completed (else it was pruned).
pub type Point = (f64, f64, bool);

/// A PNG of `size` drawn by `draw` on a white background.
fn png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), String> {
    rekindle_train::report::plot::font()?;
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    image::save_buffer(path, &buf, size.0, size.1, image::ColorType::Rgb8)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The range of `values` with a margin, never empty.
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| v.is_finite()) {
        (lo, hi) = (lo.min(v), hi.max(v));
    }
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.06).max(1e-9);
    (lo - pad)..(hi + pad)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A titled chart over `xs` x `ys` with whole-number x labels and the axes named `desc`.
fn axes<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    desc: (&str, &str),
    xs: std::ops::Range<f64>,
    ys: std::ops::Range<f64>,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String>
{
    let mut c = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xs, ys)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc(desc.0)
        .y_desc(desc.1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    Ok(c)
}

/// Every trial's value by trial number (pruned greyed, at their best so far) and the best so
/// far among the complete ones.
pub fn history(path: &Path, points: &[Point], best: &[(f64, f64)], y: &str) -> Result<(), String> {
    png(path, (900, 520), |root| {
        let xs = range(points.iter().map(|p| p.0));
        let ys = range(points.iter().map(|p| p.1));
        let mut c = axes(root, "Optimisation history", ("trial", y), xs, ys)?;
        scatter(&mut c, points)?;
        c.draw_series(LineSeries::new(best.iter().copied(), BEST.stroke_width(2)))
            .map_err(err)?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BEST.stroke_width(2)));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    })
}

/// Complete trials as blue dots, pruned ones as grey.
fn scatter<DB: DrawingBackend>(
    c: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    points: &[Point],
) -> Result<(), String> {
    for (complete, color, label) in [(false, PRUNED, "pruned"), (true, COMPLETE, "complete")] {
        let pts = points.iter().filter(|p| p.2 == complete && p.1.is_finite());
        c.draw_series(pts.map(|p| Circle::new((p.0, p.1), 4, color.filled())))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
    }
    Ok(())
}

/// One searched key's panel: its values (log10 for a log-uniform key; the index for a choice,
/// labelled) against the objective.
pub struct Slice {
    /// The key.
    pub key: String,
    /// x, objective, complete.
    pub points: Vec<Point>,
    /// Plotted as log10 of the value.
    pub log: bool,
    /// A choice's values, by index.
    pub labels: Option<Vec<String>>,
}

/// A grid of panels, one per searched key.
pub fn slices(path: &Path, slices: &[Slice], y: &str) -> Result<(), String> {
    let cols = slices.len().clamp(1, 3);
    let rows = slices.len().div_ceil(cols).max(1);
    png(path, (420 * cols as u32, 320 * rows as u32), |root| {
        let panels = root.split_evenly((rows, cols));
        for (panel, s) in panels.iter().zip(slices) {
            let xs = range(s.points.iter().map(|p| p.0));
            let ys = range(s.points.iter().map(|p| p.1));
            let title = if s.log {
                format!("{} (log10)", s.key)
            } else {
                s.key.clone()
            };
            let mut c = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(xs, ys)
                .map_err(err)?;
            let labels = s.labels.clone();
            let format = move |x: &f64| match &labels {
                Some(l) if (x - x.round()).abs() < 1e-6 && *x >= 0.0 => {
                    l.get(x.round() as usize).cloned().unwrap_or_default()
                }
                Some(_) => String::new(),
                None => format!("{x:.3}"),
            };
            c.configure_mesh()
                .y_desc(y)
                .x_labels(6)
                .x_label_formatter(&format)
                .draw()
                .map_err(err)?;
            scatter(&mut c, &s.points)?;
        }
        Ok(())
    })
}

/// Each trial's objective per epoch: complete trials blue, pruned grey.
pub fn curves(path: &Path, curves: &[(Vec<(f64, f64)>, bool)], y: &str) -> Result<(), String> {
    png(path, (900, 520), |root| {
        let all = || curves.iter().flat_map(|c| c.0.iter());
        let xs = range(all().map(|p| p.0));
        let ys = range(all().map(|p| p.1));
        let title = "Learning curves (pruned trials grey)";
        let mut c = axes(root, title, ("epoch", y), xs, ys)?;
        // Pruned first, so that the complete curves are drawn over them.
        for complete in [false, true] {
            let color = if complete { COMPLETE } else { PRUNED };
            for (points, _) in curves.iter().filter(|c| c.1 == complete) {
                let finite = points.iter().copied().filter(|p| p.1.is_finite());
                c.draw_series(LineSeries::new(finite, color.stroke_width(2)))
                    .map_err(err)?;
            }
        }
        Ok(())
    })
}

/// One bar per searched key: the share of the objective's variance it explains.
pub fn importance(path: &Path, shares: &[(String, f64)]) -> Result<(), String> {
    png(path, (900, 120 + 44 * shares.len().max(1) as u32), |root| {
        let n = shares.len().max(1);
        let mut c = ChartBuilder::on(root)
            .caption(
                "Parameter importance (share of variance, first order)",
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(200)
            .build_cartesian_2d(0.0..1.0f64, 0.0..n as f64)
            .map_err(err)?;
        let keys: Vec<String> = shares.iter().map(|s| s.0.clone()).collect();
        let format = move |y: &f64| {
            let i = y.floor();
            if (y - i - 0.5).abs() < 0.26 {
                keys.get(n - 1 - i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(2 * n + 1)
            .y_label_formatter(&format)
            .x_desc("share of the objective's variance")
            .draw()
            .map_err(err)?;
        c.draw_series(shares.iter().enumerate().map(|(i, (_, v))| {
            let row = (n - 1 - i) as f64;
            Rectangle::new(
                [(0.0, row + 0.2), (v.clamp(0.0, 1.0), row + 0.8)],
                COMPLETE.filled(),
            )
        }))
        .map_err(err)?;
        Ok(())
    })
}
