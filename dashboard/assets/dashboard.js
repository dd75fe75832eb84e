// rekindle dashboard: sortable and filterable tables, uPlot charts with linear/log axes, the
// live updates of a running run (Server-Sent Events), compare overlays and a study's charts.
// Plain script, no build step: the server sends it as it is.
"use strict";

/** Every chart on the page by its element id, and every script error, for the browser tests. */
window.__charts = {};
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));
const consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.map(String).join(" ")); consoleError(...args); };

const COLORS = ["#b3471d", "#1f6fb2", "#2e8b57", "#8e44ad", "#c0392b", "#d68910", "#16a085", "#34495e"];

/** Sorting by a click on a header, and the filter box named by data-table. */
function tablePage(tableId) {
  const table = document.getElementById(tableId);
  if (!table) return;
  if (table.classList.contains("sortable")) {
    table.querySelectorAll("thead th").forEach((th, col) => {
      if (th.dataset.type === "none") return;
      th.addEventListener("click", () => sortBy(table, th, col));
    });
  }
  const filter = document.querySelector(`input[data-table="${tableId}"]`);
  if (filter) {
    const apply = () => {
      const q = filter.value.toLowerCase();
      table.querySelectorAll("tbody tr").forEach((tr) => {
        tr.style.display = tr.textContent.toLowerCase().includes(q) ? "" : "none";
      });
      const url = new URL(location.href);
      if (q) url.searchParams.set("q", filter.value); else url.searchParams.delete("q");
      history.replaceState(null, "", url);
    };
    filter.value = new URL(location.href).searchParams.get("q") || "";
    filter.addEventListener("input", apply);
    apply();
  }
  const onlyDiff = document.getElementById("only-diff");
  if (onlyDiff) onlyDiff.addEventListener("change", () => document.getElementById("diff").classList.toggle("only-diff", onlyDiff.checked));
}

/**
 * A CSV and a JSON link under every table marked `data-download="NAME"`, made from its cells
 * as shown (the big tables' downloads come from the server instead: what the store holds).
 */
function tableDownloads() {
  document.querySelectorAll("table[data-download]").forEach((table) => {
    const head = Array.from(table.querySelectorAll("thead th")).map((th) => th.textContent.trim());
    const rows = Array.from(table.querySelectorAll("tbody tr")).map((tr) =>
      Array.from(tr.children).map((td) => td.textContent.trim()));
    const quote = (v) => (/[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v);
    const csv = [head].concat(rows).map((r) => r.map(quote).join(",")).join("\n") + "\n";
    const json = JSON.stringify(rows.map((r) => Object.fromEntries(r.map((v, i) => [head[i] || "column " + i, v]))));
    const link = (text, body, type, ext) => {
      const a = document.createElement("a");
      a.textContent = text;
      a.download = table.dataset.download + "." + ext;
      a.href = URL.createObjectURL(new Blob([body], { type }));
      return a;
    };
    const p = document.createElement("p");
    p.className = "downloads";
    p.append("table as ", link("CSV", csv, "text/csv", "csv"), " · ", link("JSON", json, "application/json", "json"));
    table.after(p);
  });
}
document.addEventListener("DOMContentLoaded", tableDownloads);

function sortBy(table, th, col) {
  const desc = th.classList.contains("asc");
  table.querySelectorAll("thead th").forEach((h) => h.classList.remove("asc", "desc"));
  th.classList.add(desc ? "desc" : "asc");
  const numeric = th.dataset.type === "number";
  const key = (tr) => {
    const text = tr.children[col].textContent.trim();
    if (!numeric) return text.toLowerCase();
    const v = parseFloat(text);
    return Number.isNaN(v) ? -Infinity : v;
  };
  const rows = Array.from(table.tBodies[0].rows);
  rows.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
  });
  rows.forEach((r) => table.tBodies[0].appendChild(r));
}

/**
 * A chart in the element `id`: `data` is uPlot's columns (x first), `names` the y series.
 * A checkbox switches the y axis between linear and log; `opts.points` draws points only.
 */
