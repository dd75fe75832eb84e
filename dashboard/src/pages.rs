//! The HTML pages: minijinja templates compiled into the binary, HTML-escaped by default (a
//! run named `<img src=x onerror=alert(1)>` shows as text), and the static assets beside them
//! (uPlot, vendored from its npm release, and our script and style sheet).

use minijinja::{AutoEscape, Environment, Value};

/// The templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("runs.html", include_str!("../templates/runs.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("report.html", include_str!("../templates/report.html")),
    (
        "report_part.html",
        include_str!("../templates/report_part.html"),
    ),
    ("compare.html", include_str!("../templates/compare.html")),
    ("study.html", include_str!("../templates/study.html")),
    ("error.html", include_str!("../templates/error.html")),
];

/// A static asset: its path under `/assets/`, content type and bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "uplot.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    ),
    (
        "uplot.css",
        "text/css; charset=utf-8",
        include_str!("../assets/vendor/uplot-1.6.32/uPlot.min.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../assets/dashboard.css"),
    ),
];

/// The template environment.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Every template is HTML: escape everything that is not marked safe.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    for (name, source) in TEMPLATES {
        // A template that does not parse is a bug in this crate, caught by every test.
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
}

/// Renders `name` with `ctx`; a template error becomes a plain message.
pub fn render(env: &Environment<'static>, name: &str, ctx: Value) -> Result<String, String> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("template {name}: {e}"))
}
