//! Every page and download over a trained run, a run with a hostile name, a study and a
//! standalone evaluation report: what they show is what the run directories and the study's
//! store hold, and names are text, never markup.

use rekindle_train::durable::dir::RunDir;
use rekindle_tune::Store;

use crate::common::{HOSTILE, get, q, root, serve, study, train};

#[test]
fn runs_a_study_and_a_report_are_listed_drawn_and_downloadable_as_stored() {
    let (tmp, root, data) = root();
    train(&data, &root.join("pets"), 2);
    train(&data, &root.join(HOSTILE), 1);
    let storage = study(tmp.path(), &data, &root.join("search"));
    let report = root.join("reports/pets-eval");
    std::fs::create_dir_all(&report).unwrap();
    for f in std::fs::read_dir(RunDir::new(root.join("pets")).eval()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, report.join(f.file_name().unwrap())).unwrap();
    }
    let addr = serve(&root, None);

    // The runs table: every run, the trials' runs too, the hostile name as text.
    let page = get(addr, "/", &[]);
    assert_eq!(page.status, 200);
    // minijinja escapes `/` too (as `&#x2f;`), which a browser reads back as `/`.
    let html = page.text().replace("&#x2f;", "/");
    assert!(html.contains("runs/pets"), "{html}");
    assert!(html.contains("runs/search/trials/0000") || html.contains("runs/search/trials/0001"));
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(
        !html.contains(HOSTILE),
        "the hostile name reached the page as markup"
    );
    assert!(html.contains("/study?id=runs/search"), "{html}");
    assert!(html.contains("/report?id=runs/reports/pets-eval"), "{html}");

    // Its CSV holds each run's best validation accuracy as its epoch log does.
    let csv = get(addr, "/api/runs?format=csv", &[]);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let mut reader = csv::Reader::from_reader(csv.body.as_slice());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let pets = rows.iter().find(|r| &r[col("id")] == "runs/pets").unwrap();
    let epochs = rekindle_train::report::log::read_epochs(&RunDir::new(root.join("pets"))).unwrap();
    let best = epochs
        .iter()
        .filter(|r| r.split == "valid")
        .map(|r| r.accuracy)
        .fold(f64::MIN, f64::max);
    assert_eq!(pets[col("best")].parse::<f64>().unwrap(), best);
    assert_eq!(&pets[col("state")], "finished");
    assert_eq!(&pets[col("epochs")], "2");
    let json = get(addr, "/api/runs", &[]).json();
    assert_eq!(json.as_array().unwrap().len(), rows.len());

    // A run's page, its curves as logged, its report, its files; nothing else is served.
    let run = get(addr, &format!("/run?id={}", q("runs/pets")), &[]);
    assert_eq!(run.status, 200);
    let html = run.text();
    for part in [
        "id=\"per-class\"",
        "id=\"confusion\"",
        "mistakes.png",
        "[train]",
        "<td>full fine-tuning</td>",
    ] {
        assert!(html.contains(part), "{part} missing:\n{html}");
    }
    let api = get(addr, &format!("/api/run?id={}", q("runs/pets")), &[]).json();
    let steps = rekindle_train::report::log::read_steps(&RunDir::new(root.join("pets"))).unwrap();
    assert_eq!(api["curves"]["steps"], steps.len());
    let losses: Vec<f64> = serde_json::from_value(api["curves"]["step_loss"][1].clone()).unwrap();
    assert_eq!(losses.len(), steps.len());
    for (got, want) in losses.iter().zip(&steps) {
        assert!(same(*got, want[2]), "{got} vs {}", want[2]);
    }
    let png = get(
        addr,
        &format!("/file?kind=run&name=confusion.png&id={}", q("runs/pets")),
        &[],
    );
    assert_eq!((png.status, &png.body[..4]), (200, &b"\x89PNG"[..]));
    for bad in [
        format!("/file?kind=run&name=../config.toml&id={}", q("runs/pets")),
        format!("/file?kind=run&name=confusion.png&id={}", q("runs/../..")),
        "/run?id=..%2F..%2Fetc".to_string(),
        format!("/run?id={}", q("/etc/passwd")),
    ] {
        assert_eq!(get(addr, &bad, &[]).status, 404, "{bad}");
    }
    let hostile = get(
        addr,
        &format!("/run?id={}", q(&format!("runs/{HOSTILE}"))),
        &[],
    );
    assert_eq!(hostile.status, 200);
    assert!(!hostile.text().contains(HOSTILE));
    let report = get(
        addr,
        &format!("/report?id={}", q("runs/reports/pets-eval")),
        &[],
    );
    assert!(
        report.text().contains("id=\"per-class\""),
        "{}",
        report.text()
    );

    // Compare: the run folders differ, the shared settings do not.
    let compare = get(
        addr,
        &format!(
            "/compare?id={}&id={}",
            q("runs/pets"),
            q(&format!("runs/{HOSTILE}"))
        ),
        &[],
    );
    let html = compare.text().replace("&#x2f;", "/");
    assert_eq!(compare.status, 200, "{html}");
    let row = |key: &str| {
        let at = html
            .find(&format!("<td>{key}</td>"))
            .unwrap_or_else(|| panic!("{key}"));
        html[..at]
            .rfind("<tr")
            .map(|s| html[s..at].contains("differs"))
            .unwrap()
    };
    assert!(row("train.epochs"));
    assert!(row("run.dir"));
    assert!(!row("train.lr"));

    // The study: every trial as the store holds it, in the page and its downloads.
    let store = Store::open_read_only(&storage).unwrap();
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 4);
    let page = get(addr, &format!("/study?id={}", q("runs/search")), &[]);
    assert_eq!(page.status, 200);
    let api = get(addr, &format!("/api/study?id={}", q("runs/search")), &[]).json();
    let listed = api["study"]["trials"].as_array().unwrap();
    for (t, l) in trials.iter().zip(listed) {
        assert_eq!(l["id"], t.id);
        assert_eq!(l["state"], t.state.name());
        match (l["value"].as_f64(), t.value) {
            (Some(a), Some(b)) => assert!(same(a, b), "{a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
        if t.state.name() == "complete" {
            let run = l["run"].as_str().unwrap();
            assert_eq!(run, format!("runs/search/trials/{:04}", t.id));
        }
    }
    assert!(
        trials.iter().any(|t| t.state.name() == "invalid"),
        "{trials:?}"
    );
    let csv = get(
        addr,
        &format!("/api/study/trials?format=csv&id={}", q("runs/search")),
        &[],
    );
    let mut reader = csv::Reader::from_reader(csv.body.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), trials.len());
    for (r, t) in rows.iter().zip(&trials) {
        assert_eq!(r[0].parse::<i64>().unwrap(), t.id);
        assert_eq!(&r[1], t.state.name());
        assert_eq!(r[2].parse::<f64>().ok(), t.value);
    }
    let importance = api["study"]["importance"].as_array().unwrap();
    let total: f64 = importance.iter().map(|p| p[1].as_f64().unwrap()).sum();
    assert!(importance.is_empty() || (total - 1.0).abs() < 1e-9 || total == 0.0);

    // The chart library comes from the binary, as vendored.
    let js = get(addr, "/assets/uplot.js", &[]);
    assert!(
        js.text()
            .starts_with("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    );
}

/// Equal but for the last bit: the server writes the shortest text that reads back exactly,
/// but serde_json's default parser (here, in the test) may land an ulp away.
fn same(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
}
