"""Docker executor: one container per job, running the same entrypoint as every executor
(``python -m selbench.harness.job STORE JOB``) in ``executor.image``, through the docker SDK.

What a job's container gets (docs/containers.md is the contract):
- the store, read-write, at its host path; every host path named by the job's config or its upstream jobs'
  (pool, images, models, benchmark data) and ``executor.docker_mounts``, read-only at the same path — so configs
  need no path translation;
- a read-only root file system with a tmpfs /tmp (HOME), plus ``executor.env``;
- GPUs as ``device_requests`` with explicit device ids (the scheduler's, as with CUDA_VISIBLE_DEVICES locally);
- every job writes its outputs to the staging folder the executor made for it (``SELBENCH_STAGING``; the
  executor checks, seals and publishes it after a clean exit: docs/containers.md, "Trust");
- selector jobs (score / select: the code a submission brings) are sandboxed: no network, the store read-only and
  only their staging folder writable; the other stages get ``executor.docker_network`` (default none) and the
  store read-write;
- the memory limit (``executor.memory_limit_mb``: an OOM kill is reported as such), CPUs (``threads_per_job``),
  a pid limit, the host's uid:gid (files in the store stay the user's), and the per-stage timeout.
The container's output is appended to the job's log when it ends; the container is then removed. Containers are
labelled with the runner and the store: the runner's watchdog removes them when the runner dies, and the next run
on the store removes any whose runner is dead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from selbench.harness.executors.handle import HandleState
from selbench.harness.executors.local import LocalExecutor, job_env, runner_alive
from selbench.harness.spec import ExecutorSpec
from selbench.harness.store import STORE_FOLDERS, Job, Store

SELECTOR_STAGES = ("score", "select")  # run submitted code: never networked
VIEWS = "views"  # STORE/views/<staging>: the store skeleton a selector's container sees (``sandbox_view``)
SANDBOX_UID = 65534  # nobody: a selector's container never runs as root, even when the runner does
# What never belongs in a copy of a package's source (build leftovers): for selector images and submissions.
SOURCE_IGNORE = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git")
CONTAINER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SELBENCH_NO_PROGRESS", "SELBENCH_VLLM_PYTHON")


def client(base_url: str | None = None):
    """A docker SDK client for ``base_url``, ``$DOCKER_HOST`` or the default socket; a clear error when no daemon
    answers."""
    import docker
    from docker.errors import DockerException

    try:
        c = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        c.ping()
        return c
    except DockerException as e:
        where = base_url or os.environ.get("DOCKER_HOST", "the default socket")
        raise RuntimeError(f"docker executor: no Docker daemon at {where} ({e})") from None


def sandbox_user() -> tuple[int, int]:
    """uid:gid of a selector's container: the runner's own, unless that is root (then nobody)."""
    uid = os.getuid()
    return (SANDBOX_UID, SANDBOX_UID) if uid == 0 else (uid, os.getgid())


def locked_down(spec: ExecutorSpec, sandboxed: bool = True) -> dict:
    """Container options every job gets — read-only root, no capabilities, no privilege gain, sized /tmp and
    /dev/shm, a pid limit — and, for selector code (``sandboxed``), also no network, an unprivileged user and
    memory / CPU limits even where the spec sets none (``executor.sandbox_*``)."""
    tmp = spec.sandbox_tmp_mb
    uid, gid = sandbox_user() if sandboxed else (os.getuid(), os.getgid())
    opts: dict = {"user": f"{uid}:{gid}", "read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
                  "tmpfs": {"/tmp": f"size={tmp}m,mode=1777", "/dev/shm": f"size={tmp}m"},
                  "pids_limit": spec.sandbox_pids if sandboxed else 4096, "network_mode": "none"}
    memory = spec.memory_limit_mb or (spec.sandbox_memory_mb if sandboxed else None)
    if memory:
        opts["mem_limit"] = opts["memswap_limit"] = f"{memory}m"  # no swap: over the limit is an OOM kill
    cpus = spec.threads_per_job or (spec.sandbox_cpus if sandboxed else None)
    if cpus:
        opts["nano_cpus"] = int(cpus * 1e9)
    return opts


def host_paths(config: object) -> set[Path]:
    """Existing absolute paths named anywhere in a job config (files → their folder)."""
    found: set[Path] = set()
    if isinstance(config, dict):
        for v in config.values():
            found |= host_paths(v)
    elif isinstance(config, (list, tuple)):
        for v in config:
            found |= host_paths(v)
    elif isinstance(config, str) and config.startswith("/"):
        p = Path(config.split(":", 1)[0])  # pool file ids are "PATH:size:mtime"
        if p.exists():  # resolved: a symlinked path would otherwise bypass the store view's (resolved) mount point
            found.add((p if p.is_dir() else p.parent).resolve())
    return found


def outermost(paths: set[Path]) -> list[Path]:
    """Drop paths inside other paths of the set (one bind mount covers them)."""
    out: list[Path] = []
    for p in sorted(paths, key=lambda x: len(x.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


class ContainerHandle(HandleState):
    """A running container as the scheduler sees it (same interface as ProcessHandle). ``seconds`` is the
    daemon's own measurement of the container (StartedAt → FinishedAt)."""

    def __init__(self, container, log: Path, memory_limit_mb: int | None, view: Path | None = None):
        super().__init__()
        self.container, self.log, self.memory_limit_mb, self.view = container, log, memory_limit_mb, view

    def poll(self) -> int | None:
        if self.rc is not None:
            return self.rc
        self.container.reload()
        state = self.container.attrs["State"]
        if state["Status"] not in ("exited", "dead"):
            return None
        self._finish(state)
        return self.rc

    def _finish(self, state: dict) -> None:
        with open(self.log, "ab") as fh:
            fh.write(self.container.logs(stdout=True, stderr=True))
            if state.get("OOMKilled"):
                fh.write(f"\n[selbench] container OOMKilled=true (memory limit {self.memory_limit_mb} MB)\n".encode())
        if state.get("OOMKilled"):
            self.error = f"out of memory (container OOM-killed at its {self.memory_limit_mb} MB limit)"
        self.rc = int(state.get("ExitCode", -1))
        self.seconds = container_seconds(state)
        self.container.remove(force=True)
        if self.view is not None:
            shutil.rmtree(self.view, ignore_errors=True)

    def kill(self) -> None:
        if self.rc is not None:
            return
        try:
            self.container.kill()
        except Exception:  # already gone
            pass
        for _ in range(100):
            if self.poll() is not None:
                return
            time.sleep(0.1)


