"""The run report: curves, before/after table, trajectory viewer, escaping, missing inputs,
and the page in a real headless Chromium (no console errors, the viewer switches)."""

import asyncio
import html
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from toolrl.cli import main as cli_main
from toolrl.config import EvalConfig, RolloutConfig, load_config
from toolrl.eval.report import PANELS, write_report
from toolrl.eval.report_plots import nice_ticks, tick_labels
from toolrl.eval.runner import evaluate
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.rollout.records import trajectory_record
from toolrl.template_check import TOOLS
from toolrl.tools.base import ToolResult
from toolrl.trainers.rl_setup import fit
from toolrl.types import Sample

from ..trainers.conftest import parity_reward

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
PROBLEMS = {"What is 6 * 7?": "42", "What is 3 * 5?": "15"}


class Multiplier:
    """A stand-in code interpreter that multiplies `a * b`; `suffix` is appended to its output."""

    name = "code_interpreter"
    schema = TOOLS[0]

    def __init__(self, suffix: str = ""):
        self.suffix = suffix

    async def call(self, arguments):
        await asyncio.sleep(0)
        a, _, b = arguments["code"].split()
        return ToolResult(f"{int(a) * int(b)}{self.suffix}", "success")


def tool_user(context: str) -> str:
    """Calls the tool once on the question's product, then boxes the tool's answer."""
    if "<tool_response>" in context:
        answer = context.split("<tool_response>\n")[-1].split("\n")[0]
        return f"The tool says {answer}. \\boxed{{{answer}}}"
    question = re.findall(r"What is (\d+ \* \d+)\?", context)[-1]
    call = json.dumps({"name": "code_interpreter", "arguments": {"code": question}})
    return f"Let me compute.\n<tool_call>\n{call}\n</tool_call>"


def half_right(context: str) -> str:
    return "\\boxed{42}" if "6 * 7" in context else "\\boxed{0}"


def samples(hostile: bool = False) -> list[Sample]:
    tail = f" {HOSTILE}" if hostile else ""
    return [
        Sample(f"p{i}", [{"role": "user", "content": f"{q}{tail}"}], "math", a)
        for i, (q, a) in enumerate(PROBLEMS.items())
    ]


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_dir, tiny_tokenizer):
    return build_demo_run(tmp_path_factory.mktemp("demo"), tiny_dir, tiny_tokenizer)


def build_demo_run(root: Path, tiny_dir: Path, tiny_tokenizer, steps: int = 2) -> Path:
    """A run directory in the demo's layout, built by the library itself:

    - `rl/`: a real GRPO run of the tiny model (metrics with validation, rollouts, and
      the report `fit` writes). The untrained policy never calls a tool, so the last step's
      rollouts are replaced by a scripted tool-using agent's (real `trajectory_record`s) whose
      prompts and tool output carry HTML that must stay text;
    - `stages.json`: three stages evaluated by the eval runner with scripted policies
      (never right, right on one problem of two, right through the tool).
    """
    data = root / "train.jsonl"
    write_jsonl(data, [{"prompt": s.messages, "data_source": "toy", "reward_model": {"ground_truth": s.ground_truth}} for s in samples()])  # fmt: skip
    config = load_config(None, [
        f"model.path={tiny_dir}", "model.dtype=float32", f"data.train_files=[{data}]",
        f"data.val_files=[{data}]", "eval.k=2", "trainer.val_every=1", "data.train_batch_size=2",
        "rollout.engine=hf", "rollout.n=2", "rollout.max_response_length=16", "rollout.max_turns=2",
        "reward.overlong_buffer=4", "trainer.ppo_mini_batch_size=1", "trainer.micro_batch_size=2",
        f"trainer.output_dir={root}", "trainer.run_name=rl", f"trainer.total_steps={steps}",
        "trainer.save_every=0", "trainer.loggers=[jsonl]",
    ])  # fmt: skip
    fit(config, tools=[Multiplier()], reward_fn=parity_reward)
    loop = AgentLoop(
        ScriptedEngine(tiny_tokenizer, tool_user),
        tiny_tokenizer,
        [Multiplier(suffix=f"\n{HOSTILE}")],
        LoopSettings(max_response_length=400),
    )
    scripted = loop.run(samples(hostile=True), n=2)
    for t in scripted:
        t.reward, t.reward_info = 1.0, {"score": 1.0, "acc": True}
    write_jsonl(root / "rl" / "rollouts" / f"step_{steps}.jsonl", [trajectory_record(t, tiny_tokenizer) for t in scripted])  # fmt: skip
    stages = []
    for name, policy in [("base", lambda _: "I do not know."), ("sft", half_right), ("rl", tool_user)]:  # fmt: skip
        summaries = evaluate(
            ScriptedEngine(tiny_tokenizer, policy), tiny_tokenizer, [Multiplier()],
            {"toy-math": samples()}, EvalConfig(k=2, bootstrap_resamples=50),
            RolloutConfig(max_response_length=400, max_turns=3), root / "eval" / name,
        )  # fmt: skip
        stages.append({"name": name, "summary": summaries, "samples_dir": f"eval/{name}"})
    timings = {"base": 1.25, "sft": 30.5, "rl": 61.0}
    (root / "stages.json").write_text(
        json.dumps({"k": 2, "benchmarks": ["toy-math"], "stages": stages, "timings": timings})
    )
    return root


