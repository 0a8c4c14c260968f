"""Stage 02 on a Ray cluster: the exploration shards run as Ray tasks, then :func:`~steca_lib.rollouts.merge_shards`.

Each task is ``run_rollouts`` of one shard (``--shard i/n``): it appends every finished episode to its own shard
file and, on a rerun, skips the keys already there. Ray reruns a task whose worker died (``max_retries``), so a
killed worker costs only its episodes in flight; nothing is lost or written twice. The run folder must be on storage
that every node sees (a shared file system). ``ray.init`` connects to ``ray_address`` (or ``$RAY_ADDRESS``), else
starts a local Ray with this machine's CPUs.

The ``ray`` package is an optional extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import dataclasses
import os
import time

from steca_lib.generation import require

#: Times Ray reruns a shard whose worker process died (a rerun resumes from the shard's file).
MAX_RETRIES = 3


def explore_shard(config: dict, shard: str, threads: int) -> dict:
    """One shard of stage 02 in this worker (what a Ray task runs)."""
    import torch

    from steca_lib.rollouts import RolloutConfig, run_rollouts

    torch.set_num_threads(threads)
    return run_rollouts(RolloutConfig(**{**config, "shard": shard, "executor": "local"}))


def run_on_ray(cfg) -> dict:
    """Explore ``cfg``'s tasks in ``cfg.ray_shards`` shards (0: one per CPU of the cluster) as Ray tasks of
    ``cfg.ray_cpus`` CPUs each, merge them, and return the merged stage's summary with each shard's."""
    ray = require("ray", "install the extra: pip install -e '.[ray]'")
    from steca_lib.artifacts import discard_if_inputs_changed, stage_dir
    from steca_lib.rollouts import merge_shards, rollout_inputs

    discard_if_inputs_changed(stage_dir(cfg.path, "02_rollouts"), rollout_inputs(cfg))  # once, before the shards

    if not ray.is_initialized():
        ray.init(address=cfg.ray_address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False)
    shards = cfg.ray_shards or max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.ray_cpus))
    task = ray.remote(num_cpus=cfg.ray_cpus, max_retries=MAX_RETRIES, retry_exceptions=False)(explore_shard)
    config = {**dataclasses.asdict(cfg), "run_dir": str(cfg.path)}
    started = time.time()
    summaries = ray.get([task.remote(config, f"{i}/{shards}", cfg.ray_cpus) for i in range(shards)])
    merged = merge_shards(dataclasses.replace(cfg, shard="0/1"))
    return {**merged, "executor": "ray", "shards": summaries, "wall_s": round(time.time() - started, 1)}
