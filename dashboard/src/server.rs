//! The web app: pages, their JSON and CSV, the live updates of a running run (Server-Sent
//! Events) and the token check, on axum as the inference service. It only reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use minijinja::context;
use minijinja::value::{Serde, Value};
use rekindle_infer::auth::{Check, Token};
use rekindle_train::durable::dir::RunDir;
use rekindle_train::durable::lock::HeldLocks;
use serde::Deserialize;

use crate::scan::{Index, Roots};
use crate::{pages, runs, studies, table};

/// What the server needs.
pub struct Settings {
    /// Where runs, studies and reports are looked for.
    pub roots: Roots,
    /// The bearer token every request must carry, if one is set.
    pub token: Option<Token>,
    /// How often a live page's run is read again.
    pub poll: Duration,
    /// Points a step curve is downsampled to.
    pub keep_points: usize,
}

struct App {
    settings: Settings,
    env: minijinja::Environment<'static>,
    index: Mutex<Option<(Instant, Arc<Index>)>>,
}

/// The cookie a browser keeps the token in once it has opened `/?token=...`.
const COOKIE: &str = "rekindle_token";

/// How long a scan of the roots is reused.
const SCAN_TTL: Duration = Duration::from_secs(1);

/// The app's routes.
pub fn router(settings: Settings) -> Router {
    let app = Arc::new(App {
        settings,
        env: pages::environment(),
        index: Mutex::new(None),
    });
    Router::new()
        .route("/", get(runs_page))
        .route("/run", get(run_page))
        .route("/compare", get(compare_page))
        .route("/study", get(study_page))
        .route("/report", get(report_page))
        .route("/file", get(file))
        .route("/api/runs", get(api_runs))
        .route("/api/run", get(api_run))
        .route("/api/run/log", get(api_run_log))
        .route("/api/run/events", get(api_run_events))
        .route("/api/study", get(api_study))
        .route("/api/study/trials", get(api_study_trials))
        .route("/assets/{name}", get(asset))
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .with_state(app)
}

impl App {
    /// The roots' contents, scanned at most once a second.
    fn index(&self) -> Arc<Index> {
        let mut cached = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, index)) = cached.as_ref()
            && at.elapsed() < SCAN_TTL
        {
            return index.clone();
        }
        let index = Arc::new(self.settings.roots.scan());
        *cached = Some((Instant::now(), index.clone()));
        index
    }

    fn page(&self, name: &str, ctx: Value) -> Response {
        match pages::render(&self.env, name, ctx) {
            Ok(html) => Html(html).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        }
    }

    fn not_found(&self, what: &str, id: &str) -> Response {
        let ctx = context! { title => "not found", message => format!("no {what} with id {id}") };
        let mut r = self.page("error.html", ctx);
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    }
}

/// Admits a request that carries the token (as a bearer header or the cookie); `?token=` sets
/// the cookie and sends the browser on without it in the address. No token set: all pass.
async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.settings.token else {
        return next.run(req).await;
    };
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if token.admits(auth) == Check::Ok || cookie(req.headers()).is_some_and(|c| token.matches(c)) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let presented = pairs.iter().find(|(k, _)| k == "token").map(|(_, v)| v);
    if let Some(t) = presented.filter(|t| token.matches(t.as_bytes())) {
        let rest = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().filter(|(k, _)| k != "token"))
            .finish();
        let to = match rest {
            q if q.is_empty() => req.uri().path().to_string(),
            q => format!("{}?{q}", req.uri().path()),
        };
        let set = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
        return ([(header::SET_COOKIE, set)], Redirect::to(&to)).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "401: this dashboard wants its token: `Authorization: Bearer TOKEN`, or open /?token=TOKEN once\n",
    )
        .into_response()
}

fn cookie(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|kv| {
            kv.trim_ascii()
                .strip_prefix(format!("{COOKIE}=").as_bytes())
        })
}

#[derive(Deserialize)]
struct Id {
    id: String,
    #[serde(default)]
    format: Option<String>,
}

/// Runs blocking file reads off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn runs_page(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    let (rows, index) = blocking(move || {
        let index = a.index();
        (all_rows(&index), index)
    })
    .await;
    let studies: Vec<String> = index.studies.keys().cloned().collect();
    let reports: Vec<String> = index.reports.keys().cloned().collect();
    app.page(
        "runs.html",
        context! { runs => Serde(&rows), studies => studies, reports => reports },
    )
}

/// Every run's row, with one look at the held locks for all of them.
fn all_rows(index: &Index) -> Vec<runs::RunRow> {
    let locks = HeldLocks::read();
    let rows = index
        .runs
        .iter()
        .map(|(id, dir)| runs::row(id, dir, locks.as_ref()));
    rows.collect()
}

