"""``selbench submit``: a new selector goes through the conformance checks, then the standard protocol of a spec,
and lands on that spec's leaderboard labelled ``NAME [submission VERSION]``.

A submission is either
- a Python package declaring exactly one entry point in ``selbench.selectors`` (templates/selector/ is a starting
  point). It is installed with ``pip --target`` into ``STORE/submissions/<dist>-<version>/site`` — never into the
  harness's own environment — and jobs see it through PYTHONPATH (mounted read-only under the Docker executor); or
- a container image built FROM the harness image (docker/selector.Dockerfile); its score/select jobs run in it
  (``SelectorSpec.image``, Docker executor only), the other stages in the harness image.

Sandbox: the spec's executor with its limits (memory, per-stage timeouts, CPUs). Under the Docker executor the
selector's jobs also get no network, a read-only store and pool, and write only their own output folder
(docs/containers.md). Under the local executor only the memory and time limits apply — say ``executor.kind:
docker`` for untrusted code.

Conformance, before any fine-tuning: two independent runs (separate stores) of prepare → score → select at the
spec's smallest budget and first seed. Any failure (crash, timeout, OOM, network, a write outside its output,
wrong count, duplicate or out-of-range indices — the select stage enforces the contract) or two different
selections for the same seed rejects the submission with the reasons; nothing is added to the leaderboard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from selbench.harness.contracts import FAILED
from selbench.harness.executors import make_executor
from selbench.harness.executors.docker import SOURCE_IGNORE
from selbench.harness.plan import build_plan
from selbench.harness.spec import ExecutorSpec, RunSpec, load_spec
from selbench.harness.stages.select import checked_selection
from selbench.harness.store import Store
from selbench.selectors.base import Budget, SelectionError

DESCRIBE_TIMEOUT_S = 120  # a submission image answers `describe` within this, or is rejected
DESCRIBE_MAX_BYTES = 1 << 20  # of its output read back


class SubmissionError(ValueError):
    pass


@dataclass
class Submission:
    name: str  # the selector's registry name
    version: str
    source: str  # package folder or image
    site: Path | None = None  # a package's install folder (PYTHONPATH)
    image: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} [submission {self.version}]"

    def selector(self, label: str | None = None) -> dict:
        return {"name": self.name, "label": label or self.label, **({"image": self.image} if self.image else {})}


def read_package(path: Path) -> tuple[str, str, str]:
    """(distribution, version, selector name) from a package's pyproject.toml — read as data, nothing imported."""
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        raise SubmissionError(f"{path}: not a Python package (no pyproject.toml)")
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
        dist, version = str(project["name"]), str(project["version"])
    except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError) as e:
        raise SubmissionError(f"{pyproject}: needs [project] name and version ({e})") from None
    eps = project.get("entry-points", {}).get("selbench.selectors", {})
    if len(eps) != 1:
        raise SubmissionError(f"{pyproject}: declare exactly one selector under "
                              f"[project.entry-points.\"selbench.selectors\"] (found {len(eps)})")
    return dist, version, next(iter(eps))


def image_tag(dist: str, version: str) -> str:
    """The tag a package submission's image gets: ``selbench-submission/<dist>:<version>`` (Docker's alphabet)."""
    def clean(text: str, allowed: str) -> str:
        return "".join(c if c.isalnum() or c in allowed else "-" for c in text.lower()).strip("-.") or "x"

    return f"selbench-submission/{clean(dist, '-_.')}:{clean(version, '-_.')[:128]}"


def from_package(path: Path, store: Path, executor: ExecutorSpec | None = None, *,
                 trust_local: bool = False) -> Submission:
    """Under the Docker executor the package is built into its own image FROM the harness image
    (docker/selector.Dockerfile, no network) and runs only there: this process never installs or imports it.
    Under another executor it runs with the user's own rights, so it takes ``trust_local``; it is then
    installed beside the store (never into the harness's environment) and imported here for planning."""
    dist, version, name = read_package(path)
    if executor is not None and executor.kind == "docker":
        from selbench.harness.executors.docker import build_selector_image, client

        if not executor.image:
            raise SubmissionError("executor.kind docker needs executor.image (the harness image)")
        tag = image_tag(dist, version)
        try:
            build_selector_image(client(executor.docker_host), tag, path, harness_image=executor.image)
        except Exception as e:  # docker's BuildError / APIError: the build log says why
            log = "".join(str(c.get("stream", c.get("error", ""))) for c in getattr(e, "build_log", []) or [])
            raise SubmissionError(f"{path}: its image did not build ({e}) {log.strip()[-800:]}") from None
        return Submission(name, version, str(path), image=tag)
    if not trust_local:
        raise SubmissionError(
            f"{path}: a package submission runs only in a container. Set executor.kind: docker (and executor.image, "
            "the harness image) in the spec, or pass --trust-local to run its code with your own rights — it is "
            "then also imported by this process to plan the run.")
    site = (store / "submissions" / f"{dist}-{version}" / "site").resolve()
    if not site.is_dir():
        tmp = site.with_name("site.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="sbsubmit-") as build:  # setuptools writes build/ into the source
            src = Path(build) / "src"
            shutil.copytree(path, src, ignore=SOURCE_IGNORE)
            done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                                   "--target", str(tmp), str(src)], capture_output=True, text=True)
        if done.returncode:
            raise SubmissionError(f"{path}: pip could not install it: {done.stderr.strip()[-800:]}")
        tmp.rename(site)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))  # so this process's registry (planning) sees the entry point
    return Submission(name, version, str(path), site=site)


