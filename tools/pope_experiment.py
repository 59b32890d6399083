"""Does the embedded target learn emb_pope from the whole pool? One experiment in about two minutes on one core.

Issue #14 asks the demo's full reference to beat the untuned target on every benchmark; on emb_pope (F1, POPE's
column) it does not (README "Known gaps", docs/embedded-pope.md). This tool reruns the question outside the harness:
generate the demo's world (or a variant of it), train the target's stage 1 on its captions, fine-tune on the whole
pool with the demo's recipe, and print every benchmark before and after, plus two diagnostics greedy decoding hides:

- ``pope_auc``: the AUC of the logit margin ``logit(" yes") − logit(" no")`` at the answer position over the
  benchmark's items (0.5: the model does not tell present from absent, whatever its answers);
- ``train_auc``: the same over the pool's own single-turn yes/no rows, against their labels as trained on (flipped
  ones included: on a 30 %-noise world a model right about every image scores ≈ 0.7, one that fits its labels 1.0);
- ``vqa_by_question``: emb_vqa per question form (colour of a shape at a position / shape at a position / where is).

Usage (from the repository root, ``.venv`` built)::

    .venv/bin/python tools/pope_experiment.py OUT [--noise 0.3] [--stage1-epochs 3] [--epochs 2] [--lr 5e-4]
        [--batch-size 8] [--yesno-noise P] [--probe cell|color|color-shape|cell-no-suffix]
        [--captions plain|grid|grid-shuffled] [--refer shape|position]
        [--reuse-stage1 OTHER_OUT] [--reuse-world OTHER_OUT]

World variants exist only here (they patch the generator in this process, never the package): ``--probe`` changes
the yes/no question of pool and benchmark alike, ``--captions`` the stage-1 captions, ``--yesno-noise`` the share of
flipped yes/no labels (the other skills keep ``--noise``; the world's ``truth.json`` still marks a row whose flip was
undone as noisy — this tool does not read it). ``--reuse-stage1`` copies another experiment's stage-1 target, with the
tokenizer it was trained with (valid when the captions are the same: same ``--noise``, ``--probe`` and ``--captions``;
``--refer`` and ``--yesno-noise`` keep them); ``--reuse-world`` fine-tunes on another experiment's world as it is, and
takes no world option. OUT must be new or hold no world yet. Results go to ``OUT/result.json`` (the arguments that
took effect, then each step's figures); the tuned target to ``OUT/tuned``.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from selbench import embedded
from selbench.evaluators.embedded import evaluate_hf
from selbench.evaluators.metrics import exact_match
from selbench.models import tiny
from selbench.models.data import Collator, Example
from selbench.models.training import TrainConfig, train
from selbench.pool import world
from selbench.pool.llava import read_pool
from selbench.pool.manifest import examples, manifest_from_pool

# ------------------------------------------------------------------ world variants (this process only)

_cell_question = world.q_yesno


def _color_question(scene: world.Scene, rng: np.random.Generator) -> tuple[str, str]:
    present = sorted({o.color for o in scene.objects})
    absent = [c for c in world.COLORS if c not in present]
    pick, answer = (present, "yes") if rng.random() < 0.5 else (absent, "no")
    return f"Is there a {pick[int(rng.integers(len(pick)))]} object in the image?\n{world.SHORT}", answer


def _color_shape_question(scene: world.Scene, rng: np.random.Generator) -> tuple[str, str]:
    """POPE's own form, an object category by name: "Is there a red circle in the image?" (random negatives)."""
    present = sorted({(o.color, o.shape) for o in scene.objects})
    absent = [(c, s) for c in world.COLORS for s in world.SHAPES if (c, s) not in present]
    pick, answer = (present, "yes") if rng.random() < 0.5 else (absent, "no")
    color, shape = pick[int(rng.integers(len(pick)))]
    return f"Is there a {color} {shape} in the image?\n{world.SHORT}", answer


def _cell_question_no_suffix(scene: world.Scene, rng: np.random.Generator) -> tuple[str, str]:
    """The position phrase right before the answer: the short-answer instruction dropped."""
    q, answer = _cell_question(scene, rng)
    return q.replace("\n" + world.SHORT, ""), answer


PROBES = {"cell": _cell_question, "color": _color_question, "color-shape": _color_shape_question,
          "cell-no-suffix": _cell_question_no_suffix}


def _cells(scene: world.Scene, order: list[int]) -> str:
    at = {o.cell: o for o in scene.objects}
    return "; ".join(f"{world.POSITIONS[c]}: " + (f"a {at[c].color} {at[c].shape}" if c in at else "empty")
                     for c in order) + "."


def _grid_caption(scene: world.Scene) -> str:
    """Every cell named in a fixed order, empty ones too: "top left: a red circle; top right: empty; …"."""
    if scene.number is not None:
        return f"the number {scene.number} written in black."
    return _cells(scene, [0, 1, 2, 3])


