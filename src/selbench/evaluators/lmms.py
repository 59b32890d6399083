"""The lmms-eval bridge: one evaluation job's lmms-eval session.

The session builds lmms-eval's task manager and model once, then runs ``lmms_eval.evaluator.simple_evaluate`` once
per benchmark, writing lmms-eval's own results JSON and per-sample log (``<work>/<benchmark>/...``) exactly as its CLI
does, and parses that JSON into normalised rows. One benchmark per call is what makes resume per benchmark possible
(the stage saves each finished benchmark before starting the next).

Models: ``lmms-eval-hf`` → ``selbench_hf`` (selbench.evaluators.lmms_model, greedy HF generation, CPU or one GPU);
``lmms-eval-vllm`` → lmms-eval's ``openai`` model talking to a vLLM OpenAI-compatible server started for the job
(selbench.evaluators.vllm_server). Embedded benchmarks are the package's task YAMLs (``lmms_tasks/``) pointed at
the world's data files through a generated ``--include_path`` folder; the papers' benchmarks are lmms-eval's
built-in tasks, their YAMLs and hooks as shipped (a judge-scored one needs ``evaluation.judge``), reading their data
sets from the Hub (its cache) or, with ``task_data``, from local copies laid out as the Hub
(selbench.evaluators.task_data).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from selbench.evaluators.benchmarks import Benchmark, get, task_for
from selbench.evaluators.items import from_mmbench_hits, from_samples, mmbench_hits
from selbench.evaluators.judge import (
    REPLY_CHECKS,
    Judge,
    JudgeError,
    checked_replies,
    environment,
    failed_items,
    judge_env,
    matcher_guesses,
    preflight,
)
from selbench.evaluators.task_data import fingerprint, local_repo, reading_from, task_config

if TYPE_CHECKING:
    from selbench.evaluators.vllm_server import VLLMServer

TASKS_DIR = Path(__file__).parent / "lmms_tasks"
REQUEST_FAILED = "[LMMS_EVAL_REQUEST_FAILED"  # what lmms-eval's openai model answers when every retry failed
# vLLM's 400 for a prompt longer than the served context (vllm/renderers/params.py, v1/engine/input_processor.py)
OVER_CONTEXT = re.compile(r"maximum context length|longer than the maximum model length")
MAX_OVER_CONTEXT = 0.01  # default share of a benchmark's items that may exceed the context (each answers "")


class EvaluationError(RuntimeError):
    """An evaluation that must not become a number: names the benchmark and, where there is one, the file."""


def task_hash(name: str, bench_dir: Path | None, task: str | None = None, data: str | None = None,
              subset: str | None = None) -> str:
    """Hash of what defines an embedded task: its YAML, the shared hooks and the data file (an lmms-eval task: its
    name, ``task`` where a judge-free variant ran, and ``data``, the fingerprint of a local copy of its data set);
    either way ``subset`` (``subset_identity``: the items drawn) when only a seeded subset of its items ran."""
    h = hashlib.sha256()
    if subset is not None:
        h.update(f"subset:{subset}:".encode())
    b = get(name)
    if not b.embedded:
        h.update(f"lmms-eval:{task or b.task}".encode())
        if data:
            h.update(f":data:{data}".encode())
        return h.hexdigest()[:16]
    for f in (TASKS_DIR / f"{b.task}.yaml", TASKS_DIR / "utils.py", data_file(b, bench_dir)):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def data_file(bench: Benchmark, bench_dir: Path | None) -> Path:
    if bench_dir is None:
        raise EvaluationError(f"benchmark {bench.name}: embedded benchmarks need the world's benchmark folder "
                              f"(the spec has no world)")
    path = Path(bench_dir) / f"{bench.task}.parquet"
    if not path.is_file():
        raise EvaluationError(f"benchmark {bench.name}: data file {path} is missing")
    return path


def write_task_dir(names: list[str], bench_dir: Path | None, out: Path) -> Path:
    """An ``--include_path`` folder: for each embedded benchmark, a YAML that includes the shipped task and points
    its data at the world's file. Built-in lmms-eval tasks need nothing here; a benchmark whose data file is
    missing gets no task (LmmsEvalSession.evaluate reports it)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        b = get(name)
        if b.embedded and bench_dir is not None and (Path(bench_dir) / f"{b.task}.parquet").is_file():
            (out / f"{b.task}.yaml").write_text(
                f"include: {TASKS_DIR / (b.task + '.yaml')}\n"
                f"dataset_kwargs:\n  data_files:\n    test: {data_file(b, bench_dir)}\n")
    return out


