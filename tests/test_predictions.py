"""The shared predictions reader/matcher (pulse_tasks.scoring.predictions) behind `ecgbench score` and `judge`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pulse_tasks.scoring.predictions import (
    InputError,
    match_predictions,
    read_predictions,
    write_records,
)

DOCS = [{"id": f"m{i}"} for i in range(3)]
RECORD = {"id": "m2", "subset": "mmmu-ecg", "kind": "mcq", "status": "ok"}  # one of our metric records


def _jsonl(*objects: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


# content, join_turns -> [(id, doc_id, response, format)]
READS = [
    ("reference question_id/text", _jsonl({"question_id": "m0", "prompt": "p", "text": "A"}), False,
     [("m0", None, "A", "reference")]),
    ("reference id/response", _jsonl({"id": 5, "response": "B"}), False, [("5", None, "B", "reference")]),
    ("lmms-eval by doc_id", _jsonl({"doc_id": 1, "resps": [["C"]], "filtered_resps": ["C"]}), False,
     [(None, 1, ["C"], "lmms-eval")]),
    ("lmms-eval: our record's id wins", _jsonl({"doc_id": 0, "resps": [["D"]], "m": RECORD}), False,
     [("m2", 0, [["D"]], "lmms-eval")]),
    ("lmms-eval: the logged doc's id", _jsonl({"doc_id": 0, "filtered_resps": ["E"], "doc": {"id": "m1"}}), False,
     [("m1", 0, ["E"], "lmms-eval")]),
    ("JSON array", b'[{"id": "m0", "response": "A"}, {"doc_id": 2, "resps": [["B"]]}]', False,
     [("m0", None, "A", "reference"), (None, 2, [["B"]], "lmms-eval")]),
    ("arena turns joined by id", _jsonl({"question_id": "a0", "text": "t1"}, {"id": "a1", "response": ["x", "y"]},
                                        {"question_id": "a0", "text": "t2"}), True,
     [("a0", None, ["t1", "t2"], "reference"), ("a1", None, ["x", "y"], "reference")]),
    ("arena turns not joined unless asked", _jsonl({"id": "a0", "response": "t1"}, {"id": "a0", "response": "t2"}),
     False, [("a0", None, "t1", "reference"), ("a0", None, "t2", "reference")]),
    ("non-UTF-8 bytes reach the scorer", b'{"id": "m0", "response": "\xff C"}\n', False,
     [("m0", None, "\udcff C", "reference")]),
]


@pytest.mark.parametrize("content, join_turns, expected", [r[1:] for r in READS], ids=[r[0] for r in READS])
def test_read(tmp_path: Path, content: bytes, join_turns: bool, expected: list[tuple[Any, ...]]) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    got = [(p.id, p.doc_id, p.response, p.source_format) for p in read_predictions(str(path), join_turns)]
    assert got == expected


def test_record_subset_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n" + _jsonl({"doc_id": 0, "resps": [["D"]], "m": RECORD}))
    (prediction,) = read_predictions(str(path))
    assert prediction.subset == "mmmu-ecg" and prediction.line == 2  # file line, blank line counted


BAD_READS = [
    (b"", "is empty"),
    (b'{"id": "m0", "response": "A"}\n{not json\n', ":2: not valid JSON"),
    (b'[{"id": "m0"', "not valid JSON"),
    (b'{"foo": 1}\n', "line 1: not an lmms-eval sample"),
    (b"[1, 2]\n", "line 1: expected a JSON object, got int"),
    (b'{"doc_id": "x", "resps": [["A"]]}\n', "doc_id 'x' is not an integer"),
]


@pytest.mark.parametrize("content, message", BAD_READS)
def test_read_unusable(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_predictions(str(path))
    assert message in str(err.value)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read predictions"):
        read_predictions(str(tmp_path / "absent.jsonl"))


def _read(tmp_path: Path, *objects: Any, join_turns: bool = False) -> Any:
    path = tmp_path / "p.jsonl"
    path.write_bytes(_jsonl(*objects))
    return read_predictions(str(path), join_turns)


# predictions -> (responses, missing, extra)
MATCHES = [
    ("all by id", [{"id": "m2", "response": "c"}, {"id": "m0", "response": "a"}, {"id": "m1", "response": "b"}],
     ({"m0": "a", "m1": "b", "m2": "c"}, [], [])),
    ("by doc_id; missing in data order", [{"doc_id": 2, "resps": "c"}], ({"m2": "c"}, ["m0", "m1"], [])),
    ("extra id and doc_id out of range", [{"id": "m0", "response": "a"}, {"id": "zz", "response": "?"},
                                          {"doc_id": 7, "resps": "?"}],
     ({"m0": "a"}, ["m1", "m2"], ["zz", "doc_id=7"])),
]


@pytest.mark.parametrize("objects, expected", [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES])
def test_match(tmp_path: Path, objects: list[dict[str, Any]], expected: tuple[Any, ...]) -> None:
    matched = match_predictions(DOCS, _read(tmp_path, *objects))
    assert (matched.responses, matched.missing, matched.extra) == expected


@pytest.mark.parametrize("docs, objects, message", [
    (DOCS, [{"id": "m0", "response": "a"}, {"doc_id": 0, "resps": "b"}, {"id": "m1", "response": "c"},
            {"id": "m1", "response": "d"}, {"id": "m1", "response": "e"}], "2 duplicated prediction ids: m0, m1"),
    (DOCS + [{"id": "m1"}], [{"id": "m0", "response": "a"}], "the data has 1 duplicated item ids: m1"),
])
def test_match_duplicates(tmp_path: Path, docs: list[dict[str, Any]], objects: list[dict[str, Any]],
                          message: str) -> None:
    with pytest.raises(InputError) as err:
        match_predictions(docs, _read(tmp_path, *objects))
    assert str(err.value) == message


def test_arena_turns_joined_are_not_duplicates(tmp_path: Path) -> None:
    docs = [{"id": "a0"}]
    lines = [{"question_id": "a0", "text": "t1"}, {"question_id": "a0", "text": "t2"}]
    assert match_predictions(docs, _read(tmp_path, *lines, join_turns=True)).responses == {"a0": ["t1", "t2"]}
    with pytest.raises(InputError, match="1 duplicated prediction ids: a0"):
        match_predictions(docs, _read(tmp_path, *lines))


def test_write_records(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    write_records(str(out), [{"id": "m0"}, {"id": "m1"}])
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"id": "m0"}, {"id": "m1"}]
    with pytest.raises(InputError, match="cannot write"):
        write_records(str(tmp_path / "absent" / "r.jsonl"), [])
