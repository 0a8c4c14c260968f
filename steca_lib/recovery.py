"""Stage 06b: can an agent recover once a deviated action is already in its history? (the paper's Fig. 4)

Each case is a real environment state reached by the expert's prefix plus one deviated action, with the history
the agent would have seen; the agent continues greedily and we count successes. Two case sets, the same for every
method of a run:

* ``seen``: calibrated samples of stage 04 (training tasks: the agent's own deviation, as in the paper, which draws
  100 samples from D_c and warns that they overlap the training data);
* ``unseen``: held-out ``unseen`` tasks where, at a random expert step, the agent detours to a receptacle the
  expert does not visit next (``go to``), with a plain thought; the paper builds its set from unseen scenarios
  without saying how, so this construction is the kit's.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from dataclasses import dataclass
from typing import ClassVar

from steca_lib.artifacts import (discard_if_inputs_changed, finished_summary, model_inputs, stage_dir, upstream,
                                 write_manifest)
from steca_lib.backends import open_backend
from steca_lib.calibration import load_set
from steca_lib.config import check_config
from steca_lib.data import chat_messages
from steca_lib.envs.base import replay
from steca_lib.episodes import Episode
from steca_lib.evaluation import EvalConfig, play_and_record, summarize
from steca_lib.generation import GenerationBackend
from steca_lib.prompts import observation_turn, parse_react_action, react_turn
from steca_lib.rollouts import ExpertPath, expert_paths
from steca_lib.sft import model_dir as sft_model_dir
from steca_lib.sft import require_sft_model

STAGE = "06_recovery"


@dataclass
class RecoveryConfig(EvalConfig):
    """Which agent continues from deviated histories, and how many cases per set (paper: 100 seen samples)."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        name: {**d, **{"smoke": {"n_cases": 12}, "cpu": {"n_cases": 40}}.get(name, {})}
        for name, d in EvalConfig.PROFILE_DEFAULTS.items()}

    n_cases: int = 100
    """Cases per set (fewer when fewer exist)."""
    calibration: str = "main"
    """Stage-04 folder whose calibrated samples make the ``seen`` cases."""

    def __post_init__(self):
        super().__post_init__()
        check_config(self, counts=("n_cases",))


def _case(key: str, path: ExpertPath, j: int, turn: str, history: list[dict], max_steps: int, meta: dict) -> Episode:
    """The episode after the expert's first ``j`` actions and the deviated ``turn`` (thought + action); the agent
    then has ``max_steps`` more steps, the evaluation's budget."""
    env = replay(path.task.make_env(j + 1 + max_steps), path.actions[:j])
    result = env.step(parse_react_action(turn) or "")
    messages = chat_messages(history) if history else [
        *path.messages[:3 + 2 * j], {"role": "assistant", "content": turn},
        {"role": "user", "content": observation_turn(result.observation)}]
    return Episode(key=key, env=env, messages=messages,
                   meta={"family": path.task.family, "step": j, "deviated_turn": turn, **meta})


def seen_cases(cfg: RecoveryConfig) -> dict[str, Episode]:
    """Up to ``n_cases`` calibrated samples (seeded choice): their prompt ends with the deviated step's observation."""
    samples = load_set(cfg.path, "calibrated", cfg.calibration)
    samples = random.Random(cfg.seed).sample(samples, min(cfg.n_cases, len(samples)))
    paths = {p.task.task_id: p for p in expert_paths(cfg.path, None)}
    out = {}
    for s in samples:
        m = s["meta"]
        key = f"{m['task_id']}/{m['step']}"
        out[key] = _case(key, paths[m["task_id"]], m["step"], s["prompt"][-2]["value"], s["prompt"], cfg.max_steps,
                         {"split": "seen"})
    return out


def unseen_cases(cfg: RecoveryConfig) -> dict[str, Episode]:
    """One detour per unseen task (up to ``n_cases``): at a seeded expert step j ≥ 1, ``go to`` a receptacle other
    than the current one and the expert's next target."""
    rng = random.Random(cfg.seed)
    out = {}
    for path in expert_paths(cfg.path, None, "unseen"):
        if len(out) >= cfg.n_cases or len(path.actions) < 3:
            continue
        j = rng.randrange(1, len(path.actions) - 1)
        env, _ = path.prefix(j, j + 1 + cfg.max_steps)
        avoid = {env.state.location, path.actions[j].removeprefix("go to ")}
        options = [r for r in path.task.scene.receptacles if r not in avoid]
        target = rng.choice(options)
        turn = react_turn(f"Let me look at {target} first.", f"go to {target}")
        key = f"{path.task.task_id}/{j}"
        out[key] = _case(key, path, j, turn, [], cfg.max_steps, {"split": "unseen"})
    return out


def recovery_inputs(run_dir: Path, calibration: str, model: str | Path) -> dict[str, str]:
    """What the recovery test is made from: the stage-04 calibration of its seen cases and the model's stage."""
    return {**upstream(run_dir, f"04_calibration/{calibration}"), **(model_inputs(model) or {})}


def run_recovery_stage(cfg: RecoveryConfig, backend: GenerationBackend | None = None) -> dict:
    """Continue every case greedily with ``cfg.model_dir`` (default: the SFT model); success per case set."""
    model = cfg.model_dir or str(sft_model_dir(cfg.path))
    if backend is None:
        require_sft_model(model, "model_dir")
    inputs = recovery_inputs(cfg.path, cfg.calibration, model)
    out = stage_dir(cfg.path, f"{STAGE}/{cfg.label}")
    done = finished_summary(out, cfg, inputs=inputs)
    if done is not None:
        return done
    started = time.time()
    discard_if_inputs_changed(out, inputs)
    backend = backend or open_backend(cfg.backend, model, cfg.dtype)
    summary = {}
    for name, cases in (("seen", seen_cases), ("unseen", unseen_cases)):
        records = play_and_record(cases(cfg), backend, cfg, out / f"{name}.jsonl", desc=f"recovery {name}")
        summary[name] = summarize(records, cfg.n_bootstrap, cfg.seed)
    write_manifest(out, f"{STAGE}/{cfg.label}", cfg, summary, started, inputs)
    return summary


if __name__ == "__main__":
    from steca_lib.config import stage_main

    raise SystemExit(stage_main(RecoveryConfig, run_recovery_stage,
                                "Stage 06b: recovery from deviated histories (after stage 04), e.g. "
                                "--set model_dir=<run>/05_reinforced/steca/model --set label=steca."))
