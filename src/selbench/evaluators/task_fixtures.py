"""Schema-faithful miniatures of the papers' benchmark data sets, for rehearsing lmms-eval's own tasks offline.

For every registered real benchmark (``benchmarks.REGISTRY``), a handful of generated items with the columns,
feature types, configs, splits and image encoding of the Hub data set that its lmms-eval task loads — laid out as a
local copy of that Hub repository (``ROOT/<dataset_path>/README.md`` declaring the configs, parquet files under
``<config>/`` or ``data/``), which is what ``huggingface-cli download --repo-type dataset --local-dir`` gives for the
real one. ``evaluation.task_data: ROOT`` then runs lmms-eval's shipped YAMLs and hooks on it unchanged
(selbench.evaluators.task_data says how); ``python tools/make_task_fixtures.py OUT`` writes one.

The columns are those of the Hub data sets' cards (``dataset_info``), checked against what each task's
``process_docs`` / ``doc_to_*`` / ``process_results`` / aggregation reads. The items are chosen to walk the task
code's real branches: MME's question pairs per image (its aggregation asserts two per image) in a perception and a
cognition category, MMBench's circular copies (``index`` + 1e6) and its ``"nan"`` hints and options, GQA's images
in a second config joined by ``imageId``, OCRBench's list answers and its HME100k rule, POPE's three splits,
images in the modes and formats real data has (RGB, RGBA, L, P; PNG or JPEG). Texts are short: the tiny test model
has a 256-token context.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

S, I64, I32, I8, B = Value("string"), Value("int64"), Value("int32"), Value("int8"), Value("bool")
VERSION = 1  # bump when any fixture's content changes


@dataclass(frozen=True)
class Fixture:
    repo: str  # the Hub data set (the lmms-eval task's dataset_path)
    config: str  # its dataset_name, "default" where the task names none
    splits: tuple[str, ...]
    features: Features
    rows: Callable[[random.Random, str], list[dict]]  # (rng, split) → the split's rows
    image_format: str = "PNG"  # how the real data set encodes its images

    @property
    def folder(self) -> str:
        return "data" if self.config == "default" else self.config


# ------------------------------------------------------------------ images

COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
MODES = ("RGB", "RGBA", "L", "P")  # what real data sets hold; every task converts to RGB itself


def image(rng: random.Random, fmt: str, k: int, text: str | None = None) -> dict:
    """A small picture (a shape on a background, optionally a word), stored as ``datasets.Image`` stores it:
    ``{"bytes": <encoded file>, "path": <file name>}``. Sizes and modes vary the way real images do."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    w, h = rng.choice([(64, 48), (40, 64), (96, 72), (56, 56)])
    img = PILImage.new("RGB", (w, h), rng.choice(COLOURS))
    draw = ImageDraw.Draw(img)
    x0, y0 = rng.randrange(0, w // 2), rng.randrange(0, h // 2)
    shape = draw.ellipse if k % 2 else draw.rectangle
    shape((x0, y0, x0 + w // 3, y0 + h // 3), fill=rng.choice(COLOURS))
    if text:
        draw.text((2, h - 12), text, fill="black")
    modes = MODES if fmt == "PNG" else ("RGB", "L")  # JPEG holds neither alpha nor a palette
    mode = modes[k % len(modes)]
    img = img.convert(mode) if mode != "P" else img.convert("P", palette=PILImage.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return {"bytes": buf.getvalue(), "path": f"{k:06d}.{'png' if fmt == 'PNG' else 'jpg'}"}


# ------------------------------------------------------------------ the data sets

def _mme(rng: random.Random, split: str) -> list[dict]:
    # two questions (one "Yes", one "No") per image; question_id names the image; 2 perception + 1 cognition image
    rows = []
    for k, (cat, q_yes, q_no) in enumerate([
            ("existence", "Is there a circle in this image?", "Is there a dog in this image?"),
            ("color", "Is the shape red?", "Is the shape green?"),
            ("commonsense_reasoning", "Is this a drawing?", "Is this a photo of a cat?")]):
        img = image(rng, "PNG" if k % 2 else "JPEG", k)
        qid = f"{cat}/{k:012d}.{'png' if k % 2 else 'jpg'}"
        for q, a in ((q_yes, "Yes"), (q_no, "No")):
            rows.append({"question_id": qid, "image": img, "question": f"{q} Please answer yes or no.",
                         "answer": a, "category": cat})
    return rows


POPE_QUESTIONS = [("Is there a circle in the image?", "yes"), ("Is there a car in the image?", "no"),
                  ("Is there a square in the image?", "yes"), ("Is there a dog in the image?", "no")]


def _pope(rng: random.Random, split: str) -> list[dict]:
    categories = ["adversarial", "popular", "random"] if split == "test" else [split]
    rows = []
    for k in range(4):
        q, a = POPE_QUESTIONS[k]
        rows.append({"id": str(k + 1), "question_id": str(k + 1), "question": q, "answer": a,
                     "image_source": f"COCO_val2014_{rng.randrange(10**12):012d}", "image": image(rng, "JPEG", k),
                     "category": categories[k % len(categories)]})
    return rows


def _ai2d(rng: random.Random, split: str) -> list[dict]:
    qs = [("Which shape is shown?", ["circle", "square", "star", "line"], "0"),
          ("What colour is the background?", ["red", "blue", "green", "white"], "3"),
          ("How many shapes are there?", ["one", "two", "three", "four"], "0")]
    return [{"question": q, "options": o, "answer": a, "image": image(rng, "PNG", k)} for k, (q, o, a) in enumerate(qs)]


def _scienceqa(rng: random.Random, split: str) -> list[dict]:
    qs = [("Which shape is round?", ["circle", "square"], 0, ""),
          ("Which colour is warm?", ["blue", "red", "green"], 1, "Look at the picture."),
          ("Which is a mammal?", ["frog", "trout", "horse", "eagle"], 2, "")]
    return [{"image": image(rng, "PNG", k), "question": q, "choices": c, "answer": a, "hint": h,
             "task": "closed choice", "grade": "grade4", "subject": "natural science", "topic": "biology",
             "category": "Classification", "skill": "Identify shapes", "lecture": "Shapes can be round.",
             "solution": f"The answer is {c[a]}."} for k, (q, c, a, h) in enumerate(qs)]


def _ocrbench(rng: random.Random, split: str) -> list[dict]:
    qs = [("IIIT5K", "Regular Text Recognition", "what is written in the image?", ["CAT"]),
          ("docVQA", "Doc-oriented VQA", "What is the title?", ["menu", "the menu"]),
          ("HME100k", "Handwritten Mathematical Expression Recognition",
           "Write out the expression in the image in LaTeX.", ["x = 1 7"]),
          ("ESTVQA", "Scene Text-centric VQA", "What does the sign say?", ["STOP"])]
    return [{"dataset": d, "question": q, "question_type": t, "answer": a, "image": image(rng, "JPEG", k, a[0])}
            for k, (d, t, q, a) in enumerate(qs)]


def _textvqa(rng: random.Random, split: str) -> list[dict]:
    qs = [("what word is on the sign?", "stop", ["stop"]), ("what brand is this?", "acme", ["acme", "a"]),
          ("what number is shown?", "7", ["7"])]
    rows = []
    for k, (q, a, ocr) in enumerate(qs):
        img = image(rng, "JPEG", k, a)
        rows.append({"image_id": f"{rng.randrange(16**16):016x}", "question_id": 34602 + k, "question": q,
                     "question_tokens": q.rstrip("?").split(), "image": img, "image_width": 1024,
                     "image_height": 768, "flickr_original_url": f"https://farm.example/{k}_o.jpg",
                     "flickr_300k_url": f"https://farm.example/{k}_z.jpg",
                     "answers": [a] * 7 + ["unanswerable", a.upper(), "sign"], "image_classes": ["Street sign"],
                     "set_name": "val", "ocr_tokens": ocr})
    return rows


def _vizwiz(rng: random.Random, split: str) -> list[dict]:
    qs = [("What colour is this?", ["red"] * 8 + ["pink", "dark red"], "other"),
          ("What is this?", ["unanswerable"] * 6 + ["box"] * 4, "unanswerable"),
          ("Is this a circle?", ["yes"] * 10, "yes/no")]
    return [{"question_id": f"VizWiz_val_{k:08d}.jpg", "image": image(rng, "JPEG", k), "question": q, "answers": a,
             "category": c} for k, (q, a, c) in enumerate(qs)]


def _gqa_instructions(rng: random.Random, split: str) -> list[dict]:
    # two questions about the first image, one about the second: process_docs joins them by imageId
    qs = [("n1", "Is the shape round?", "yes", "Yes, the shape is round."),
          ("n1", "What colour is the background?", "red", "The background is red."),
          ("n2", "Which shape is it?", "square", "It is a square.")]
    return [{"id": f"20{k:07d}", "imageId": img, "question": q, "answer": a, "fullAnswer": full, "isBalanced": True,
             "groups": {"global": None, "local": "10c-shape"}, "entailed": "[]", "equivalent": f"['20{k:07d}']",
             "types": {"structural": "query", "semantic": "attr", "detailed": "shapeCategory"},
             "annotations": {"answer": "{}", "question": "{}", "fullAnswer": "{}"},
             "semantic": [{"operation": "select", "argument": "shape (1)", "dependencies": []},
                          {"operation": "query", "argument": "name", "dependencies": [0]}],
             "semanticStr": "select: shape (1)->query: name [0]"} for k, (img, q, a, full) in enumerate(qs)]


def _gqa_images(rng: random.Random, split: str) -> list[dict]:
    return [{"id": img, "image": image(rng, "JPEG", k)} for k, img in enumerate(["n1", "n2", "n3"])]


def _vqav2(rng: random.Random, split: str) -> list[dict]:
    qs = [("what color is", "What color is the shape?", "red", "other"),
          ("is there a", "Is there a circle?", "yes", "yes/no"),
          ("how many", "How many shapes are there?", "1", "number")]
    rows = []
    for k, (qt, q, a, at) in enumerate(qs):
        answers = [a] * 8 + ["2" if at == "number" else "no", "maybe"]
        rows.append({"question_type": qt, "multiple_choice_answer": a,
                     "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": i + 1}
                                 for i, x in enumerate(answers)],
                     "image_id": 262148 + k, "answer_type": at, "question_id": 262148000 + k, "question": q,
                     "image": image(rng, "JPEG", k)})
    return rows


def _mmbench(lang: str) -> Callable[[random.Random, str], list[dict]]:
    en = [("What shape is shown?", "nan", ("circle", "square", "triangle", "nan"), "A"),
          ("What colour is the background?", "The picture is small.", ("blue", "red", "green", "white"), "B"),
          ("Which word fits the picture?", "nan", ("shape", "sound", "nan", "nan"), "A")]
    cn = [("图中是什么形状?", "nan", ("圆形", "方形", "三角形", "nan"), "A"),
          ("背景是什么颜色?", "图片很小。", ("蓝色", "红色", "绿色", "白色"), "B"),
          ("哪个词适合这张图?", "nan", ("形状", "声音", "nan", "nan"), "A")]

    def rows(rng: random.Random, split: str) -> list[dict]:
        out = []
        for k, (q, hint, opts, ans) in enumerate(en if lang == "en" else cn):
            img = image(rng, "JPEG", k)
            common = {"question": q, "hint": hint, "category": "image_scene", "image": img,
                      "source": "fixture", "L2-category": "coarse_perception", "comment": "nan", "split": "dev"}
            out.append({"index": k, "answer": ans, **dict(zip("ABCD", opts)), **common})
            if k == 1:  # MMBench's circular evaluation: the same question, options rotated, index + 1e6
                rot = opts[1:] + opts[:1]
                out.append({"index": k + 1_000_000, "answer": "ABCD"[rot.index(opts["ABCD".index(ans)])],
                            **dict(zip("ABCD", rot)), **common})
        return out
    return rows


def _mmvet(rng: random.Random, split: str) -> list[dict]:
    qs = [("What colour is the shape?", "red", "rec"), ("What is written here?", "CAT", "ocr"),
          ("What is 2 + 3?", "5<OR>five", "ocr,math")]
    return [{"question_id": f"v1_{k}", "image": image(rng, "PNG", k, "CAT" if k == 1 else None), "question": q,
             "answer": a, "image_source": f"fixture_{k}", "capability": c} for k, (q, a, c) in enumerate(qs)]


def _llava_bench(rng: random.Random, split: str) -> list[dict]:
    qs = [("What is in the picture?", "A circle on a red background.", "conv"),
          ("Describe the picture in detail.", "A small picture with one shape.", "detail"),
          ("Why might someone draw this?", "To test a model.", "complex")]
    return [{"question_id": k, "question": q, "image": image(rng, "JPEG", k), "caption": "A shape.", "gpt_answer": a,
             "category": c, "image_id": f"{k:03d}"} for k, (q, a, c) in enumerate(qs)]


def _mmmu(rng: random.Random, split: str) -> list[dict]:
    qs = [("validation_Art_1", "Which shape is in <image 1>?", "['circle', 'square', 'star', 'line']", "A",
           "multiple-choice"),
          ("validation_Math_2", "How many shapes are in <image 1>?", "[]", "1", "open"),
          ("validation_Biology_3", "What colour is <image 1>?", "['red', 'blue']", "B", "multiple-choice")]
    rows = []
    for k, (i, q, o, a, t) in enumerate(qs):
        row: dict = {"id": i, "question": q, "options": o, "explanation": "", "image_1": image(rng, "PNG", k)}
        row |= {f"image_{j}": None for j in range(2, 8)}  # one image per question; the other six slots are null
        rows.append(row | {"img_type": "['Diagrams']", "answer": a, "topic_difficulty": "Easy", "question_type": t,
                           "subfield": "Shapes"})
    return rows


MMBENCH = Features({"index": I64, "question": S, "hint": S, "answer": S, "A": S, "B": S, "C": S, "D": S,
                    "category": S, "image": Image(), "source": S, "L2-category": S, "comment": S, "split": S})
POPE = Features({"id": S, "question_id": S, "question": S, "answer": S, "image_source": S, "image": Image(),
                 "category": S})

FIXTURES: list[Fixture] = [
    Fixture("lmms-lab-encoder/MMBench", "en", ("dev",), MMBENCH, _mmbench("en"), "JPEG"),
    Fixture("lmms-lab-encoder/MMBench", "cn", ("dev",), MMBENCH, _mmbench("cn"), "JPEG"),
    Fixture("lmms-lab-encoder/MME", "default", ("test",),
            Features({"question_id": S, "image": Image(), "question": S, "answer": S, "category": S}), _mme),
    Fixture("lmms-lab-encoder/ai2d", "default", ("test",),
            Features({"question": S, "options": List(S), "answer": S, "image": Image()}), _ai2d),
    Fixture("lmms-lab-encoder/POPE", "default", ("test",), POPE, _pope, "JPEG"),
    Fixture("lmms-lab-encoder/POPE", "Full", ("adversarial", "popular", "random"), POPE, _pope, "JPEG"),
    Fixture("lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", ("test",),
            Features({"image": Image(), "question": S, "choices": List(S), "answer": I8, "hint": S, "task": S,
                      "grade": S, "subject": S, "topic": S, "category": S, "skill": S, "lecture": S,
                      "solution": S}), _scienceqa),
    Fixture("echo840/OCRBench", "default", ("test",),
            Features({"dataset": S, "question": S, "question_type": S, "answer": List(S), "image": Image()}),
            _ocrbench, "JPEG"),
    Fixture("lmms-lab-encoder/textvqa", "default", ("validation",),
            Features({"image_id": S, "question_id": I32, "question": S, "question_tokens": List(S), "image": Image(),
                      "image_width": I64, "image_height": I64, "flickr_original_url": S, "flickr_300k_url": S,
                      "answers": List(S), "image_classes": List(S), "set_name": S, "ocr_tokens": List(S)}),
            _textvqa, "JPEG"),
    Fixture("lmms-lab-encoder/VizWiz-VQA", "default", ("val",),
            Features({"question_id": S, "image": Image(), "question": S, "answers": List(S), "category": S}),
            _vizwiz, "JPEG"),
    Fixture("lmms-lab-encoder/GQA", "testdev_balanced_instructions", ("testdev",),
            Features({"id": S, "imageId": S, "question": S, "answer": S, "fullAnswer": S, "isBalanced": B,
                      "groups": {"global": S, "local": S}, "entailed": S, "equivalent": S,
                      "types": {"structural": S, "semantic": S, "detailed": S},
                      "annotations": {"answer": S, "question": S, "fullAnswer": S},
                      "semantic": List({"operation": S, "argument": S, "dependencies": List(I32)}),
                      "semanticStr": S}), _gqa_instructions),
    # read by gqa's process_docs, which loads it by its Hub id (not the task's dataset_path)
    Fixture("lmms-lab-encoder/GQA", "testdev_balanced_images", ("testdev",),
            Features({"id": S, "image": Image()}), _gqa_images, "JPEG"),
    Fixture("lmms-lab-encoder/VQAv2", "default", ("validation",),
            Features({"question_type": S, "multiple_choice_answer": S,
                      "answers": List({"answer": S, "answer_confidence": S, "answer_id": I64}), "image_id": I64,
                      "answer_type": S, "question_id": I64, "question": S, "image": Image()}), _vqav2, "JPEG"),
    Fixture("lmms-lab-encoder/MMVet", "default", ("test",),
            Features({"question_id": S, "image": Image(), "question": S, "answer": S, "image_source": S,
                      "capability": S}), _mmvet),
    Fixture("lmms-lab-encoder/llava-bench-in-the-wild", "default", ("train",),
            Features({"question_id": I8, "question": S, "image": Image(), "caption": S, "gpt_answer": S,
                      "category": S, "image_id": S}), _llava_bench, "JPEG"),
    Fixture("lmms-lab-encoder/MMMU", "default", ("validation",),
            Features({"id": S, "question": S, "options": S, "explanation": S,
                      **{f"image_{j}": Image() for j in range(1, 8)}, "img_type": S, "answer": S,
                      "topic_difficulty": S, "question_type": S, "subfield": S}), _mmmu),
]


def _readme(repo: str, fixtures: list[Fixture]) -> str:
    configs = []
    for f in fixtures:
        files = [{"split": s, "path": f"{f.folder}/{s}-*"} for s in f.splits]
        configs.append({"config_name": f.config, "data_files": files})
    # JSON is YAML: the card header datasets reads (``configs``), no YAML writer needed
    header = "\n".join(["---", "configs: " + json.dumps(configs), "---"])
    return (f"{header}\n# {repo} (SelBench fixture v{VERSION})\n\nGenerated items with the columns of the Hub data "
            f"set, for rehearsing lmms-eval's own task offline (selbench.evaluators.task_fixtures). Not the real "
            f"data.\n")


def write_fixtures(out: Path, seed: int = 0) -> Path:
    """Write every fixture under ``out`` (``out/<repo>/README.md`` + parquet files); returns ``out``. Same seed,
    same bytes."""
    out = Path(out)
    by_repo: dict[str, list[Fixture]] = {}
    for f in FIXTURES:
        by_repo.setdefault(f.repo, []).append(f)
    for repo, fixtures in by_repo.items():
        root = out / repo
        for f in fixtures:
            (root / f.folder).mkdir(parents=True, exist_ok=True)
            for split in f.splits:
                rng = random.Random(f"{seed}:{f.repo}:{f.config}:{split}")
                rows = f.rows(rng, split)
                for r in rows:  # exactly the card's columns, in its order
                    if set(r) != set(f.features):
                        raise AssertionError(f"{f.repo}/{f.config}: row columns {sorted(r)} are not the card's")
                rows = [{k: r[k] for k in f.features} for r in rows]
                table = datasets.Dataset.from_list(rows, features=f.features).data.table  # features in its metadata
                pq.write_table(table, root / f.folder / f"{split}-00000-of-00001.parquet")
        (root / "README.md").write_text(_readme(repo, fixtures))
    return out