def _grid_shuffled_caption(scene: world.Scene) -> str:
    """The same, in an order drawn from the scene itself (deterministic), so that reading a cell after its name
    cannot rest on the name's fixed distance from the image."""
    if scene.number is not None:
        return f"the number {scene.number} written in black."
    key = [*scene.background, scene.jitter[0] + 2, scene.jitter[1] + 2,
           *(o.cell * 100 + list(world.COLORS).index(o.color) * 10 + world.SHAPES.index(o.shape)
             for o in scene.objects)]
    return _cells(scene, [int(c) for c in np.random.default_rng(key).permutation(4)])


def _color_by_position(scene: world.Scene, rng: np.random.Generator) -> tuple[str, str]:
    q, answer = _ask_color(scene, rng)
    return _by_position(q), answer


def _mc_by_position(scene: world.Scene, rng: np.random.Generator) -> tuple[str, str]:
    q, answer = _ask_mc(scene, rng)
    return _by_position(q), answer


def _by_position(question: str) -> str:
    """"What color is the circle at the top left?" → "What color is the object at the top left?": the object named
    by its place only, so the question cannot be answered by matching the shape."""
    for shape in world.SHAPES:
        question = question.replace(f" the {shape} at ", " the object at ")
    return question


_ask_color, _ask_mc = world.q_color, world.q_mc
CAPTIONS = {"plain": world.Scene.caption, "grid": _grid_caption, "grid-shuffled": _grid_shuffled_caption}


@contextmanager
def world_variant(*, probe: str = "cell", captions: str = "plain", refer: str = "shape", noise: float = 0.3,
                  yesno_noise: float | None = None) -> Iterator[None]:
    """The generator patched in this process while the block runs (``world.generate`` inside it), restored after.
    Every variant but another ``probe`` draws the same numbers from the world's generator, so the images (and the
    stage-1 captions of one ``captions`` form) are those of the unpatched world: a stage 1 can be reused."""
    if yesno_noise is not None and not 0 <= yesno_noise <= noise:
        raise SystemExit(f"--yesno-noise {yesno_noise} must lie in [0, --noise {noise}]")
    for name, value, known in (("probe", probe, PROBES), ("captions", captions, CAPTIONS),
                               ("refer", refer, ("shape", "position"))):
        if value not in known:
            raise SystemExit(f"--{name} {value!r}: one of {', '.join(known)}")
    saved = dict(world.ASK), world.Scene.caption, world._wrong_answer
    wrong, keep = world._wrong_answer, np.random.default_rng(123)

    def wrong_answer(skill: str, answer: str, rng: np.random.Generator) -> str:
        flipped = wrong(skill, answer, rng)  # drawn from the world's generator as before: the same images follow
        return answer if skill == "yesno" and keep.random() >= (yesno_noise or 0.0) / noise else flipped

    try:
        world.ASK["yesno"] = PROBES[probe]
        if refer == "position":
            world.ASK["color"], world.ASK["mc"] = _color_by_position, _mc_by_position
        world.Scene.caption = CAPTIONS[captions]  # type: ignore[method-assign]
        if yesno_noise is not None:
            world._wrong_answer = wrong_answer
        yield
    finally:
        world.ASK.clear()
        world.ASK.update(saved[0])
        world.Scene.caption = saved[1]  # type: ignore[method-assign]
        world._wrong_answer = saved[2]


# ------------------------------------------------------------------ diagnostics

@torch.no_grad()
def _margins(model, processor, questions: list[tuple[str, bytes]]) -> np.ndarray:
    collator = Collator(processor, model.config.image_seq_length, padding_side="left")
    tok = processor.tokenizer
    yes, no = (tok.encode(w, add_special_tokens=False) for w in (" yes", " no"))  # the answer follows "ASSISTANT:"
    assert len(yes) == len(no) == 1, (yes, no)
    out: list[float] = []
    model.eval()
    for s in range(0, len(questions), 100):
        batch = collator([Example([("user", q)], img) for q, img in questions[s:s + 100]], generation_prompt=True)
        logits = model(**batch.model_inputs()).logits[:, -1]
        out += (logits[:, yes[0]] - logits[:, no[0]]).tolist()
    return np.array(out)


def _auc(margins: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = margins[positive], margins[~positive]
    return round(float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()), 3)


def _diagnose(model, processor, wdir: Path) -> dict:
    bench = wdir / "benchmarks"
    res: dict = {}
    predictions: dict[str, list[str]] = {}
    for spec in world.BENCHMARKS:
        out = evaluate_hf(model, processor, spec.name, bench, batch_size=100)
        res[spec.name] = {r["metric"]: round(100 * r["value"], 1) for r in out["rows"]}
        predictions[spec.name] = out["predictions"]
    items = pq.read_table(bench / "emb_pope.parquet").to_pylist()
    res["pope_auc"] = _auc(_margins(model, processor, [(it["question"], it["image"]) for it in items]),
                           np.array([it["answer"] == "yes" for it in items]))
    rows = [r for r in json.loads((wdir / "pool" / "pool.json").read_text()) if r["skill"] == "yesno"]
    qs = [(r["conversations"][0]["value"].replace("<image>\n", "").replace("\n<image>", ""),
           (wdir / "pool" / r["image"]).read_bytes()) for r in rows]
    res["train_auc"] = _auc(_margins(model, processor, qs),
                            np.array([r["conversations"][1]["value"] == "yes" for r in rows]))
    items = pq.read_table(bench / "emb_vqa.parquet").to_pylist()  # in the order evaluate_hf answered them
    by: dict[str, list[bool]] = collections.defaultdict(list)
    for it, p in zip(items, predictions["emb_vqa"], strict=True):
        by[" ".join(it["question"].split()[:2])].append(bool(exact_match(p, it["answer"])))
    res["vqa_by_question"] = {k: round(100 * sum(v) / len(v), 1) for k, v in sorted(by.items())}
    return res