function chart(id, title, xLabel, names, data, opts = {}) {
  const el = document.getElementById(id);
  if (!el) return null;
  el.innerHTML = "";
  const box = document.createElement("label");
  const check = document.createElement("input");
  check.type = "checkbox";
  check.className = "log-y";
  box.append(check, " log y");
  el.append(box);
  const holder = document.createElement("div");
  el.append(holder);
  const state = { data, plot: null, log: false };
  const build = () => {
    if (state.plot) state.plot.destroy();
    const series = [{ label: xLabel }].concat(names.map((n, i) => ({
      label: n,
      stroke: (opts.colors && opts.colors[i]) || COLORS[i % COLORS.length],
      width: 1.5,
      dash: opts.dashes ? opts.dashes[i] : undefined,
      spanGaps: true,
      paths: opts.points && opts.points[i] ? () => null : undefined,
      points: { show: opts.points && opts.points[i] ? true : undefined, size: 5 },
    })));
    const width = Math.max(380, Math.min(el.clientWidth || 640, 960));
    // Epochs and trials are whole numbers: no 1.5 on their axis.
    const whole = xLabel === "epoch" || xLabel === "trial";
    state.plot = new uPlot({
      title, width, height: 260, series,
      scales: { x: { time: false }, y: state.log ? { distr: 3 } : {} },
      axes: [
        whole ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] } : {},
        { values: (u, vals) => vals.map(tick), size: 60 },
      ],
      legend: { live: true },
    }, logSafe(state.data, state.log), holder);
  };
  check.addEventListener("change", () => { state.log = check.checked; build(); });
  build();
  window.__charts[id] = {
    points: () => (state.data[0] || []).length,
    series: () => names.length,
    log: () => state.log,
    append: (rows) => {
      rows.forEach((r) => r.forEach((v, i) => state.data[i].push(v)));
      state.plot.setData(logSafe(state.data, state.log));
    },
    set: (data) => { state.data = data; state.plot.setData(logSafe(data, state.log)); },
  };
  return window.__charts[id];
}

/** A log axis cannot show values <= 0: they become gaps. */
function logSafe(data, log) {
  if (!log) return data;
  return data.map((col, i) => (i === 0 ? col : col.map((v) => (v != null && v > 0 ? v : null))));
}

function epochData(c, keys) {
  return [c.epoch].concat(keys.map((k) => c[k]));
}

function drawEpochCharts(c) {
  const loss = epochData(c, ["train_loss", "valid_loss"]);
  const acc = epochData(c, ["train_accuracy", "valid_accuracy", "valid_top5"]);
  if (window.__charts["chart-epoch-loss"]) {
    window.__charts["chart-epoch-loss"].set(loss);
    window.__charts["chart-epoch-accuracy"].set(acc);
  } else {
    chart("chart-epoch-loss", "loss per epoch", "epoch", ["train", "valid"], loss);
    chart("chart-epoch-accuracy", "accuracy per epoch (%)", "epoch", ["train", "valid", "valid top-5"], acc);
  }
}

/** A run's page: its curves, then every new step as it is logged while it runs. */
async function runPage(id) {
  const r = await (await fetch("/api/run?id=" + encodeURIComponent(id))).json();
  const c = r.curves;
  const loss = chart("chart-step-loss", "training loss per step", "step", ["loss"], c.step_loss.map((a) => a.slice()));
  const acc = chart("chart-step-accuracy", "training accuracy per step (%)", "step", ["accuracy"], c.step_accuracy.map((a) => a.slice()));
  const lr = chart("chart-step-lr", "learning rate per step", "step", ["lr"], c.step_lr.map((a) => a.slice()));
  drawEpochCharts(c);
  if (r.state !== "running") return;
  const events = new EventSource("/api/run/events?from=" + c.steps + "&id=" + encodeURIComponent(id));
  events.addEventListener("update", (e) => {
    const u = JSON.parse(e.data);
    if (u.steps.length) {
      loss.append(u.steps.map((s) => [s[0], s[1]]));
      acc.append(u.steps.map((s) => [s[0], s[2]]));
      lr.append(u.steps.map((s) => [s[0], s[3]]));
      document.getElementById("steps").textContent = String(loss.points());
    }
    if (u.epochs) drawEpochCharts(u.epochs);
    setState(u.state);
  });
  events.addEventListener("end", (e) => { setState(e.data); events.close(); });
}

function setState(state) {
  const el = document.getElementById("state");
  if (!el || !state) return;
  el.textContent = state;
  el.className = "state " + state;
}

/** Several runs on one chart: uPlot.join aligns their x values. */
async function comparePage(ids) {
  const runs = await Promise.all(ids.map(async (id) =>
    (await fetch("/api/run?id=" + encodeURIComponent(id))).json()));
  const join = (pick) => uPlot.join(runs.map((r) => pick(r.curves)));
  chart("chart-compare-accuracy", "valid accuracy per epoch (%)", "epoch", ids,
    join((c) => [c.epoch, c.valid_accuracy]));
  chart("chart-compare-loss", "valid loss per epoch", "epoch", ids,
    join((c) => [c.epoch, c.valid_loss]));
  chart("chart-compare-step-loss", "training loss per step", "step", ids,
    join((c) => c.step_loss));
  tablePage("diff");
}

