"""Local data for lmms-eval's own tasks (``evaluation.task_data``): the shipped task YAMLs and hooks run unchanged,
only where their data sets are read from differs.

``task_data`` is a folder holding each data set at its Hub id — ``ROOT/lmms-lab-encoder/POPE/`` with the repository's
``README.md`` (its ``configs:``) and data files — as ``huggingface-cli download <id> --repo-type dataset --local-dir
ROOT/<id>`` leaves it, or as ``selbench.evaluators.task_fixtures`` writes the rehearsal fixtures. lmms-eval runs with
ROOT as its working directory, and ``datasets.load_dataset(path, name)`` resolves a ``path`` that names an existing
local folder as that local repository before it asks the Hub (datasets' documented order: packaged module, local
folder, Hub). So ``load_dataset("lmms-lab-encoder/POPE", "Full")`` in lmms-eval's ``ConfigurableTask.download`` reads
ROOT/lmms-lab-encoder/POPE — and so does every data set a task's own hook loads by Hub id: GQA's ``process_docs``
loads ``lmms-lab-encoder/GQA`` / ``testdev_balanced_images`` itself, which no ``dataset_path`` override could reach.
Nothing is downloaded; a data set missing under ROOT is an error naming the folder, before lmms-eval starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def task_config(yaml_path: str | Path) -> dict:
    """A task YAML as lmms-eval reads it (includes resolved; ``!function`` hooks left unimported)."""
    from lmms_eval import utils

    return utils.load_yaml_config(str(yaml_path), mode="simple")


def dataset_of(yaml_path: str | Path) -> tuple[str, str | None]:
    """The ``(dataset_path, dataset_name)`` a shipped lmms-eval task reads."""
    config = task_config(yaml_path)
    return str(config["dataset_path"]), config.get("dataset_name")


def local_repo(root: Path, yaml_path: str | Path) -> Path:
    """The folder under ``root`` that a task's data set is read from; FileNotFoundError naming it when missing."""
    path, _ = dataset_of(yaml_path)
    folder = Path(root) / path
    if not folder.is_dir():
        raise FileNotFoundError(f"no local copy of the data set {path} at {folder} (evaluation.task_data)")
    return folder


def fingerprint(folder: Path) -> str:
    """What identifies a local data set cheaply (real ones are GBs): its card and each data file's path and size."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts):
        h.update(f"{f.relative_to(folder)}:{f.stat().st_size}\n".encode())
        if f.name == "README.md":
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def reading_from(root: Path) -> Iterator[None]:
    """lmms-eval's data sets resolved under ``root`` for the length of the block (the working directory; restored
    after). Everything lmms-eval writes goes to absolute paths (the session's output folder)."""
    previous = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)
