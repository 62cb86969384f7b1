"""The run report: one static HTML file that opens offline.

    write_report("runs/demo")            # → runs/demo/report.html

It reads what the run directory holds, all of it optional, and says in the page what is missing:

- `metrics.jsonl` (one line an RL step, trainers/tracking.py) → curves over steps of reward,
  accuracy (training and `val-core/<bench>/acc/mean@k`), entropy, clip fractions, response
  length, tool calls per response and tool-call success;
- `rollouts/step_N.jsonl` (rollout/records.py) → the trajectory viewer (report_viewer.py), for
  the first and the last step;
- `stages.json` (the demo) → the before/after table: avg@k, pass@k, maj@k, tool calls per
  response, tool success and response length per stage and benchmark;
- `config.yaml` → the resolved configuration, folded away.

The demo keeps its RL run in `RUN_DIR/rl/`; when that holds the metrics or rollouts, they are
read from there. The page has no external resources: charts are inline SVG (report_plots.py),
styles and the one small script are inline, and a Content-Security-Policy allows only that
script (by hash), so text that escaped escaping still could not run.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from toolrl.data.io import read_jsonl
from toolrl.eval.report_plots import line_chart, series_color
from toolrl.eval.report_viewer import pick_trajectories, text, viewer

TRAJECTORIES_PER_STEP = 6


@dataclass(frozen=True)
class Panel:
    """One chart: the metrics (full-match regular expressions over metric names) it draws."""

    title: str
    patterns: tuple[str, ...]


PANELS = (
    Panel("Reward", ("critic/score/mean", "critic/rewards/mean")),
    Panel("Accuracy", ("acc/mean", r"val-core/[^/]+/acc/mean@\d+")),
    Panel("Entropy", ("actor/entropy",)),
    Panel(
        "Clip fractions",
        (
            "actor/pg_clipfrac",
            "actor/pg_clipfrac_lower",
            "actor/pg_clipfrac_ratio_high",
            "actor/pg_clipfrac_ratio_low",
        ),
    ),
    Panel("Response length", ("response_length/mean", "response_length/max")),
    Panel("Tool calls per response", ("tool/calls_per_response",)),
    Panel("Tool-call success rate", ("tool/success_rate",)),
)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run_dir` to `out` (default `<run_dir>/report.html`); returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist (or is not a directory)")
    out = Path(out) if out is not None else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(run_dir), encoding="utf-8")
    return out


def render_report(run_dir: Path) -> str:
    """The whole page as a string (see the module docstring for what it reads)."""
    notes: list[str] = []
    rl_dir = rl_dir_of(run_dir)
    rows = read_metrics_rows(rl_dir / "metrics.jsonl", notes)
    stages = read_stages(run_dir / "stages.json", notes)
    rollouts = rl_dir / "rollouts"
    trajectories = pick_trajectories(rollouts, TRAJECTORIES_PER_STEP, notes)
    sections = [
        ("curves", "Training curves", curves_section(rows, rl_dir)),
        ("before-after", "Before / after", table_section(stages, run_dir)),
        ("viewer", "Trajectories", viewer_section(trajectories, rollouts)),
        ("config", "Configuration", config_section(rl_dir / "config.yaml")),
    ]
    return page(run_dir, rows, notes, sections)


def rl_dir_of(run_dir: Path) -> Path:
    """Where the RL run's files are: `RUN_DIR/rl/` in the demo's layout, else RUN_DIR itself."""
    nested = run_dir / "rl"
    if (nested / "metrics.jsonl").is_file() or (nested / "rollouts").is_dir():
        return nested
    return run_dir


def read_metrics_rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a line that is not a JSON object (a crash mid-write) is noted, skipped."""
    if not path.is_file():
        return []
    return [row for _, row in read_jsonl(path, skip_bad=True, notes=notes)]