def parse_results(path: Path, task: str, required: Sequence[str] = ()) -> list[dict]:
    """lmms-eval's results JSON → rows ``{metric, value, n, stderr}`` for one task, as lmms-eval really writes
    them: ``metric,filter`` keys (the metric keeps its plain name under the default filter ``none`` and is
    ``metric,filter`` under any other), ``*_stderr`` values that may be ``"N/A"`` (→ None), and auxiliary metrics
    whose value is null or not a number (TextVQA's and MMBench's ``submission``) — those are left out. Only the
    ``required`` metrics (what the protocol's columns read) must be there and finite; anything wrong with them is
    an EvaluationError naming the file and the field, never a silently wrong number."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvaluationError(f"malformed lmms-eval output {path}: {e}") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, dict):
        raise EvaluationError(f"malformed lmms-eval output {path}: no 'results' object")
    entry = results.get(task)
    if not isinstance(entry, dict):
        raise EvaluationError(f"lmms-eval output {path} has no results for task {task!r} "
                              f"(it has: {', '.join(sorted(results)) or 'none'})")
    n_samples = (doc.get("n-samples") or {}).get(task) or {}
    n = n_samples.get("effective", n_samples.get("original"))
    rows = []
    for key, value in entry.items():
        metric, _, filt = key.partition(",")
        if key in ("alias", "samples") or "_stderr" in metric:
            continue
        name = metric if filt in ("", "none") else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            if name in required:
                raise EvaluationError(f"malformed lmms-eval output {path}: results.{task}.{key} = {value!r} is "
                                      f"not a finite number")
            continue  # an auxiliary metric (e.g. `submission`: null) that no column reads
        stderr = entry.get(f"{metric}_stderr,{filt}")
        rows.append({"metric": name, "value": float(value), "n": n,
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None})
    missing = [m for m in required if m not in {r["metric"] for r in rows}]
    if missing or not rows:
        have = ", ".join(r["metric"] for r in rows) or "none"
        raise EvaluationError(f"malformed lmms-eval output {path}: results.{task} lacks "
                              f"{', '.join(missing) or 'any metric'} (has: {have})")
    return rows


def read_samples(out: Path, task: str) -> list[dict]:
    files = sorted(out.rglob(f"*_samples_{task}.jsonl"))
    if not files:
        raise EvaluationError(f"lmms-eval wrote no per-sample log for task {task!r} under {out}")
    rows = [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def prediction(sample: dict) -> str:
    resp = sample.get("filtered_resps")
    while isinstance(resp, list):
        resp = resp[0] if resp else ""
    return str(resp)


def generation_kwargs(cap: int | None, overrides: dict | None) -> str | None:
    """lmms-eval's ``gen_kwargs`` (merged into the task's own ``generation_kwargs``): None keeps every task's
    settings; a cap sets max_new_tokens; a benchmark's explicit overrides win over the cap."""
    kw: dict = {} if cap is None else {"max_new_tokens": cap}
    kw.update(overrides or {})
    return ",".join(f"{k}={v}" for k, v in kw.items()) or None


def greedy_for_server(task_generation: dict) -> dict:
    """What the vLLM backend adds to a task's generation settings so that a task asking for greedy decoding gets it
    from an OpenAI-style server, which knows no ``do_sample``:
    - MM-Vet asks ``do_sample: false`` with ``temperature: 0.2`` — greedy for HF models, where the temperature is
      ignored, but sampling (and answers that change from run to run) for an API, which only sees the temperature:
      such tasks get ``temperature: 0``;
    - vLLM's OpenAI server rejects ``top_p: 0`` ("must be in (0, 1]"), which lmms-eval's POPE split tasks
      (pope_random / pope_pop / pope_adv) ask for with ``temperature: 0`` — greedy decoding, where top_p changes
      nothing — so those get ``top_p: 1.0``."""
    if task_generation.get("do_sample"):
        return {}
    out: dict = {}
    if float(task_generation.get("temperature", 0) or 0) > 0:
        out["temperature"] = 0
    top_p = task_generation.get("top_p")
    if top_p is not None and float(top_p) <= 0:
        out["top_p"] = 1.0
    return out


def subset_identity(seed: int, of: int, keep: Sequence[int]) -> str:
    """What a subset is: its seed, the task's item count and a digest of the items drawn — so a draw that changed
    (another numpy's generator) changes the task's hash instead of silently pairing different items."""
    digest = hashlib.sha256(",".join(map(str, keep)).encode()).hexdigest()[:16]
    return f"seed {seed}, {len(keep)} of {of}, items {digest}"