async fn api_runs(
    State(app): State<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let rows = blocking(move || all_rows(&app.index())).await;
    table::download(&rows, q.get("format").map(String::as_str), "runs")
}

async fn run_page(State(app): State<Arc<App>>, Query(q): Query<Id>) -> Response {
    let index = app.index();
    let Some(dir) = index.runs.get(&q.id).cloned() else {
        return app.not_found("run", &q.id);
    };
    let id = q.id.clone();
    let (row, config, phases, checkpoints, report) = blocking(move || {
        let config = std::fs::read_to_string(RunDir::new(&dir).config()).unwrap_or_default();
        let phases = runs::config(&dir)
            .map(|c| runs::phases(&c))
            .unwrap_or_default();
        let report = report(&RunDir::new(&dir).eval());
        let row = runs::row(&id, &dir, HeldLocks::read().as_ref());
        (row, config, phases, runs::checkpoints(&dir), report)
    })
    .await;
    app.page(
        "run.html",
        context! {
            run => Serde(&row), config => config, phases => Serde(&phases),
            checkpoints => checkpoints, report => report, report_id => q.id,
            report_kind => "run",
        },
    )
}

/// An evaluation report's `metrics.json`, if there is one that reads.
fn report(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let has = |name: &str| dir.join(name).is_file();
    let images: Vec<&str> = ["confusion.png", "reliability.png", "mistakes.png"]
        .into_iter()
        .filter(|n| has(n))
        .collect();
    Some(Value::from(Serde(
        serde_json::json!({ "metrics": json, "images": images }),
    )))
}

async fn report_page(State(app): State<Arc<App>>, Query(q): Query<Id>) -> Response {
    let Some(dir) = app.index().reports.get(&q.id).cloned() else {
        return app.not_found("report", &q.id);
    };
    let report = blocking(move || report(&dir)).await;
    app.page(
        "report.html",
        context! { report => report, report_id => q.id, report_kind => "report", standalone => true },
    )
}

/// The files of a report a page links to; nothing else is served from the roots.
const REPORT_FILES: &[(&str, &str)] = &[
    ("confusion.png", "image/png"),
    ("reliability.png", "image/png"),
    ("mistakes.png", "image/png"),
    ("metrics.json", "application/json"),
    ("per-class.csv", "text/csv; charset=utf-8"),
    ("confusion.csv", "text/csv; charset=utf-8"),
    ("predictions.csv", "text/csv; charset=utf-8"),
];

async fn file(State(app): State<Arc<App>>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let (Some(kind), Some(id), Some(name)) = (q.get("kind"), q.get("id"), q.get("name")) else {
        return (StatusCode::BAD_REQUEST, "want kind, id and name\n").into_response();
    };
    let Some((_, mime)) = REPORT_FILES.iter().find(|(n, _)| n == name) else {
        return (StatusCode::NOT_FOUND, "no such report file\n").into_response();
    };
    let index = app.index();
    let dir: Option<PathBuf> = match kind.as_str() {
        "run" => index.runs.get(id).map(|d| RunDir::new(d).eval()),
        "report" => index.reports.get(id).cloned(),
        _ => None,
    };
    let Some(dir) = dir else {
        return app.not_found(kind, id);
    };
    // A file that is a link out of the roots is not served.
    let path = app.settings.roots.inside(&dir.join(name));
    match path.and_then(|p| std::fs::read(p).ok()) {
        Some(bytes) => ([(header::CONTENT_TYPE, *mime)], bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "not written (yet)\n").into_response(),
    }
}

async fn api_run(State(app): State<Arc<App>>, Query(q): Query<Id>) -> Response {
    let Some(dir) = app.index().runs.get(&q.id).cloned() else {
        return app.not_found("run", &q.id);
    };
    let keep = app.settings.keep_points;
    let (curves, state) = blocking(move || (runs::curves(&dir, keep), runs::state(&dir))).await;
    Json(serde_json::json!({ "id": q.id, "state": state.0, "curves": curves })).into_response()
}

/// A run's step or epoch log, whole, as CSV or JSON (`?log=steps|epochs`).
async fn api_run_log(
    State(app): State<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let id = q.get("id").cloned().unwrap_or_default();
    let Some(dir) = app.index().runs.get(&id).cloned() else {
        return app.not_found("run", &id);
    };
    let format = q.get("format").cloned();
    match q.get("log").map(String::as_str) {
        Some("epochs") => {
            let rows = blocking(move || runs::epochs(&dir)).await;
            table::download(&rows, format.as_deref(), "epochs")
        }
        _ => {
            let rows = blocking(move || runs::steps(&dir)).await;
            let rows: Vec<table::StepRow> = rows.iter().map(table::StepRow::from).collect();
            table::download(&rows, format.as_deref(), "steps")
        }
    }
}

