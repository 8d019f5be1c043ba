// One job's dashboard page: self-contained HTML (inline CSS and JS, canvas charts, no
// external resources) that fetches /api/job/<id> and redraws every 3 s while the job
// runs. Each chart sets data-points="N" (points drawn) and data-marks="M" (generation
// and straggler lines drawn), and the page sets data-drawn on <body> once drawn, so a
// headless browser test can tell that the charts had data.
#include <nlohmann/json.hpp>

#include "coordinator/observe_http.h"

namespace shoal {

namespace {

constexpr char kHead[] = R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Shoal job</title>
<style>
body{font:14px system-ui,sans-serif;margin:18px 24px;color:#1d232a;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}a{color:#1565c0}
#summary{font-size:15px;margin:6px 0 14px}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;padding:10px 12px}
.card h2{font-size:14px;margin:0 0 6px;color:#37474f}
canvas{width:100%;height:240px;display:block}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6ea;text-align:left;font-variant-numeric:tabular-nums}
th{background:#eef1f4}
.slow{background:#e65100;color:#fff;border-radius:3px;padding:1px 5px;font-weight:600}
tr.straggler td{background:#fff3e0}
.state-running{color:#1565c0}.state-completed{color:#2e7d32}.state-failed,.state-cancelled{color:#c62828}
.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:18px;height:3px;margin-right:4px;vertical-align:middle}
.muted{color:#607d8b}#events td:first-child{white-space:nowrap}
</style></head>
)HTML";

constexpr char kBody[] = R"HTML(<body>
<p class="muted"><a href="/">all jobs</a> &middot; <a href="/metrics">metrics</a></p>
<h1 id="title">job</h1>
<p id="summary">loading&hellip;</p>
<div class="grid">
 <div class="card"><h2>Training loss</h2><canvas id="loss" data-points="0"></canvas></div>
 <div class="card"><h2>Test accuracy</h2><canvas id="accuracy" data-points="0"></canvas></div>
 <div class="card"><h2>Throughput (samples/s)</h2><canvas id="throughput" data-points="0"></canvas></div>
 <div class="card"><h2>Per-worker work per step (compute + loader wait, ms)</h2><canvas id="work" data-points="0"></canvas>
  <div class="legend" id="work-legend"></div></div>
</div>
<div class="grid" style="margin-top:14px">
 <div class="card"><h2>Workers</h2><table id="members"><thead><tr><th>rank</th><th>member</th><th>state</th><th>host</th>
  <th>step</th><th>compute ms</th><th>loader ms</th><th>comm ms</th><th>vs peers</th></tr></thead><tbody></tbody></table></div>
 <div class="card"><h2>Generations and events</h2><table id="events"><tbody></tbody></table></div>
</div>
<script>
"use strict";
const COLORS = ["#1565c0", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457", "#5d4037", "#283593", "#558b2f"];
const SLOW = "#e65100";

function niceStep(span, ticks) {
  const raw = span / Math.max(1, ticks), mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / mag;
  return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
}
function fmt(v) {
  const a = Math.abs(v);
  if (a < 1e-12) return "0";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, "");
  return v.toPrecision(2);
}

// series: [{xs, ys, color, width, label}]; marks: [{x, color, label}] (vertical lines).
function drawChart(canvas, series, marks, opts) {
  opts = opts || {};
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth || 560, h = canvas.clientHeight || 240;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const L = 56, R = 10, T = 18, B = 28, pw = w - L - R, ph = h - T - B;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, points = 0;
  for (const s of series) for (let i = 0; i < s.xs.length; i++) {
    const x = s.xs[i], y = s.ys[i];
    if (!isFinite(x) || !isFinite(y)) continue;
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); points++;
  }
  canvas.dataset.points = String(points);
  g.font = "11px system-ui,sans-serif";
  if (points === 0) {
    g.fillStyle = "#90a4ae"; g.fillText("no data yet", L + 8, T + 20); return;
  }
  if (opts.xMin !== undefined) x0 = Math.min(x0, opts.xMin);  // every chart on the same steps
  if (opts.xMax !== undefined) x1 = Math.max(x1, opts.xMax);
  if (opts.yFromZero) y0 = Math.min(0, y0);
  if (opts.yMax !== undefined) y1 = Math.max(y1, opts.yMax);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y1 += Math.abs(y1) * 0.1 || 1; y0 -= Math.abs(y0) * 0.1; }
  const pad = (y1 - y0) * 0.05; y1 += pad; if (!opts.yFromZero) y0 -= pad;
  const X = x => L + (x - x0) / (x1 - x0) * pw, Y = y => T + ph - (y - y0) / (y1 - y0) * ph;
  g.strokeStyle = "#e3e6ea"; g.fillStyle = "#607d8b"; g.lineWidth = 1;
  const ys = niceStep(y1 - y0, 5);
  for (let v = Math.ceil(y0 / ys) * ys; v <= y1; v += ys) {
    g.beginPath(); g.moveTo(L, Y(v)); g.lineTo(L + pw, Y(v)); g.stroke();
    g.fillText(fmt(v), 4, Y(v) + 4);
  }
  const xs = niceStep(x1 - x0, 6);
  for (let v = Math.ceil(x0 / xs) * xs; v <= x1; v += xs) g.fillText(fmt(v), X(v) - 8, T + ph + 16);
  g.fillText(opts.xlabel || "step", L + pw - 28, T + ph + 26);
  let drawnMarks = 0;
  for (const m of marks || []) {
    if (!(m.x >= x0 && m.x <= x1)) continue;
    drawnMarks++;
    g.save(); g.strokeStyle = m.color; g.setLineDash([5, 4]); g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(X(m.x), T); g.lineTo(X(m.x), T + ph); g.stroke(); g.restore();
    g.fillStyle = m.color; g.fillText(m.label, Math.min(X(m.x) + 3, L + pw - 120), T - 5 + (m.row || 0) * 12);
  }
  canvas.dataset.marks = String(drawnMarks);
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = s.width || 1.5; g.beginPath();
    let started = false;
    for (let i = 0; i < s.xs.length; i++) {
      if (!isFinite(s.xs[i]) || !isFinite(s.ys[i])) continue;
      if (started) g.lineTo(X(s.xs[i]), Y(s.ys[i])); else { g.moveTo(X(s.xs[i]), Y(s.ys[i])); started = true; }
    }
    g.stroke();
    if (s.dots) { g.fillStyle = s.color; for (let i = 0; i < s.xs.length; i++) { g.beginPath(); g.arc(X(s.xs[i]), Y(s.ys[i]), 3, 0, 7); g.fill(); } }
  }
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function render(d) {
  const job = d.job, p = d.progress;
  document.title = "Shoal: " + job.id;
  document.getElementById("title").textContent = "Job " + job.id + " (" + job.name + ")";
  const lastAcc = p.test_accuracy.filter(a => a >= 0).pop();
  const parts = [job.state, "step " + job.step + (job.total_steps ? " / " + job.total_steps : ""),
                 "loss " + Number(job.loss).toFixed(4),
                 "test accuracy " + (lastAcc !== undefined ? lastAcc.toFixed(4) : "-"),
                 Math.round(job.samples_per_second) + " samples/s",
                 "generation " + job.generation, "world " + job.world_size,
                 job.stragglers + " straggler" + (job.stragglers === 1 ? "" : "s")];
  if (job.failure_reason) parts.push("reason: " + job.failure_reason);
  const summary = document.getElementById("summary");
  summary.textContent = parts.join(" \u00b7 ");
  summary.className = "state-" + job.state;

  // Generation changes as dashed lines (with their cause), stragglers flagged as orange ones.
  const marks = [];
  d.generations.forEach((g, i) => {
    if (g.step < 0 || g.generation <= 1) return;
    marks.push({x: g.step, color: "#6a1b9a", row: i % 2,
                label: "gen " + g.generation + " (" + g.world + "): " + String(g.cause).slice(0, 40)});
  });
  for (const s of d.stragglers)
    marks.push({x: s.step, color: s.flagged ? SLOW : "#90a4ae", row: 2,
                label: (s.flagged ? "slow r" : "ok r") + s.rank + " " + s.ratio.toFixed(1) + "x"});
  const steps = {xMin: p.step.length ? p.step[0] : undefined, xMax: p.step.length ? p.step[p.step.length - 1] : undefined};
  drawChart(document.getElementById("loss"), [{xs: p.step, ys: p.loss, color: COLORS[0]}], marks, steps);
  // Every point repeats the last evaluation: a new one shows as a higher count (two epochs
  // may score the same) or, from workers that do not count, a new value.
  const ax = [], ay = [];
  let lastCount = -1;
  p.step.forEach((s, i) => {
    const a = p.test_accuracy[i], e = p.evaluations[i];
    if (a >= 0 && (ay.length === 0 || e !== lastCount || ay[ay.length - 1] !== a)) {
      ax.push(s); ay.push(a); lastCount = e;
    }
  });
  drawChart(document.getElementById("accuracy"), [{xs: ax, ys: ay, color: COLORS[1], dots: true}], marks, steps);
  drawChart(document.getElementById("throughput"), [{xs: p.step, ys: p.samples_per_second, color: COLORS[3]}], marks,
            Object.assign({yFromZero: true}, steps));

  const legend = document.getElementById("work-legend");
  legend.textContent = "";
  const series = d.work.map((w, i) => {
    const color = w.straggler ? SLOW : COLORS[i % COLORS.length];
    const item = document.createElement("span"), swatch = document.createElement("i");
    swatch.style.background = color;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(w.member.split("/").pop() + (w.rank >= 0 ? " rank " + w.rank : "") +
                                             (w.straggler ? " SLOW" : "")));
    legend.appendChild(item);
    return {xs: w.step, ys: w.compute_ms.map((c, k) => c + w.loader_wait_ms[k]), color, width: w.straggler ? 3 : 1.5};
  });
  drawChart(document.getElementById("work"), series, marks, Object.assign({yFromZero: true}, steps));

  const tbody = document.querySelector("#members tbody");
  tbody.textContent = "";
  const rows = d.members.slice().sort((a, b) => (a.rank < 0 ? 1e9 : a.rank) - (b.rank < 0 ? 1e9 : b.rank));
  for (const m of rows) {
    const tr = document.createElement("tr");
    if (m.straggler) tr.className = "straggler";
    cell(tr, m.rank >= 0 ? String(m.rank) : "-");
    cell(tr, m.member.split("/").pop());
    cell(tr, m.state + (m.reason ? ": " + m.reason : ""));
    cell(tr, m.host);
    cell(tr, String(m.step));
    cell(tr, m.compute_ms.toFixed(2));
    cell(tr, m.loader_wait_ms.toFixed(2));
    cell(tr, m.comm_ms.toFixed(2));
    const vs = cell(tr, m.straggler_ratio > 0 ? m.straggler_ratio.toFixed(2) + "x" : "");
    if (m.straggler) { const b = document.createElement("span"); b.className = "slow"; b.textContent = "SLOW";
                       vs.appendChild(document.createTextNode(" ")); vs.appendChild(b); }
    tbody.appendChild(tr);
  }
  const events = document.querySelector("#events tbody");
  events.textContent = "";
  for (const e of d.events.slice().reverse()) {
    const tr = document.createElement("tr");
    cell(tr, new Date(e.unix_ms).toLocaleTimeString());
    cell(tr, e.kind, e.kind.startsWith("straggler") ? "slow" : "");
    cell(tr, e.detail);
    events.appendChild(tr);
  }
  document.body.dataset.drawn = String(p.step.length);
}

async function load() {
  let running = true;
  try {
    const r = await fetch("/api/job/" + encodeURIComponent(JOB_ID), {cache: "no-store"});
    if (r.ok) {
      const d = await r.json();
      render(d);
      running = d.job.state === "running" || d.job.state === "pending";
    } else {
      document.getElementById("summary").textContent = "cannot load the job: HTTP " + r.status;
    }
  } catch (e) {
    document.getElementById("summary").textContent = "cannot reach the coordinator: " + e;
  }
  if (running) setTimeout(load, 3000);
}
load();
</script>
</body></html>
)HTML";

}  // namespace

std::string JobDashboardHtml(const std::string& job_id) {
  // The id goes into the script as a JSON string; '<' escaped so that no "</script>"
  // can end the script early (job ids are [A-Za-z0-9._-] anyway).
  std::string id = nlohmann::json(job_id).dump();
  std::string safe;
  for (char c : id) safe += c == '<' ? std::string("\\u003c") : std::string(1, c);
  return std::string(kHead) + "<script>const JOB_ID = " + safe + ";</script>\n" + kBody;
}

}  // namespace shoal
