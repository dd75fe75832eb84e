//! The pictures of an evaluation report: the confusion matrix, the reliability diagram and a
//! grid of the most confident mistakes, drawn with plotters into RGB buffers.

use std::path::Path;

use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::dataset::{Dataset, Item};
use crate::eval::metrics::Metrics;
use crate::report::plot::font;

/// Classes beyond which the confusion matrix's cells lose their numbers (too small to read).
const NUMBERED: usize = 30;
/// Classes beyond which no confusion picture is drawn: six-pixel cells would make it tens of
/// megapixels that no one can read; `confusion.csv` still has every count.
pub const DRAWN: usize = 300;

/// Saves an RGB buffer as a PNG.
fn save(path: &Path, buf: &[u8], (w, h): (u32, u32)) -> Result<(), String> {
    image::save_buffer(path, buf, w, h, image::ColorType::Rgb8)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The confusion matrix as a heat map, rows normalised by the true class's count, with the
/// counts written in the cells. `Ok(false)`: nothing to draw.
pub fn confusion(path: &Path, m: &Metrics, names: &[String]) -> Result<bool, String> {
    let k = names.len();
    if k < 2 || m.images == 0 {
        return Ok(false);
    }
    if k > DRAWN {
        return Err(format!(
            "{k} classes, more than the {DRAWN} a readable picture holds; confusion.csv has the counts"
        ));
    }
    font()?;
    let cell = (560 / k as u32).clamp(6, 80);
    let size = (cell * k as u32 + 260, cell * k as u32 + 200);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut chart = axes(&root, m, names)?;
        if k <= NUMBERED {
            column_names(&root, &chart, names)?;
        }
        for (t, row) in m.confusion.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (p, &count) in row.iter().enumerate() {
                let numbered = k <= NUMBERED && count > 0;
                square(
                    &mut chart,
                    (t, p, k),
                    count as f64 / total,
                    numbered.then_some((count, cell)),
                )?;
            }
        }
        root.present().map_err(failed)?;
    }
    save(path, &buf, size).map(|()| true)
}

/// The confusion matrix's chart: a segment per class on each axis.
type Matrix<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<SegmentedCoord<RangedCoordusize>, SegmentedCoord<RangedCoordusize>>,
>;

/// A plotters error as the confusion picture's.
fn failed(x: impl std::fmt::Display) -> String {
    format!("confusion matrix: {x}")
}

/// The title, the axes and the row names (rows run top to bottom in class order).
fn axes<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    m: &Metrics,
    names: &[String],
) -> Result<Matrix<'a, 'b>, String> {
    let k = names.len();
    let title = format!(
        "Confusion matrix ({} images, top-1 {:.2}%)",
        m.images,
        100.0 * m.top1
    );
    // Segments put each class's label at the centre of its cell, not on a cell border.
    let mut c = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(130)
        .y_label_area_size(130)
        .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
        .map_err(failed)?;
    // Segment y holds class k - 1 - y.
    let row_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(y) => k
            .checked_sub(1 + y)
            .and_then(|i| names.get(i).cloned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    c.configure_mesh()
        .disable_mesh()
        .x_labels(k.min(NUMBERED))
        .y_labels(k.min(NUMBERED))
        // Plotters centres an axis label on its tick, so a rotated one would stand half inside
        // the chart: the column names are drawn below instead (`column_names`).
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&row_label)
        .x_desc("predicted")
        .y_desc("true")
        .axis_desc_style(("sans-serif", 14))
        .draw()
        .map_err(failed)?;
    Ok(c)
}

/// The predicted classes' names, rotated, under their columns.
fn column_names(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    c: &Matrix<'_, '_>,
    names: &[String],
) -> Result<(), String> {
    let style = ("sans-serif", 12)
        .into_font()
        .transform(FontTransform::Rotate90)
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (p, name) in names.iter().enumerate() {
        let (x, y) = c.backend_coord(&(SegmentValue::CenterOf(p), SegmentValue::Exact(0)));
        root.draw(&Text::new(name.clone(), (x, y + 10), style.clone()))
            .map_err(failed)?;
    }
    Ok(())
}