class SeededSubset:
    """``evaluation.limit``: a seeded item subset of one task — the task as shipped, with its ``process_docs`` (when
    it has one) followed by a selection of ``n`` of its items, drawn with ``numpy.random.default_rng(seed)`` and kept
    in their order. lmms-eval's own ``limit`` takes the *first* n items (one source, one question type in many data
    sets), so it is not used. The task keeps its name; the subset is in its hash and in the results."""

    def __init__(self, n: int, seed: int, yaml_path: str) -> None:
        from lmms_eval import utils

        self.n, self.seed = n, seed
        self.of: int | None = None  # the task's item count, once its documents are read
        self.keep: list[int] = []  # the items drawn (indices after the task's own process_docs)
        self.original = utils.load_yaml_config(yaml_path, mode="full").get("process_docs")

    def process_docs(self, dataset):
        import numpy as np

        if self.original is not None:
            dataset = self.original(dataset)
        self.of = len(dataset)
        if self.n >= self.of:
            self.keep = list(range(self.of))
            return dataset
        keep = np.sort(np.random.default_rng(self.seed).choice(self.of, size=self.n, replace=False))
        self.keep = [int(i) for i in keep]
        return dataset.select(self.keep)

    def identity(self) -> str:
        if self.of is None:
            raise EvaluationError("the subset's task never read its documents")
        return subset_identity(self.seed, self.of, self.keep)

    def task(self, name: str) -> dict:
        """The config simple_evaluate takes for the task with its docs drawn (lmms-eval merges it over the task's)."""
        return {"task": name, "process_docs": self.process_docs}

    def describe(self) -> str:
        if self.of is None:
            raise EvaluationError("the subset's task never read its documents")
        return f"{min(self.n, self.of):,} of {self.of:,} items, seed {self.seed}"


