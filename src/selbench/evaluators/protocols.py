"""Protocols: what a leaderboard column is, taken exactly from a paper's table.

A protocol is a versioned list of *columns*. A column reads one metric of one or more evaluated benchmarks
(each an lmms-eval task in ``benchmarks.REGISTRY``) and, for several, takes their mean — XMAS's POPE is the mean
F1 of ``pope_random`` / ``pope_pop`` / ``pope_adv``; ScalSelect's POPE-A and POPE-P read accuracy and precision
of the same ``pope`` run. Relative performance and ARP are computed per column (``relative.arp``).

Changing what a column means makes a new protocol version; a name is never redefined. The benchmark sets
``xmas_v1`` / ``scalselect_v1`` of SelBench 0.1 (benchmark lists, never run on real data) are replaced by the
papers' protocols of the same names; ``embedded_v1`` is unchanged.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from selbench.evaluators.benchmarks import REGISTRY


@dataclass(frozen=True)
class Source:
    benchmark: str  # a REGISTRY name (one lmms-eval task)
    metric: str  # a metric key in that task's results


@dataclass(frozen=True)
class Column:
    key: str  # stable identifier: the frame's column and ``rel_<key>``
    label: str  # the paper's name (MME-P, POPE-A …), shown in tables and the HTML
    sources: tuple[Source, ...]  # one, or several averaged (mean over tasks)
    scale: float = 1.0  # the metric's maximum: 0–1 metrics are shown × 100, others (MME: 2000) as they are
    higher_is_better: bool = True

    @property
    def display_factor(self) -> float:
        """Tables show 0–1 metrics as percentages, metrics with their own scale (MME) as they are."""
        return 100.0 if self.scale == 1.0 else 1.0

    def value(self, values: Mapping[tuple[str, str], float | None]) -> float | None:
        """The column's value from ``(benchmark, metric) → value``; None when any source is missing."""
        got = [values.get((s.benchmark, s.metric)) for s in self.sources]
        if any(v is None or not math.isfinite(v) for v in got):
            return None
        return sum(got) / len(got)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str  # where the column list is taken from
    columns: tuple[Column, ...]

    @property
    def benchmarks(self) -> list[str]:
        """The benchmarks (lmms-eval tasks) to evaluate, in column order, each once."""
        return list(dict.fromkeys(s.benchmark for c in self.columns for s in c.sources))


def _col(key: str, label: str, benchmark: str, metric: str | None = None, scale: float | None = None) -> Column:
    b = REGISTRY[benchmark]
    return Column(key, label, (Source(benchmark, metric or b.metric),), scale or b.scale, b.higher_is_better)


POPE_F1_3 = Column("pope", "POPE", tuple(Source(b, "pope_f1_score") for b in ("pope_random", "pope_pop", "pope_adv")))
# MME and MMBench keep their own scale; "gpt_eval_score" of MMBench falls back to a GPT matcher only when it cannot
# read a letter (see the evaluate stage's judge rules).
_XMAS = (_col("vqav2", "VQAv2", "vqav2"), _col("gqa", "GQA", "gqa"), _col("vizwiz", "VizWiz", "vizwiz"),
         _col("textvqa", "TextVQA", "textvqa"), _col("scienceqa_img", "SQA-I", "scienceqa_img"), POPE_F1_3,
         _col("mme_p", "MME-P", "mme"), _col("mmbench_en", "MMBench", "mmbench_en"),
         _col("mmvet", "MM-Vet", "mmvet"), _col("llava_bench", "LLaVA-Bench", "llava_bench"))

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("embedded_v1", "SelBench's embedded world (generated benchmarks)",
             tuple(_col(b, b, b) for b in ("emb_vqa", "emb_mc", "emb_pope", "emb_count", "emb_ocr"))),
    # ScalSelect (arXiv 2602.11636) Table 1: nine columns, POPE counted twice (accuracy and precision).
    Protocol("scalselect_v1", "ScalSelect, Table 1", (
        _col("mmbench_en", "MMBench-En", "mmbench_en"), _col("mmbench_cn", "MMBench-Cn", "mmbench_cn"),
        _col("mme_p", "MME-P", "mme"), _col("mme_c", "MME-C", "mme", "mme_cognition_score", scale=800),
        _col("ai2d", "AI2D", "ai2d"), _col("pope_a", "POPE-A", "pope", "pope_accuracy"),
        _col("pope_p", "POPE-P", "pope", "pope_precision"), _col("scienceqa_img", "SQA-IMG", "scienceqa_img"),
        _col("ocrbench", "OCRBench", "ocrbench"))),
    # XMAS (arXiv 2510.01454), evaluation section: ten benchmarks; POPE = mean F1 over its three splits.
    Protocol("xmas_v1", "XMAS, evaluation section", _XMAS),
    # COINCIDE (arXiv 2406.10995): XMAS's ten plus MMBench-Cn (after MMBench), POPE as LLaVA-1.5 reports it.
    Protocol("coincide_v1", "COINCIDE, Table 1",
             _XMAS[:8] + (_col("mmbench_cn", "MMBench-Cn", "mmbench_cn"),) + _XMAS[8:]),
]}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def columns_for(protocol: str | None, benchmarks: Sequence[str]) -> list[Column]:
    """A protocol's columns, or — for a spec that lists benchmarks without a protocol — one column per benchmark
    reading its primary metric (labelled by its name)."""
    if protocol is not None:
        return list(get_protocol(protocol).columns)
    return [_col(b, b, b) for b in benchmarks]


def _plain(protocol: Protocol) -> bool:
    """Whether the protocol's columns are exactly one column per benchmark reading its primary metric."""
    return [(c.sources, c.scale) for c in protocol.columns] == [
        ((Source(b, REGISTRY[b].metric),), REGISTRY[b].scale) for b in protocol.benchmarks]


def resolve_benchmarks(entries: Iterable[object]) -> list[str]:
    """Benchmark names and protocol names (expanded to the protocol's benchmarks, in place) → benchmark names, in
    order. An unknown name fails at once with the nearest known names and the full lists; a benchmark named
    twice is an error."""
    names: list[str] = []
    entries = list(entries)
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"benchmarks: {entry!r} is not a benchmark or protocol name")
        if entry in PROTOCOLS:
            if len(entries) > 1 and not _plain(PROTOCOLS[entry]):
                # in a list, every benchmark is one column of its primary metric: this protocol's columns would
                # silently become others (POPE-A/P one POPE F1, MME-C gone, a three-split mean three columns)
                raise ValueError(f"benchmarks: {entry} is a protocol whose columns are not one primary metric per "
                                 f"benchmark ({', '.join(c.label for c in PROTOCOLS[entry].columns)}): name it alone "
                                 f"(`protocol: {entry}`), or list the benchmarks you want instead")
            names += PROTOCOLS[entry].benchmarks
        elif entry in REGISTRY:
            names.append(entry)
        else:
            near = difflib.get_close_matches(entry, [*REGISTRY, *PROTOCOLS], n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"unknown benchmark {entry!r}{hint}; benchmarks: {', '.join(sorted(REGISTRY))}; "
                             f"protocols: {', '.join(PROTOCOLS)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"benchmarks: {', '.join(twice)} named more than once (directly or through a protocol)")
    return names
