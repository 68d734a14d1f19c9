#!/usr/bin/env python3
"""Render one `make bench` run (scripts/bench.sh) as markdown tables and a PNG chart of the ratios.

    report.py RESULTS.jsonl MICROBENCH.txt SETTINGS OUT.md OUT.png

RESULTS.jsonl holds one JSON object per measurement (kinds: throughput, latency, rss), written by
scripts/bench.sh. The markdown goes to stdout and OUT.md; the chart is drawn with gnuplot.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

CEILING = "C event-loop proxy (the design's ceiling)"

# Issue 8's targets, in its order: (row, source, comparison, target value, shown target).
TARGETS = [
    (CEILING, ("ratio", "ceiling"), None, None, "reported"),
    ("route only", ("ratio", "plain"), ">=", 0.40, "≥ 0.40"),
    ("API key + shared-memory limit", ("ratio", "limit-shm"), ">=", 0.38, "≥ 0.38"),
    ("JWT HS256 (token cache) + shared-memory limit", ("ratio", "jwt-hs-limit"), ">=", 0.36, "≥ 0.36"),
    ("JWT RS256, cached", ("ratio", "jwt-rs"), ">=", 0.36, "≥ 0.36"),
    ("Redis limit + API key", ("ratio", "limit-redis"), ">=", 0.25, "≥ 0.25"),
    ("POST 2 KB, request + response transform", ("ratio", "transform"), ">=", 0.18, "≥ 0.18"),
    ("`/echo/` to the Python echo upstream (a slow real service)", ("ratio", "echo"), ">=", 0.95, "≥ 0.95"),
    ("worker CPU per route-only request", ("cpu_us", "plain"), "<=", 15.0, "≤ 15 µs"),
    ("worker context switches per request", ("ctx", "plain"), "<=", 0.5, "≤ 0.5"),
    ("p99 added at 50% of nginx's maximum", ("p99_added", None), "<=", 1.0, "≤ 1 ms"),
    ("RSS after 1 M requests vs 10 k", ("rss_change", None), "abs<=", 5.0, "within 5%"),
]
TARGET_RATIO = {src[1]: value for _, src, cmp, value, _ in TARGETS if src[0] == "ratio" and value is not None}


def saturated(r: dict) -> bool:
    """A path that answered less than 95% of the offered rate was overloaded."""
    return r["achieved_rps"] < 0.95 * r["offered_rps"]


def num(v, digits=0, unit=""):
    if v is None:
        return "—"
    if digits == 0:
        return f"{round(v):,}".replace(",", " ") + unit
    return f"{v:.{digits}f}{unit}"


def main() -> None:
    results_path, microbench_path, settings, out_md, out_png = sys.argv[1:6]
    rows = [json.loads(line) for line in open(results_path) if line.strip()]
    thr = [r for r in rows if r["kind"] == "throughput"]
    # Older results have no level: they were all at 50% of nginx's maximum.
    lat = {(r.get("level", "nginx50"), r["name"]): r for r in rows if r["kind"] == "latency"}
    rss = next((r for r in rows if r["kind"] == "rss"), None)
    pinned = {r["id"]: r for r in thr if r["phase"] == "pinned"}

    out = [f"Run: {settings}.", ""]

    def table(phase: str, title: str) -> None:
        sel = [r for r in thr if r["phase"] == phase]
        if not sel:
            return
        out.extend([title, "",
                    "| scenario | nginx proxy_pass req/s | gateway req/s | ratio | gateway CPU µs / req | context switches / req |",
                    "|---|---|---|---|---|---|"])
        for r in sel:
            out.append(f"| {r['name']} | {num(r['nginx_rps'])} | {num(r['rps'])} | {r['ratio']:.2f} | "
                       f"{num(r['cpu_us'], 1)} | {num(r['ctx'], 2)} |")
        out.append("")
        for r in sel:
            if r.get("upstream_cpu_us") is not None:
                out.extend([f"The upstream of \"{r['name']}\" used {num(r['upstream_cpu_us_nginx'], 1)} µs of CPU per request "
                            f"behind nginx proxy_pass and {num(r['upstream_cpu_us'], 1)} µs behind the gateway (it parses and "
                            "echoes every field it receives; the gateway adds `X-Forwarded-For`, `X-Forwarded-Proto`, "
                            "`X-Forwarded-Host`, `X-Request-ID` and `traceparent`).", ""])

    table("pinned", "**Pinned**: the gateway stack (front nginx + the system under test) on one core; "
                    "CPU and context switches of the Portcullis workers (of the C proxy, of HAProxy on their rows).")
    table("unpinned", "**Unpinned**: every process free on every core.")

    p99_added, p99_note = None, []
    for level, title in (("nginx50", "50% of nginx proxy_pass's maximum"), ("gateway50", "50% of route only's maximum")):
        at = {name: r for (lv, name), r in lat.items() if lv == level}
        if not at:
            continue
        out.extend([f"**Latency** at a fixed offered rate of {title} (pinned, h2load):", "",
                    "| path | offered req/s | answered req/s | p50 ms | p99 ms | failed |", "|---|---|---|---|---|---|"])
        for r in at.values():
            out.append(f"| {r['name']} | {num(r['offered_rps'])} | {num(r['achieved_rps'])} | {num(r['p50_ms'], 2)} | "
                       f"{num(r['p99_ms'], 2)} | {r['failed']} |")
        n, g = at.get("nginx proxy_pass"), at.get("route only")
        if n and g and n["p99_ms"] is not None and g["p99_ms"] is not None:
            added = g["p99_ms"] - n["p99_ms"]
            notes = [f"{r['name']} answered {num(r['achieved_rps'])} of {num(r['offered_rps'])} req/s"
                     for r in (n, g) if saturated(r)]
            out.append("")
            out.append(f"p99 added by Portcullis: {added:.2f} ms (route only minus nginx proxy_pass at the same rate).")
            if notes:
                out.append("Not comparable: " + "; ".join(notes) + " (saturated: its latencies leave out the time "
                           "requests waited in h2load).")
            if level == "nginx50":
                p99_added, p99_note = added, notes
        out.append("")

    rss_change = None
    if rss:
        if rss["rss_kb_1"]:
            rss_change = (rss["rss_kb_2"] / rss["rss_kb_1"] - 1) * 100
        out.extend([f"**Worker RSS** (sum of VmRSS of the workers, fresh unpinned pool, route only): "
                    f"{num(rss['rss_kb_1'])} kB after {num(rss['requests_1'])} requests, {num(rss['rss_kb_2'])} kB after "
                    f"{num(rss['requests_2'])} ({'—' if rss_change is None else f'{rss_change:+.1f}%'}; "
                    f"{num(rss['ok'])} answered 200; same workers throughout: {'yes' if rss['same_workers'] else 'NO'}).", ""])

    out.extend(["**Targets** (issue 8; gateway stack on one core, ratio to nginx proxy_pass in the same run):", "",
                "| scenario | this run | target | met |", "|---|---|---|---|"])
    for row, (what, src), cmp, value, shown in TARGETS:
        if what == "ratio":
            r = pinned.get(src)
            fig, figs = (r["ratio"], f"{r['ratio']:.2f}") if r else (None, "—")
        elif what in ("cpu_us", "ctx"):
            r = pinned.get(src)
            fig = r[what] if r else None
            figs = num(fig, 1, " µs") if what == "cpu_us" else num(fig, 2)
        elif what == "p99_added":
            fig, figs = p99_added, num(p99_added, 2, " ms")
            if p99_note:
                fig, figs = None, figs + " (saturated: " + "; ".join(p99_note) + ")"
        else:
            fig, figs = rss_change, ("—" if rss_change is None else f"{rss_change:+.1f}%")
        if fig is None or cmp is None:
            met = "—"
        elif cmp == ">=":
            met = "yes" if fig >= value else "no"
        elif cmp == "<=":
            met = "yes" if fig <= value else "no"
        else:
            met = "yes" if abs(fig) <= value else "no"
        out.append(f"| {row} | {figs} | {shown} | {met} |")
    out.append("")

    if os.path.exists(microbench_path) and os.path.getsize(microbench_path):
        out.extend(["**CPU per decision**, in-process (`portcullis microbench`, same config, keys and rule files):", "",
                    "```", open(microbench_path).read().rstrip(), "```", ""])

    text = "\n".join(out)
    print(text)
    with open(out_md, "w") as f:
        f.write(text + "\n")
    chart(thr, settings, out_png)


def chart(thr: list, settings: str, out_png: str) -> None:
    """Horizontal bars: each row's ratio to nginx proxy_pass; a diamond where issue 8 sets a target."""
    if not thr or not shutil.which("gnuplot"):
        print("(no chart: nothing measured or gnuplot missing)", file=sys.stderr)
        return
    rows = []
    for r in thr:
        label = r["name"] + (" — 2 cores, unpinned" if r["phase"] == "unpinned" else "")
        target = TARGET_RATIO.get(r["id"]) if r["phase"] == "pinned" else None
        rows.append((label.replace('"', "'"), r["ratio"], target))
    rows.reverse()  # gnuplot draws the first row at the bottom
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "ratios.dat")
        with open(data, "w") as f:
            for i, (label, ratio, target) in enumerate(rows):
                f.write(f'{i} {ratio:.3f} {target if target is not None else -1} "{label}"\n')
        height = 170 + 34 * len(rows)
        parts = [p.strip().replace('"', "'") for p in settings.split(";")]
        title_detail = "\\n".join([parts[0], "; ".join(parts[1:3])])
        top = max(1.0, max(r for _, r, _ in rows) * 1.1)
        script = f"""
set terminal pngcairo noenhanced size 1100,{height} font "sans,10"
set output "{out_png}"
set title "make bench: throughput as a fraction of nginx proxy_pass (same run)\\n{title_detail}"
set xrange [0:{top:.2f}]
set yrange [-0.7:{len(rows) - 0.3}]
set xtics 0.1
set grid xtics
set ytics nomirror
set key below
set arrow from 1,graph 0 to 1,graph 1 nohead dashtype 2 lc rgb "#555555"
set style fill solid 0.8 noborder
plot "{data}" using (0.5*$2):1:(0.5*$2):(0.35):ytic(4) with boxxyerror lc rgb "#3b6ea8" title "ratio", \\
     "" using ($3 > $2 ? $3 : $2):1:(sprintf("%.2f", $2)) with labels left offset 1,0 notitle, \\
     "" using ($3 < 0 ? 1/0 : $3):1 with points pt 13 ps 1.6 lc rgb "#c0392b" title "issue 8 target"
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=False)


if __name__ == "__main__":
    main()
