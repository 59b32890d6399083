"""A LLaVA-665K-shaped pool for benchmarking pool preparation, and a timed check that reports peak RSS.

    .venv/bin/python benchmarks/llava665k_shape.py generate OUT [--rows 665298] [--seed 0]
    .venv/bin/python benchmarks/llava665k_shape.py generate OUT --rows 10000 --unique-images 8000 --size 320x240
    .venv/bin/python benchmarks/llava665k_shape.py check OUT/pool.json --images OUT [--workers 2] [--cache C]

The shape follows ``llava_v1_5_mix665k.json`` (LLaVA-1.5 paper, Table 7): rows per source — LLaVA-Instruct,
VQAv2, OKVQA, A-OKVQA and RefCOCO on COCO images (each image shared by ~3 rows, its id repeated), GQA, OCR-VQA,
TextCaps (TextVQA images) and Visual Genome — ~88 % with an image, the rest text-only (ShareGPT-like, long
answers); multi-turn short-answer VQA, long-answer instructions, ``<image>`` after the question in some rows,
~1.5 KB of JSON per row as the real file (1.03 GB / 665K). Images are small real JPEGs (default 32×32, one
distinct picture per path). Seeded: the same arguments give byte-identical files.

``check`` runs ``manifest_from_pool`` + ``save_manifest`` in this process and prints one JSON line: wall seconds,
rows/s, the pool's stats, its fingerprint and peak RSS (this process; worker processes separately).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 2
WORDS = ("the a of and to in is on with for at by from this that man woman people dog cat car bus train table "
         "street room kitchen white black red blue green yellow large small two three left right front back top "
         "bottom sitting standing holding wearing looking playing riding eating near next under above water tree "
         "building sign window person group field grass sky road plate food shirt hat picture image scene shows "
         "appears there are several some many one its their which while who what where how why color number "
         "area background foreground side middle").split()
SHORT = "Answer the question using a single word or phrase."
# (source, image folder or None, share of rows, rows per image, short-answer rounds (lo, hi), answer words (lo, hi))
SOURCES = (
    ("llava_instruct", "coco/train2017", 0.238, 3.0, (1, 5), (25, 110)),
    ("vqav2", "coco/train2017", 0.125, 3.0, (3, 9), (1, 2)),
    ("okvqa", "coco/train2017", 0.014, 3.0, (1, 3), (1, 2)),
    ("aokvqa", "coco/train2017", 0.075, 3.0, (1, 2), (1, 1)),
    ("refcoco", "coco/train2017", 0.072, 3.0, (3, 8), (4, 4)),
    ("gqa", "gqa/images", 0.108, 1.2, (4, 10), (1, 2)),
    ("ocr_vqa", "ocr_vqa/images", 0.120, 1.0, (3, 6), (1, 5)),
    ("textcaps", "textvqa/train_images", 0.033, 1.0, (1, 1), (8, 16)),
    ("vg", "vg/VG_100K", 0.095, 1.0, (3, 8), (2, 6)),
    ("sharegpt", None, 0.120, 0.0, (1, 4), (120, 320)),
)


class Text:
    """Random word sequences, cut from one long pre-drawn text (per-call numpy draws are too slow at 665K rows)."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.bank = " ".join(r.choices(WORDS, k=1_000_000)) + " "
        self.avg = len(self.bank) / 1_000_000

    def words_(self, lo: int, hi: int) -> str:
        n = self.r.randint(lo, hi)
        start = self.bank.index(" ", self.r.randrange(len(self.bank) - 400)) + 1
        end = self.bank.index(" ", start + max(1, int(n * self.avg) - 3))
        return self.bank[start:end]

    def sentence(self, lo: int, hi: int) -> str:
        s = self.words_(lo, hi)
        return s[:1].upper() + s[1:] + "."


