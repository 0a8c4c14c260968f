"""Iterated baselines: ETO and IPR re-explore with their newest model and train again (ETO: 3 rounds; IPR: up to 6).

Round 1 is the one-iteration variant of stage 05 in the run folder itself. Round k ≥ 2 lives in its own run folder,
``<run>/iterations/<variant>/round-<k>/``, which shares the run's benchmark (``00_environment``, linked) and runs
stages 02–05 there with the previous round's model as explorer, starting point and DPO reference. Every stage keeps
its skip-and-resume behaviour, so an interrupted loop continues where it stopped. Each round costs one exploration
stage (about 1.5 h on 2 cores in the ``cpu`` profile).
"""

from __future__ import annotations

import os
from pathlib import Path

from steca_lib import pipeline
from steca_lib.config import config_from_params
from steca_lib.generation import GenerationBackend
from steca_lib.reinforced import ReinforcedConfig, run_reinforced_stage


def round_folder(run: Path, variant: str, k: int) -> Path:
    """The run folder of round ``k`` ≥ 2, with the main run's benchmark linked in."""
    folder = Path(run) / "iterations" / variant / f"round-{k}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "00_environment"
    if not link.exists():
        os.symlink(Path(run).resolve() / "00_environment", link, target_is_directory=True)
    return folder


def iterate(profile: str, seed: int, run_dir: str, variant: str, rounds: int,
            explorer: GenerationBackend | None = None) -> list[dict]:
    """Train ``variant`` for ``rounds`` rounds of explore → pairs → train; returns each round's training summary
    (the last one's ``model_dir`` is the final model). ``explorer`` replaces the model in stage 02 (tests)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    first = config_from_params(ReinforcedConfig, profile, seed=seed, run_dir=run_dir, variant=variant)
    summaries = [run_reinforced_stage(first)]
    for k in range(2, rounds + 1):
        previous = summaries[-1]["model_dir"]
        sub = str(round_folder(first.path, variant, k))
        settings = {"02_rollouts": {"model_dir": previous},  # explore with, start from and refer to round k − 1
                    "05_reinforced": {"variant": variant, "init_model": previous}}
        for s in pipeline.between("02_rollouts", "05_reinforced"):
            cfg = config_from_params(s.config_class(), profile, seed=seed, run_dir=sub, **settings.get(s.folder, {}))
            done = s.run_function()(cfg, backend=explorer) if s.folder == "02_rollouts" else s.run_function()(cfg)
        summaries.append(done)
    return summaries
