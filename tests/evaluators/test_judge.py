"""The judge path (selbench.evaluators.judge): MM-Vet, LLaVA-Bench and MMBench-Cn's matcher scored by a local
OpenAI-compatible judge — the CPU vLLM serving a tiny scripted model (tests/evaluators/judge_model.py) — through
lmms-eval's own tasks on their fixtures. What is tested is the plumbing: each task's URL form, the model name, the key
(from the variable ``api_key_env`` names, never recorded), the preflight, the judge's calls and failures recorded with
the results, and lmms-eval's silent judge failures (a 0.0, a perfect 100.0, a random option) turned into errors."""

from __future__ import annotations

import http.server
import json
import math
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.evaluators.conftest import judge_config, run_stage, stage_store
from tests.evaluators.judge_model import KEY, KEY_ENV, SERVED

from selbench.evaluators.benchmarks import get, task_for
from selbench.evaluators.judge import (
    Judge,
    JudgeError,
    environment,
    failed_items,
    judge_env,
    mmvet_score,
    preflight,
)
from selbench.evaluators.lmms import EvaluationError
from selbench.evaluators.task_fixtures import write_fixtures

JUDGED = ["mmvet", "llava_bench", "mmbench_cn"]
REQUIRED = {"mmvet": ["gpt_eval_score"], "llava_bench": ["gpt_eval_llava_all"], "mmbench_cn": ["gpt_eval_score"]}


# ---------------------------------------------------------------- configuration (no server)

def test_a_judge_is_a_model_name_or_the_full_form() -> None:
    assert Judge.model_validate("gpt-4-0613") == Judge(model="gpt-4-0613")
    j = Judge.model_validate({"model": "m", "base_url": "http://127.0.0.1:9/v1/", "api_key_env": KEY_ENV})
    assert j.url("client") == "http://127.0.0.1:9/v1" and j.url("endpoint") == "http://127.0.0.1:9/v1/chat/completions"
    assert j.record() == {"model": "m", "base_url": "http://127.0.0.1:9/v1/"}  # no key, ever
    with pytest.raises(ValidationError, match="api_key"):
        Judge.model_validate({"model": "m", "api_key": "sk-in-the-spec"})  # the key never goes in a spec
    with pytest.raises(ValidationError, match="max_failed"):
        Judge(model="m", max_failed=2)


def test_each_task_gets_the_url_form_its_code_uses(monkeypatch) -> None:
    # MMBench's matcher POSTs to OPENAI_API_URL; MM-Vet's and LLaVA-Bench's OpenAI client appends the path itself
    assert (get("mmbench_cn").judge_api, get("mmbench_en").judge_api) == ("endpoint", "endpoint")
    assert (get("mmvet").judge_api, get("llava_bench").judge_api) == ("client", "client")
    judge = Judge(model="judge-m", base_url="http://h:1/v1", api_key_env=KEY_ENV)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(JudgeError, match=f"environment variable {KEY_ENV}"):
        judge_env(judge, "client")
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("OPENAI_API_URL", "before")
    env = judge_env(judge, "endpoint")
    assert env == {"API_TYPE": "openai", "MODEL_VERSION": "judge-m", "OPENAI_API_KEY": KEY,
                   "OPENAI_API_URL": "http://h:1/v1/chat/completions"}
    with environment(env):
        import os

        assert os.environ["OPENAI_API_URL"].endswith("/chat/completions")
    assert os.environ["OPENAI_API_URL"] == "before"
    assert task_for(get("mmbench_en"), judge) == "mmbench_en_dev"  # with a judge: the task as the papers ran it
    assert task_for(get("mmbench_en"), None) == "mmbench_en_dev_static"