/// What a live page has been sent so far.
struct Live {
    app: Arc<App>,
    dir: PathBuf,
    steps: usize,
    epochs: usize,
    state: &'static str,
    ended: bool,
}

/// Server-Sent Events of a run: `update` events with the step rows after `from` (as
/// `[step, loss, accuracy, lr]`), the epoch curves when an epoch is added and the state, sent
/// whenever the logs grow; `end` once the run no longer runs.
async fn api_run_events(
    State(app): State<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let id = q.get("id").cloned().unwrap_or_default();
    let Some(dir) = app.index().runs.get(&id).cloned() else {
        return app.not_found("run", &id);
    };
    let from = q.get("from").and_then(|v| v.parse().ok()).unwrap_or(0);
    let live = Live {
        app,
        dir,
        steps: from,
        epochs: usize::MAX,
        state: "",
        ended: false,
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        if live.ended {
            return None;
        }
        loop {
            let dir = live.dir.clone();
            let (steps, rows, state) =
                blocking(move || (runs::steps(&dir), runs::epochs(&dir), runs::state(&dir).0))
                    .await;
            let new: Vec<[f64; 4]> = steps
                .iter()
                .skip(live.steps)
                .map(|r| [r[0], r[2], r[3], r[4]])
                .collect();
            let epochs: BTreeSet<usize> = rows.iter().map(|r| r.epoch).collect();
            let epochs_changed = epochs.len() != live.epochs;
            if !new.is_empty() || epochs_changed || state != live.state {
                live.steps = steps.len();
                live.epochs = epochs.len();
                live.state = state;
                // The epoch curves only when an epoch was added (they come downsampled whole).
                let keep = live.app.settings.keep_points;
                let curves = epochs_changed.then(|| runs::curves_of(&steps, &rows, keep));
                let body = serde_json::json!({ "steps": new, "state": state, "epochs": curves });
                let event = Event::default().event("update").data(body.to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), live));
            }
            if state != "running" {
                live.ended = true;
                return Some((Ok(Event::default().event("end").data(state)), live));
            }
            tokio::time::sleep(live.app.settings.poll).await;
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

async fn compare_page(
    State(app): State<Arc<App>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let index = app.index();
    let ids: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .collect();
    let mut dirs = Vec::new();
    for id in &ids {
        match index.runs.get(id) {
            Some(d) => dirs.push((id.clone(), d.clone())),
            None => return app.not_found("run", id),
        }
    }
    let (rows, diff) = blocking(move || {
        let locks = HeldLocks::read();
        let rows: Vec<runs::RunRow> = dirs
            .iter()
            .map(|(id, d)| runs::row(id, d, locks.as_ref()))
            .collect();
        let configs: Vec<String> = dirs
            .iter()
            .map(|(_, d)| std::fs::read_to_string(RunDir::new(d).config()).unwrap_or_default())
            .collect();
        (rows, table::config_diff(&configs))
    })
    .await;
    app.page(
        "compare.html",
        context! { runs => Serde(&rows), ids => ids, diff => Serde(&diff) },
    )
}

/// The study `id`, read off the async threads; a 404 page if there is none.
async fn study(app: &Arc<App>, id: &str) -> Result<studies::StudyView, Response> {
    let index = app.index();
    let Some(found) = index.studies.get(id).cloned() else {
        return Err(app.not_found("study", id));
    };
    let id = id.to_string();
    Ok(blocking(move || {
        // Each trial's run id, looked up by its folder.
        let ids: HashMap<&Path, &String> =
            index.runs.iter().map(|(id, p)| (p.as_path(), id)).collect();
        studies::read(&id, &found, &|d| ids.get(d).map(|id| id.to_string()))
    })
    .await)
}

async fn study_page(State(app): State<Arc<App>>, Query(q): Query<Id>) -> Response {
    match study(&app, &q.id).await {
        Ok(view) => app.page("study.html", context! { study => Serde(&view) }),
        Err(page) => page,
    }
}

async fn api_study(State(app): State<Arc<App>>, Query(q): Query<Id>) -> Response {
    match study(&app, &q.id).await {
        Ok(view) => {
            let best = view.best_so_far();
            Json(serde_json::json!({ "study": view, "best_so_far": best })).into_response()
        }
        Err(page) => page,
    }
}

async fn api_study_trials(State(app): State<Arc<App>>, Query(q): Query<Id>) -> Response {
    match study(&app, &q.id).await {
        Ok(view) => table::trials(&view, q.format.as_deref()),
        Err(page) => page,
    }
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match pages::ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => ([(header::CONTENT_TYPE, *mime)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