@pytest.fixture(scope="module")
def report(demo_run):
    path = write_report(demo_run)
    return path, path.read_text(encoding="utf-8")


def test_fit_writes_the_report_of_the_rl_run(demo_run):
    page = (demo_run / "rl" / "report.html").read_text()
    assert page.count('class="series"') >= len(PANELS)
    assert "No training curves" not in page and "No trajectories" not in page


def test_report_is_self_contained(report):
    path, page = report
    assert path.name == "report.html"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "@import" not in page
    assert "Content-Security-Policy" in page


def test_every_panel_draws_its_metrics_from_metrics_jsonl(report, demo_run):
    _, page = report
    rows = [json.loads(line) for line in (demo_run / "rl" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    for key in [
        "critic/score/mean", "acc/mean", "val-core/train/acc/mean@2", "actor/entropy",
        "actor/pg_clipfrac", "actor/pg_clipfrac_lower", "response_length/mean",
        "tool/calls_per_response", "tool/success_rate",
    ]:  # fmt: skip
        assert all(key in row for row in rows), key
        match = re.search(rf'data-key="{re.escape(key)}" data-points="(\d+)"', page)
        assert match, f"no curve for {key}"
        assert int(match.group(1)) == len(rows)
    for panel in PANELS:
        assert f'data-panel="{html.escape(panel.title)}"' in page, panel.title


def test_before_after_table_shows_each_stage_from_its_summary(report, demo_run):
    _, page = report
    stages = json.loads((demo_run / "stages.json").read_text())["stages"]
    expected_avg = {"base": "0.000", "sft": "0.500", "rl": "1.000"}
    for stage in stages:
        m = stage["summary"]["toy-math"]["metrics"]
        row = re.search(rf'<tr data-benchmark="toy-math" data-stage="{stage["name"]}">(.*?)</tr>', page).group(1)  # fmt: skip
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[2].startswith(expected_avg[stage["name"]])
        assert cells[3].startswith(f"{m['acc/pass@2']:.3f}")
        assert cells[4].startswith(f"{m['acc/maj@2']:.3f}")
        assert cells[5] == f"{m['tool/calls_per_response']:.2f}"
        assert cells[6] == f"{m['tool/success_rate']:.2f}"
        assert cells[7] == f"{m['response_length/mean']:.0f}"
    assert "(+1.000)" in page  # rl's avg@k against base's
    assert "rl 61.0 s" in page


def test_viewer_shows_mask_spans_turns_and_stop_reasons(report, demo_run):
    _, page = report
    assert page.count('<article class="traj"') == 4 + 4  # step 1 (2 prompts × 2) and step 2
    assert 'class="span policy"' in page and 'class="span injected"' in page
    assert '<span class="call">&lt;tool_call&gt;' in page
    assert '<pre class="tool-output">42' in page
    for step in (1, 2):
        path = demo_run / "rl" / "rollouts" / f"step_{step}.jsonl"
        for r in map(json.loads, path.read_text().splitlines()):
            heading = f"step {step} · {r['sample_id']} #{r['group_index']} · reward {r['reward']:+.2f} · {r['stop_reason']} ·"  # fmt: skip
            assert f"<h3>{html.escape(heading)}" in page, heading


def test_model_and_tool_text_is_escaped(report):
    _, page = report
    assert len(re.findall(r"<script\b", page, flags=re.IGNORECASE)) == 1  # the report's own
    assert html.escape(HOSTILE) in page
    assert "<img" not in page


def test_missing_inputs_are_named_not_fatal(tmp_path):
    page = write_report(tmp_path).read_text()
    assert "No training curves" in page and "metrics.jsonl" in page
    assert "No before/after table" in page and "stages.json" in page
    assert "No trajectories" in page and "No resolved configuration" in page


def test_malformed_inputs_are_noted_where(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "actor/entropy": 2.5}\n{"step": 2, "act')
    (tmp_path / "stages.json").write_text('{"stages": [{"name": "base"}]}')
    page = write_report(tmp_path).read_text()
    assert "metrics.jsonl: line 2: not valid JSON" in page
    assert "stages.json: expected" in page
    assert 'data-key="actor/entropy" data-points="1"' in page
    assert "not logged in this run: critic/score/mean" in page


def test_report_command(demo_run, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert cli_main(["report", str(demo_run), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_survives_a_failing_report(monkeypatch, tmp_path, capsys):
    from toolrl.trainers import rl_setup

    monkeypatch.setattr("toolrl.eval.report.write_report", lambda run_dir: 1 / 0)
    rl_setup.write_run_report(tmp_path)
    assert "could not write" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("low", "high", "integer"), [(0.0, 1.0, False), (5.5549, 5.5561, False), (-0.87, 1.5, False), (1, 37, True), (3, 3, False)]
)  # fmt: skip
def test_nice_ticks_cover_the_range_with_round_steps(low, high, integer):
    ticks = nice_ticks(low, high, integer=integer)
    assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 8
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    if integer:
        assert all(t == int(t) for t in ticks)
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(labels)
    assert all(abs(float(label) - t) < 1e-9 for label, t in zip(labels, ticks, strict=True))


# ----------------------------------------------------------------------------------------------
# In a real browser


def chromium_binary() -> str | None:
    """Debian's Chromium (`make system-deps` installs it); the real binary behind the wrapper
    script when it is there."""
    candidates = ["/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]  # fmt: skip
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture
def browser():
    """Function-scoped: playwright's sync API holds an event loop on this thread while it runs,
    so it must start after the module fixtures, which run the agent loop with asyncio.run."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary (apt-get install chromium, or `make system-deps`)")
    from playwright.sync_api import sync_playwright  # the `test` extra; no browser download

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_report_renders_in_chromium_without_errors(browser, report):
    path, _ = report
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)  # fmt: skip
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")

    charts = page.locator("figure.panel svg.chart")
    assert charts.count() == len(PANELS)
    for i in range(charts.count()):
        charts.nth(i).scroll_into_view_if_needed()
        box = charts.nth(i).bounding_box()
        assert charts.nth(i).is_visible() and box["width"] > 100 and box["height"] > 50

    visible = page.locator("article.traj:visible")
    assert visible.count() == 1 and visible.get_attribute("id") == "traj-0"
    last = page.locator("article.traj").count() - 1
    page.select_option("#traj-select", str(last))  # a step-2 trajectory: it called the tool
    shown = page.locator("article.traj:visible")
    assert shown.count() == 1 and shown.get_attribute("id") == f"traj-{last}"
    policy, injected = shown.locator(".span.policy").first, shown.locator(".span.injected").first
    assert policy.is_visible() and injected.is_visible()
    style = "e => getComputedStyle(e).backgroundColor"
    assert policy.evaluate(style) != injected.evaluate(style)
    assert HOSTILE in shown.inner_text()  # shown as text, not run
    assert page.evaluate("window.__pwned") is None

    page.click("#traj-next")  # wraps around to the first
    assert page.locator("article.traj:visible").get_attribute("id") == "traj-0"
    page.click("#traj-prev")
    assert page.locator("article.traj:visible").get_attribute("id") == f"traj-{last}"
    assert errors == []
    page.close()
