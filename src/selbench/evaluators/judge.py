"""The judge behind judge-scored benchmarks (MM-Vet, LLaVA-Bench) and MMBench's GPT-matcher fallback: any
OpenAI-compatible chat server (OpenAI's, Azure's through a proxy, a local vLLM), reached the way each lmms-eval task
reaches it, checked before the benchmark runs, and with every judge failure counted instead of becoming a number.

What lmms-eval 0.7.3 does on its own, and what this module adds:
- The tasks read the judge from the environment when their ``utils.py`` is loaded (``MODEL_VERSION``,
  ``API_TYPE``, ``OPENAI_API_KEY``, ``OPENAI_API_URL``) — but ``OPENAI_API_URL`` means two things: MM-Vet and
  LLaVA-Bench hand it to the OpenAI client as the *base* URL (``…/v1``), MMBench's matcher POSTs to it as the
  *endpoint* (``…/v1/chat/completions``). ``judge_env`` sets the form the benchmark's code uses
  (``Benchmark.judge_api``), only while that benchmark runs.
- A failed judge call is not an error there: MM-Vet scores the item 0.0 (``eval_model`` ""), LLaVA-Bench records
  scores ``[-1, -1]`` — and averages them into a *perfect* 100.0 when every call failed — and MMBench's matcher,
  after three unusable replies, picks a random option. ``failed_items`` and ``matcher_guesses`` count those, and
  the benchmark fails beyond ``Judge.max_failed`` (0 by default: one failure fails it).
- ``preflight`` asks the judge one short question before a benchmark that needs it, so a wrong URL, model or key
  fails in seconds with the server's answer, not after lmms-eval's retries (5 × 10 s per call) and a silent 0.
The key itself never enters the spec, a job's config or the results: ``api_key_env`` names the variable holding it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from selbench.evaluators.judge_config import OPENAI, Judge, JudgeApi, JudgeError

GUESSED = "Failed to predict, thus randomly generate one. "  # what MMBench's matcher says when it guessed

__all__ = ["OPENAI", "Judge", "JudgeApi", "JudgeError", "checked_replies", "environment", "failed_items", "judge_env",
           "matcher_guesses", "mmvet_score", "preflight"]

def judge_env(judge: Judge, api: JudgeApi) -> dict[str, str]:
    """The environment a task's utils read the judge from, in the URL form its code uses."""
    return {"API_TYPE": "openai", "MODEL_VERSION": judge.model, "OPENAI_API_KEY": judge.key(),
            "OPENAI_API_URL": judge.url(api)}


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` for the block, then put every variable back as it was."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def preflight(judge: Judge, *, timeout_s: float = 30, delay_s: float = 1.0) -> str:
    """One short chat completion through the judge's endpoint (``1 + retries`` attempts); returns the model name the
    server answered with. A JudgeError names the URL, the model and the server's reply when no attempt worked."""
    body = json.dumps({"model": judge.model, "messages": [{"role": "user", "content": "Reply with the digit 1."}],
                       "max_tokens": 4, "temperature": 0}).encode()
    url = judge.url("endpoint")
    last, attempt = "", 0
    for attempt in range(judge.retries + 1):
        if attempt:
            time.sleep(delay_s * attempt)
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {judge.key()}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                reply = json.loads(r.read())
            if not isinstance(reply, dict) or not reply.get("choices"):
                raise ValueError(f"not a chat completion: {str(reply)[:200]}")
            return str(reply.get("model") or judge.model)
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}"
            if e.code in (400, 401, 403, 404):
                break  # a wrong model, key or URL: retrying will not help
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
    raise JudgeError(f"the judge {judge.model!r} at {judge.base_url} does not answer ({url}, "
                     f"{attempt + 1} attempt(s)): {last}")


def failed_items(metric: str, samples: Sequence[dict]) -> int:
    """Items of a judge-scored benchmark whose judge call failed or gave no usable score, from lmms-eval's per-sample
    log: MM-Vet (``gpt_eval_score``) records ``eval_model`` "" when no call worked; LLaVA-Bench
    (``gpt_eval_llava_*``) records scores ``[-1, -1]`` for a failed call or an unreadable review."""
    n = 0
    for s in samples:
        record = s.get(metric)
        if not isinstance(record, dict):
            n += 1  # nothing the aggregation could read
        elif metric == "gpt_eval_score" and "eval_model" in record:
            n += not record.get("eval_model")
        elif "scores" in record:
            n += list(record["scores"]) == [-1, -1]
    return n


def mmvet_score(reply: str) -> bool:
    """A reply MM-Vet can use: its first space-separated field a score in [0, 1] (what its utils parse)."""
    try:
        return 0.0 <= float(reply.strip().split(" ")[0]) <= 1.0
    except ValueError:
        return False


# benchmark → what a usable judge reply is, where lmms-eval's own handling of an unusable one is worse than a failed
# call: MM-Vet retries a non-number with 5-s sleeps at rising temperature and then scores 0.0 unrecorded, and loops
# without end on a number outside [0, 1]
REPLY_CHECKS = {"mmvet": mmvet_score}


@contextlib.contextmanager
def checked_replies(usable) -> Iterator[None]:
    """For the block, a judge reply that ``usable`` rejects is a failed call (a JudgeError inside lmms-eval's OpenAI
    provider), which the task records as such (MM-Vet: ``eval_model`` "", counted by ``failed_items``)."""
    from lmms_eval.llm_judge.providers.openai import OpenAIProvider

    original = OpenAIProvider.evaluate

    def evaluate(self, request):
        response = original(self, request)
        if not usable(response.content or ""):
            raise JudgeError(f"unusable judge reply: {(response.content or '')[:80]!r}")
        return response

    OpenAIProvider.evaluate = evaluate
    try:
        yield
    finally:
        OpenAIProvider.evaluate = original


@contextlib.contextmanager
def matcher_guesses() -> Iterator[list[int]]:
    """Count MMBench's matcher outcomes while lmms-eval aggregates: ``[items sent to the judge, random guesses]``.
    The matcher reports a guess only in its return value, so its method is observed (wrapped, result unchanged)
    for the block."""
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    counts = [0, 0]
    original = MMBench_Evaluator.extract_answer_from_item

    def observed(self, item):
        out = original(self, item)
        counts[0] += 1
        counts[1] += out is None or out[1] == GUESSED
        return out

    MMBench_Evaluator.extract_answer_from_item = observed
    try:
        yield counts
    finally:
        MMBench_Evaluator.extract_answer_from_item = original
