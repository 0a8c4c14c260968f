"""Stages under ``accelerate launch``: every process trains, one process writes.

``accelerate launch --num_processes N -m steca_lib.sft ...`` starts N copies of a stage; the Trainer keeps their
models in step (DDP, or FSDP/DeepSpeed from a config file). These helpers let rank 0 alone build the starting model
and write artifacts and manifests, and keep the others waiting where they read them. With one process they cost
nothing and start no process group.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


def world_size() -> int:
    """Processes of this launch (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes (global rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait until every process reaches this point (nothing to wait for in a single process)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


@contextmanager
def main_first():
    """Rank 0 runs the block first (it builds what the others then find and reuse), then the other ranks."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
