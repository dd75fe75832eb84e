//! PNG plots of a run's loss, accuracy and learning rate, drawn from its CSV logs with
//! plotters into an RGB buffer that the image crate encodes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::durable::dir::RunDir;
use crate::report::log::{EpochRow, read_epochs, read_steps};
use crate::run::ema::SPLIT as EMA_SPLIT;

/// Fonts tried for the plot labels (Debian's fonts-dejavu-core, installed by `cargo xtask setup`).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const SIZE: (u32, u32) = (900, 520);

/// Registers a system font with plotters once; the error says which fonts were looked for.
pub fn font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        for path in FONTS {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps a 'static reference: the font lives as long as the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no font for plot labels (looked for {}); install fonts-dejavu-core",
            FONTS.join(", ")
        ))
    })
    .clone()
}

/// One line of a chart.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

/// Draws `series` into a PNG at `path`.
fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Err(format!("{title}: nothing to plot"));
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-12);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut buf = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| format!("{title}: {e}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|x| e(&x))?;
        for s in series {
            let color = s.color;
            c.draw_series(LineSeries::new(
                s.points.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    image::save_buffer(path, &buf, SIZE.0, SIZE.1, image::ColorType::Rgb8)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn epoch_series(
    rows: &[EpochRow],
    split: &str,
    label: &str,
    color: RGBColor,
    f: fn(&EpochRow) -> f64,
) -> Series {
    Series {
        label: label.into(),
        points: rows
            .iter()
            .filter(|r| r.split == split)
            .map(|r| (r.epoch as f64, f(r)))
            .collect(),
        color,
    }
}

/// The weights' average on validation, when the run keeps one.
fn ema_series(rows: &[EpochRow], f: fn(&EpochRow) -> f64) -> Option<Series> {
    let s = epoch_series(rows, EMA_SPLIT, "validation (EMA weights)", MAGENTA, f);
    (!s.points.is_empty()).then_some(s)
}

/// Writes `loss.png`, `accuracy.png` and `lr.png` into the run directory; returns their paths.
pub fn plot_run(dir: &RunDir) -> Result<Vec<PathBuf>, String> {
    font()?;
    let at = |e: std::io::Error| format!("{}: {e}", dir.path().display());
    let epochs = read_epochs(dir).map_err(at)?;
    let steps = read_steps(dir).map_err(at)?;
    let per_epoch = steps.iter().filter(|s| s[1] == 1.0).count().max(1) as f64;
    // Steps are placed on the epoch axis so that step and epoch curves share one chart.
    let step_x = |s: &[f64; 5]| s[0] / per_epoch;
    let mut out = Vec::new();
    let loss = dir.plot("loss");
    chart(
        &loss,
        "Loss",
        "epoch",
        "cross-entropy",
        &[
            Series {
                label: "train (per step)".into(),
                points: steps.iter().map(|s| (step_x(s), s[2])).collect(),
                color: RGBColor(170, 190, 230),
            },
            epoch_series(&epochs, "train", "train (epoch mean)", BLUE, |r| r.loss),
            epoch_series(&epochs, "valid", "validation", RED, |r| r.loss),
        ]
        .into_iter()
        .chain(ema_series(&epochs, |r| r.loss))
        .collect::<Vec<_>>(),
    )?;
    out.push(loss);
    let acc = dir.plot("accuracy");
    chart(
        &acc,
        "Accuracy",
        "epoch",
        "top-1 accuracy (%)",
        &[
            epoch_series(&epochs, "train", "train", BLUE, |r| r.accuracy),
            epoch_series(&epochs, "valid", "validation", RED, |r| r.accuracy),
        ]
        .into_iter()
        .chain(ema_series(&epochs, |r| r.accuracy))
        .collect::<Vec<_>>(),
    )?;
    out.push(acc);
    let lr = dir.plot("lr");
    chart(
        &lr,
        "Learning rate",
        "epoch",
        "learning rate",
        &[Series {
            label: "head".into(),
            points: steps.iter().map(|s| (step_x(s), s[4])).collect(),
            color: BLUE,
        }],
    )?;
    out.push(lr);
    Ok(out)
}

/// Plots a learning-rate schedule (one line per parameter group) against the optimiser step.
pub fn plot_schedule(
    path: &Path,
    title: &str,
    groups: &[(String, Vec<f64>)],
) -> Result<(), String> {
    font()?;
    let colors = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        RGBColor(230, 140, 0),
        BLACK,
    ];
    let series: Vec<Series> = groups
        .iter()
        .enumerate()
        .map(|(i, (label, lrs))| Series {
            label: label.clone(),
            points: lrs
                .iter()
                .enumerate()
                .map(|(s, lr)| (s as f64, *lr))
                .collect(),
            color: colors[i % colors.len()],
        })
        .collect();
    chart(path, title, "optimiser step", "learning rate", &series)
}

/// The range test's loss (raw and smoothed) against log10 of the rate, with the suggestions
/// marked by vertical lines.
pub fn plot_lr_find(
    path: &Path,
    points: &[crate::run::lr_find::Point],
    marks: &[(&str, f64)],
) -> Result<(), String> {
    font()?;
    let x = |lr: f64| lr.log10();
    let (lo, hi) = points
        .iter()
        .filter(|p| p.smoothed.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.smoothed), hi.max(p.smoothed))
        });
    let colors = [RED, RGBColor(0, 150, 0), MAGENTA];
    let mut series = vec![
        Series {
            label: "loss per step".into(),
            points: points.iter().map(|p| (x(p.lr), p.loss.min(hi))).collect(),
            color: RGBColor(170, 190, 230),
        },
        Series {
            label: "smoothed".into(),
            points: points.iter().map(|p| (x(p.lr), p.smoothed)).collect(),
            color: BLUE,
        },
    ];
    for (i, (name, lr)) in marks.iter().enumerate() {
        series.push(Series {
            label: format!("{name} {lr:.2e}"),
            points: vec![(x(*lr), lo), (x(*lr), hi)],
            color: colors[i % colors.len()],
        });
    }
    chart(
        path,
        "Learning-rate range test",
        "log10 learning rate",
        "loss",
        &series,
    )
}
