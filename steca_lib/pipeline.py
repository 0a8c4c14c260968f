"""The pipeline, declared once: its stages in order, each with its output folder, the notebook that teaches it, its
config class and its run function.

Everything that needs the order takes it from here: the notebooks' set-up cells (:func:`ensure`), the headless
reproduction (notebook order and the wall-time table) and the comparison of methods (stages before 05). A new stage
is one entry. Configs and run functions are named as ``module:attribute`` and imported when used, so that reading
the pipeline costs no import of torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from steca_lib.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    """One stage of a run."""

    folder: str
    """Its output folder in the run folder, which is also its name (``02_rollouts``)."""
    notebook: str
    """The notebook that teaches it and that ``reproduce`` runs (``notebooks/<notebook>.ipynb``)."""
    config: str = ""
    """``module:Class`` of its config; empty for notebook 06, which runs stages 04–05 once per method."""
    run: str = ""
    """``module:function`` that runs it from its config (finished: returns at once)."""
    times: tuple[tuple[str, str], ...] = ()
    """Rows it adds to the wall-time table: (row name, manifest folder pattern relative to the run folder)."""

    def config_class(self) -> type:
        return _attribute(self.config)

    def run_function(self):
        return _attribute(self.run)


STAGES = (
    Stage("00_environment", "00_environment_tour", "steca_lib.config:EnvironmentConfig",
          "steca_lib.expert_data:run_environment_stage", (("00 environment", "00_environment"),)),
    Stage("01_sft", "01_expert_sft", "steca_lib.sft:SFTStageConfig", "steca_lib.sft:run_sft_stage",
          (("01 SFT", "01_sft"), ("01 evaluation", "01_eval/sft"))),
    Stage("02_rollouts", "02_exploration", "steca_lib.rollouts:RolloutConfig", "steca_lib.rollouts:run_rollouts",
          (("02 rollouts", "02_rollouts"),)),
    Stage("03_step_rewards", "03_step_rewards", "steca_lib.step_rewards:StepRewardConfig",
          "steca_lib.step_rewards:run_step_reward_stage", (("03 step rewards", "03_step_rewards"),)),
    Stage("04_calibration", "04_calibration", "steca_lib.calibration:CalibrationConfig",
          "steca_lib.calibration:run_calibration_stage", (("04 calibration", "04_calibration/*"),)),
    Stage("05_reinforced", "05_reinforced_training", "steca_lib.reinforced:ReinforcedConfig",
          "steca_lib.reinforced:run_reinforced_stage",
          (("05 training (every method)", "05_reinforced/*"), ("05 evaluation (every method)", "05_eval/*"))),
    Stage("06_report", "06_evaluation", times=(("06 recovery", "06_recovery/*"),)),
)


def _attribute(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(import_module(module), name)


def stage(folder: str) -> Stage:
    """The stage named ``folder``; a one-line error for an unknown name."""
    for s in STAGES:
        if s.folder == folder:
            return s
    raise ConfigError(f"unknown stage {folder!r}; expected one of {', '.join(s.folder for s in STAGES)}")


def notebooks() -> list[str]:
    """The stage notebooks in pipeline order (file stems)."""
    return [s.notebook for s in STAGES]


def time_rows() -> tuple[tuple[str, str], ...]:
    """The wall-time table's rows in pipeline order: (row name, manifest folder pattern)."""
    return tuple(row for s in STAGES for row in s.times)


def between(first: str, last: str) -> tuple[Stage, ...]:
    """The stages from ``first`` to ``last``, both included, in order."""
    return STAGES[STAGES.index(stage(first)):STAGES.index(stage(last)) + 1]


def ensure(profile: str, seed: int = 0, run_dir: str = "", before: str = "06_report") -> None:
    """Run every stage before ``before`` with the profile's settings, in order; each returns at once when it has
    already finished in the run folder (a notebook's set-up cell: ``ensure(profile, seed, run_dir, "03_step_rewards")``
    before notebook 03's own stage)."""
    from steca_lib.config import config_from_params

    last = STAGES.index(stage(before))
    for s in STAGES[:last]:
        s.run_function()(config_from_params(s.config_class(), profile, seed=seed, run_dir=run_dir))
