//! The files of an evaluation report: `metrics.json` (what `--json` prints), `per-class.csv`,
//! `confusion.csv`, `predictions.csv`, and the PNGs of [`crate::eval::plots`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::data::dataset::{Dataset, ImageRef, Item};
use crate::error::TrainError;
use crate::eval::metrics::{Metrics, argmax};
use crate::eval::plots;
use crate::eval::tta::Tta;

/// Most confident mistakes shown in `mistakes.png`.
pub const MISTAKES: usize = 16;

/// The JSON object of an evaluation (the keys `cargo xtask eval --json` promises, plus the
/// calibration bins and the test-time augmentation).
pub fn to_json(m: &Metrics, tta: Tta) -> serde_json::Value {
    json!({
        "images": m.images,
        "top1": m.top1,
        "top5": m.top5,
        "per_class": m.per_class,
        "confusion": m.confusion,
        "ece": m.ece,
        "bins": m.bins,
        "tta": tta,
    })
}

/// Writes every file of the report into `out`; returns their paths.
pub fn write(
    out: &Path,
    m: &Metrics,
    data: &Dataset,
    items: &[Item],
    probs: &[Vec<f32>],
    tta: Tta,
) -> Result<Vec<PathBuf>, TrainError> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let names = &data.class_names;
    let mut files = Vec::new();
    let mut put = |name: &str, text: String| -> Result<(), TrainError> {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
        files.push(path);
        Ok(())
    };
    let pretty = serde_json::to_string_pretty(&to_json(m, tta)).unwrap_or_default();
    put("metrics.json", pretty + "\n")?;
    put("per-class.csv", per_class_csv(m))?;
    put("confusion.csv", confusion_csv(m, names))?;
    put("predictions.csv", predictions_csv(items, probs, names))?;
    let drawn = [
        (
            "confusion.png",
            plots::confusion(&out.join("confusion.png"), m, names),
        ),
        (
            "reliability.png",
            plots::reliability(&out.join("reliability.png"), m),
        ),
        (
            "mistakes.png",
            plots::mistakes(&out.join("mistakes.png"), &mistakes(items, probs), data),
        ),
    ];
    for (name, result) in drawn {
        match result {
            Ok(true) => files.push(out.join(name)),
            Ok(false) => {}
            // A report without a picture is still a report: say why it is missing.
            Err(e) => eprintln!("warning: {name} not drawn: {e}"),
        }
    }
    Ok(files)
}

/// The wrong predictions, most confident first: (item, predicted class, its probability).
pub fn mistakes<'a>(items: &'a [Item], probs: &[Vec<f32>]) -> Vec<(&'a Item, usize, f32)> {
    let mut wrong: Vec<(&Item, usize, f32)> = items
        .iter()
        .zip(probs)
        .filter_map(|(it, p)| {
            let k = argmax(p);
            (k != it.label).then_some((it, k, p[k]))
        })
        .collect();
    wrong.sort_by(|a, b| b.2.total_cmp(&a.2));
    wrong.truncate(MISTAKES);
    wrong
}

fn per_class_csv(m: &Metrics) -> String {
    let mut s = String::from("class,precision,recall,f1,support\n");
    for c in &m.per_class {
        let _ = writeln!(
            s,
            "{},{:.6},{:.6},{:.6},{}",
            csv_field(&c.class),
            c.precision,
            c.recall,
            c.f1,
            c.support
        );
    }
    s
}

fn confusion_csv(m: &Metrics, names: &[String]) -> String {
    let header: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
    let mut s = format!("true\\predicted,{}\n", header.join(","));
    for (name, row) in names.iter().zip(&m.confusion) {
        let cells: Vec<String> = row.iter().map(usize::to_string).collect();
        let _ = writeln!(s, "{},{}", csv_field(name), cells.join(","));
    }
    s
}

fn predictions_csv(items: &[Item], probs: &[Vec<f32>], names: &[String]) -> String {
    let mut s = String::from("image,true,predicted,confidence\n");
    for (it, p) in items.iter().zip(probs) {
        let k = argmax(p);
        let image = match &it.image {
            ImageRef::File(path) => path.display().to_string(),
            ImageRef::Memory(i) => format!("#{i}"),
        };
        let _ = writeln!(
            s,
            "{},{},{},{:.6}",
            csv_field(&image),
            csv_field(&names[it.label]),
            csv_field(&names[k]),
            p[k]
        );
    }
    s
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("cat"), "cat");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn mistakes_are_the_wrong_ones_most_confident_first() {
        let items: Vec<Item> = (0..4)
            .map(|i| Item {
                image: ImageRef::Memory(i),
                label: 0,
            })
            .collect();
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.3, 0.7],
            vec![0.05, 0.95],
            vec![0.6, 0.4],
        ];
        let m = mistakes(&items, &probs);
        let order: Vec<ImageRef> = m.iter().map(|(it, _, _)| it.image.clone()).collect();
        assert_eq!(order, [ImageRef::Memory(2), ImageRef::Memory(1)]);
        assert!(m.iter().all(|(_, k, _)| *k == 1));
    }
}
