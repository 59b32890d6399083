"""Items whose prompt does not fit the model's context (MMMU's many-image items on a 4K-context LLaVA): counted per
benchmark, answering nothing (their task scores the empty answer), and the benchmark fails only beyond ``evaluation.max_over_context`` — on the
HF backend (the item is not generated) and on the vLLM backend (the server's 400 for the item, recognised by its
message)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests.evaluators.conftest import run_stage, stage_store

from selbench.evaluators.lmms import OVER_CONTEXT, REQUEST_FAILED, EvaluationError

LONG = " ".join(["describe"] * 400)  # ≥ 400 tokens: over the tiny target's 256 positions


def test_vllm_context_errors_are_recognised_and_other_failures_are_not() -> None:
    # the two messages vLLM 0.32 answers with (vllm/renderers/params.py, vllm/v1/engine/input_processor.py), as
    # lmms-eval's openai model wraps them after its retries
    too_long = [f"{REQUEST_FAILED} after 2 retries] Error code: 400 - {{'error': {{'message': \"This model's maximum "
                f"context length is 256 tokens. However, your prompt contains 301 input tokens",
                f"{REQUEST_FAILED} after 2 retries] Error code: 400 - The decoder prompt (length 2890) is longer "
                f"than the maximum model length of 2048. Make sure that `max_model_len` is no smaller"]
    assert all(OVER_CONTEXT.search(m) for m in too_long)
    assert not OVER_CONTEXT.search(f"{REQUEST_FAILED} after 2 retries] Connection error.")


@pytest.fixture(scope="module")
def long_bench(reference, tmp_path_factory) -> Path:
    """The small world's benchmarks with emb_vqa's first two questions and every emb_mc question made longer than
    the context."""
    _, _, bench_dir = reference
    out = tmp_path_factory.mktemp("bench")
    for f in Path(bench_dir).glob("*.parquet"):
        shutil.copy2(f, out / f.name)
    for name, rows in (("emb_vqa", slice(0, 1)), ("emb_mc", slice(None))):
        df = pd.read_parquet(out / f"{name}.parquet")
        df.loc[rows, "question"] = LONG
        df.to_parquet(out / f"{name}.parquet", index=False)
    return out


@pytest.mark.slow
def test_over_long_items_are_counted_and_fail_a_benchmark_only_beyond_the_threshold(reference, long_bench,
                                                                                   tmp_path) -> None:
    store = stage_store(tmp_path, reference)
    _, ft, _ = reference
    n = {b: len(pd.read_parquet(long_bench / f"{b}.parquet")) for b in ("emb_vqa", "emb_mc")}
    assert 2 / n["emb_vqa"] <= 0.1
    with pytest.raises(EvaluationError) as err:  # one job: emb_vqa under the threshold, emb_mc over it
        run_stage(store, ft, "lmms-eval-hf", ["emb_vqa", "emb_mc"], long_bench, max_over_context=0.1)
    assert re.fullmatch(rf"\[emb_mc\] benchmark emb_mc: {n['emb_mc']} of {n['emb_mc']} items do not fit the model's "
                        r"context \(each answers nothing; evaluation.max_over_context is 0.1\): doc 0: "
                        r"\d+ prompt tokens", str(err.value)), str(err.value)
    resume = next((store.root / "resume").iterdir())
    saved = json.loads((resume / "bench-emb_vqa.json").read_text())
    assert (saved["items_total"], saved["items_over_context"]) == (n["emb_vqa"], 2)
    assert saved["predictions"][:2] == ["", ""] and all(p for p in saved["predictions"][2:5])  # not generated
    assert all(math.isfinite(r["value"]) for r in saved["rows"])  # scored, the two counted as wrong


def test_on_vllm_an_over_long_item_answers_nothing_instead_of_the_error_text(tmp_path) -> None:
    """lmms-eval's openai model answers a refused request with its error text, which a task would score (MMMU's
    parser finds "D " in "...FAILED after..."): the session turns a context refusal into "" and counts it; any other
    failure stays as it is (and fails the benchmark)."""
    from selbench.evaluators.lmms import LmmsEvalSession

    session = LmmsEvalSession("lmms-eval-vllm", tmp_path, tmp_path / "work", ["emb_vqa"], None)
    too_long = (f"{REQUEST_FAILED} after 2 retries] Error code: 400 - This model's maximum context length is 256 "
                f"tokens. However, your prompt contains 301 input tokens")
    down = f"{REQUEST_FAILED} after 2 retries] Connection error."
    generate = session._answer_nothing_over_context(lambda requests: ["yes", too_long, down])
    assert generate([1, 2, 3]) == ["yes", "", down]
    assert session.over_context == [too_long]