/// The cell of true class `t` and predicted `p` (of `k`), shaded by the row's `share`, with
/// its count written in it when `number` is given (with the cell's side, for the font).
fn square(
    c: &mut Matrix<'_, '_>,
    (t, p, k): (usize, usize, usize),
    share: f64,
    number: Option<(usize, u32)>,
) -> Result<(), String> {
    // The far edge of segment i: the next one's start, or the chart's end after the last.
    let edge = |i: usize| {
        if i + 1 < k {
            SegmentValue::Exact(i + 1)
        } else {
            SegmentValue::Last
        }
    };
    // White (none) to deep blue (all of the class).
    let shade = |full: f64| (255.0 - share * (255.0 - full)) as u8;
    let color = RGBColor(shade(20.0), shade(60.0), shade(160.0));
    let y = k - 1 - t;
    c.draw_series(std::iter::once(Rectangle::new(
        [
            (SegmentValue::Exact(p), SegmentValue::Exact(y)),
            (edge(p), edge(y)),
        ],
        color.filled(),
    )))
    .map_err(failed)?;
    if let Some((count, cell)) = number {
        let ink = if share > 0.5 { WHITE } else { BLACK };
        let style = ("sans-serif", (cell as f64 * 0.35).clamp(8.0, 18.0))
            .into_font()
            .color(&ink)
            .pos(Pos::new(HPos::Center, VPos::Center));
        c.draw_series(std::iter::once(Text::new(
            count.to_string(),
            (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
            style,
        )))
        .map_err(failed)?;
    }
    Ok(())
}

/// The reliability diagram: accuracy per confidence bin against the diagonal of perfect
/// calibration, with the expected calibration error in the title.
pub fn reliability(path: &Path, m: &Metrics) -> Result<bool, String> {
    if m.images == 0 {
        return Ok(false);
    }
    font()?;
    let size = (700u32, 640u32);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        let e = |x: &dyn std::fmt::Display| format!("reliability diagram: {x}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let title = format!("Reliability (ECE {:.2}%)", 100.0 * m.ece);
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0f64, 0.0..1.0f64)
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("confidence")
            .y_desc("accuracy")
            .draw()
            .map_err(|x| e(&x))?;
        let width = 1.0 / m.bins.len() as f64;
        let bars = m.bins.iter().enumerate().filter(|(_, b)| b.count > 0);
        c.draw_series(bars.clone().map(|(i, b)| {
            let x = i as f64 * width;
            Rectangle::new([(x, 0.0), (x + width, b.accuracy)], BLUE.mix(0.6).filled())
        }))
        .map_err(|x| e(&x))?
        .label("accuracy of the bin")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BLUE.mix(0.6).filled()));
        c.draw_series(bars.map(|(_, b)| Circle::new((b.confidence, b.accuracy), 4, RED.filled())))
            .map_err(|x| e(&x))?
            .label("accuracy at the bin's mean confidence")
            .legend(|(x, y)| Circle::new((x + 7, y), 4, RED.filled()));
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|x| e(&x))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    save(path, &buf, size).map(|()| true)
}

/// Side of a thumbnail in the grid of mistakes, and the height of its caption.
const THUMB: u32 = 128;
const CAPTION: u32 = 40;

/// The most confident mistakes as a grid of thumbnails, each captioned with its true and
/// predicted class and the confidence. `Ok(false)`: no mistakes.
pub fn mistakes(
    path: &Path,
    wrong: &[(&Item, usize, f32)],
    data: &Dataset,
) -> Result<bool, String> {
    if wrong.is_empty() {
        return Ok(false);
    }
    font()?;
    let cols = (wrong.len() as u32).min(4);
    let rows = (wrong.len() as u32).div_ceil(cols);
    let size = (cols * (THUMB + 10) + 10, rows * (THUMB + CAPTION + 10) + 10);
    let mut canvas = RgbImage::from_pixel(size.0, size.1, Rgb([255, 255, 255]));
    let at = |i: u32| {
        (
            10 + (i % cols) * (THUMB + 10),
            10 + (i / cols) * (THUMB + CAPTION + 10),
        )
    };
    for (i, (item, _, _)) in wrong.iter().enumerate() {
        let img = data.decode(&item.image)?;
        let thumb = img.resize(THUMB, THUMB, FilterType::Triangle).to_rgb8();
        let (x, y) = at(i as u32);
        // Centred in its square.
        let (dx, dy) = ((THUMB - thumb.width()) / 2, (THUMB - thumb.height()) / 2);
        image::imageops::replace(&mut canvas, &thumb, (x + dx) as i64, (y + dy) as i64);
    }
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        let e = |x: &dyn std::fmt::Display| format!("mistakes: {x}");
        for (i, (item, predicted, p)) in wrong.iter().enumerate() {
            let (x, y) = at(i as u32);
            let (x, y) = (x as i32, (y + THUMB) as i32);
            let name = |c: usize| data.class_names.get(c).cloned().unwrap_or_default();
            let lines = [
                (format!("true: {}", name(item.label)), BLACK),
                (format!("said: {} {:.0}%", name(*predicted), 100.0 * p), RED),
            ];
            for (j, (text, color)) in lines.into_iter().enumerate() {
                let style = ("sans-serif", 14).into_font().color(&color);
                root.draw(&Text::new(text, (x, y + 4 + 17 * j as i32), style))
                    .map_err(|x| e(&x))?;
            }
        }
        root.present().map_err(|x| e(&x))?;
    }
    save(path, &buf, size).map(|()| true)
}