def container_seconds(state: dict) -> float | None:
    """Wall seconds between the daemon's StartedAt and FinishedAt (RFC 3339 with nanoseconds)."""
    from datetime import datetime

    def parse(stamp: str) -> datetime:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")

    try:
        seconds = (parse(state["FinishedAt"]) - parse(state["StartedAt"])).total_seconds()
    except (KeyError, ValueError, TypeError):
        return None
    return seconds if seconds >= 0 else None


class DockerExecutor(LocalExecutor):
    def __init__(self, spec: ExecutorSpec, store: Store):
        if not spec.image:
            raise ValueError("executor.kind docker needs executor.image (e.g. selbench-harness:latest)")
        super().__init__(spec, store)
        self.docker = client(spec.docker_host)
        self.docker.images.get(spec.image)  # fail now, not per job, when the image is missing
        if spec.hf_home is not None and not spec.hf_home.resolve().is_dir():
            raise ValueError(f"executor.hf_home {spec.hf_home}: not a folder (the Hugging Face cache to mount)")
        self.watchdog_docker_host = spec.docker_host or ""  # "": the watchdog uses $DOCKER_HOST / the socket

    def cleanup(self) -> None:
        """Also remove this store's containers whose runner is dead (a killed run's; the watchdog normally has)."""
        super().cleanup()
        store = str(self.store.root.resolve())
        stale = [c for c in self.docker.containers.list(all=True, filters={"label": f"selbench.store={store}"})
                 if runner_alive(c.labels.get("selbench.runner", "")) is False]
        for c in stale:
            try:
                c.remove(force=True)
            except Exception:  # removed meanwhile
                pass
        if stale:
            self.on_message(f"removed {len(stale)} container(s) left by a killed run")
        views = self.store.root / VIEWS  # store skeletons of selector containers whose staging folder is gone
        for view in sorted(views.glob("*")) if views.is_dir() else []:
            if not (self.store.root / "jobs" / view.name).exists():
                shutil.rmtree(view, ignore_errors=True)

    def container_args(self, job: Job, gpus: tuple[int, ...] = (), staging: Path | None = None) -> dict:
        from docker.types import DeviceRequest, Mount

        store = self.store.root.resolve()
        staging = (staging or self.sandbox_staging(job.id)).resolve()
        sandboxed = job.stage in SELECTOR_STAGES
        named = outermost(host_paths(self.lineage_configs(job)) | {Path(p).resolve() for p in self.spec.docker_mounts})
        inside = [p for p in named if store in p.parents]  # e.g. an executor.docker_mounts folder in the store
        if sandboxed:  # the store as the selector sees it: its job spec, its inputs and its staging folder only
            view = self.sandbox_view(job, staging, inside)
            spec_file = str(store / "specs" / f"{job.id}.json")
            mounts = [Mount(str(store), str(view), type="bind", read_only=True),  # Mount(target, source)
                      Mount(spec_file, spec_file, type="bind", read_only=True)]
            for folder in sorted({store / "jobs" / dep for dep in job.deps.values()} | set(inside)):
                mounts.append(Mount(str(folder), str(folder), type="bind", read_only=True))
            mounts.append(Mount(str(staging), str(staging), type="bind", read_only=False))
        else:
            mounts = [Mount(str(store), str(store), type="bind", read_only=False)]
            if self.spec.hf_home is not None:  # datasets takes lock files in its cache: read-write
                hf = str(self.spec.hf_home.resolve())
                mounts.append(Mount(hf, hf, type="bind", read_only=False))
        for p in named:
            if p != store and store not in p.parents:
                mounts.append(Mount(str(p), str(p), type="bind", read_only=True))
        env = {k: v for k, v in job_env(self.spec.threads_per_job, None).items() if k in CONTAINER_ENV}
        env["HOME"] = "/tmp"  # the root file system is read-only; caches go to the container's tmpfs
        if self.spec.hf_home is not None and not sandboxed:
            env.update({"HF_HOME": str(self.spec.hf_home.resolve()), "HF_HUB_OFFLINE": "1",
                        "HF_DATASETS_OFFLINE": "1"})
        env.update(self.spec.sandbox_env if sandboxed else self.spec.job_env())  # executor.env may hold secrets
        env.update(self.job_tags(job, staging))  # SELBENCH_STAGING: every job writes there; the executor publishes
        args: dict = {
            "command": ["python", "-m", "selbench.harness.job", str(store), job.id],
            "mounts": mounts, "environment": env, "working_dir": "/tmp" if sandboxed else str(store), "detach": True,
            # the runner and the store: the watchdog and the next run remove a killed runner's containers
            "labels": {"selbench.job": job.id, "selbench.stage": job.stage, "selbench.runner": self.token,
                       "selbench.store": str(store)},
            **locked_down(self.spec, sandboxed),
        }
        if not sandboxed:
            args["network_mode"] = self.spec.docker_network
        if gpus:
            args["device_requests"] = [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]
        return args

    def sandbox_view(self, job: Job, staging: Path, inside: Sequence[Path] = ()) -> Path:
        """An empty skeleton of the store (``STORE/views/<staging name>``), mounted read-only over the store in a
        selector's container. It holds only the mount points of what the job may see — its spec, its upstream
        jobs' folders, its staging folder and named paths inside the store — so no other result, log or spec
        exists in there. Removed when the container ends (and by the next run if the runner died)."""
        store = self.store.root.resolve()
        view = self.view_path(staging)
        shutil.rmtree(view, ignore_errors=True)
        for sub in STORE_FOLDERS:
            (view / sub).mkdir(parents=True)
        (view / "specs" / f"{job.id}.json").touch()
        for folder in [*(store / "jobs" / dep for dep in job.deps.values()), staging, *inside]:
            (view / folder.relative_to(store)).mkdir(parents=True, exist_ok=True)
        uid, gid = sandbox_user()
        if (uid, gid) != (os.getuid(), os.getgid()):  # root runner: the job's unprivileged user owns its outputs
            os.chown(staging, uid, gid)
        return view

    def lineage_configs(self, job: Job) -> list[dict]:
        """The job's config and its upstream jobs' (a fine-tune reads the images its pool job named)."""
        configs, todo, seen = [], [job], set()
        while todo:
            j = todo.pop()
            configs.append(j.config)
            for dep in j.deps.values():
                if dep not in seen:
                    seen.add(dep)
                    todo.append(self.store.read_job(dep))
        return configs

    def view_path(self, staging: Path) -> Path:
        """Where ``sandbox_view`` puts the store skeleton of the job staged in ``staging``."""
        return self.store.root.resolve() / VIEWS / staging.resolve().name

    def sandbox_staging(self, job_id: str) -> Path:
        """The staging folder this runner gives a job (``Store.staging`` creates it and holds its owner lock)."""
        return self.store.staging_path(job_id).resolve()

    def _launch(self, job: Job, gpus: tuple[int, ...], staging: Path) -> ContainerHandle:
        log = self.store.log_path(job.id)
        image = job.config.get("image") or self.spec.image  # a submitted selector's jobs run in its own image
        with open(log, "ab") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.id} in {image} "
                     f"gpus={','.join(map(str, gpus)) or '<none>'}\n".encode())
        args = self.container_args(job, gpus, staging)
        view = self.view_path(staging) if job.stage in SELECTOR_STAGES else None
        try:
            container = self.docker.containers.run(image, **args)
        except Exception:
            if view is not None:
                shutil.rmtree(view, ignore_errors=True)
            raise
        limit = args.get("mem_limit")
        return ContainerHandle(container, log, int(limit[:-1]) if limit else None, view)