def describe_image(executor: ExecutorSpec, image: str, name: str, config: dict | None = None) -> dict:
    """The selector's registry entry as its own image reports it (``registry.describe``), asked in a locked-down
    container (no network, read-only, no capabilities, unprivileged): its name, needs and config schema, and the
    config checked against that schema. SubmissionError when the image is missing or says something is wrong."""
    from docker.errors import DockerException, ImageNotFound

    from selbench.harness.executors.docker import client, locked_down
    from selbench.selectors.registry import DESCRIBE

    docker = client(executor.docker_host)
    try:
        container = docker.containers.run(image, ["python", "-c", DESCRIBE, name, json.dumps(config or {})],
                                          environment={"HOME": "/tmp"}, detach=True, **locked_down(executor))
    except ImageNotFound:
        raise SubmissionError(f"image {image}: not found by the Docker daemon") from None
    except DockerException as e:
        raise SubmissionError(f"image {image}: {e}") from None
    try:
        try:
            code = int(container.wait(timeout=DESCRIBE_TIMEOUT_S).get("StatusCode", -1))
        except Exception:  # the client's read timeout: the image's code did not answer
            raise SubmissionError(f"image {image}: no description of {name!r} within {DESCRIBE_TIMEOUT_S} s") from None
        out = container.logs(stdout=True, stderr=False)[-DESCRIBE_MAX_BYTES:]
        if code != 0:
            err = container.logs(stdout=False, stderr=True)[-600:].decode(errors="replace").strip()
            raise SubmissionError(f"image {image}: cannot describe selector {name!r} (exit {code}: {err})")
    finally:
        try:
            container.remove(force=True)
        except DockerException:
            pass
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        info = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise SubmissionError(f"image {image}: its selector description is not JSON: {lines[-1:]!r}") from None
    if not isinstance(info, dict) or info.get("error"):
        raise SubmissionError(f"image {image}: {info.get('error') if isinstance(info, dict) else info!r}")
    return info


def from_image(image: str, name: str) -> Submission:
    version = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    return Submission(name, version, image, image=image)


def _with_submission(data: dict, sub: Submission) -> dict:
    data = json.loads(json.dumps(data, default=str))
    executor = data.setdefault("executor", {})
    if sub.site is not None:
        env = executor.setdefault("env", {})
        env["PYTHONPATH"] = ":".join(p for p in (str(sub.site), env.get("PYTHONPATH")) if p)  # --trust-local only
    if sub.image is not None and executor.get("kind") != "docker":
        raise SubmissionError("an image submission runs under the Docker executor: set executor.kind docker "
                              "(and executor.image, the harness image)")
    return data


def conformance(spec_path: Path, sub: Submission, work: Path) -> list[str]:
    """Problems found by two independent prepare → score → select runs (empty: conforms)."""
    work.mkdir(parents=True, exist_ok=True)
    data = _with_submission(yaml.safe_load(spec_path.read_text()), sub)
    spec0 = load_spec(spec_path)
    budget = min(spec0.budgets, key=lambda b: Budget.parse(b).resolve(10**9))
    problems, picks = [], []
    if sub.image is not None:  # name and config checked by the image itself, before any job
        describe_image(spec0.executor, sub.image, sub.name, sub.selector().get("config"))
    for replica in (1, 2):
        run = {**data, "selectors": [sub.selector()], "budgets": [budget], "seeds": spec0.seeds[:1],
               "store": str(work / f"conformance-{replica}")}
        path = work / f"conformance-{replica}.yaml"
        path.write_text(yaml.safe_dump(run))
        spec = load_spec(path).resolved(Path.cwd())
        plan = build_plan(spec)
        cell = plan.cells[0]
        jobs = [j for j in plan.jobs if j.id in (cell.jobs["prepare"], cell.jobs["score"], cell.jobs["select"])]
        store = Store(spec.store)
        outcomes = make_executor(spec.executor, store).run(jobs)
        bad = [(j.stage, outcomes[j.id]) for j in jobs if outcomes[j.id].status in FAILED]
        for stage, o in bad:
            if o.status == "failed":
                problems.append(f"run {replica}, {stage}: {o.reason}")
        if bad:
            break
        try:  # the harness's own check: an image's in-container check is the submission's code
            picks.append(checked_selection(store, store.read_job(cell.jobs["select"])))
        except SelectionError as e:
            problems.append(f"run {replica}, select: {e}")
            break
    if len(picks) == 2 and picks[0] != picks[1]:
        differ = len(set(picks[0]) ^ set(picks[1])) // 2
        problems.append(f"non-deterministic: two runs with seed {spec0.seeds[0]} at budget {budget} selected "
                        f"different samples ({differ} of {len(picks[0])} differ)")
    return problems


def submit(spec_path: Path, sub: Submission):
    """Conformance, then the spec's protocol with the submission added; returns the runner's RunResult."""
    from selbench.harness import runner

    spec: RunSpec = load_spec(spec_path).resolved(Path.cwd())
    work = spec.store / "submissions" / f"{sub.name}-{sub.version}"
    work.mkdir(parents=True, exist_ok=True)
    problems = conformance(spec_path, sub, work)
    if problems:
        raise SubmissionError(f"{sub.label} rejected: " + "; ".join(problems))
    data = _with_submission(yaml.safe_load(spec_path.read_text()), sub)
    if any(s.get("name") == sub.name for s in data["selectors"]):
        raise SubmissionError(f"the spec already has a selector named {sub.name!r}")
    data["selectors"] = [*data["selectors"], sub.selector()]
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return runner.run(path, base=Path.cwd())
