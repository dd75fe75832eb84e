//! Manifests: a `.csv` or `.jsonl` file that lists labelled images, one per row or line, with
//! the columns (keys) `path`, `label` and an optional `split` (`train` or `val`). Paths are
//! relative to the manifest's own folder. Read for `data.kind = "manifest"` and for
//! `rekindle-train eval --data`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::TrainError;

/// The columns (CSV) or keys (JSON lines) a manifest may have.
pub const COLUMNS: [&str; 3] = ["path", "label", "split"];

/// A manifest's file format, told by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// The format of `file` by its extension (`.csv` or `.jsonl`, any case), or why not.
    pub fn of(file: &Path) -> Result<Self, String> {
        let ext = file.extension().map(|e| e.to_string_lossy().to_lowercase());
        match ext.as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("jsonl") => Ok(Self::JsonLines),
            _ => Err(format!(
                "{} is not a manifest: a manifest is a .csv or .jsonl file",
                file.display()
            )),
        }
    }
}

/// Which part of the data a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training.
    Train,
    /// Validation.
    Val,
}

/// One image listed in a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Its line in the manifest (from 1; a CSV header is line 1).
    pub line: usize,
    /// The image file, resolved against the manifest's folder.
    pub path: PathBuf,
    /// The class name.
    pub label: String,
    /// The split the row asks for; `None` when absent or empty.
    pub split: Option<Split>,
}

/// A manifest file and its rows, in file order.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest file.
    pub file: PathBuf,
    /// Its rows.
    pub rows: Vec<Row>,
}

impl Manifest {
    /// Reads a `.csv` or `.jsonl` manifest; each error names the file, and the line at fault.
    pub fn read(file: &Path) -> Result<Self, TrainError> {
        let format = Format::of(file).map_err(|e| TrainError::data(file, e))?;
        let text = std::fs::read_to_string(file).map_err(|e| TrainError::io(file, e))?;
        // Spreadsheet exports often start with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let base = file.parent().unwrap_or(Path::new(""));
        let rows = match format {
            Format::Csv => read_csv(text, base),
            Format::JsonLines => read_jsonl(text, base),
        }
        .map_err(|e| TrainError::data(file, e))?;
        Ok(Self {
            file: file.to_path_buf(),
            rows,
        })
    }

    /// The index of `row`'s label in `classes`, or an error naming the label, the line and
    /// `whose` classes they are (`data.classes`, the model's classes) with the list.
    pub fn label_index(
        &self,
        row: &Row,
        classes: &[String],
        whose: &str,
    ) -> Result<usize, TrainError> {
        classes.iter().position(|c| *c == row.label).ok_or_else(|| {
            TrainError::data(
                &self.file,
                format!(
                    "line {}: label `{}` is not one of {whose}: {}",
                    row.line,
                    row.label,
                    classes.join(", ")
                ),
            )
        })
    }

    /// Why `row`'s image cannot be used (`None`: it is a file), naming the manifest and line.
    pub fn missing(&self, row: &Row) -> Option<String> {
        (!row.path.is_file()).then(|| {
            format!(
                "no such image file (listed in {} line {})",
                self.file.display(),
                row.line
            )
        })
    }

    /// The error for a row whose image is missing, naming the manifest, line and path.
    pub fn missing_error(&self, row: &Row, hint: &str) -> TrainError {
        TrainError::data(
            &self.file,
            format!(
                "line {}: image {} does not exist{hint}",
                row.line,
                row.path.display()
            ),
        )
    }
}

