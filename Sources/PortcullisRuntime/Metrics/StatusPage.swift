/// The status page served at `/_portcullis/`: one self-contained HTML document (inline CSS and
/// JavaScript, nothing fetched but `metrics` next to it) that polls the Prometheus text every
/// second and shows the pool, each route's rate, error ratio, p50 and p99 with sparklines of
/// the last five minutes, the scoreboard, the upstream targets (health, breaker, in flight,
/// tries, failures, retries), and limiter and authentication rejections.
/// docs/observability.md describes what each figure means.
enum StatusPage {
    static let html: [UInt8] = Array(text.utf8)

    static let text = #"""
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Portcullis status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
header span b{font-size:16px}
main{padding:12px 20px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:0 0 14px;padding:8px 12px}
h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:right;padding:3px 8px;border-bottom:1px solid #eef0f4;white-space:nowrap}
th:first-child,td:first-child,#targets th:nth-child(2),#targets td:nth-child(2){text-align:left}
td.err,td.down,td.open{color:#b3261e;font-weight:600}
td.half_open{color:#a15c00;font-weight:600}
canvas{vertical-align:middle}
.muted{color:#6b7280}
#state.down{color:#ff8a80}
</style></head>
<body>
<header><h1>Portcullis</h1>
<span>workers <b id="workers">–</b></span>
<span>threads busy <b id="busy">–</b></span>
<span>in flight <b id="inflight">–</b></span>
<span>generation <b id="generation">–</b></span>
<span>reloads <b id="reloads">–</b></span>
<span>kept connections <b id="kept">–</b></span>
<span id="state" class="muted">loading…</span></header>
<main>
<section><h2>Routes</h2>
<table id="routes"><thead><tr><th>route</th><th>requests</th><th>2xx</th><th>4xx</th><th>5xx</th><th>rate /s</th><th>error ratio</th><th>p50</th><th>p99</th><th>rate, last 5 min</th></tr></thead><tbody></tbody></table>
<p class="muted">rate and error ratio over the last 10 s; p50 and p99 from the histogram since the gateway started (5xx counts as an error).</p></section>
<section><h2>Upstream targets</h2><table id="targets"><thead><tr><th>upstream</th><th>target</th><th>health</th><th>breaker</th><th>in flight</th><th>tries</th><th>failures</th><th>retries</th></tr></thead><tbody></tbody></table></section>
<section><h2>Scoreboard</h2><table id="loops"><thead><tr><th>worker</th><th>loop</th><th>in flight</th><th>oldest request</th><th>for</th></tr></thead><tbody></tbody></table></section>
<section><h2>Rate-limited</h2><table id="limited"><thead><tr><th>route</th><th>limit</th><th>requests</th></tr></thead><tbody></tbody></table></section>
<section><h2>Authentication failures</h2><table id="auth"><thead><tr><th>route</th><th>reason</th><th>requests</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const HISTORY = 300, WINDOW = 10;
const history = {};   // route -> [{t, total, errors}]
function parse(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1");
    out.push({name: m[1], labels, value: parseFloat(m[4])});
  }
  return out;
}
function quantile(q, buckets) {
  const total = buckets.length ? buckets[buckets.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (!isFinite(b.le)) return prevLe;
      return prevLe + (b.le - prevLe) * (b.count - prevCount === 0 ? 1 : (rank - prevCount) / (b.count - prevCount));
    }
    prevLe = b.le; prevCount = b.count;
  }
  return prevLe;
}
function fmtSeconds(s) {
  if (s === null) return "–";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}
function cell(tr, text, cls) { const td = tr.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
function spark(canvas, points) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const max = Math.max(1e-9, ...points);
  ctx.strokeStyle = "#2f6fde"; ctx.lineWidth = 1.5; ctx.beginPath();
  points.forEach((v, i) => { const x = w - (points.length - 1 - i) * (w / (HISTORY - 1)), y = h - 2 - (v / max) * (h - 4); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
  ctx.stroke();
}
function render(samples, now) {
  const value = (name, filter) => samples.filter(s => s.name === name && Object.entries(filter || {}).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
  document.getElementById("workers").textContent = value("portcullis_workers", {state: "ready"}) + " / " + value("portcullis_workers", {state: "desired"});
  document.getElementById("busy").textContent = value("portcullis_loops", {state: "busy"}) + " / " + value("portcullis_loops", {state: "total"});
  document.getElementById("inflight").textContent = value("portcullis_requests_in_flight");
  document.getElementById("generation").textContent = value("portcullis_config_generation");
  document.getElementById("reloads").textContent = value("portcullis_reloads_total", {result: "ok"}) + " ok, " + value("portcullis_reloads_total", {result: "refused"}) + " refused";
  document.getElementById("kept").textContent = value("portcullis_fastcgi_connections");
  const routes = {};
  for (const s of samples) {
    const r = s.labels.route;
    if (r === undefined) continue;
    if (s.name === "portcullis_requests_total") {
      const e = routes[r] || (routes[r] = {byClass: {}, buckets: {}});
      e.byClass[s.labels.class] = (e.byClass[s.labels.class] || 0) + s.value;
    } else if (s.name === "portcullis_request_duration_seconds_bucket") {
      const e = routes[r] || (routes[r] = {byClass: {}, buckets: {}});
      const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
      e.buckets[le] = (e.buckets[le] || 0) + s.value;
    }
  }
  const tbody = document.querySelector("#routes tbody");
  tbody.textContent = "";
  for (const name of Object.keys(routes).sort()) {
    const e = routes[name];
    const total = Object.values(e.byClass).reduce((a, b) => a + b, 0), errors = e.byClass["5xx"] || 0;
    const h = history[name] || (history[name] = []);
    h.push({t: now, total, errors});
    while (h.length > HISTORY + 1) h.shift();
    const past = h.find(p => now - p.t <= WINDOW * 1000) || h[0];
    const dt = (now - past.t) / 1000, dTotal = total - past.total, dErrors = errors - past.errors;
    const rate = dt > 0 ? dTotal / dt : 0;
    const rates = h.slice(1).map((p, i) => (p.total - h[i].total) / Math.max(1e-3, (p.t - h[i].t) / 1000));
    const buckets = Object.keys(e.buckets).map(Number).sort((a, b) => a - b).map(le => ({le, count: e.buckets[le]}));
    const tr = tbody.insertRow();
    tr.dataset.route = name;
    cell(tr, name, "route");
    cell(tr, total, "requests");
    cell(tr, e.byClass["2xx"] || 0, "c2xx");
    cell(tr, e.byClass["4xx"] || 0, "c4xx");
    cell(tr, errors, errors ? "c5xx err" : "c5xx");
    cell(tr, rate.toFixed(1), "rate");
    cell(tr, dTotal > 0 ? (100 * dErrors / dTotal).toFixed(1) + " %" : (total ? (100 * errors / total).toFixed(1) + " %" : "–"), "errors");
    cell(tr, fmtSeconds(quantile(0.5, buckets)), "p50");
    cell(tr, fmtSeconds(quantile(0.99, buckets)), "p99");
    const c = document.createElement("canvas"); c.width = 160; c.height = 24; cell(tr, "").appendChild(c); spark(c, rates);
  }
  const loops = document.querySelector("#loops tbody");
  loops.textContent = "";
  const oldest = {};
  for (const s of samples) if (s.name === "portcullis_loop_oldest_request_seconds") oldest[s.labels.pid + "/" + s.labels.loop] = s;
  for (const s of samples) {
    if (s.name !== "portcullis_loop_requests_in_flight") continue;
    const o = oldest[s.labels.pid + "/" + s.labels.loop];
    const tr = loops.insertRow();
    tr.dataset.pid = s.labels.pid; tr.dataset.loop = s.labels.loop; tr.dataset.busy = s.value > 0 ? "1" : "0";
    cell(tr, s.labels.pid); cell(tr, s.labels.loop); cell(tr, s.value, "inflight");
    cell(tr, o ? o.labels.route : "idle", "route"); cell(tr, o ? fmtSeconds(o.value) : "", "age");
  }
  const targets = document.querySelector("#targets tbody");
  targets.textContent = "";
  const perTarget = (name, u, t) => value(name, {upstream: u, target: t});
  for (const s of samples) {
    if (s.name !== "portcullis_upstream_up") continue;
    const u = s.labels.upstream, t = s.labels.target;
    const breaker = samples.find(b => b.name === "portcullis_upstream_breaker_state" && b.labels.upstream === u && b.labels.target === t && b.value === 1);
    const health = s.value === 1 ? "up" : "down", state = breaker ? breaker.labels.state : "closed";
    const tr = targets.insertRow();
    tr.dataset.upstream = u; tr.dataset.target = t; tr.dataset.health = health; tr.dataset.breaker = state;
    cell(tr, u); cell(tr, t);
    cell(tr, health, health); cell(tr, state.replace("_", "-"), state);
    cell(tr, perTarget("portcullis_upstream_in_flight", u, t), "inflight");
    cell(tr, perTarget("portcullis_upstream_requests_total", u, t), "tries");
    cell(tr, perTarget("portcullis_upstream_failures_total", u, t), "failures");
    cell(tr, perTarget("portcullis_upstream_retries_total", u, t), "retries");
  }
  for (const [id, name, key] of [["limited", "portcullis_rate_limited_total", "limit"], ["auth", "portcullis_auth_failures_total", "reason"]]) {
    const body = document.querySelector("#" + id + " tbody");
    body.textContent = "";
    for (const s of samples.filter(s => s.name === name)) {
      const tr = body.insertRow();
      tr.dataset.route = s.labels.route; tr.dataset.key = s.labels[key];
      cell(tr, s.labels.route); cell(tr, s.labels[key]); cell(tr, s.value, "count");
    }
  }
}
async function poll() {
  const state = document.getElementById("state");
  try {
    const response = await fetch("metrics", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(parse(await response.text()), Date.now());
    state.textContent = "updated " + new Date().toLocaleTimeString();
    state.className = "muted";
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    state.textContent = "metrics unavailable: " + e.message;
    state.className = "down";
  }
}
poll();
setInterval(poll, 1000);
</script>
</body></html>
"""#
}
