"""Stage 04: deviated steps, reflections and the reinforced-training sets (the paper's §3.2, Eq. 5–6).

From the rollouts (stage 02) and step rewards (stage 03) of the training tasks it builds, in the official
``prompt/chosen/rejected`` schema with ``deviation`` and ``reward`` (the sample weight):

* D_c ``calibrated.json``: expert prefix + deviated step and its observation → reflection thought with the expert's
  next action, then the expert's continuation; rejected = the agent's greedy continuation;
* D_e ``explored.json``: the agent's own successful greedy episodes (j = 0) close to the expert's (nDTW filter);
* D_s ``expert_sub.json``: expert sub-trajectories where the expert action's step reward beats the explored one
  and the explored continuation failed (j ≥ 2), and ``traj_pairs.json``: full expert vs failed explored episodes;
* ``rft.json`` for the RFT baseline (not part of STeCa's data): every explored task's expert trajectory plus each
  distinct successful greedy explored episode, from any branch point (expert prefix, then the agent's own turns).

``train_pairs.json`` joins them (ids reset). Each sample's ``meta`` says which set, task, step and rule made it.
A calibrated trajectory continues with the expert's recorded turns, as in the official code. After a detour those
can be impossible (the expert's ``open cabinet 4`` when the agent now stands elsewhere), so by default the stage
re-executes them from the deviated state and keeps the sample only when nothing changes (``check_suffix``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from steca_lib.artifacts import finished_summary, model_inputs, stage_dir, upstream, write_manifest
from steca_lib.config import RunSettings, check_config, reject
from steca_lib.data import fastchat_turns, read_jsonl, write_json_atomic, write_jsonl_atomic
from steca_lib.deviation import RULES, count_by, detect, sample_weight, trajectory_deviation
from steca_lib.embedders import EMBEDDERS, Embedder, open_embedder
from steca_lib.prompts import observation_turn
from steca_lib.reflection import (REFLECTORS, ReflectionRequest, chat_endpoint, chat_name, open_reflector,
                                  reflect_all)
from steca_lib.rollouts import GREEDY, ExpertPath, expert_paths, load_rollouts, turn_index
from steca_lib.sft import model_dir as sft_model_dir
from steca_lib.step_rewards import load_step_rewards

STAGE = "04_calibration"
#: Final reward of an expert trajectory: the embedded expert is a planner that reaches every goal (stage 00
#: reports ``expert_success`` = 1.0 per split).
EXPERT_REWARD = 1.0
SETS = ("calibrated", "explored", "expert_sub", "traj_pairs")
#: Sets written beside STeCa's, for baselines.
BASELINE_SETS = ("rft",)
#: Settings left out of the finished check: where the run lives, notes, how patiently the endpoint is asked, and
#: the reflector's model and endpoint, which are compared as resolved (``reflector_identity``, in the inputs).
NOT_COMPARED = ("run_dir", "extra", "reflector_timeout", "reflector_retries", "reflector_model", "reflector_base_url")


@dataclass
class CalibrationConfig(RunSettings):
    """Stage 04: which deviation rule, which reflector and embedder, and the weights of the training sets."""

    PROFILE_DEFAULTS: ClassVar[dict[str, dict]] = {
        "smoke": {}, "cpu": {}, "cpu-llm": {},
        "paper": {"reflector": "chat", "embedder": "bert", "check_suffix": False},
    }

    rule: str = "code"
    """Deviation rule: ``paper`` (Eq. 5, first deviation per task) or ``code`` (the official scripts)."""
    delta: float = 0.0
    """δ of the paper rule (the paper also tries −0.01, 0.05, 0.1)."""
    min_step: int = 2
    """Code rule and expert sub-trajectories: first branch point j considered (official: 2)."""
    max_similarity: float = 0.95
    """Code rule: the two actions' embedding cosine must be below this."""
    embedder: str = "auto"
    """Action embedder for the similarity filter and nDTW: auto, bert, minilm, lexical (see ``embedders``)."""
    reflector: str = "rule"
    """``rule`` (offline stand-in for GPT-4o), ``chat`` (OpenAI-compatible endpoint) or ``self`` (the SFT agent)."""
    reflector_model: str = ""
    """``chat``: the endpoint's model name (empty = ``$STECA_REFLECT_MODEL``, else gpt-4o); ``self``: the model
    folder (empty = the run's SFT model)."""
    reflector_base_url: str = ""
    """``chat``: the OpenAI-compatible endpoint (empty = ``$STECA_REFLECT_BASE_URL``, else ``$OPENAI_BASE_URL``,
    else OpenAI's). Recorded only as a digest."""
    reflector_timeout: float = 60.0
    """``chat``: seconds one request may take before it is retried."""
    reflector_retries: int = 5
    """``chat``: retries of a failed request (timeout, 429, 5xx, malformed or empty answer) before the stage stops
    with the answers so far cached."""
    check_suffix: bool = True
    """Keep a calibrated trajectory only when the expert's continuation, re-executed after the deviated action,
    sees the expert's observations and reaches the goal (the official code does not check)."""
    k: float = 0.01
    """Weight scale in 1 ± k·deviation (official: 0.01 ALFWorld, 1 VirtualHome)."""
    explored_max_deviation: float = 0.013
    """Explored successes are kept only below this nDTW distance from the expert (official ALFWorld: 0.013)."""
    margin: float = 0.01
    """Step-reward and final-reward margin of expert sub-trajectories and trajectory pairs (official: 0.01)."""
    label: str = "main"
    """Name of this calibration's folder under ``04_calibration/`` (ablations: another rule, δ or reflector)."""

    def __post_init__(self):
        check_config(self, non_negative=("min_step", "k", "explored_max_deviation", "margin", "reflector_retries"),
                     positive=("reflector_timeout",), fractions=("max_similarity",),
                     choices={"rule": RULES, "reflector": REFLECTORS}, folder_names=("label",))
        if not (self.embedder in EMBEDDERS or str(self.embedder).startswith("minilm:")):
            raise reject(self, "embedder", f"one of {', '.join(EMBEDDERS)} or minilm:<folder>")
        for name in ("reflector_retries", "min_step"):
            if not isinstance(getattr(self, name), int):
                raise reject(self, name, "an integer ≥ 0")

    def reflector_identity(self) -> str:
        """What decides the reflections besides the prompts: the rule stand-in, the chat model and (a digest of) its
        endpoint as resolved now, or the self-reflecting model's folder. Part of the finished check."""
        if self.reflector == "chat":
            return chat_name(*chat_endpoint(self.reflector_model or None, self.reflector_base_url or None))
        if self.reflector == "self":
            finished = model_inputs(self.reflector_model or sft_model_dir(self.path)) or {}
            return f"self:{self.reflector_model or 'the run SFT model'}:{finished.get('model', '')}"
        return self.reflector


