"""The streaming JSON reader gives exactly what json.loads gives, wherever the chunk boundaries fall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selbench.pool import jsonstream
from selbench.pool.jsonstream import RowReader

ROWS = [
    {"id": "1", "image": "coco/1.jpg", "conversations": [{"from": "human", "value": "<image>\nCafé — 東京? 😀"},
                                                          {"from": "gpt", "value": "Ja \u2028 \"quoted\" \\ ok"}]},
    12345678901234567890,  # a number: may be cut by a chunk boundary and still parse whole
    "a string row",
    [1, [2, [3]]],
    {"id": 7, "nested": {"deep": [{"x": None, "y": True, "z": -1.5e-3}]}},
    {"id": "long", "text": "y" * 5000},
]


def _write(tmp_path: Path, indent: int | None) -> Path:
    p = tmp_path / f"pool{indent}.json"
    p.write_text(json.dumps(ROWS, indent=indent, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 1 << 22])
@pytest.mark.parametrize("indent", [None, 1])
def test_array_matches_json_loads_at_any_chunk_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int,
                                                     indent: int | None) -> None:
    monkeypatch.setattr(jsonstream, "CHUNK_BYTES", chunk)
    path = _write(tmp_path, indent)
    reader = RowReader(path)
    got = list(reader)
    assert got == list(enumerate(json.loads(path.read_text(encoding="utf-8"))))
    assert reader.bytes_read == path.stat().st_size


@pytest.mark.parametrize("chunk", [1, 5, 1 << 22])
def test_bad_rows_are_found_at_any_chunk_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(jsonstream, "CHUNK_BYTES", chunk)
    p = tmp_path / "p.json"
    p.write_bytes(b'[\n{"id": "a"},\n{"id": "b\xff"},\n' + b"[" * 3000 + b"]" * 3000 + b',\n{"id": "c"}\n]')
    got = list(RowReader(p))
    assert got[0] == (0, {"id": "a"}) and got[3] == (3, {"id": "c"})
    assert got[1][1].reason == "not valid UTF-8: byte 0xff (line 3, column 10)" and got[1][1].id is None
    assert "nested too deeply" in got[2][1].reason and "line 4, column 1" in got[2][1].reason


def test_jsonl_matches_json_loads(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n\n", encoding="utf-8")
    assert [v for _, v in RowReader(p)] == ROWS


def test_unreadable_file_is_a_pool_error(tmp_path: Path) -> None:
    from selbench.pool.errors import PoolError

    with pytest.raises(PoolError, match="cannot read the pool file"):
        list(RowReader(tmp_path))  # a folder