/** A study's charts: history with the best so far, intermediate values, parallel coordinates. */
async function studyPage(id) {
  const r = await (await fetch("/api/study?id=" + encodeURIComponent(id))).json();
  const s = r.study;
  const ids = s.trials.map((t) => t.id);
  const complete = s.trials.map((t) => (t.state === "complete" ? t.value : null));
  const pruned = s.trials.map((t) => (t.state === "pruned" ? t.value : null));
  chart("chart-history", "optimisation history: " + s.objective, "trial",
    ["complete", "pruned", "best so far"], [ids, complete, pruned, r.best_so_far],
    { points: [true, true, false], colors: ["#1f6fb2", "#d68910", "#b3471d"] });
  const series = s.intermediate.filter((t) => t[2].length);
  if (series.length) {
    const joined = uPlot.join(series.map((t) => [t[2], t[3]]));
    chart("chart-intermediate", "intermediate values per epoch (pruned dashed)", "epoch",
      series.map((t) => "trial " + t[0] + " (" + t[1] + ")"), joined,
      { dashes: series.map((t) => (t[1] === "pruned" ? [4, 4] : undefined)) });
  }
  parallel(document.getElementById("parallel"), s);
}

/** Parallel coordinates on a canvas: an axis per parameter and one for the objective. */
function parallel(canvas, s) {
  if (!canvas) return;
  const done = s.trials.filter((t) => t.value != null && Number.isFinite(t.value));
  const axes = s.params.concat(["objective"]);
  const get = (t, k) => (k === "objective" ? t.value : t.params[k]);
  const scales = axes.map((k) => {
    const vals = done.map((t) => get(t, k));
    if (vals.every((v) => typeof v === "number")) {
      const pos = vals.every((v) => v > 0);
      const lo = Math.min(...vals), hi = Math.max(...vals);
      const log = pos && hi / lo > 100;
      const f = (v) => (log ? Math.log(v) : v);
      return { k, log, lo, hi, at: (v) => (hi === lo ? 0.5 : (f(v) - f(lo)) / (f(hi) - f(lo))) };
    }
    const cats = Array.from(new Set(vals.map(String))).sort();
    return { k, cats, at: (v) => (cats.length < 2 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1)) };
  });
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 40;
  const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, axes.length - 1);
  const y = (f) => H - pad - f * (H - 2 * pad);
  g.clearRect(0, 0, W, H);
  const obj = scales[scales.length - 1];
  done.forEach((t) => {
    const f = obj.at(t.value);
    const good = s.maximize ? f : 1 - f;
    g.strokeStyle = `rgba(${Math.round(200 - 170 * good)}, ${Math.round(80 + 60 * good)}, ${Math.round(40 + 150 * good)}, 0.6)`;
    g.beginPath();
    scales.forEach((sc, i) => {
      const v = get(t, sc.k);
      if (v == null) return;
      const py = y(sc.at(v));
      if (i === 0) g.moveTo(x(i), py); else g.lineTo(x(i), py);
    });
    g.stroke();
  });
  g.fillStyle = "#1d232a";
  g.font = "12px sans-serif";
  scales.forEach((sc, i) => {
    g.strokeStyle = "#68737d";
    g.beginPath(); g.moveTo(x(i), y(0)); g.lineTo(x(i), y(1)); g.stroke();
    g.textAlign = "center";
    g.fillText(sc.k + (sc.log ? " (log)" : ""), x(i), pad - 22);
    const top = sc.cats ? sc.cats[sc.cats.length - 1] : fmt(sc.hi);
    const bottom = sc.cats ? sc.cats[0] : fmt(sc.lo);
    g.fillText(String(top ?? ""), x(i), pad - 6);
    g.fillText(String(bottom ?? ""), x(i), H - pad + 16);
  });
  window.__charts["parallel"] = { points: () => done.length };
}

/** A y tick: enough digits to tell neighbours apart (a learning rate's 0.0199 and 0.0198). */
function tick(v) {
  if (v == null) return "";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return String(+v.toPrecision(4));
}

function fmt(v) {
  if (v == null || !Number.isFinite(v)) return "";
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-2) ? v.toExponential(2) : String(+v.toFixed(4));
}