def strip_final_observation(turns: list[dict]) -> list[dict]:
    """A continuation as a training target: it must end on the agent's turn."""
    return turns[:-1] if turns and turns[-1]["from"] == "human" else turns


def suffix_still_valid(path: ExpertPath, j: int, deviated_action: str) -> bool:
    """Whether the expert's continuation a_{j+1}, …, a_T, re-executed after the deviated action, sees exactly the
    observations the expert saw and reaches the goal, i.e. the calibrated trajectory is a real trajectory."""
    env, _ = path.prefix(j, max_steps=len(path.actions) + 2)
    env.step(deviated_action)
    for i, action in enumerate(path.actions[j:]):
        result = env.step(action)
        turn = turn_index(j + i) + 1
        if result.done:
            break
        if turn >= len(path.messages) or path.messages[turn]["content"] != observation_turn(result.observation):
            return False
    return env.won


def _pair(set_name: str, prompt: list[dict], chosen: list[dict], rejected: list[dict], embedder: Embedder,
          k: float, meta: dict) -> dict:
    dev = trajectory_deviation(chosen, rejected, embedder)
    return {"id": "", "prompt": prompt, "chosen": chosen, "rejected": rejected, "deviation": dev,
            "reward": sample_weight(dev, k, rewards_deviation=set_name != "explored"),
            "meta": {"set": set_name, **meta}}


