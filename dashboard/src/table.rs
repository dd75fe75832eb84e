//! Every table's downloads (CSV through the `csv` crate's quoting, or JSON) and the compare
//! page's config table with the differences marked.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::studies::StudyView;

/// A step log row as downloaded.
#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    /// 1-based step over the whole run.
    pub step: usize,
    /// Its epoch.
    pub epoch: usize,
    /// Training loss.
    pub loss: f64,
    /// Training accuracy, in percent.
    pub accuracy: f64,
    /// Learning rate.
    pub lr: f64,
}

impl From<&[f64; 5]> for StepRow {
    fn from(r: &[f64; 5]) -> Self {
        Self {
            step: r[0] as usize,
            epoch: r[1] as usize,
            loss: r[2],
            accuracy: r[3],
            lr: r[4],
        }
    }
}

/// `rows` as `format` (`csv`, else JSON), offered as `NAME.csv` / `NAME.json`.
pub fn download<T: Serialize>(rows: &[T], format: Option<&str>, name: &str) -> Response {
    if format == Some("csv") {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in rows {
            if let Err(e) = w.serialize(r) {
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        }
        let bytes = w.into_inner().unwrap_or_default();
        return csv_response(bytes, name);
    }
    let disposition = format!("inline; filename=\"{name}.json\"");
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        serde_json::to_string(rows).unwrap_or_default(),
    )
        .into_response()
}

fn csv_response(bytes: Vec<u8>, name: &str) -> Response {
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response()
}

/// A study's trials, one column per parameter, as CSV or JSON.
pub fn trials(view: &StudyView, format: Option<&str>) -> Response {
    if format != Some("csv") {
        return download(&view.trials, format, "trials");
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["trial", "state", "value", "last_step", "reason", "run"];
    header.extend(view.params.iter().map(String::as_str));
    let _ = w.write_record(&header);
    for t in &view.trials {
        let mut record = vec![
            t.id.to_string(),
            t.state.to_string(),
            t.value.map(|v| v.to_string()).unwrap_or_default(),
            t.last_step.map(|v| v.to_string()).unwrap_or_default(),
            t.reason.clone(),
            t.run.clone().unwrap_or_default(),
        ];
        record.extend(view.params.iter().map(|k| match t.params.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }));
        let _ = w.write_record(&record);
    }
    csv_response(w.into_inner().unwrap_or_default(), "trials")
}

/// One key of the compared configs.
#[derive(Clone, Debug, Serialize)]
pub struct DiffRow {
    /// The dotted key.
    pub key: String,
    /// Its value in each config (empty where absent).
    pub values: Vec<String>,
    /// Whether the values differ.
    pub differs: bool,
}

/// The configs' keys, flattened to dotted names, with their values side by side: the keys
/// whose values differ first.
pub fn config_diff(configs: &[String]) -> Vec<DiffRow> {
    let flat: Vec<BTreeMap<String, String>> = configs
        .iter()
        .map(|text| {
            let mut out = BTreeMap::new();
            if let Ok(table) = text.parse::<toml::Table>() {
                flatten("", &toml::Value::Table(table), &mut out);
            }
            out
        })
        .collect();
    let keys: BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    let mut rows: Vec<DiffRow> = keys
        .into_iter()
        .map(|k| {
            let values: Vec<String> = flat
                .iter()
                .map(|m| m.get(k).cloned().unwrap_or_default())
                .collect();
            let differs = values.windows(2).any(|w| w[0] != w[1]);
            DiffRow {
                key: k.clone(),
                values,
                differs,
            }
        })
        .collect();
    rows.sort_by_key(|r| !r.differs);
    rows
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_marks_only_keys_whose_values_differ() {
        let a = "[train]\nlr = 0.1\nepochs = 3\n[optim]\nname = \"sgd\"\n".to_string();
        let b = "[train]\nlr = 0.01\nepochs = 3\n".to_string();
        let diff = config_diff(&[a, b]);
        let row = |k: &str| diff.iter().find(|r| r.key == k).unwrap();
        assert!(row("train.lr").differs);
        assert_eq!(row("train.lr").values, ["0.1", "0.01"]);
        assert!(!row("train.epochs").differs);
        assert_eq!(row("optim.name").values, ["sgd", ""]);
        assert!(row("optim.name").differs);
        assert!(diff.iter().take(2).all(|r| r.differs), "differences first");
    }
}