def test_an_unreachable_judge_fails_in_seconds_naming_its_url(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    from selbench.evaluators.vllm_server import free_port

    judge = Judge(model="m", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key_env=KEY_ENV, retries=1)
    t0 = time.perf_counter()
    with pytest.raises(JudgeError, match=r"does not answer .*127\.0\.0\.1.*2 attempt\(s\)"):
        preflight(judge, delay_s=0.1)
    assert time.perf_counter() - t0 < 10


def test_mmvet_replies_are_usable_only_as_a_score_in_0_1() -> None:
    assert mmvet_score("0.4") and mmvet_score("1 0.5\tB") and mmvet_score(" 0.0 because")
    assert not mmvet_score("Great answer.") and not mmvet_score("5") and not mmvet_score("")


def test_failed_judge_calls_are_counted_from_the_samples() -> None:
    mmvet = [{"gpt_eval_score": {"score": 0.0, "eval_model": ""}},  # no call worked: lmms-eval scores 0.0
             {"gpt_eval_score": {"score": 0.4, "eval_model": "gpt-4"}}]
    llava = [{"gpt_eval_llava_all": {"scores": [-1, -1]}},  # failed or unreadable: lmms-eval averages it in
             {"gpt_eval_llava_all": {"scores": [8.0, 6.0]}}, {}]
    assert failed_items("gpt_eval_score", mmvet) == 1
    assert failed_items("gpt_eval_llava_all", llava) == 2


# ---------------------------------------------------------------- through lmms-eval, with a served judge

class _Scripted(http.server.BaseHTTPRequestHandler):
    """A judge that answers every chat completion with ``reply`` (unreadable as a score on purpose)."""

    reply = "Great answer."

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": self.reply}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("task-data"))


def _requests(server) -> float:
    text = urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total{"))


@pytest.mark.slow
@pytest.mark.vllm
def test_judge_scored_benchmarks_run_with_a_local_judge(judge_server, reference, task_data, tmp_path,
                                                        monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = stage_store(tmp_path, reference)
    _, ft, bench_dir = reference
    before = _requests(judge_server)
    judge = judge_config(judge_server)
    job, rows = run_stage(store, ft, "lmms-eval-hf", JUDGED, bench_dir, task_data=str(task_data), judge=judge,
                          required=REQUIRED)
    values = {(r["benchmark"], r["metric"]): r["value"] for r in rows}
    # the scripted judge answers "1 0.5\tB": MM-Vet reads 1.0 for every item, LLaVA-Bench 0.5 against 1 → 50 %
    assert values[("mmvet", "gpt_eval_score")] == pytest.approx(100.0)
    assert values[("llava_bench", "gpt_eval_llava_all")] == pytest.approx(50.0)
    assert math.isfinite(values[("mmbench_cn", "gpt_eval_score")])
    assert {r["judge"] for r in rows} == {SERVED}
    resume = store.root / "resume" / job.id
    saved = {b: json.loads((resume / f"bench-{b}.json").read_text()) for b in JUDGED}
    assert saved["mmbench_cn"]["task"] == "mmbench_cn_dev"  # with a judge: the matcher's task, not a variant
    for b in JUDGED:
        j = saved[b]["judging"]
        assert j["base_url"] == judge_server.base_url and j["served_model"] == SERVED, j
        assert j["failed"] == 0 and j["items"] == len(saved[b]["predictions"]), j
    assert saved["mmbench_cn"]["judging"]["calls"] > 0  # answers the matcher could not read went to the judge
    calls = sum(saved[b]["judging"]["calls"] for b in JUDGED)
    assert calls >= saved["mmvet"]["judging"]["items"] + saved["llava_bench"]["judging"]["items"]
    assert _requests(judge_server) - before >= calls + 1  # the preflight, then every call reached the server
    # the key came from KEY_ENV and is nowhere in what the job kept
    assert not [p for p in resume.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".txt")
                and KEY in p.read_text(errors="replace")]


@pytest.mark.slow
@pytest.mark.vllm
def test_a_wrong_judge_model_is_refused_by_the_preflight(judge_server, monkeypatch) -> None:
    """Before any generation (the stage runs the preflight before lmms-eval; its message is prefixed with the
    benchmark, as test_unusable_judge_replies_fail_the_benchmark_not_score_it shows)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    assert preflight(Judge.model_validate(judge_config(judge_server))) == SERVED
    wrong = Judge(model="no-such-judge", base_url=judge_server.base_url, api_key_env=KEY_ENV)
    with pytest.raises(JudgeError, match=r"the judge 'no-such-judge' at .* does not answer .*, 1 attempt\(s\)\): "
                                          r"HTTP 404"):  # a wrong model is not retried
        preflight(wrong)


@pytest.mark.slow
def test_unusable_judge_replies_fail_the_benchmark_not_score_it(reference, task_data, tmp_path, monkeypatch) -> None:
    """lmms-eval alone would score these: MM-Vet 0.0 after retries with 5-s sleeps per item, LLaVA-Bench a perfect 100.0
    (every item's scores [-1, -1] averaged), MMBench-Cn by random options."""
    monkeypatch.setenv(KEY_ENV, KEY)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        store = stage_store(tmp_path, reference)
        _, ft, bench_dir = reference
        judge = {"model": "scripted", "base_url": f"http://127.0.0.1:{httpd.server_port}/v1",
                 "api_key_env": KEY_ENV}
        with pytest.raises(EvaluationError) as err:
            run_stage(store, ft, "lmms-eval-hf", ["mmvet", "llava_bench", "mmbench_cn"], bench_dir,
                      task_data=str(task_data), judge=judge, required=REQUIRED)
    finally:
        httpd.shutdown()
    msg = str(err.value)
    # MM-Vet: an unusable reply is a failed call (lmms-eval alone: 5-s sleeps at rising temperature, then 0.0)
    assert re.search(r"\[mmvet\] benchmark mmvet: (\d+) of \1 items are judge calls that failed or gave no usable "
                     r"score", msg), msg
    assert "[llava_bench] benchmark llava_bench: " in msg and "judge calls that failed or gave no usable score" in msg
    assert "evaluation.judge.max_failed is 0" in msg
    # items whose answers name no option go to the matcher, which guesses after the nonsense (lmms-eval reports nothing)
    assert re.search(r"\[mmbench_cn\] benchmark mmbench_cn: [1-9]\d* of \d+ items are random guesses by MMBench's "
                     r"matcher after unusable judge replies", msg), msg
