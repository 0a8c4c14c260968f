"""Run folders: one sub-folder per stage with its JSON/JSONL artifacts and a ``manifest.json``.

A stage whose manifest says ``complete`` with the same config is skipped; a different config in the same
folder is an error (nothing is overwritten silently).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from steca_lib.data import write_json_atomic
from steca_lib.errors import StageNotFinished, StecaError

#: Packages whose versions every manifest records.
TRACKED_PACKAGES = ("steca-kit", "torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets",
                    "numpy", "papermill")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the tracked packages (None when absent)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def config_dict(config: Any) -> dict:
    """A config as a plain dict (dataclass fields only)."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


class StageConfigMismatch(StecaError, RuntimeError):
    """The stage folder holds results of a different configuration."""


def stage_dir(run_dir: Path, stage: str) -> Path:
    """The folder of one stage inside a run folder (created)."""
    d = Path(run_dir) / stage
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_manifest(directory: Path) -> dict | None:
    """The stage's manifest, or None when it has not finished."""
    p = Path(directory) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None


def upstream(run_dir: Path, *stages: str) -> dict[str, str]:
    """When each input stage finished: a stage records this, so that it is recomputed after an input changes."""
    out = {}
    for stage in stages:
        manifest = load_manifest(Path(run_dir) / stage)
        if manifest is None or manifest.get("status") != "complete":
            raise StageNotFinished(f"stage {stage} has not finished in {run_dir}; run it first")
        out[stage] = manifest["finished_at"]
    return out


def require_model(model: str | Path, made_by: str) -> str:
    """``model`` when it is a model folder (or a hub name ``owner/name``), else a :class:`StageNotFinished` that
    names the stage that makes it (``made_by``)."""
    path = Path(model)
    if (path / "config.json").exists():
        return str(model)
    hub_name = not path.exists() and str(model).count("/") == 1 and not str(model).startswith((".", "/", "~"))
    if hub_name:
        return str(model)
    raise StageNotFinished(f"no model at {model}; {made_by}")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: an input whose content, not its stage's finishing time, decides staleness."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_inputs(model_dir: str | Path) -> dict[str, str] | None:
    """For a model saved by a stage (``<stage>/model``): when that stage finished, as :func:`upstream` gives it, so
    an evaluation is redone after its model is retrained. None for a model from elsewhere."""
    manifest = load_manifest(Path(model_dir).parent)
    return {"model": manifest["finished_at"]} if manifest and manifest.get("status") == "complete" else None


def discard_if_inputs_changed(directory: Path, inputs: dict[str, str] | None, pattern: str = "*.jsonl") -> list[Path]:
    """Before resuming partial results: if they were made from other inputs (``inputs.json``), delete them (files
    or folders matching ``pattern``) so that nothing stale is resumed; then record the current inputs. Returns what
    went."""
    import shutil

    marker = Path(directory) / "inputs.json"
    removed = []
    if marker.exists() and json.loads(marker.read_text()) != inputs:
        removed = sorted(Path(directory).glob(pattern))
        for p in removed:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    write_json_atomic(inputs, marker)
    return removed


def finished_summary(directory: Path, config: Any, keys: tuple[str, ...] = (),
                     inputs: dict[str, str] | None = None) -> dict | None:
    """The summary of a finished stage run with the same config (``keys`` limits the comparison), else None.
    A run made from other ``inputs`` (see :func:`upstream`) is stale: None, so the stage recomputes."""
    manifest = load_manifest(directory)
    if manifest is None or manifest.get("status") != "complete":
        return None
    if inputs is not None and manifest.get("inputs") != inputs:
        return None
    now = json.loads(json.dumps(config_dict(config)))  # tuples compare as the lists JSON gives back
    then = manifest["config"]
    compare = keys or tuple(k for k in now if k not in ("run_dir", "extra"))
    defaults = json.loads(json.dumps(config_dict(type(config)()))) if dataclasses.is_dataclass(config) else {}
    # a field added to the config after that run matches when it is still at its default
    diff = {k: (then.get(k), now.get(k)) for k in compare
            if (then[k] if k in then else defaults.get(k)) != now.get(k)}
    if diff:
        raise StageConfigMismatch(
            f"{directory} holds a finished run with another config {diff} (then, now). "
            f"Use another run_dir, or delete that folder to recompute.")
    return manifest["summary"]


def write_manifest(directory: Path, stage: str, config: Any, summary: dict, started: float,
                   inputs: dict[str, str] | None = None) -> dict:
    """Mark a stage complete: config, seed, versions, wall time, its inputs (see :func:`upstream`), summary."""
    cfg = config_dict(config)
    manifest = {
        "stage": stage,
        "status": "complete",
        "config": cfg,
        "seed": cfg.get("seed"),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "wall_time_s": round(time.time() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "summary": summary,
    }
    write_json_atomic(manifest, Path(directory) / "manifest.json")
    return manifest