class LmmsEvalSession:
    """``with LmmsEvalSession(...) as s: s.evaluate("emb_vqa")``. Starts (and stops) a vLLM server for the
    ``lmms-eval-vllm`` backend."""

    def __init__(self, backend: str, model_dir: Path, work: Path, benchmarks: list[str], bench_dir: Path | None,
                 *, batch_size: int = 64, max_new_tokens: int | None = None,
                 generation: dict[str, dict] | None = None, judge: Judge | None = None,
                 vllm_args: list[str] | None = None, task_data: Path | None = None,
                 max_over_context: float = MAX_OVER_CONTEXT, limit: dict[str, int] | None = None,
                 limit_seed: int = 0) -> None:
        if backend not in ("lmms-eval-hf", "lmms-eval-vllm"):
            raise ValueError(f"not an lmms-eval backend: {backend!r}")
        # absolute: lmms-eval runs with task_data as its working directory (selbench.evaluators.task_data)
        self.backend, self.model_dir, self.work = backend, Path(model_dir).resolve(), Path(work).resolve()
        self.task_data = Path(task_data).resolve() if task_data else None
        self.benchmarks, self.bench_dir, self.judge = benchmarks, bench_dir, judge
        self.batch_size, self.max_new_tokens, self.vllm_args = batch_size, max_new_tokens, vllm_args or []
        self.generation = generation or {}
        self.max_over_context = max_over_context
        self.limit, self.limit_seed = limit or {}, limit_seed
        self.server: VLLMServer | None = None
        self.over_context: list[str] = []
        self.judge_model: str | None = None  # what the judge's server answered to the preflight (once per session)
        self.info: dict[str, str] = {"lmms_eval": importlib.metadata.version("lmms_eval")}

    def __enter__(self) -> "LmmsEvalSession":
        from lmms_eval.tasks import TaskManager

        self.task_dir = write_task_dir(self.benchmarks, self.bench_dir, self.work / "tasks")
        # Only the embedded benchmarks: index just their generated task folder — indexing lmms-eval's hundreds of
        # shipped tasks costs seconds per evaluation, which the demo pays per checkpoint.
        shipped = not all(get(name).embedded for name in self.benchmarks)
        self.tasks = TaskManager(verbosity="WARNING", include_path=str(self.task_dir), include_defaults=shipped)
        if self.backend == "lmms-eval-hf":
            from selbench.evaluators.lmms_model import SelbenchHF

            self.lm = SelbenchHF(pretrained=str(self.model_dir), batch_size=self.batch_size)
            self.info["backend"] = "hf"
        else:
            self._start_vllm()
        return self

    def _start_vllm(self) -> None:
        from lmms_eval.models import get_model

        from selbench.evaluators.vllm_server import SERVED_NAME, VLLMServer, export_for_vllm

        exported = export_for_vllm(self.model_dir, self.work / "vllm-model")
        try:
            self.server = VLLMServer(exported, self.work / "vllm-server.log", extra_args=self.vllm_args).__enter__()
        except BaseException:  # __exit__ will not run: drop the scratch export here
            shutil.rmtree(exported, ignore_errors=True)
            raise
        server = self.server
        self.info["backend"] = f"vllm ({server.version()})"
        os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
        self.lm = get_model("openai")(
            model_version=SERVED_NAME, base_url=server.base_url, api_key="EMPTY", timeout=120,
            max_retries=2, retry_backoff_s=0.5, num_concurrent=8, prefix_aware_queue=False)
        self.lm.generate_until = self._answer_nothing_over_context(self.lm.generate_until)  # type: ignore[method-assign]

    def _answer_nothing_over_context(self, generate):
        """lmms-eval's openai model answers a failed request with the error text, which the task would then score
        (MMMU's parser finds an option letter in it); an item the server refused as longer than the context answers
        "" instead, as on the HF backend, and is recorded in ``over_context``."""
        def generate_until(requests):
            answers = []
            for answer in generate(requests):
                if isinstance(answer, str) and answer.startswith(REQUEST_FAILED) and OVER_CONTEXT.search(answer):
                    self.over_context.append(answer[:300])
                    answer = ""
                answers.append(answer)
            return answers
        return generate_until

    def _yaml(self, name: str, task: str) -> str:
        entry = self.tasks.task_index.get(task)
        if entry is None or entry.get("yaml_path") in (None, -1):
            raise EvaluationError(f"benchmark {name}: lmms-eval {self.info['lmms_eval']} has no task {task!r}")
        return str(entry["yaml_path"])

    def _task_config(self, name: str, task: str) -> dict:
        return task_config(self._yaml(name, task))

    def _local_data(self, name: str, task: str) -> str | None:
        """With ``task_data``: the fingerprint of the local copy a real benchmark's task reads (an EvaluationError
        naming the folder when there is none). None for embedded benchmarks and without ``task_data``."""
        if self.task_data is None or get(name).embedded:
            return None
        try:
            return fingerprint(local_repo(self.task_data, self._yaml(name, task)))
        except FileNotFoundError as e:
            raise EvaluationError(f"benchmark {name}: {e}") from None

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.stop()
            shutil.rmtree(self.work / "vllm-model", ignore_errors=True)

    def evaluate(self, name: str, required: Sequence[str] = ()) -> dict:
        """Run one benchmark; return ``{rows, predictions, seconds, task_hash, judge, items}`` (items: the
        per-item outcomes, selbench.evaluators.items, or None when the samples carry none)."""
        from lmms_eval import evaluator
        from lmms_eval.loggers import EvaluationTracker
        from lmms_eval.utils import get_datetime_str

        bench = get(name)
        if bench.embedded:
            data_file(bench, self.bench_dir)  # raises, naming the file, when it is missing
        try:
            task = task_for(bench, self.judge)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
        data = self._local_data(name, task)
        out = self.work / name
        shutil.rmtree(out, ignore_errors=True)  # a half-written earlier attempt
        tracker = EvaluationTracker(output_path=str(out))
        # what lmms-eval's CLI passes: hooks write their side files (MMBench's and TextVQA's submissions, OCRBench's
        # report) under output_path — without it, into the working directory — and process_results sees the docs
        # without their images unless a task asks for them (the CLI's default, --process_with_media off)
        cli_args = argparse.Namespace(output_path=str(out), process_with_media=False)
        overrides = dict(self.generation.get(name) or {})
        if self.backend == "lmms-eval-vllm":
            overrides = {**greedy_for_server(self._task_config(name, task).get("generation_kwargs") or {}), **overrides}
        self.over_context = []  # this benchmark's items that do not fit the context (both backends record here)
        if self.backend == "lmms-eval-hf":
            self.lm.over_context = self.over_context
        judged = self.judge if self.judge is not None and (bench.judge or bench.judge_fallback) else None
        guesses: list[int] | None = None
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if data is not None and self.task_data:
                stack.enter_context(reading_from(self.task_data))
            if judged is not None:
                stack.enter_context(self._judging(name, judged, bench.judge_api))
                if name in REPLY_CHECKS:
                    stack.enter_context(checked_replies(REPLY_CHECKS[name]))
                guesses = stack.enter_context(matcher_guesses()) if bench.judge_fallback else None
            hits = stack.enter_context(mmbench_hits()) if bench.outcomes == "mmbench" else None
            subset = SeededSubset(self.limit[name], self.limit_seed, self._yaml(name, task)) \
                if name in self.limit else None
            results = evaluator.simple_evaluate(
                model=self.lm, tasks=[subset.task(task) if subset else task], batch_size=self.batch_size,
                log_samples=True,
                evaluation_tracker=tracker, task_manager=self.tasks, verbosity="WARNING", cli_args=cli_args,
                gen_kwargs=generation_kwargs(self.max_new_tokens, overrides))
        seconds = time.perf_counter() - t0
        if results is None:
            raise EvaluationError(f"benchmark {name}: lmms-eval returned no results")
        samples = results.pop("samples")
        # simple_evaluate logs the model *object* as the source; the tracker deep-copies that field when saving
        # (a live client / model), so record what it is instead.
        general = tracker.general_config_tracker
        general.model_source = f"selbench {self.info['backend']}"
        general.model_name = general.model_name_sanitized = "model"
        tracker.save_results_aggregated(results=results, samples=samples, datetime_str=get_datetime_str())
        tracker.save_results_samples(task_name=task, samples=samples[task])
        # <output_path>/<model name>/<date>_results.json; side files may also end in _results.json (MMBench's
        # submissions/mmbench_en_dev_static_results.json), so only the tracker's folder counts
        files = sorted((out / general.model_name_sanitized).glob("*_results.json"))
        if not files:
            raise EvaluationError(f"benchmark {name}: lmms-eval wrote no results JSON under {out}")
        rows = parse_results(files[-1], task, required)
        logged = read_samples(out, task)
        preds = [prediction(s) for s in logged]
        failed = [p for p in preds if p.startswith(REQUEST_FAILED)]
        over = self.over_context
        if over and len(over) / len(preds) > self.max_over_context:
            raise EvaluationError(f"benchmark {name}: {len(over)} of {len(preds)} items do not fit the model's "
                                  f"context (each answers nothing; evaluation.max_over_context is "
                                  f"{self.max_over_context:g}): {over[0][:200]}")
        if failed:
            where = f" ({self.server.log_tail()})" if self.server is not None and not self.server.alive() else ""
            raise EvaluationError(f"benchmark {name}: {len(failed)} of {len(preds)} requests to the vLLM server "
                                  f"failed{where}: {failed[0][:200]}")
        # a sample logs the metric without its filter; MMBench's per-question hits come from its evaluator
        items = from_mmbench_hits(hits, logged) if hits is not None else \
            from_samples(logged, bench.metric.partition(",")[0])
        judging = None
        if judged is not None:
            sent, failed_n = (guesses[0], guesses[1]) if guesses is not None else (
                len(logged), failed_items(bench.metric, logged))
            judging = {**judged.record(), "served_model": self.judge_model, "calls": sent, "failed": failed_n,
                       "items": len(logged)}
            if len(logged) and failed_n / len(logged) > judged.max_failed:
                what = "random guesses by MMBench's matcher after unusable judge replies" if guesses is not None \
                    else "judge calls that failed or gave no usable score"
                raise EvaluationError(f"benchmark {name}: {failed_n} of {len(logged)} items are {what} (judge "
                                      f"{judged.model!r} at {judged.base_url}; evaluation.judge.max_failed is "
                                      f"{judged.max_failed:g}); lmms-eval's logs: {out}")
        return {"rows": rows, "predictions": preds, "seconds": seconds, "task": task,
                "task_hash": task_hash(name, self.bench_dir, task, data, subset.identity() if subset else None),
                "subset": subset.describe() if subset else None,
                "judge": judged.model if judged is not None else None, "judging": judging,
                "results_file": str(files[-1]), "items": items.to_json() if items is not None else None,
                "items_total": len(preds), "items_over_context": len(over)}

    @contextlib.contextmanager
    def _judging(self, name: str, judge: Judge, api: str):
        """The judge's environment for one benchmark, after a preflight (once per session) that it answers."""
        try:
            if self.judge_model is None:
                self.judge_model = preflight(judge)
            env = judge_env(judge, "endpoint" if api == "endpoint" else "client")
        except JudgeError as e:
            raise EvaluationError(f"benchmark {name}: {e}") from None
        with environment(env):
            yield