def read_stages(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """stages.json when it has the demo's shape ({"stages": [{"name", "summary"}, ...]})."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        notes.append(f"{path}: not JSON ({err}); no before/after table")
        return None
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not all(
        isinstance(s, dict) and "name" in s and isinstance(s.get("summary"), dict) for s in stages
    ):
        notes.append(
            f'{path}: expected {{"stages": [{{"name": ..., "summary": {{benchmark: eval summary}}}}]}}; '
            "no before/after table"
        )
        return None
    return data


# ----------------------------------------------------------------------------------------------
# Sections


def curves_section(rows: list[dict[str, Any]], rl_dir: Path) -> str:
    if not rows:
        return missing(f"No training curves: {rl_dir / 'metrics.jsonl'} is missing or empty.")
    return '<div class="charts">' + "\n".join(panel_figure(p, rows) for p in PANELS) + "</div>"


def panel_figure(panel: Panel, rows: list[dict[str, Any]]) -> str:
    """A chart of every metric the panel matches, or a note naming the metrics it looked for."""
    keys = matching_keys(panel.patterns, rows)
    title = f"<figcaption>{escape(panel.title)}</figcaption>"
    if not keys:
        wanted = ", ".join(panel.patterns)
        return (
            f'<figure class="panel">{title}{missing(f"not logged in this run: {wanted}")}</figure>'
        )
    series = {
        key: [(float(row.get("step", i + 1)), float(row[key])) for i, row in enumerate(rows) if _is_number(row.get(key))]
        for key in keys
    }  # fmt: skip
    legend = "".join(
        f'<span class="key"><i style="background:{series_color(i)}"></i>{escape(key)}</span>'
        for i, key in enumerate(series)
    )
    return (
        f'<figure class="panel" data-panel="{escape(panel.title)}">{title}'
        f'{line_chart(series)}<div class="chart-legend">{legend}</div></figure>'
    )


def matching_keys(patterns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    """Metric names with a number in some row that match a pattern; pattern order, then sorted."""
    present = sorted({k for row in rows for k, v in row.items() if _is_number(v)})
    keys: list[str] = []
    for pattern in patterns:
        keys += [k for k in present if re.fullmatch(pattern, k) and k not in keys]
    return keys


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_section(stages: dict[str, Any] | None, run_dir: Path) -> str:
    if stages is None:
        return missing(
            f"No before/after table: {run_dir / 'stages.json'} is missing "
            "(the demo writes it after evaluating each stage)."
        )
    return before_after_table(stages) + timings_line(stages.get("timings") or {})


def before_after_table(data: dict[str, Any]) -> str:
    """Rows per benchmark and stage; avg@k also shows its change from the first stage."""
    stages = data["stages"]
    benchmarks = data.get("benchmarks") or list(
        dict.fromkeys(b for s in stages for b in s["summary"])
    )
    header = (
        "<tr><th>benchmark</th><th>stage</th><th>avg@k</th><th>pass@k</th><th>maj@k</th>"
        "<th>tool calls / response</th><th>tool success</th><th>response length</th></tr>"
    )
    body = []
    for bench in benchmarks:
        first_avg = None
        for stage in stages:
            summary = stage["summary"].get(bench)
            if not isinstance(summary, dict):
                body.append(_row(bench, stage["name"], ["–"] * 6))
                continue
            k = summary.get("k", data.get("k"))
            m, ci = summary.get("metrics", {}), summary.get("intervals", {})
            avg = m.get(f"acc/avg@{k}")
            first_avg = avg if first_avg is None else first_avg
            cells = [
                _metric(m, ci, f"acc/avg@{k}") + _delta(avg, first_avg, stage is stages[0]),
                _metric(m, ci, f"acc/pass@{k}"),
                _metric(m, ci, f"acc/maj@{k}"),
                _number(m.get("tool/calls_per_response"), 2),
                _number(m.get("tool/success_rate"), 2),
                _number(m.get("response_length/mean"), 0),
            ]
            body.append(_row(bench, stage["name"], cells))
    k_text = f"k = {data['k']} responses per problem; " if "k" in data else ""
    return (
        f'<p class="caption">{escape(k_text)}brackets: 95% bootstrap interval over problems.</p>'
        f'<table class="before-after"><thead>{header}</thead><tbody>{"".join(body)}</tbody></table>'
    )


def _row(bench: str, stage: str, cells: list[str]) -> str:
    return (
        f'<tr data-benchmark="{text(bench)}" data-stage="{text(stage)}"><td>{text(bench)}</td>'
        f"<td>{text(stage)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    )


def _metric(m: dict[str, Any], ci: dict[str, Any], key: str) -> str:
    if not _is_number(m.get(key)):
        return "–"
    low_high = ci.get(key)
    interval = (
        f' <span class="ci">[{low_high[0]:.3f}, {low_high[1]:.3f}]</span>'
        if isinstance(low_high, list | tuple) and len(low_high) == 2
        else ""
    )
    return f"{m[key]:.3f}{interval}"


def _delta(value: Any, first: Any, is_first: bool) -> str:
    if is_first or not (_is_number(value) and _is_number(first)):
        return ""
    return f' <span class="delta">({value - first:+.3f})</span>'


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else "–"


def timings_line(timings: dict[str, Any]) -> str:
    parts = [f"{text(name)} {seconds:.1f} s" for name, seconds in timings.items() if _is_number(seconds)]  # fmt: skip
    return f'<p class="caption">time per stage: {" · ".join(parts)}</p>' if parts else ""


def viewer_section(trajectories: list[tuple[int, dict[str, Any]]], rollouts: Path) -> str:
    if not trajectories:
        return missing(f"No trajectories: {rollouts} holds no step_N.jsonl with records.")
    return viewer(trajectories)


def config_section(path: Path) -> str:
    if not path.is_file():
        return missing(f"No resolved configuration: {path} is missing.")
    body = text(path.read_text(encoding="utf-8"))
    return f"<details><summary>{text(path.name)}</summary><pre>{body}</pre></details>"


def missing(message: str) -> str:
    return f'<p class="missing">{text(message)}</p>'


# ----------------------------------------------------------------------------------------------
# The page

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1320px;padding:0 18px 40px;color:#1b1b1b}
h1{font-size:22px;margin:18px 0 4px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:14px;margin:10px 0 6px} .meta,.caption{color:#555} .missing{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
.notes li{color:#8a5a00} .charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:14px}
figure.panel{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px} figcaption{font-weight:600;margin-bottom:4px}
svg.chart{width:100%;height:auto;display:block} .grid{stroke:#ececec} .frame{fill:none;stroke:#999}
.tick,.axis-label{font:11px system-ui,sans-serif;fill:#444} .chart-legend{font-size:12px}
.chart-legend .key{margin-right:12px;white-space:nowrap} .chart-legend i{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} .ci,.delta{color:#666;font-size:12px}
.viewer-controls{display:flex;gap:6px;align-items:center;margin:8px 0} .viewer-controls select{max-width:100%}
pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;border:1px solid #eee;padding:8px;margin:6px 0}
.span{border-radius:2px} .span.policy{background:#dbeafe;color:#0b2a5b}
.span.injected{background:#fde7c8;color:#6b3a00;font-style:italic} .span.unknown{background:#eee}
.call{outline:1px solid #2563eb;font-weight:600} .legend .span{padding:1px 4px;margin-right:8px}
dl.facts{display:flex;flex-wrap:wrap;gap:4px 18px;margin:4px 0} dl.facts div{display:flex;gap:4px} dt{color:#666} dd{margin:0}
.tool-call pre{margin:3px 0} .tool-output{background:#fde7c8} .status{color:#555;font-size:12px}
"""

SCRIPT = """
(function () {
  var select = document.getElementById("traj-select");
  if (!select) return;
  var articles = document.querySelectorAll("article.traj");
  function show(i) {
    i = (i + articles.length) % articles.length;
    articles.forEach(function (a, j) { a.hidden = j !== i; });
    select.value = String(i);
  }
  select.addEventListener("change", function () { show(Number(select.value)); });
  document.getElementById("traj-prev").addEventListener("click", function () { show(Number(select.value) - 1); });
  document.getElementById("traj-next").addEventListener("click", function () { show(Number(select.value) + 1); });
  show(0);
})();
"""


def page(
    run_dir: Path,
    rows: list[dict[str, Any]],
    notes: list[str],
    sections: list[tuple[str, str, str]],
) -> str:
    """The HTML document around the sections, with a CSP that admits only SCRIPT."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    steps = f"{len(rows)} logged steps" if rows else "no logged steps"
    notes_html = (
        '<ul class="notes">' + "".join(f"<li>{text(n)}</li>" for n in notes) + "</ul>" if notes else ""
    )  # fmt: skip
    body = "\n".join(f'<section id="{sid}"><h2>{title}</h2>\n{html}</section>' for sid, title, html in sections)  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>toolrl report: {text(run_dir.resolve().name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>toolrl run report: {text(run_dir.resolve().name)}</h1>
<p class="meta">{text(str(run_dir))} · {steps} · generated {generated}</p>
{notes_html}
{body}
<script>{SCRIPT}</script>
</body></html>
"""