def _turns(src: str, rounds: tuple[int, int], answer: tuple[int, int], t: Text, rng: random.Random,
           has_image: bool) -> list[dict[str, str]]:
    conv = []
    for r in range(rng.randint(rounds[0], rounds[1])):
        if src == "llava_instruct":
            q, a = t.words_(6, 16).capitalize() + "?", " ".join(t.sentence(8, 20) for _ in range(answer[1] // 25))
        elif src == "sharegpt":
            q = " ".join(t.sentence(8, 24) for _ in range(rng.randint(1, 3)))
            a = " ".join(t.sentence(10, 25) for _ in range(rng.randint(answer[0], answer[1]) // 18))
        elif src == "aokvqa":
            opts = "\n".join(f"{k}. {t.words_(1, 3)}" for k in "ABCD")
            q, a = f"{t.words_(5, 12).capitalize()}?\n{opts}\nAnswer with the option's letter from the given " \
                   "choices directly.", rng.choice("ABCD")
        elif src == "refcoco":
            box = ", ".join(f"{v:.2f}" for v in sorted(rng.random() for _ in range(4)))
            q, a = f"Please provide the bounding box coordinate of the region this sentence describes: " \
                   f"{t.words_(2, 6)}.", f"[{box}]"
            if r % 2:
                q, a = f"Please provide a short description for this region: [{box}]", t.words_(2, 6)
        elif src == "textcaps":
            q, a = "Provide a one-sentence caption for the provided image.", t.sentence(*answer)
        else:
            q, a = f"{t.words_(3, 10).capitalize()}?\n{SHORT}", t.words_(*answer)
        if r == 0 and has_image:
            q = f"{q}\n<image>" if rng.random() < 0.1 else f"<image>\n{q}"
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return conv


def _jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """One freshly encoded JPEG: a background colour and rectangles (plus texture above 64 px)."""
    from PIL import Image, ImageDraw

    w, h = size
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(1 if w <= 64 else 6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.rectangle((x0, y0, x0 + int(rng.integers(2, w // 2 + 3)), y0 + int(rng.integers(2, h // 2 + 3))),
                    fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    if w > 64:  # some texture, so file sizes look like photos' (~15 KB at 320×240), not flat colour
        noise = rng.integers(0, 24, (h // 4, w // 4, 3), dtype=np.uint8)
        im = Image.fromarray(np.clip(np.asarray(im, np.int16) + np.kron(noise, np.ones((4, 4, 1), np.uint8)),
                                     0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def generate(out: str | Path, *, rows: int = 665_298, seed: int = 0, unique_images: int | None = None,
             size: tuple[int, int] = (32, 32), jsonl: bool = False) -> dict:
    """Write ``pool.json`` (or ``pool.jsonl``) and ``images/…`` under ``out``; reuse them if ``done.json`` records
    the same arguments. ``unique_images`` caps the number of image files (rows then share them more)."""
    out = Path(out)
    key = {"version": GENERATOR_VERSION, "rows": rows, "seed": seed, "unique_images": unique_images,
           "size": list(size), "jsonl": jsonl}
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()) == key:
        return key
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 665])
    r = random.Random(seed)
    t = Text(r)
    shares = np.array([s[2] for s in SOURCES])
    src_of_row = rng.choice(len(SOURCES), size=rows, p=shares / shares.sum())
    # Image per row: per folder, n = rows/rows_per_image distinct files, each used at least once, the rest drawn
    # with a popularity skew (a few COCO images appear in many rows, as in the real pool).
    folders = sorted({s[1] for s in SOURCES if s[1]})
    image_of_row = np.full(rows, -1, np.int64)
    members = {f: np.flatnonzero(np.isin(src_of_row, [k for k, s in enumerate(SOURCES) if s[1] == f]))
               for f in folders}
    if unique_images is None:
        n_images = {f: max(1, int(np.ceil(len(members[f]) / np.mean([s[3] for s in SOURCES if s[1] == f]))))
                    for f in folders}
    else:  # proportional to each folder's rows, at most one image per row, the remainder where there is room
        total = sum(len(m) for m in members.values())
        n_images = {f: min(len(members[f]), unique_images * len(members[f]) // total) for f in folders}
        for f in folders:
            n_images[f] += min(len(members[f]) - n_images[f], unique_images - sum(n_images.values()))
    for f in folders:
        n = n_images[f] = max(1, min(n_images[f], len(members[f])))
        extra = np.minimum(n - 1, (rng.pareto(1.2, len(members[f]) - n) * n / 50).astype(np.int64))
        image_of_row[members[f]] = rng.permutation(np.concatenate([np.arange(n), extra]))
    pool_path = out / ("pool.jsonl" if jsonl else "pool.json")
    tmp = pool_path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("" if jsonl else "[\n")
        for i in range(rows):
            src, folder, _, _, rounds, answer = SOURCES[int(src_of_row[i])]
            if folder:
                k = int(image_of_row[i])
                sid = f"{k:012d}" if folder.startswith("coco") or r.random() < 0.05 else f"{src}-{i}"
                row: dict = {"id": sid, "image": f"{folder}/{k:012d}.jpg"}
            else:
                row = {"id": f"sharegpt-{i // 2}"}  # ShareGPT splits long chats: ids repeat in pairs
            row["conversations"] = _turns(src, rounds, answer, t, r, folder is not None)
            if jsonl:
                f.write(json.dumps(row) + "\n")
            else:
                f.write(("" if i == 0 else ",\n") + json.dumps(row))
        f.write("" if jsonl else "\n]\n")
    tmp.replace(pool_path)
    for fi, folder in enumerate(folders):
        _write_images(out / folder, n_images[folder], [seed, 7, fi], size)
    done.write_text(json.dumps(key))
    return key


def _write_images(folder: Path, n: int, seed: list[int], size: tuple[int, int]) -> None:
    """``n`` distinct JPEGs. Small ones (≤ 64 px) reuse 512 encoded pictures, each file made unique by a JPEG
    comment segment carrying its number (valid JPEG, its own sha256; encoding 300K tiny pictures would dominate
    the generator's time); larger ones are each encoded."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if max(size) > 64:
        for k in range(n):
            (folder / f"{k:012d}.jpg").write_bytes(_jpeg(rng, size))
        return
    bank = [_jpeg(rng, size) for _ in range(min(n, 512))]
    for k in range(n):
        body = bank[k % len(bank)]
        comment = f"selbench {k}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (folder / f"{k:012d}.jpg").write_bytes(body[:2] + segment + body[2:])


def _rss_mb(who: int) -> float:
    """Peak RSS in MB. This process: VmHWM (its own address space's high-water mark; ``ru_maxrss`` would keep the
    parent's peak across exec). Children (the workers, forked while this process was small): ``ru_maxrss``."""
    if who == resource.RUSAGE_SELF:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def check(pool: str, images: str, *, workers: int | None, cache: str | None, manifest: str | None,
          decode: bool) -> dict:
    from selbench.pool.manifest import manifest_from_pool, save_manifest

    t0, c0 = time.perf_counter(), time.process_time()
    m, rep = manifest_from_pool(pool, images, workers=workers, image_cache=cache, decode_images=decode)
    t1 = time.perf_counter()
    if manifest:
        save_manifest(m, manifest)
    wall = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 2), "rows_per_s": round(rep.n_rows / wall), "save_s": round(wall - (t1 - t0), 2),
            "main_cpu_s": round(time.process_time() - c0, 1),
            "workers_cpu_s": round(children.ru_utime + children.ru_stime, 1), "fingerprint": m.content_hash,
            "kept": len(m), "issues": len(rep.issues), "stats": rep.stats,
            "peak_rss_mb": round(_rss_mb(resource.RUSAGE_SELF)),
            "workers_peak_rss_mb": round(_rss_mb(resource.RUSAGE_CHILDREN))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("out")
    g.add_argument("--rows", type=int, default=665_298)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--unique-images", type=int, default=None)
    g.add_argument("--size", default="32x32")
    g.add_argument("--jsonl", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("pool")
    c.add_argument("--images", required=True)
    c.add_argument("--workers", type=int, default=None)
    c.add_argument("--cache", default=None)
    c.add_argument("--manifest", default=None)
    c.add_argument("--decode", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "generate":
        w, h = (int(v) for v in a.size.split("x"))
        t0 = time.perf_counter()
        key = generate(a.out, rows=a.rows, seed=a.seed, unique_images=a.unique_images, size=(w, h), jsonl=a.jsonl)
        print(json.dumps({**key, "seconds": round(time.perf_counter() - t0, 1)}))
    else:
        os.environ.setdefault("SELBENCH_NO_PROGRESS", "")
        print(json.dumps(check(a.pool, a.images, workers=a.workers, cache=a.cache, manifest=a.manifest,
                               decode=a.decode)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