def build_image(docker_client, tag: str, dockerfile: str, repo: Path, *, base_image: str,
                wheels: Sequence[Path] = (), ca_bundle: Path | None = None, build_args: dict[str, str] | None = None,
                network: str = "host") -> str:
    """Build one of docker/*.Dockerfile with the repo as context, plus ``wheels/`` (local wheels such as the CPU
    torch) and ``certs/ca.crt`` (``ca_bundle``: the CA bundle pip needs behind a TLS-intercepting proxy).
    ``network`` host lets pip reach the package index from a daemon started with ``--bridge=none``."""
    with tempfile.TemporaryDirectory(prefix="sbimage-") as tmp:
        ctx = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, ctx / name)
        for name in ("src", "requirements", "tools", "docker"):
            shutil.copytree(repo / name, ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        (ctx / "wheels").mkdir()
        for w in wheels:
            shutil.copy2(w, ctx / "wheels" / w.name)
        (ctx / "certs").mkdir()
        if ca_bundle is not None:
            shutil.copy2(ca_bundle, ctx / "certs" / "ca.crt")
        _, logs = docker_client.images.build(
            path=str(ctx), dockerfile=f"docker/{dockerfile}", tag=tag, network_mode=network, rm=True,
            buildargs={"BASE_IMAGE": base_image, **(build_args or {})})
        return "".join(chunk.get("stream", "") for chunk in logs)


def build_selector_image(docker_client, tag: str, package: Path, repo: Path | None = None, *,
                         harness_image: str) -> str:
    """A submission image: docker/selector.Dockerfile (of ``repo``, default this checkout) with the selector
    package as its context, built with no network."""
    dockerfile = (repo or Path(__file__).resolve().parents[4]) / "docker" / "selector.Dockerfile"
    if not dockerfile.is_file():
        raise FileNotFoundError(f"{dockerfile}: not found (build submission images from a SelBench checkout)")
    with tempfile.TemporaryDirectory(prefix="sbselector-") as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(package, ctx, ignore=SOURCE_IGNORE)
        shutil.copy2(dockerfile, ctx / ".selbench.Dockerfile")
        _, logs = docker_client.images.build(path=str(ctx), dockerfile=".selbench.Dockerfile", tag=tag, rm=True,
                                             network_mode="none", buildargs={"HARNESS_IMAGE": harness_image})
        return "".join(chunk.get("stream", "") for chunk in logs)
