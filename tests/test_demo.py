"""`toolrl demo` (the README's main job) runs end to end and leaves its artefacts."""

import json

from toolrl.cli import main as cli_main


def test_demo_runs_every_stage(tmp_path, capsys):
    assert cli_main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "OK: rollout, template and SFT tokens agree" in out
    assert (
        "blocked:" in out and "read it" not in out
    )  # /etc/shadow hidden (bwrap) or refused (landlock)
    rows = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["reward"] is not None for r in rows)
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