/// Sorted unique labels of every row of `manifests`.
pub fn labels(manifests: &[Manifest]) -> Vec<String> {
    let mut names: Vec<String> = manifests
        .iter()
        .flat_map(|m| m.rows.iter().map(|r| r.label.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Refuses a mix of rows with and without a split, across all `manifests`: either every row
/// says where it goes, or none does and the caller splits. Returns whether rows have one.
pub fn has_splits(manifests: &[Manifest]) -> Result<bool, TrainError> {
    let rows = || {
        manifests
            .iter()
            .flat_map(|m| m.rows.iter().map(move |r| (m, r)))
    };
    let with = rows().find(|(_, r)| r.split.is_some());
    let without = rows().find(|(_, r)| r.split.is_none());
    match (with, without) {
        (Some((mw, rw)), Some((m, r))) => Err(TrainError::data(
            &m.file,
            format!(
                "line {} has no split, but {} line {} has one: give every row a split \
                 (train or val), or none to split by data.val_split",
                r.line,
                mw.file.display(),
                rw.line
            ),
        )),
        (with, _) => Ok(with.is_some()),
    }
}

/// Column (key) positions of `path`, `label` and `split` in a header, checked.
fn columns<'a>(names: impl Iterator<Item = &'a str>) -> Result<[Option<usize>; 3], String> {
    let mut at = [None; 3];
    for (i, name) in names.enumerate() {
        let k = COLUMNS
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("unknown column `{name}`; allowed: {}", COLUMNS.join(", ")))?;
        if at[k].replace(i).is_some() {
            return Err(format!("column `{name}` appears twice"));
        }
    }
    for k in 0..2 {
        if at[k].is_none() {
            return Err(format!(
                "no `{}` column: a manifest needs `path` and `label` (`split` optional)",
                COLUMNS[k]
            ));
        }
    }
    Ok(at)
}

/// A row from its raw fields: path and label must be non-empty, a split `train` or `val`.
fn row(line: usize, base: &Path, path: &str, label: &str, split: &str) -> Result<Row, String> {
    if path.is_empty() {
        return Err(format!("line {line}: empty `path`"));
    }
    if label.is_empty() {
        return Err(format!("line {line}: empty `label`"));
    }
    let split = match split {
        "" => None,
        "train" => Some(Split::Train),
        "val" => Some(Split::Val),
        other => {
            return Err(format!(
                "line {line}: split `{other}` is not `train` or `val` (or empty)"
            ));
        }
    };
    Ok(Row {
        line,
        // `join` keeps an absolute path as it is.
        path: base.join(path),
        label: label.to_string(),
        split,
    })
}

fn read_csv(text: &str, base: &Path) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    // Lines from byte offsets: the csv crate's own line count leaves out blank lines, and its
    // offset of a record after blank lines is where they start.
    let newlines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    let line_at = |p: Option<&csv::Position>| {
        let mut at = p.map_or(0, |p| p.byte() as usize);
        while matches!(text.as_bytes().get(at), Some(b'\r' | b'\n')) {
            at += 1;
        }
        newlines.partition_point(|&n| n < at) + 1
    };
    let header = reader
        .headers()
        .map_err(|e| csv_error(&e, line_at(e.position())))?;
    let at = columns(header.iter())?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&e, line_at(e.position())))?;
        let line = line_at(record.position());
        let field = |k: usize| at[k].and_then(|i| record.get(i)).unwrap_or("");
        rows.push(row(line, base, field(0), field(1), field(2))?);
    }
    Ok(rows)
}

/// A CSV error at `line`, without the crate's own (blank-line-blind) position.
fn csv_error(e: &csv::Error, line: usize) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("line {line}: {len} fields, but the header has {expected_len}"),
        _ => format!("line {line}: {e}"),
    }
}

