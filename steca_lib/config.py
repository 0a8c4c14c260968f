"""Stage configs and profiles. One dataclass per stage, built from a notebook's ``parameters`` cell, the CLI
or a test, so all three drive the same code.

Profiles: ``smoke`` (seconds, CI), ``cpu`` (the embedded full reproduction on 2 cores), ``cpu-llm`` (the same
pipeline with a pretrained SmolLM2-135M and LoRA, on fewer tasks), ``paper`` (the paper's sizes; GPU stages), and
``smoke-scienceworld`` / ``cpu-scienceworld``: the pipeline on ScienceWorld, each the profile it names plus the
few settings a stage overrides for that benchmark (:data:`PROFILE_BASE`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, TypeVar

from steca_lib.errors import ConfigError, UnknownParameter

#: ScienceWorld task types whose gold paths are short (4–12 actions) and that have 62–150 training variations each.
SCIENCEWORLD_TASK_TYPES = ("find-animal", "find-living-thing", "find-non-living-thing", "find-plant",
                           "lifespan-longest-lived", "lifespan-shortest-lived")
#: Benchmarks stage 00 can build (the embedded world, or ScienceWorld's simulator with the extra installed).
BENCHMARKS = ("household", "scienceworld")
PROFILES = ("smoke", "cpu", "cpu-llm", "paper", "smoke-scienceworld", "cpu-scienceworld")
#: Profiles built on another: a stage's defaults are the base profile's, updated by its own entry when it has one.
PROFILE_BASE = {"smoke-scienceworld": "smoke", "cpu-scienceworld": "cpu"}
C = TypeVar("C")


def config_from_params(cls: type[C], profile: str, **params: Any) -> C:
    """A stage config: the profile's defaults, then every parameter that is not None.

    Unknown parameter names are an error (a typo in a notebook's parameters cell must not pass silently).
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise UnknownParameter(f"{cls.__name__} has no parameter(s) {unknown}; known: {sorted(names)}")
    values = {**profile_defaults(cls, profile), **{k: v for k, v in params.items() if v is not None}}
    return cls(profile=profile, **values)


def profile_defaults(cls: type, profile: str) -> dict[str, Any]:
    """A stage config's defaults for ``profile``: its base profile's (:data:`PROFILE_BASE`), then its own."""
    base = PROFILE_BASE.get(profile)
    if base is None:
        return dict(cls.PROFILE_DEFAULTS[profile])
    return {**cls.PROFILE_DEFAULTS[base], **cls.PROFILE_DEFAULTS.get(profile, {})}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reject(cfg: Any, field_name: str, accepted: str) -> ConfigError:
    """The error for a setting no run could use: it names the config, the field, the value and what is accepted."""
    return ConfigError(f"{type(cfg).__name__}.{field_name} = {getattr(cfg, field_name)!r} is not allowed; "
                       f"expected {accepted}")


def check_config(cfg: Any, *, counts: Iterable[str] = (), optional_counts: Iterable[str] = (),
                 non_negative: Iterable[str] = (), positive: Iterable[str] = (), fractions: Iterable[str] = (),
                 choices: dict[str, Iterable[str]] | None = None, folder_names: Iterable[str] = ()) -> None:
    """Reject a stage setting that no run could use, before any work: ``counts`` must be integers ≥ 1,
    ``optional_counts`` None or integers ≥ 1, ``non_negative`` numbers ≥ 0, ``positive`` numbers > 0,
    ``fractions`` numbers in [0, 1], each field of ``choices`` one of its names and ``folder_names`` non-empty
    names of letters, digits and ``-_.+`` (they name output folders). Raises :func:`reject`'s error."""

    def fail(field_name: str, accepted: str) -> None:
        raise reject(cfg, field_name, accepted)

    if getattr(cfg, "profile", PROFILES[0]) not in PROFILES:
        fail("profile", f"one of {', '.join(PROFILES)}")
    if not _is_int(getattr(cfg, "seed", 0)):
        fail("seed", "an integer")
    for f in counts:
        if not (_is_int(getattr(cfg, f)) and getattr(cfg, f) >= 1):
            fail(f, "an integer ≥ 1")
    for f in optional_counts:
        v = getattr(cfg, f)
        if v is not None and not (_is_int(v) and v >= 1):
            fail(f, "None (all) or an integer ≥ 1")
    for f in non_negative:
        if not (_is_number(getattr(cfg, f)) and getattr(cfg, f) >= 0):
            fail(f, "a number ≥ 0")
    for f in positive:
        if not (_is_number(getattr(cfg, f)) and getattr(cfg, f) > 0):
            fail(f, "a number > 0")
    for f in fractions:
        if not (_is_number(getattr(cfg, f)) and 0 <= getattr(cfg, f) <= 1):
            fail(f, "a number between 0 and 1")
    for f, allowed in (choices or {}).items():
        allowed = tuple(allowed)
        if getattr(cfg, f) not in allowed:
            fail(f, f"one of {', '.join(map(str, allowed))}")
    for f in folder_names:
        v = getattr(cfg, f)
        if not isinstance(v, str) or not v or not all(c.isalnum() or c in "-_.+" for c in v):
            fail(f, "a folder name of letters, digits and -_.+")


def runs_root() -> Path:
    """Where run folders go: ``$STECA_RUNS_DIR``, else ``runs/`` at the repository root (or the cwd)."""
    if os.environ.get("STECA_RUNS_DIR"):
        return Path(os.environ["STECA_RUNS_DIR"])
    repo = Path(__file__).resolve().parent.parent
    return (repo if (repo / "pyproject.toml").exists() else Path.cwd()) / "runs"


def resolve_run_dir(run_dir: str, profile: str, seed: int) -> Path:
    """The run folder: ``run_dir`` when given, else ``<runs_root>/<profile>-seed<seed>``."""
    return Path(run_dir) if run_dir else runs_root() / f"{profile}-seed{seed}"


@dataclass
class RunSettings:
    """The settings every stage config starts with (a group the stage configs compose): the preset, the seed, the
    run folder, free-form notes."""

    profile: str = "smoke"
    """Size preset (:data:`PROFILES`)."""
    seed: int = 0
    """Run seed: names the run folder and seeds what the stage draws (initialisation, data order, sampling,
    bootstrap)."""
    run_dir: str = ""
    """Run folder; empty = runs/<profile>-seed<seed> at the repository root (or $STECA_RUNS_DIR)."""
    extra: dict = field(default_factory=dict)
    """Free-form notes recorded in the manifest."""

    @property
    def path(self) -> Path:
        """Where the run lives."""
        return resolve_run_dir(self.run_dir, self.profile, self.seed)


@dataclass
class EnvironmentConfig(RunSettings):
    """Stage 00: generate the embedded household benchmark and the expert trajectories."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        "smoke": {"n_train": 48, "n_seen": 18, "n_unseen": 18},
        "cpu": {"n_train": 2400, "n_seen": 140, "n_unseen": 134},
        "cpu-llm": {"n_train": 300, "n_seen": 60, "n_unseen": 60},
        "paper": {"n_train": 2851, "n_seen": 140, "n_unseen": 134},
        "smoke-scienceworld": {"benchmark": "scienceworld", "n_train": 24, "n_seen": 6, "n_unseen": 6,
                               "max_steps": 12, "task_types": ["find-non-living-thing", "lifespan-longest-lived"]},
        "cpu-scienceworld": {"benchmark": "scienceworld", "n_train": 240, "n_seen": 60, "n_unseen": 60,
                             "max_steps": 20},
    }

    world_seed: int = 0
    """Benchmark identity: floorplans, held-out combinations and tasks. Keep it fixed across training seeds."""
    benchmark: str = "household"
    """``household`` (the embedded world) or ``scienceworld`` (ScienceWorld's simulator and gold paths)."""
    task_types: list[str] = field(default_factory=lambda: list(SCIENCEWORLD_TASK_TYPES))
    """ScienceWorld only: the task types whose variations make the splits (train / dev as seen / test as unseen)."""
    n_train: int = 48
    """Training tasks (with expert trajectories for SFT)."""
    n_seen: int = 18
    """Held-out tasks in training floorplans and goal combinations (ALFWorld's in-distribution set)."""
    n_unseen: int = 18
    """Tasks in held-out floorplans with held-out goal combinations (ALFWorld's out-of-distribution set)."""
    max_steps: int = 40
    """Episode step limit in the environment (the paper's configs use 40)."""
    max_expert_steps: int = 20
    """Longest expert trajectory kept when generating tasks (the paper's data cap at 20 turns)."""
    noise: float = 0.15
    """Probability that an object is placed anywhere instead of by the commonsense prior."""
    n_floorplans: int = 30
    """Floorplans per room type; the last 20% are unseen-only."""

    def __post_init__(self):
        check_config(self, counts=("n_train", "n_seen", "n_unseen", "max_steps", "max_expert_steps"),
                     fractions=("noise",), choices={"benchmark": BENCHMARKS})
        if not (_is_int(self.n_floorplans) and self.n_floorplans >= 2):
            raise reject(self, "n_floorplans", "an integer ≥ 2 (the last 20% of floorplans are the unseen split's)")
        if self.benchmark == "scienceworld" and not self.task_types:
            raise reject(self, "task_types", f"ScienceWorld task names, e.g. {', '.join(SCIENCEWORLD_TASK_TYPES[:2])}")

    def world_spec(self):
        """The household generator's spec for these settings."""
        from steca_lib.envs.household.generator import WorldSpec

        return WorldSpec(world_seed=self.world_seed, n_floorplans=self.n_floorplans, noise=self.noise,
                         max_expert_steps=self.max_expert_steps)

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "seen": self.n_seen, "unseen": self.n_unseen}


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings from a command line as a dict; values are read as JSON when they parse (``0.05``,
    ``[]``, ``true``), else kept as text."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


#: A command-line option that sets a config field: (flag, field, ``argparse`` keyword arguments).
Option = tuple[str, str, dict]


def stage_main(cls: type[C], run, description: str, argv: list[str] | None = None, options: tuple[Option, ...] = (),
               actions: dict[str, tuple[str, Any]] | None = None) -> int:
    """A stage's command line: ``--profile``, ``--seed``, ``--run-dir``, ``--set field=value`` for any config field
    (values are read as JSON when they parse, e.g. ``--set delta=0.05``, else as text), the stage's own
    ``options`` (shorthands for fields) and ``actions`` (``--flag``: (help, function) run instead of ``run``).
    Errors end in one line and exit code 2 (``--debug`` for the traceback; see :mod:`steca_lib.errors`)."""
    import argparse
    import json
    import logging

    from steca_lib.errors import run_cli

    def main(args_list: list[str]) -> int:
        ap = argparse.ArgumentParser(description=description)
        ap.add_argument("--profile", choices=PROFILES, default="cpu")
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--run-dir", default="")
        ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
        for flag, dest, kwargs in options:
            ap.add_argument(flag, dest=dest, default=None, **kwargs)
        for flag, (text, _) in (actions or {}).items():
            ap.add_argument(flag, action="store_true", help=text)
        ap.add_argument("--debug", action="store_true", help="on an error, show the traceback (or STECA_DEBUG=1)")
        args = ap.parse_args(args_list)
        try:
            params = parse_assignments(args.set)
        except ValueError as err:
            ap.error(f"--set: {err}")
        params.update({dest: getattr(args, dest) for _, dest, _ in options if getattr(args, dest) is not None})
        logging.basicConfig(level=logging.INFO)
        cfg = config_from_params(cls, args.profile, seed=args.seed, run_dir=args.run_dir, **params)
        chosen = [fn for flag, (_, fn) in (actions or {}).items() if getattr(args, flag.lstrip("-").replace("-", "_"))]
        print(json.dumps((chosen[0] if chosen else run)(cfg), indent=1, default=str))
        return 0

    return run_cli(main, argv)
