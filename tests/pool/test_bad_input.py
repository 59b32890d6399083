"""Bad input at the pool's trust boundary: every case is a clear issue (row, id, reason) or a PoolError naming
the place — never a traceback, never a hang, never a hint about files outside the image root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from selbench.pool import jsonstream
from selbench.pool.llava import PoolError, read_pool

GOOD = {"id": "ok", "image": "img/a.jpg", "conversations": [
    {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."}]}
TEXT = {"id": "t", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
DEEP = "[" * 100_000 + "]" * 100_000


def _row(**kw) -> dict:
    return {**GOOD, **kw}


def _conv(q: object, a: object = "yes") -> list:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def _jl(*rows: dict | str | bytes) -> bytes:
    """JSONL: dicts dumped, str/bytes verbatim."""
    out = []
    for r in rows:
        out.append(r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode())
    return b"\n".join(out) + b"\n"


def _arr(*rows: dict | str | bytes) -> bytes:
    out = []
    for r in rows:
        out.append(r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode())
    return b"[" + b",\n".join(out) + b"]\n"


# (name, file name, file bytes, expected: ("issue", row, fragment) | ("error", fragment))
CASES = [
    ("jsonl-not-utf8", "p.jsonl", _jl(GOOD, b'{"id": "x\xff", "conversations": []}', TEXT),
     ("issue", 1, "not valid UTF-8: byte 0xff")),
    ("json-not-utf8-in-a-string", "p.json", _arr(GOOD, b'{"id": "bad", "conversations": [{"from": "human", '
                                                       b'"value": "caf\xe9?"}, {"from": "gpt", "value": "x"}]}', TEXT),
     ("issue", 1, "not valid UTF-8: byte 0xe9")),
    ("json-not-utf8-between-tokens", "p.json", _arr(GOOD, b'\xff{"id": "x"}'), ("error", "not valid UTF-8")),
    ("json-100k-nested-lists-as-a-row", "p.json", _arr(GOOD, DEEP, TEXT), ("issue", 1, "nested too deeply")),
    ("json-100k-nested-in-a-field", "p.json", _arr(GOOD, '{"id": "d", "conversations": ' + DEEP + "}", TEXT),
     ("issue", 1, "nested too deeply")),
    ("jsonl-100k-nested", "p.jsonl", _jl(GOOD, DEEP, TEXT), ("issue", 1, "nested too deeply")),
    ("huge-integer", "p.json", _arr(GOOD, '{"id": ' + "9" * 5000 + "}", TEXT), ("issue", 1, "4300 digits")),
    ("absolute-image-path", "p.json", _arr(_row(id="abs", image="/etc/hostname")), ("issue", 0, "absolute path")),
    ("dotdot-image-path", "p.json", _arr(_row(id="up", image="img/../../secret.jpg")),
     ("issue", 0, "'..' in the path")),
    ("nul-in-image-path", "p.json", _arr(_row(id="nul", image="img/a\u0000.jpg")), ("issue", 0, "NUL character")),
    ("lone-surrogate-escape", "p.json", _arr('{"id": "s", "conversations": [{"from": "human", "value": '
                                              '"\\ud800?"}, {"from": "gpt", "value": "x"}]}'),
     ("issue", 0, "invalid Unicode")),
    ("id-is-an-object", "p.json", _arr(_row(id={"a": 1})), ("issue", 0, "id: expected a string or a number")),
    ("image-is-a-list", "p.json", _arr(_row(id="l", image=["a.jpg"])), ("issue", 0, "expected a relative path")),
    ("speaker-is-a-list", "p.json", _arr({"id": "sp", "conversations": [{"from": ["human"], "value": "Q?"},
                                                                      {"from": "gpt", "value": "A"}]}),
     ("issue", 0, "unknown speaker")),
    ("row-is-a-number", "p.json", _arr("42"), ("issue", 0, "row: expected an object, got int")),
    ("image-is-a-folder", "p.json", _arr(_row(id="dir", image="img")), ("issue", 0, "image: file not found")),
    ("image-is-a-fifo", "p.json", _arr(_row(id="fifo", image="img/fifo.jpg")), ("issue", 0, "file not found")),
    ("image-is-text", "p.json", _arr(_row(id="txt", image="img/text.jpg")), ("issue", 0, "not an image file")),
    ("image-truncated", "p.json", _arr(_row(id="cut", image="img/cut.jpg")),
     ("issue", 0, "truncated: no JPEG end-of-image marker")),
    ("top-level-object", "p.json", b'{"id": 1}', ("error", "expected a JSON list of samples, got dict")),
    ("empty-file", "p.json", b"  \n", ("error", "empty file")),
    ("list-not-closed", "p.json", _arr(GOOD)[:-2] + b",\n", ("error", "the list is not closed")),
    ("data-after-the-list", "p.json", _arr(GOOD) + b"[]", ("error", "extra data after the list")),
    ("broken-syntax", "p.json", b'[{"id": "a"}, {"id": }]',
     ("error", "invalid JSON at line 1, column 22 (row 1): Expecting value")),
    ("jsonl-broken-line", "p.jsonl", _jl(GOOD, '{"id": "x", "conversations": ['), ("issue", 1, "invalid JSON")),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "img" / "a.jpg")
    good = (tmp_path / "img" / "a.jpg").read_bytes()
    Image.effect_noise((64, 64), 40).convert("RGB").save(tmp_path / "img" / "full.jpg")
    full = (tmp_path / "img" / "full.jpg").read_bytes()
    (tmp_path / "img" / "cut.jpg").write_bytes(full[: len(full) * 4 // 5])  # header intact, scan data cut
    (tmp_path / "img" / "text.jpg").write_text("not an image")
    os.mkfifo(tmp_path / "img" / "fifo.jpg")  # opening it would block: the checker must not
    (tmp_path / "secret.jpg").write_bytes(good)  # exists outside the image root
    return tmp_path


@pytest.mark.parametrize(("name", "file", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_clearly(root: Path, name: str, file: str, data: bytes, expected: tuple) -> None:
    pool = root / file
    pool.write_bytes(data)
    images = root if "image" in name or "path" in name else None
    if expected[0] == "error":
        with pytest.raises(PoolError) as e:
            read_pool(pool, images)
        assert expected[1] in str(e.value)
        assert str(pool) in str(e.value)
        return
    rep = read_pool(pool, images)
    issue = next(i for i in rep.issues if i.row == expected[1])
    assert expected[2] in issue.reason, issue
    assert len(rep.issues) == 1, rep.issues  # the bad row only: the rows around it are read
    with pytest.raises(PoolError, match=f"row {expected[1]} "):
        read_pool(pool, images, strict=True)


def test_errors_do_not_reveal_files_outside_the_root(root: Path) -> None:
    rows = [_row(id=str(k), image=p) for k, p in enumerate(
        ["/etc/hostname", "/no/such/file.jpg", "../secret.jpg", "../no-such.jpg", "img/../../secret.jpg"])]
    (root / "img" / "p.json").write_text(json.dumps(rows))
    rep = read_pool(root / "img" / "p.json", root / "img")
    reasons = [i.reason for i in rep.issues]
    assert reasons[0] == reasons[1] and reasons[2] == reasons[3] == reasons[4]
    assert not any("secret" in r or "hostname" in r for r in reasons)


def test_image_root_must_be_a_folder(root: Path) -> None:
    (root / "p.json").write_bytes(_arr(GOOD))
    with pytest.raises(PoolError, match="image root is not a folder"):
        read_pool(root / "p.json", root / "nowhere")


def test_pool_path_that_is_a_folder(root: Path) -> None:
    with pytest.raises(PoolError, match="pool file not found"):
        read_pool(root / "img")


def test_oversized_jsonl_row_is_skipped(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "MAX_ROW_CHARS", 200)
    big = {"id": "big", "conversations": _conv("x" * 1000)}
    (root / "p.jsonl").write_bytes(_jl(TEXT, big, TEXT))
    rep = read_pool(root / "p.jsonl")
    assert [s.row for s in rep.samples] == [0, 2]
    assert "longer than" in rep.issues[0].reason


def test_bom_is_accepted(root: Path) -> None:
    (root / "p.json").write_bytes(b"\xef\xbb\xbf" + _arr(TEXT))
    (root / "p.jsonl").write_bytes(b"\xef\xbb\xbf" + _jl(TEXT))
    assert read_pool(root / "p.json").n_kept == read_pool(root / "p.jsonl").n_kept == 1


def test_uids_are_unique_by_construction(tmp_path: Path) -> None:
    def t(sid: str, img: str | None = None) -> dict:
        return {"id": sid, **({"image": img} if img else {}), "conversations": _conv("<image>\nQ?" if img else "Q?")}

    for name in ("a.png", "r.png", "q::r.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    rows = [
        t("dup", "a.png"), t("dup", "a.png"),  # → dup::a.png#0, dup::a.png#1
        t("dup::a.png#0"),  # its own id equals a minted one (it occurs once: kept verbatim, were it not taken)
        t("dup::a.png#0~1"),  # and the first disambiguation is some row's own id too
        t("p::q", "r.png"), t("p::q", "r.png"),  # → p::q::r.png#0, #1
        t("p", "q::r.png"), t("p", "q::r.png"),  # minted the same: p::q::r.png#0, #1
    ]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    uids = [s.uid for s in read_pool(tmp_path / "p.json").samples]
    assert uids == ["dup::a.png#0", "dup::a.png#1", "dup::a.png#0~2", "dup::a.png#0~1",
                    "p::q::r.png#0", "p::q::r.png#1", "p::q::r.png#0~1", "p::q::r.png#1~1"]
    assert len(set(uids)) == len(uids)
    assert [s.uid for s in read_pool(tmp_path / "p.json").samples] == uids  # deterministic