fn read_jsonl(text: &str, base: &Path) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (i, text) in text.lines().enumerate() {
        let line = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let obj: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| format!("line {line}: not a JSON object: {e}"))?;
        if let Some(key) = obj.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
            return Err(format!(
                "line {line}: unknown key `{key}`; allowed: {}",
                COLUMNS.join(", ")
            ));
        }
        let field = |key: &str| -> Result<String, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                // Numeric class ids are common in exported label files.
                Some(Value::Number(n)) if key == "label" && n.is_u64() => Ok(n.to_string()),
                Some(v) => Err(format!("line {line}: `{key}` must be a string, got {v}")),
            }
        };
        for key in ["path", "label"] {
            if !obj.contains_key(key) {
                return Err(format!(
                    "line {line}: no `{key}` key: each line needs `path` and `label` \
                     (`split` optional)"
                ));
            }
        }
        rows.push(row(
            line,
            base,
            &field("path")?,
            &field("label")?,
            &field("split")?,
        )?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, text: &str) -> Result<Manifest, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        Manifest::read(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn csv_rows_resolve_against_the_manifest_folder() {
        let m = read(
            "m.csv",
            "\u{feff}path, label ,split\na/1.png,cat,train\n\n/abs/2.png,dog,\n",
        )
        .unwrap();
        let dir = m.file.parent().unwrap();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].path, dir.join("a/1.png"));
        assert_eq!((m.rows[0].line, m.rows[0].split), (2, Some(Split::Train)));
        assert_eq!(m.rows[1].path, Path::new("/abs/2.png"));
        assert_eq!((m.rows[1].line, m.rows[1].split), (4, None));
        assert_eq!(m.rows[1].label, "dog");
    }

    #[test]
    fn jsonl_rows_accept_null_split_and_numeric_labels() {
        let m = read(
            "m.JSONL",
            "{\"path\": \"x.png\", \"label\": 3}\r\n\n{\"path\": \"y.png\", \"label\": \"b\", \"split\": \"val\"}\n",
        )
        .unwrap();
        assert_eq!(m.rows[0].label, "3");
        assert_eq!((m.rows[1].line, m.rows[1].split), (3, Some(Split::Val)));
    }

    #[test]
    fn malformed_manifests_name_what_is_wrong() {
        for (name, text, words) in [
            ("m.txt", "", &["m.txt", ".csv or .jsonl"][..]),
            ("m.csv", "path,class\n", &["`class`", "path, label, split"]),
            ("m.csv", "path\na.png\n", &["`label`"]),
            ("m.csv", "path,label,path\n", &["`path`", "twice"]),
            (
                "m.csv",
                "path,label,split\na,b,train\nc,d,test\n",
                &["line 3", "`test`"],
            ),
            (
                "m.csv",
                "path,label\na,b\n\nc,d,e\n",
                &["line 4", "3 fields"],
            ),
            ("m.csv", "path,label\n,b\n", &["line 2", "empty `path`"]),
            (
                "m.jsonl",
                "{\"path\":\"a\",\"label\":\"b\",\"fold\":1}",
                &["`fold`", "line 1"],
            ),
            ("m.jsonl", "\n{\"label\":\"b\"}", &["line 2", "`path`"]),
            (
                "m.jsonl",
                "{\"path\":\"a\",\"label\":\"b\",\"split\":\"dev\"}",
                &["`dev`"],
            ),
            ("m.jsonl", "[1, 2]", &["line 1", "JSON object"]),
            (
                "m.jsonl",
                "{\"path\":1,\"label\":\"b\"}",
                &["line 1", "`path`"],
            ),
        ] {
            let err = read(name, text).unwrap_err();
            for w in words {
                assert!(err.contains(w) && err.contains(name), "{text:?}: {err}");
            }
        }
    }

    #[test]
    fn a_mix_of_rows_with_and_without_split_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            Manifest::read(&f).unwrap()
        };
        let a = write("a.csv", "path,label,split\nx,c,train\n");
        let b = write("b.csv", "path,label\nx,c\ny,d\n");
        assert!(!has_splits(std::slice::from_ref(&b)).unwrap());
        assert!(has_splits(std::slice::from_ref(&a)).unwrap());
        let err = has_splits(&[a, b]).unwrap_err().to_string();
        assert!(
            err.contains("b.csv") && err.contains("line 2") && err.contains("a.csv"),
            "{err}"
        );
    }
}
