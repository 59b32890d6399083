"""The embedded world: a deterministic, generated stand-in for LLaVA-665K and its benchmarks.

Small rendered images (coloured shapes on a 2×2 grid, rendered numbers) with several skills, a skewed skill
mix, near-duplicate images, images shared by several questions (as COCO images are in LLaVA-665K), some noisy
labels and a few text-only rows — so that *which* samples are kept measurably matters. Everything is drawn
from one ``numpy.random.Generator`` per part, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# 2: label noise in multi-turn rows follows each turn's skill; 3: positional yes/no existence; 4: the generator's
# ground truth per row (pool/truth.json) for the sanity references; 5: the truth names each row's id
WORLD_VERSION = 5
TRUTH = "truth.json"  # beside pool.json: per pool row, the generator's ground truth (make_pool)
IMAGE_SIZE = 32
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 205, 30), "purple": (140, 60, 180), "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
SHORT = "Answer the question using a single word or phrase."
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEF"

NOISE = 0.06  # share of turns whose label is replaced by a plausible wrong one
# Skewed skill mix of the pool (LLaVA-665K is dominated by short VQA too).
POOL_SKILLS = {
    "color": 0.24, "shape": 0.07, "position": 0.06, "yesno": 0.20, "mc": 0.10,
    "count": 0.10, "ocr": 0.13, "multiturn": 0.06, "text": 0.04,
}


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    cell: int  # index into POSITIONS


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...] = ()
    number: int | None = None  # a rendered number instead of shapes
    background: tuple[int, int, int] = (245, 245, 245)
    jitter: tuple[int, int] = (0, 0)

    def caption(self) -> str:
        if self.number is not None:
            return f"the number {self.number} written in black."
        parts = [f"a {o.color} {o.shape} at the {POSITIONS[o.cell]}" for o in self.objects]
        return " and ".join(parts) + "."


def _font() -> ImageFont.ImageFont:
    # The bitmap default font renders identically everywhere (no FreeType hinting differences).
    return ImageFont.load_default_imagefont()


def render(scene: Scene) -> bytes:
    im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), scene.background)
    d = ImageDraw.Draw(im)
    dx, dy = scene.jitter
    if scene.number is not None:
        # One digit, drawn at twice the bitmap font's size so it spans several 8×8 patches.
        glyph = Image.new("L", (16, 16), 0)
        ImageDraw.Draw(glyph).text((5, 2), str(scene.number), fill=255, font=_font())
        glyph = glyph.resize((32, 32), Image.NEAREST)
        im.paste((0, 0, 0), (dx, dy), glyph)
    for o in scene.objects:
        cx = (o.cell % 2) * 16 + 8 + dx
        cy = (o.cell // 2) * 16 + 8 + dy
        r = 5
        fill = COLORS[o.color]
        if o.shape == "circle":
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif o.shape == "square":
            d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            d.polygon([(cx, cy - r - 1), (cx - r - 1, cy + r), (cx + r + 1, cy + r)], fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def random_scene(rng: np.random.Generator, *, numbers: bool = False) -> Scene:
    bg = tuple(int(v) for v in rng.integers(225, 256, size=3))
    if numbers:
        return Scene(number=int(rng.integers(0, 10)), background=bg)  # type: ignore[arg-type]
    n = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    cells = rng.permutation(4)[:n]
    colors = list(COLORS)
    objs = tuple(
        Obj(colors[int(rng.integers(len(colors)))], SHAPES[int(rng.integers(3))], int(c)) for c in sorted(cells)
    )
    return Scene(objects=objs, background=bg)  # type: ignore[arg-type]


def near_duplicate(scene: Scene, rng: np.random.Generator) -> Scene:
    jitter = (int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
    return Scene(scene.objects, scene.number, scene.background, jitter)


# ---------------------------------------------------------------- questions (one function per skill)

def _plural(shape: str) -> str:
    return shape + "s"


def q_color(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    return f"What color is the {o.shape} at the {POSITIONS[o.cell]}?\n{SHORT}", o.color


def q_shape(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    return f"What shape is at the {POSITIONS[o.cell]}?\n{SHORT}", o.shape


def q_position(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    return f"Where is the {o.color} {o.shape}?\n{SHORT}", POSITIONS[o.cell]


def q_yesno(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    # POPE probes object existence with balanced yes/no questions. At this scale the probe is positional ("is
    # there an object at ..."): a tiny model learns it from the mixed pool, whereas existence of a *colour*
    # anywhere in the image it does not learn from the mixture (world version 2: the tuned model said "no" to all).
    occupied = sorted(o.cell for o in scene.objects)
    empty = [c for c in range(len(POSITIONS)) if c not in occupied]
    if not empty or rng.random() < 0.5:
        cell, answer = occupied[int(rng.integers(len(occupied)))], "yes"
    else:
        cell, answer = empty[int(rng.integers(len(empty)))], "no"
    return f"Is there an object at the {POSITIONS[cell]}?\n{SHORT}", answer


def q_count(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.5:
        return f"How many objects are there in the image?\n{SHORT}", str(len(scene.objects))
    shape = SHAPES[int(rng.integers(3))]
    n = sum(o.shape == shape for o in scene.objects)
    return f"How many {_plural(shape)} are there?\n{SHORT}", str(n)


def q_mc(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    # MMBench-style lettered options. The option list is the same six colours in a fixed order: a tiny model
    # learns "letter of the colour" but not option-list reading, which is not what this world measures.
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    body = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(COLORS))
    q = f"Which color is the {o.shape} at the {POSITIONS[o.cell]}?\n{body}\n{MC_SUFFIX}"
    return q, LETTERS[list(COLORS).index(o.color)]


def q_ocr(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    return f"What number is written in the image?\n{SHORT}", str(scene.number)


def q_text(rng: np.random.Generator) -> tuple[str, str]:
    a, b = int(rng.integers(0, 10)), int(rng.integers(0, 10))
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?\n{SHORT}", str(a + b)
    return f"What number comes after {a}?\n{SHORT}", str(a + 1)


ASK = {"color": q_color, "shape": q_shape, "position": q_position, "yesno": q_yesno,
       "count": q_count, "mc": q_mc, "ocr": q_ocr}


def _wrong_answer(skill: str, answer: str, rng: np.random.Generator) -> str:
    """A plausible wrong label of the same type (label noise)."""
    choices = {
        "color": list(COLORS), "shape": list(SHAPES), "position": list(POSITIONS),
        "yesno": ["yes", "no"], "mc": list(LETTERS), "count": ["0", "1", "2", "3", "4"],
    }.get(skill, [str(v) for v in range(10)])
    wrong = [c for c in choices if c != answer]
    return wrong[int(rng.integers(len(wrong)))]


# ---------------------------------------------------------------- the pool

def make_pool(out: Path, n_samples: int, seed: int, noise: float = NOISE
              ) -> tuple[list[dict], list[dict], list[dict]]:
    """Write ``images/*.png`` under ``out``; return the LLaVA-format rows, stage-1 caption rows (one per image,
    LCS-558K-like) and the generator's ground truth per row (``{"id", "skill", "noisy", "scene"}``: whether any turn's
    label was flipped, the base scene its image is a near-duplicate of, -1 for text rows) — what the sanity
    references (selbench.pool.sanity) select by; selectors never see it."""
    rng = np.random.default_rng([seed, 1])
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    n_base = max(50, n_samples // 6)
    bases = [random_scene(rng, numbers=i % 4 == 0) for i in range(n_base)]
    # Zipf-like popularity: a few scenes appear (as near-duplicates) very often — real redundancy.
    pop = 1.0 / np.arange(1, n_base + 1) ** 0.8
    pop /= pop.sum()
    images: list[tuple[str, Scene]] = []
    rows: list[dict] = []
    truth: list[dict] = []
    scene_of: dict[str, int] = {}  # image name → base scene
    skills = list(POOL_SKILLS)
    probs = np.array([POOL_SKILLS[s] for s in skills])
    i = 0
    while len(rows) < n_samples:
        skill = skills[int(rng.choice(len(skills), p=probs))]
        if skill == "text":
            q, a = q_text(rng)
            rows.append({"id": f"text-{i}", "conversations": [
                {"from": "human", "value": q}, {"from": "gpt", "value": a}], "skill": skill})
            truth.append({"id": f"text-{i}", "skill": skill, "noisy": False, "scene": -1})
            i += 1
            continue
        want_numbers = skill == "ocr"
        # Reuse an existing image a third of the time (several questions per image), else a new near-dup.
        reuse = [k for k, (_, s) in enumerate(images) if (s.number is not None) == want_numbers]
        if reuse and rng.random() < 0.35:
            name, scene = images[reuse[int(rng.integers(len(reuse)))]]
        else:
            cands = [k for k, s in enumerate(bases) if (s.number is not None) == want_numbers]
            p = pop[cands] / pop[cands].sum()
            base = cands[int(rng.choice(len(cands), p=p))]
            scene = near_duplicate(bases[base], rng)
            name = f"{len(images):06d}.png"
            scene_of[name] = base
            (img_dir / name).write_bytes(render(scene))
            images.append((name, scene))
        if skill == "multiturn":
            turn_skills = [str(s) for s in rng.permutation(["color", "shape", "position", "yesno"])
                           [: int(rng.integers(2, 4))]]
        else:
            turn_skills = [skill]
        conv = []
        noisy = False
        for t, turn_skill in enumerate(turn_skills):
            q, a = ASK[turn_skill](scene, rng)
            if rng.random() < noise:
                a = _wrong_answer(turn_skill, a, rng)
                noisy = True
            if t == 0:
                # LLaVA-665K has the tag before *and* after the question; keep both forms.
                q = f"<image>\n{q}" if rng.random() < 0.8 else f"{q}\n<image>"
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        # Ids repeat in real data (same COCO id, several rows): id by image, not by row.
        rows.append({"id": name.removesuffix(".png"), "image": f"images/{name}", "conversations": conv,
                     "skill": skill})
        truth.append({"id": rows[-1]["id"], "skill": skill, "noisy": noisy, "scene": scene_of[name]})
        i += 1
    captions = [{"id": f"cap-{name.removesuffix('.png')}", "image": f"images/{name}",
                 "conversations": [{"from": "human", "value": "<image>\nDescribe the image briefly."},
                                   {"from": "gpt", "value": scene.caption()}]}
                for name, scene in images]
    return rows, captions, truth


# ---------------------------------------------------------------- benchmarks

@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    skills: tuple[str, ...]
    metric: str  # exact_match | accuracy_f1
    mirrors: str


BENCHMARKS = (
    BenchmarkSpec("emb_vqa", ("color", "shape", "position"), "exact_match", "GQA / TextVQA (short-answer VQA)"),
    BenchmarkSpec("emb_mc", ("mc",), "exact_match", "MMBench / ScienceQA (multiple choice, letter)"),
    BenchmarkSpec("emb_pope", ("yesno",), "accuracy_f1", "POPE (yes/no existence: accuracy, F1)"),
    BenchmarkSpec("emb_count", ("count",), "exact_match", "counting (CountBench-like)"),
    BenchmarkSpec("emb_ocr", ("ocr",), "exact_match", "OCRBench / TextVQA (reading rendered text)"),
)


def make_benchmark(spec: BenchmarkSpec, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 2, BENCHMARKS.index(spec)])
    items = []
    for k in range(n):
        scene = random_scene(rng, numbers=spec.skills == ("ocr",))
        skill = spec.skills[k % len(spec.skills)]
        q, a = ASK[skill](scene, rng)
        items.append({"question_id": f"{spec.name}-{k:04d}", "question": q, "answer": a, "skill": skill,
                      "image": render(scene)})
    return items


def check_noise(noise: float) -> None:
    if not 0 <= noise < 1:
        raise ValueError(f"world noise must be in [0, 1): got {noise}")


def generate(out: str | Path, *, seed: int = 0, n_samples: int = 3200, n_bench: int = 200,
             noise: float = NOISE) -> dict:
    """Write the embedded world's data (pool, captions, benchmarks) under ``out``; ``noise`` is the share of pool
    turns whose label is flipped (benchmarks are always clean). Models: selbench.models.tiny."""
    check_noise(noise)
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    pool_dir = out / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    rows, captions, truth = make_pool(pool_dir, n_samples, seed, noise)
    (pool_dir / "pool.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    (pool_dir / TRUTH).write_text(json.dumps({"world_version": WORLD_VERSION, "rows": truth}) + "\n")
    (pool_dir / "captions.json").write_text(json.dumps(captions, indent=1, sort_keys=True) + "\n")
    bench_dir = out / "benchmarks"
    bench_dir.mkdir(parents=True, exist_ok=True)
    for spec in BENCHMARKS:
        items = make_benchmark(spec, n_bench, seed)
        table = pa.Table.from_pylist(items)
        pq.write_table(table.replace_schema_metadata({}), bench_dir / f"{spec.name}.parquet",
                       compression="zstd", write_statistics=False)
    info = {"world_version": WORLD_VERSION, "seed": seed, "n_samples": n_samples, "n_bench": n_bench, "noise": noise,
            "benchmarks": [s.name for s in BENCHMARKS]}
    (out / "world.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info
