"""Builds the embedded world: generated pool + benchmarks (selbench.pool.world) and tiny target / proxy VLMs
(selbench.models.tiny) with a short stage-1 alignment pretraining on captions, cached in the world folder.

Stage 1 here trains projector *and* LM (LLaVA's stage 1 trains only the projector, but its LM is a pretrained
Vicuna; ours starts from random init and must first learn the world's words).
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from selbench.models import tiny
from selbench.models.chat import render
from selbench.models.data import Collator, Example
from selbench.models.training import TrainConfig, train
from selbench.pool import world
from selbench.pool.llava import read_pool

STAGE1 = TrainConfig(method="full", lr=1e-3, projector_lr=None, epochs=3, batch_size=16, warmup_ratio=0.03,
                     freeze_vision=False)


def _tokenizer_corpus(root: Path) -> list[str]:
    return [render(list(s.turns), False, 0)[0]
            for name in ("pool.json", "captions.json")
            for s in read_pool(root / "pool" / name, check_images=False).samples]


def build_world(out: str | Path, *, seed: int = 0, n_samples: int = 3200, n_bench: int = 200,
                noise: float = world.NOISE, stage1: TrainConfig = STAGE1, log: Callable[[str], None] = print) -> Path:
    """Write data and models under ``out``. Each part is skipped when its ``*.done`` marker records the same
    parameters and world version; a changed generator or setting rebuilds it (and everything after it)."""
    world.check_noise(noise)  # before anything under ``out`` is touched: a bad setting loses no existing world
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _one_builder(out):
        _build(out, seed, n_samples, n_bench, noise, stage1, log)
    return out


@contextmanager
def _one_builder(out: Path) -> Iterator[None]:
    """One builder per world folder at a time, across processes (two runners on different stores, ``selbench
    world`` beside a run, two test workers): the others wait on the lock beside the folder, then find the parts
    marked done and reuse them instead of regenerating what is being read."""
    real = out.resolve()  # one lock per folder, however it is reached
    try:
        fh = open(real.parent / f".{real.name}.build.lock", "a")
    except OSError:  # a read-only parent (a world mounted for reuse): nothing can be built there, only read
        fh = None
    if fh is None:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def _build(out: Path, seed: int, n_samples: int, n_bench: int, noise: float, stage1: TrainConfig,
           log: Callable[[str], None]) -> None:
    data_key = {"world_version": world.WORLD_VERSION, "seed": seed, "n_samples": n_samples, "n_bench": n_bench,
                **({"noise": noise} if noise != world.NOISE else {})}  # worlds marked before the field are reused
    models_key = {**data_key, "stage1": stage1.model_dump(mode="json"), "target": tiny.TARGET.model_dump(),
                  "proxy": tiny.PROXY.model_dump()}
    data_done, models_done = out / "data.done", out / "models.done"
    if not _marked(data_done, data_key):
        log(f"generating pool ({n_samples} samples, {noise:.0%} label noise) and benchmarks ({n_bench} items each) "
            f"with seed {seed}")
        models_done.unlink(missing_ok=True)
        for part in ("pool", "benchmarks"):
            shutil.rmtree(out / part, ignore_errors=True)
        world.generate(out, seed=seed, n_samples=n_samples, n_bench=n_bench, noise=noise)
        data_done.write_text(json.dumps(data_key, sort_keys=True))
    if not _marked(models_done, models_key):
        tok = tiny.train_tokenizer(_tokenizer_corpus(out))
        captions = read_pool(out / "pool" / "captions.json", out / "pool")
        examples = [Example(list(s.turns), out / "pool" / s.image if s.image else None) for s in captions.samples]
        for name, cfg in (("target", tiny.TARGET), ("proxy", tiny.PROXY)):
            processor = tiny.build_processor(tok, cfg)
            model = tiny.build_model(tok, cfg)
            log(f"stage-1 alignment of the {name} on {len(examples)} captions")
            model, res = train(model, Collator(processor, cfg.n_image_tokens), examples,
                               stage1.model_copy(update={"seed": seed}))
            log(f"  {res.steps} steps in {res.wall_s:.1f}s, loss {res.losses[0]:.2f} → {res.losses[-1]:.2f}")
            tiny.save(model, processor, out / "models" / name)
        models_done.write_text(json.dumps(models_key, sort_keys=True))


def _marked(marker: Path, key: dict) -> bool:
    return marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(key, sort_keys=True))
