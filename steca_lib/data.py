"""Trajectory files in the FastChat/ShareGPT format of the ETO/IPR/STeCa releases, and its role/content variant.

A record is ``{"id", "game_file", "conversations": [{"from": "human"|"gpt", "value": str}, ...]}``: turn 0 the
instruction, turn 1 ``OK``, turn 2 the task, then alternating gpt actions and human ``Observation: ...``.
Files may be a JSON list or JSON Lines. Errors name the file, the record and the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from steca_lib.errors import StecaError

ROLE_TO_FROM = {"user": "human", "assistant": "gpt", "human": "human", "gpt": "gpt"}
FROM_TO_ROLE = {"human": "user", "gpt": "assistant"}


class DataFormatError(StecaError, ValueError):
    """A trajectory file does not follow the expected schema; the message says where."""


def format_error(path: Path, index: int, record: Any, field: str, problem: str) -> DataFormatError:
    """An error naming the file, the record (and its id) and the field."""
    rid = record.get("id", record.get("path")) if isinstance(record, dict) else None
    where = f"record {index}" + (f" (id={rid!r})" if rid is not None else "")
    return DataFormatError(f"{path}: {where}, field '{field}': {problem}")


def read_records(path: Path) -> list:
    """The records of a JSON-list or JSONL file (a clear error when it is neither)."""
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def normalize_turn(turn: Any, path: Path, index: int, record: Any, k: int,
                   field_name: str = "conversations") -> dict[str, str]:
    """Turn ``k`` of a record's ``field_name`` as ``{"from", "value"}``, accepting the ``{"role", "content"}``
    variant."""
    field = f"{field_name}[{k}]"
    if not isinstance(turn, dict):
        raise format_error(path, index, record, field, f"expected an object, got {type(turn).__name__}")
    if "from" in turn and "value" in turn:
        speaker, value, keys = turn["from"], turn["value"], ("from", "value")
    elif "role" in turn and "content" in turn:
        speaker, value, keys = turn["role"], turn["content"], ("role", "content")
    else:
        raise format_error(path, index, record, field, f"has keys {sorted(turn)}; expected 'from'/'value' or "
                                                        "'role'/'content'")
    if speaker not in ROLE_TO_FROM:
        raise format_error(path, index, record, f"{field}.{keys[0]}", f"unknown speaker {speaker!r}")
    if not isinstance(value, str):
        raise format_error(path, index, record, f"{field}.{keys[1]}",
                           f"expected a string, got {type(value).__name__}")
    return {"from": ROLE_TO_FROM[speaker], "value": value}


def chat_messages(conversations: list[dict]) -> list[dict[str, str]]:
    """FastChat turns -> chat messages (``human`` -> ``user``, ``gpt`` -> ``assistant``)."""
    return [{"role": FROM_TO_ROLE[t["from"]], "content": t["value"]} for t in conversations]


def fastchat_turns(messages: list[dict]) -> list[dict[str, str]]:
    """Chat messages -> FastChat turns (the inverse of :func:`chat_messages`)."""
    return [{"from": ROLE_TO_FROM[m["role"]], "value": m["content"]} for m in messages]


def load_trajectories(path: str | os.PathLike) -> list[dict]:
    """Read expert/agent trajectories; every turn is returned as ``{"from", "value"}`` and turns must
    alternate human/gpt starting with the human instruction."""
    path = Path(path)
    out = []
    for i, rec in enumerate(read_records(path)):
        if not isinstance(rec, dict):
            raise format_error(path, i, rec, "<record>", f"expected an object, got {type(rec).__name__}")
        conv = rec.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise format_error(path, i, rec, "conversations", "missing or not a non-empty list")
        turns = [normalize_turn(t, path, i, rec, k) for k, t in enumerate(conv)]
        for k, t in enumerate(turns):
            expected = "human" if k % 2 == 0 else "gpt"
            if t["from"] != expected:
                raise format_error(path, i, rec, f"conversations[{k}]",
                                   f"expected a {expected} turn, got {t['from']}")
        out.append({**rec, "conversations": turns})
    return out


def save_trajectories(records: Iterable[dict], path: str | os.PathLike, style: str = "fastchat") -> Path:
    """Write records as a JSON list (atomically). ``style="role_content"`` writes the role/content variant."""
    if style not in ("fastchat", "role_content"):
        raise ValueError(f"style must be 'fastchat' or 'role_content', not {style!r}")
    path = Path(path)
    rows = []
    for rec in records:
        conv = rec["conversations"]
        if style == "role_content":
            conv = chat_messages(conv)
        rows.append({**rec, "conversations": conv})
    write_json_atomic(rows, path)
    return path


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON through a temporary file and a rename, so an interrupted write never leaves half a file."""
    _write_text_atomic(json.dumps(obj, indent=1, ensure_ascii=False), path)


def write_jsonl_atomic(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write JSON Lines atomically (see :func:`write_json_atomic`)."""
    _write_text_atomic("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), path)


def _write_text_atomic(text: str, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # per process: several may write the same file
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON Lines; a broken line is reported with its number."""
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}: line {n}: not valid JSON ({e.msg})") from e
    return rows


def append_jsonl(f, row: dict) -> None:
    """Append one record to an open JSONL file and flush it, so a killed run keeps every finished record."""
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


def recover_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of an append-only JSONL file before resuming it: a last line cut off by a kill (no newline) is
    removed from the file, so the records appended next start on a fresh line. A missing file has no rows."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    return read_jsonl(path)
