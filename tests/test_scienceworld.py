"""ScienceWorld as the pipeline's second benchmark: profiles, tasks, expert thoughts, the simulator pool, and
stages 00–05 end to end on the ``smoke-scienceworld`` profile (real simulator; skipped without Java)."""

import importlib.util
import os
import shutil

import pytest

from steca_lib.config import EnvironmentConfig, config_from_params, profile_defaults
from steca_lib.envs import task_from_dict
from steca_lib.envs.household import WorldSpec, generate_task
from steca_lib.envs.scienceworld.tasks import ScienceWorldTask, expert_thought
from steca_lib.evaluation import EvalConfig
from steca_lib.rollouts import RolloutConfig

HAVE_SCIENCEWORLD = importlib.util.find_spec("scienceworld") is not None and shutil.which("java") is not None
needs_scienceworld = pytest.mark.skipif(not HAVE_SCIENCEWORLD, reason="needs the scienceworld extra and Java 17")


def test_a_benchmark_profile_is_its_base_plus_its_own_settings():
    cpu, sw = (config_from_params(RolloutConfig, p) for p in ("cpu", "cpu-scienceworld"))
    assert (sw.n_tasks, sw.max_steps, sw.batch_size) == (18, 20, 24)
    assert (sw.n_samples, sw.max_new_tokens, sw.temperature) == (cpu.n_samples, cpu.max_new_tokens, cpu.temperature)
    assert profile_defaults(EvalConfig, "smoke-scienceworld") == EvalConfig.PROFILE_DEFAULTS["smoke"]
    env = config_from_params(EnvironmentConfig, "cpu-scienceworld", n_seen=12)
    assert env.benchmark == "scienceworld" and env.n_seen == 12 and env.n_train == 240
    with pytest.raises(ValueError, match="unknown profile"):
        config_from_params(RolloutConfig, "gpu-scienceworld")


def test_tasks_of_both_benchmarks_round_trip_through_their_rows():
    sw = ScienceWorldTask("find-plant_7", "seen", "find-plant", 7)
    back = task_from_dict(sw.to_dict())
    assert back == sw and back.family == "find-plant" and back.game_file.endswith("find-plant/variation_7")
    household = generate_task(WorldSpec(), "train", 2)
    assert task_from_dict(household.to_dict()) == household and household.family == household.goal.family


@pytest.mark.parametrize("action, named", [
    ("open door to kitchen", "kitchen"),
    ("go to outside", "outside"),
    ("focus on egg butterfly egg", "egg butterfly egg"),
    ("move egg butterfly egg in inventory to red box", "red box"),
    ("pick up dove", "dove"),
    ("mix cup", "mix cup"),
    ("wait1", None),
    ("look around", None),
])
def test_expert_thoughts_name_what_the_action_is_about(action, named):
    thoughts = {expert_thought(action, f"t/{k}") for k in range(20)}
    assert len(thoughts) == 2  # two seeded wordings per verb
    assert named is None or all(named in t for t in thoughts)
    assert all("in inventory" not in t for t in thoughts)


@needs_scienceworld
def test_pool_lends_loaded_simulators_and_clones_borrow_only_when_stepped():
    from steca_lib.envs.scienceworld import ScienceWorldEnv
    from steca_lib.envs.scienceworld.simulators import SimulatorPool

    pool = SimulatorPool()
    env = ScienceWorldEnv("lifespan-longest-lived", 2, max_steps=10, pool=pool)
    env.reset()
    gold = env.gold_actions()
    env.step(gold[0])
    twin = env.clone()
    assert twin._sim is None and len(pool) == 0  # a clone holds no simulator until it is stepped
    rest = [env.step(a) for a in gold[1:]]
    assert env.won and rest[-1].done and env._sim is None and len(pool) == 1  # finished: simulator given back
    assert twin.steps == 1 and not twin.won
    out = [twin.step(a) for a in gold[1:]]  # borrows the idle simulator (same variation), replays, goes on
    assert twin.won and [r.observation for r in out][-1] == rest[-1].observation
    loaded = pool._idle[0]
    other = ScienceWorldEnv("find-plant", 1, max_steps=10, pool=pool)
    other.reset()
    assert other._sim is loaded and loaded.loaded == ("find-plant", 1, "easy")  # reloaded for another variation


@needs_scienceworld
def test_stages_00_to_05_run_on_scienceworld(tmp_path):
    from steca_lib.calibration import CalibrationConfig, SETS, load_set, run_calibration_stage
    from steca_lib.evaluation import run_eval_stage
    from steca_lib.expert_data import load_expert, load_tasks, run_environment_stage
    from steca_lib.reinforced import ReinforcedConfig, run_reinforced_stage
    from steca_lib.rollouts import load_rollouts, run_rollouts
    from steca_lib.sft import SFTStageConfig, run_sft_stage
    from steca_lib.step_rewards import StepRewardConfig, run_step_reward_stage

    def cfg(cls):
        return config_from_params(cls, "smoke-scienceworld", run_dir=str(tmp_path))

    env = run_environment_stage(cfg(EnvironmentConfig))
    assert env["splits"]["train"] == {"tasks": 24, "expert_success": 1.0, "redraw_rate": 0.0}
    tasks = load_tasks(tmp_path, "seen")
    assert {t.family for t in tasks} == {"find-non-living-thing", "lifespan-longest-lived"}
    expert = load_expert(tmp_path)
    assert expert[0]["conversations"][0]["value"].startswith("Interact with a simulated world")
    assert "Your task is to" in expert[0]["conversations"][2]["value"]

    assert run_sft_stage(cfg(SFTStageConfig))["trajectories"] == 24
    result = run_eval_stage(cfg(EvalConfig))
    assert result["seen"]["n"] == 6 and result["unseen"]["n"] == 6
    rollouts = run_rollouts(cfg(RolloutConfig))
    assert rollouts["records"] == rollouts["expected"] > 0
    assert {r["family"] for r in load_rollouts(tmp_path)} <= {t.family for t in load_tasks(tmp_path, "train")}
    assert run_step_reward_stage(cfg(StepRewardConfig))["tasks"] == 3
    run_calibration_stage(cfg(CalibrationConfig))
    assert sum(len(load_set(tmp_path, name, cfg(CalibrationConfig).label)) for name in SETS) > 0
    trained = run_reinforced_stage(cfg(ReinforcedConfig))
    assert os.path.exists(os.path.join(trained["model_dir"], "config.json"))
