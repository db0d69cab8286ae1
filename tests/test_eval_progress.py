"""Progress of a long `tierwise eval` where nobody sees a terminal: lines on stderr, every stage
and then every few seconds, while stdout keeps only the result."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tierwise.cli.eval import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_each_stage_and_then_every_interval() -> None:
    """A stage prints when it starts; rows print only once the interval has passed."""
    out, clock = io.StringIO(), Clock()
    with Progress(10.0, stream=out, clock=clock, terminal=False) as bar:
        bar.start("training the learned router", 1)
        bar.advance()
        bar.start("cascade: checks", 50)
        for _ in range(50):
            clock.now += 0.5  # 25 s for the stage: lines at 10 s and 20 s
            bar.advance()
    assert out.getvalue().splitlines() == [
        "tierwise eval: training the learned router",
        "tierwise eval: cascade: checks (0/50)",
        "tierwise eval: cascade: checks 20/50",
        "tierwise eval: cascade: checks 40/50",
        "tierwise eval: done in 25 s",
    ]


def test_a_terminal_gets_the_bar_and_no_lines() -> None:
    out = io.StringIO()
    with Progress(0.0, stream=out, clock=Clock(), terminal=True) as bar:
        bar.start("cascade: checks", 3)
        for _ in range(3):
            bar.advance()
    assert "tierwise eval:" not in out.getvalue()


def test_a_piped_run_prints_progress_to_stderr(tmp_path: Path) -> None:
    """`tierwise eval ... | cat`: stderr says what is running; stdout is only the JSON."""
    folder = tmp_path / "set"
    folder.mkdir()
    header = {"tierwise_eval": 1, "ladder": {"cheap": "small", "strong": "big"}}
    lines = [json.dumps(header)]
    for i in range(40):
        right = i % 3 != 0
        results = {
            "small": {
                "score": float(right),
                "response": "4" if right else "?",
                "cost_usd": "0.001",
            },
            "big": {"score": 1.0, "response": "4", "cost_usd": "0.01"},
        }
        kind = "a" if i % 2 else "b"
        record = {"prompt_id": f"r{i}", "prompt": f"{kind} q {i}", "kind": kind, "results": results}
        lines.append(json.dumps(record))
    (folder / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    args = ["eval", str(folder), "--folds", "2", "--json", "--progress-every", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "tierwise", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["folds"] == 2
    err = done.stderr.splitlines()
    assert err[0] == "tierwise eval: fold 1/2: training the learned router"
    assert "tierwise eval: fold 2/2: cascade: checks (0/20)" in err
    assert "tierwise eval: fold 2/2: cascade: checks 20/20" in err
    assert err[-1].startswith("tierwise eval: done in ")