# ------------------------------------------------------------------ the experiment

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--noise", type=float, default=0.3, help="label noise of the pool (the demo's 0.3)")
    ap.add_argument("--yesno-noise", type=float, default=None, help="label noise of the yes/no turns only")
    ap.add_argument("--probe", choices=sorted(PROBES), default="cell")
    ap.add_argument("--captions", choices=sorted(CAPTIONS), default="plain")
    ap.add_argument("--refer", choices=["shape", "position"], default="shape",
                    help="colour and multiple-choice questions name the object by shape and place, or by place only")
    ap.add_argument("--stage1-epochs", type=float, default=embedded.STAGE1.epochs)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reuse-stage1", type=Path, default=None)
    ap.add_argument("--reuse-world", type=Path, default=None)
    a = ap.parse_args()
    world_options = ("noise", "yesno_noise", "probe", "captions", "refer", "stage1_epochs", "reuse_stage1")
    if a.reuse_world:
        given = [k for k in world_options if getattr(a, k) != ap.get_default(k)]
        if given:
            names = ", ".join("--" + k.replace("_", "-") for k in given)
            ap.error(f"--reuse-world takes the world as it is: drop {names}")
        if not (a.reuse_world / "world" / "models" / "target").is_dir():
            ap.error(f"--reuse-world {a.reuse_world}: no world/models/target there (an experiment's OUT)")
    elif a.reuse_stage1 and not (a.reuse_stage1 / "world" / "models" / "target").is_dir():
        ap.error(f"--reuse-stage1 {a.reuse_stage1}: no world/models/target there (an experiment's OUT that built one)")
    if a.stage1_epochs <= 0 or a.epochs <= 0:
        ap.error("--stage1-epochs and --epochs must be above 0")
    if (a.out / "world").exists():
        ap.error(f"{a.out / 'world'} exists: give each experiment a new OUT")
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    shown = [k for k in vars(a) if not (a.reuse_world and k in world_options)]
    result: dict = {"args": {k: str(getattr(a, k)) for k in shown}}

    def say(key: str, value) -> None:
        result[key] = value
        print(key, json.dumps(value), flush=True)
        (a.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")

    if a.reuse_world:
        wdir = a.reuse_world / "world"
    else:
        wdir = a.out / "world"
        with world_variant(probe=a.probe, captions=a.captions, refer=a.refer, noise=a.noise,
                           yesno_noise=a.yesno_noise):
            world.generate(wdir, seed=0, n_samples=3200, n_bench=200, noise=a.noise)
        if a.reuse_stage1:
            shutil.copytree(a.reuse_stage1 / "world" / "models" / "target", wdir / "models" / "target")
        else:
            tok = tiny.train_tokenizer(embedded._tokenizer_corpus(wdir))
            caps = read_pool(wdir / "pool" / "captions.json", wdir / "pool")
            exs = [Example(list(s.turns), wdir / "pool" / s.image if s.image else None) for s in caps.samples]
            processor, model = tiny.build_processor(tok, tiny.TARGET), tiny.build_model(tok, tiny.TARGET)
            stage1 = embedded.STAGE1.model_copy(update={"epochs": a.stage1_epochs, "seed": 0})
            model, res = train(model, Collator(processor, tiny.TARGET.n_image_tokens), exs, stage1)
            say("stage1", {"captions": len(exs), "steps": res.steps, "seconds": round(res.wall_s, 1),
                           "last_loss": round(res.losses[-1], 3)})
            tiny.save(model, processor, wdir / "models" / "target")
    model, processor = tiny.load(wdir / "models" / "target")
    say("untuned", _diagnose(model, processor, wdir))
    pool, _ = manifest_from_pool(wdir / "pool" / "pool.json")
    recipe = TrainConfig(method="full", lr=a.lr, projector_lr=None, epochs=a.epochs, batch_size=a.batch_size,
                         warmup_ratio=0.03)
    t0 = time.perf_counter()
    model, res = train(model, Collator(processor, model.config.image_seq_length), examples(pool), recipe)
    say("finetune", {"steps": res.steps, "seconds": round(time.perf_counter() - t0, 1),
                     "last_loss": round(res.losses[-1], 3)})
    say("tuned", _diagnose(model, processor, wdir))
    tiny.save(model, processor, a.out / "tuned")


if __name__ == "__main__":
    main()