class SetBuilder:
    """Builds the four sets from one run's expert paths, greedy explored records and step-reward rows."""

    def __init__(self, cfg: CalibrationConfig, paths: dict[str, ExpertPath], greedy: dict[tuple[str, int], dict],
                 embedder: Embedder):
        self.cfg, self.paths, self.greedy, self.embedder = cfg, paths, greedy, embedder

    def expert_turns(self, task_id: str) -> list[dict]:
        return fastchat_turns(self.paths[task_id].messages)

    def branch(self, row: dict) -> tuple[list[dict], int]:
        """The greedy explored conversation of a row and the index of its first explored turn."""
        return self.greedy[(row["task_id"], row["step"])]["conversations"], turn_index(row["step"])

    def final_reward(self, row: dict) -> float:
        """Final reward of the row's greedy explored episode."""
        return float(self.greedy[(row["task_id"], row["step"])]["meta"]["reward"])

    def calibration_requests(self, deviations: list[dict]) -> list[ReflectionRequest]:
        """Reflection requests for deviations whose action got an observation (the episode went on)."""
        out = []
        for d in deviations:
            conv, t = self.branch(d)
            if len(conv) > t + 1:
                out.append(ReflectionRequest(key=f"{d['task_id']}/{d['step']}",
                                             history=self.expert_turns(d["task_id"])[:t] + conv[t:t + 2],
                                             expert_action=d["expert_action"]))
        return out

    def calibrated(self, requests: list[ReflectionRequest], reflections: list[dict],
                   deviations: dict[str, dict]) -> tuple[list[dict], int]:
        """D_c, and how many were dropped because the expert's continuation is not valid after the deviation."""
        out, dropped = [], 0
        for req, refl in zip(requests, reflections):
            d = deviations[req.key]
            j = d["step"]
            conv, t = self.branch(d)
            if self.cfg.check_suffix and not suffix_still_valid(self.paths[d["task_id"]], j, req.deviated_action):
                dropped += 1
                continue
            chosen = [{"from": "gpt", "value": refl["turn"]}, *self.expert_turns(d["task_id"])[t + 1:]]
            out.append(_pair("calibrated", req.history, chosen, strip_final_observation(conv[t + 2:]),
                             self.embedder, self.cfg.k,
                             {"task_id": d["task_id"], "family": d["family"], "step": j, "rule": self.cfg.rule,
                              "reflector": refl["reflector"], "raw_reflection": refl["raw"],
                              "explored_reward": d["explored_reward"],
                              "previous_expert_reward": d["previous_expert_reward"]}))
        return out, dropped

    def explored(self, rows: list[dict]) -> tuple[list[dict], int]:
        """D_e: successful greedy episodes from the start (j = 0) within the nDTW filter; also how many
        succeeded before the filter."""
        out, successes = [], 0
        for r in rows:
            if r["step"] != 0 or not r["greedy_success"]:
                continue
            successes += 1
            conv, t = self.branch(r)
            expert = self.expert_turns(r["task_id"])
            pair = _pair("explored", expert[:t], strip_final_observation(conv[t:]), expert[t:], self.embedder,
                         self.cfg.k, {"task_id": r["task_id"], "family": r["family"], "step": 0})
            if pair["deviation"] < self.cfg.explored_max_deviation:
                out.append(pair)
        return out, successes

    def expert_sub(self, rows: list[dict]) -> list[dict]:
        """D_s: at j ≥ min_step, the expert suffix beats the explored one by final and step reward."""
        out = []
        for r in rows:
            conv, t = self.branch(r)
            rejected = strip_final_observation(conv[t:])
            if (r["step"] >= self.cfg.min_step and rejected and EXPERT_REWARD > self.final_reward(r)
                    and r["expert_reward"] > r["explored_reward"] + self.cfg.margin):
                expert = self.expert_turns(r["task_id"])
                out.append(_pair("expert_sub", expert[:t], expert[t:], rejected, self.embedder, self.cfg.k,
                                 {"task_id": r["task_id"], "family": r["family"], "step": r["step"]}))
        return out

    def traj_pairs(self, rows: list[dict]) -> list[dict]:
        """Full expert trajectory vs the agent's failed greedy episode from the start (j = 0)."""
        out = []
        for r in rows:
            if r["step"] == 0 and EXPERT_REWARD > self.final_reward(r) + self.cfg.margin:
                conv, t = self.branch(r)
                expert = self.expert_turns(r["task_id"])
                out.append(_pair("traj_pairs", expert[:t], expert[t:], strip_final_observation(conv[t:]),
                                 self.embedder, self.cfg.k, {"task_id": r["task_id"], "family": r["family"],
                                                             "step": 0}))
        return out

    def rft(self, rows: list[dict]) -> list[dict]:
        """Expert trajectories of the explored tasks plus the distinct successful greedy explored episodes
        (chosen only: RFT is SFT on successes)."""
        out, seen = [], set()
        for task_id in sorted({r["task_id"] for r in rows}):
            expert = self.expert_turns(task_id)
            out.append(_success(expert, {"task_id": task_id, "family": self.paths[task_id].task.family,
                                         "step": None, "source": "expert"}))
            seen.add(json.dumps(expert))
        for r in rows:
            if r["greedy_success"]:
                conv = self.branch(r)[0]
                if json.dumps(conv) not in seen:
                    seen.add(json.dumps(conv))
                    out.append(_success(conv, {"task_id": r["task_id"], "family": r["family"], "step": r["step"],
                                               "source": "explored"}))
        return out


def _success(turns: list[dict], meta: dict) -> dict:
    """A successful trajectory as an SFT sample: prompt = instruction, ``OK`` and the task; chosen = the rest."""
    t = turn_index(0)
    return {"id": "", "prompt": turns[:t], "chosen": strip_final_observation(turns[t:]), "rejected": [],
            "deviation": 0.0, "reward": 1.0, "meta": {"set": "rft", **meta}}


