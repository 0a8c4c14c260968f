"""Shared fixtures. Run folders of notebooks executed by nbmake go to a temporary folder, not the repo."""

import os
import tempfile

import pytest

from steca_lib.envs.household import Goal, Scene, Task, WorldSpec


def pytest_configure(config):
    # nbmake kernels inherit the environment: keep their run folders out of the working tree.
    os.environ.setdefault("STECA_RUNS_DIR", tempfile.mkdtemp(prefix="steca-test-runs-"))


@pytest.fixture
def kitchen_task() -> Task:
    """A hand-made kitchen: a closed fridge with an apple, a countertop with a knife, a sink, a microwave."""
    scene = Scene(room="kitchen", floorplan=0,
                  receptacles=("cabinet 1", "countertop 1", "fridge 1", "microwave 1", "sinkbasin 1"),
                  contents={"fridge 1": ("apple 1", "egg 1"), "countertop 1": ("knife 1",)})
    goal = Goal(family="pick_clean_then_place_in_recep", obj="apple", recep="microwave", lamp=None,
                text="put a clean apple in microwave.")
    return Task(task_id="hand_0", split="train", index=0, world_seed=0, scene=scene, goal=goal)


@pytest.fixture
def spec() -> WorldSpec:
    return WorldSpec()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Stage 00 and the smoke-profile SFT in one temporary run folder (shared by the model tests)."""
    from steca_lib.config import EnvironmentConfig, config_from_params
    from steca_lib.expert_data import run_environment_stage
    from steca_lib.sft import SFTStageConfig, run_sft_stage

    run = tmp_path_factory.mktemp("smoke_run")
    run_environment_stage(config_from_params(EnvironmentConfig, "smoke", run_dir=str(run)))
    summary = run_sft_stage(config_from_params(SFTStageConfig, "smoke", run_dir=str(run)))
    return run, summary


@pytest.fixture(scope="session")
def scripted_run(tmp_path_factory):
    """Stages 00, 02 and 03 of a smoke run played by the scripted agent of ``tests/scripted.py`` (no model)."""
    from scripted import ScriptedBackend

    from steca_lib.config import EnvironmentConfig, config_from_params
    from steca_lib.expert_data import run_environment_stage
    from steca_lib.rollouts import RolloutConfig, run_rollouts
    from steca_lib.step_rewards import StepRewardConfig, run_step_reward_stage

    run = tmp_path_factory.mktemp("scripted")
    run_environment_stage(config_from_params(EnvironmentConfig, "smoke", run_dir=str(run)))
    run_rollouts(config_from_params(RolloutConfig, "smoke", run_dir=str(run), n_tasks=8, max_steps=20),
                 backend=ScriptedBackend(run))
    run_step_reward_stage(config_from_params(StepRewardConfig, "smoke", run_dir=str(run)))
    return run


@pytest.fixture(scope="session")
def trained_run(scripted_run, smoke_run, tmp_path_factory):
    """The scripted run's stages 00–04 with the smoke SFT model (same world and seed) as stage 01."""
    import shutil

    from steca_lib.calibration import CalibrationConfig, run_calibration_stage
    from steca_lib.config import config_from_params

    run = tmp_path_factory.mktemp("reinforced") / "run"
    shutil.copytree(scripted_run, run)
    shutil.copytree(smoke_run[0] / "01_sft", run / "01_sft")
    run_calibration_stage(config_from_params(CalibrationConfig, "smoke", run_dir=str(run), embedder="lexical"))
    return run
