"""Executors run the same job entrypoint in different places: subprocesses, containers, Ray tasks."""

from __future__ import annotations

from selbench.harness.spec import ExecutorSpec
from selbench.harness.store import Store


def make_executor(spec: ExecutorSpec, store: Store):
    if spec.kind == "local":
        from selbench.harness.executors.local import LocalExecutor

        return LocalExecutor(spec, store)
    if spec.kind == "ray":
        from selbench.harness.executors.raycluster import RayExecutor

        return RayExecutor(spec, store)
    if spec.kind == "docker":
        from selbench.harness.executors.docker import DockerExecutor

        return DockerExecutor(spec, store)
    raise ValueError(f"unknown executor {spec.kind!r} (local, docker, ray)")