def action_similarity(rows: list[dict], embedder: Embedder) -> dict[tuple[str, int], float]:
    """Cosine of expert and explored action for every row where they differ (1 where they are equal)."""
    return {(r["task_id"], r["step"]): 1.0 if r["same_action"] else
            float(embedder.cosine([r["expert_action"]], [r["explored_action"] or ""])[0, 0]) for r in rows}


def detection_rows(run_dir: Path) -> tuple[list[dict], dict[tuple[str, int], dict]]:
    """Stage 03's step-reward rows with ``continues`` (whether the greedy explored episode has a turn after
    â_{j+1}, which the code rule needs) added from stage 02's records, and those greedy records by (task, j)."""
    greedy = {(r["task_id"], r["step"]): r for r in load_rollouts(run_dir)
              if r["branch"] == "explored" and r["sample"] == GREEDY}
    rows = load_step_rewards(run_dir)
    for r in rows:
        r["continues"] = len(greedy[(r["task_id"], r["step"])]["conversations"]) > turn_index(r["step"]) + 2
    return rows, greedy


def run_calibration_stage(cfg: CalibrationConfig) -> dict:
    """Detect deviations, reflect on them (cached) and write the training sets; skips when already done."""
    inputs = {**upstream(cfg.path, "02_rollouts", "03_step_rewards"), "reflector": cfg.reflector_identity()}
    out = stage_dir(cfg.path, f"{STAGE}/{cfg.label}")
    done = finished_summary(out, cfg, keys=tuple(k for k in vars(cfg) if k not in NOT_COMPARED), inputs=inputs)
    if done is not None:
        return done
    started = time.time()
    rows, greedy = detection_rows(cfg.path)
    tasks = {r["task_id"] for r in rows}
    paths = {p.task.task_id: p for p in expert_paths(cfg.path, None) if p.task.task_id in tasks}
    embedder = open_embedder(cfg.embedder)
    similarity = action_similarity(rows, embedder)
    deviations, funnel = detect(rows, cfg.rule, cfg.delta, similarity, cfg.min_step, cfg.max_similarity)
    write_jsonl_atomic(deviations, out / "deviations.jsonl")

    builder = SetBuilder(cfg, paths, greedy, embedder)
    requests = builder.calibration_requests(deviations)
    funnel.append(("deviated action got an observation", len(requests)))
    reflector = open_reflector(cfg.reflector, cfg.path, cfg.reflector_model, cfg.reflector_base_url,
                               cfg.reflector_timeout, cfg.reflector_retries)
    reflections, calls = reflect_all(requests, reflector, out / "reflections.jsonl")
    funnel.append(("reflected", len(reflections)))
    calibrated, dropped = builder.calibrated(requests, reflections,
                                             {f"{d['task_id']}/{d['step']}": d for d in deviations})
    if cfg.check_suffix:
        funnel.append(("expert continuation still valid after â (replayed)", len(calibrated)))
    explored, successes = builder.explored(rows)
    sets = {"calibrated": calibrated, "explored": explored, "expert_sub": builder.expert_sub(rows),
            "traj_pairs": builder.traj_pairs(rows), "rft": builder.rft(rows)}
    merged = []
    for name in SETS + BASELINE_SETS:
        for i, sample in enumerate(sets[name]):
            sample["id"] = f"{name}-{i}"
        write_json_atomic(sets[name], out / f"{name}.json")
        if name in SETS:
            merged += [{**s, "id": str(len(merged) + i)} for i, s in enumerate(sets[name])]
    write_json_atomic(merged, out / "train_pairs.json")
    summary = {
        "rule": cfg.rule, "embedder": embedder.name, "reflector": reflector.name, "reflector_calls": calls,
        "tasks": len(tasks), "funnel": [{"check": name, "count": n} for name, n in funnel],
        "explored_successes_before_filter": successes, "dropped_invalid_suffix": dropped,
        "sizes": {name: len(s) for name, s in sets.items()}, "train_pairs": len(merged),
        "by_family": {name: count_by([s["meta"] for s in sets[name]]) for name in SETS + BASELINE_SETS},
    }
    write_manifest(out, f"{STAGE}/{cfg.label}", cfg, summary, started, inputs)
    return summary


def load_set(run_dir: Path, name: str = "train_pairs", label: str = "main") -> list[dict]:
    """A set written by stage 04 (``calibrated``, ``explored``, ``expert_sub``, ``traj_pairs``, ``rft`` or
    ``train_pairs``)."""
    return json.loads((Path(run_dir) / STAGE / label / f"{name}.json").read_text())


def load_deviations(run_dir: Path, label: str = "main") -> list[dict]:
    return read_jsonl(Path(run_dir) / STAGE / label / "deviations.jsonl")


if __name__ == "__main__":
    from steca_lib.config import stage_main

    raise SystemExit(stage_main(CalibrationConfig, run_calibration_stage,
                                "Stage 04: deviations, reflections and training sets (after stage 03)."))
