"""Scenes, goals and tasks of the embedded household: plain data that round-trips through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from steca_lib.envs.household.catalog import FAMILY_TRANSFORM, camel
from steca_lib.envs.household.world import HouseholdEnv


@dataclass(frozen=True)
class Goal:
    """What the task asks. ``recep`` is a receptacle *type*; ``lamp`` is set only for look-at-under-light."""

    family: str
    obj: str
    recep: str | None
    lamp: str | None
    text: str

    @property
    def transform(self) -> str | None:
        """``clean``/``heat``/``cool`` when the family needs it before placing, else None."""
        return FAMILY_TRANSFORM.get(self.family)

    @property
    def count(self) -> int:
        """How many objects must end up in the receptacle."""
        return 2 if self.family == "pick_two_obj_and_place" else 1


@dataclass(frozen=True)
class Scene:
    """A room: its receptacles in listing order, and what each one holds at the start."""

    room: str
    floorplan: int
    receptacles: tuple[str, ...]
    contents: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Task:
    """One generated task: a scene, a goal, and where it belongs (split, index, world seed)."""

    task_id: str
    split: str
    index: int
    world_seed: int
    scene: Scene
    goal: Goal

    @property
    def family(self) -> str:
        """The task family (``goal.family``), as every benchmark's tasks name it."""
        return self.goal.family

    def make_env(self, max_steps: int = 40) -> HouseholdEnv:
        """A fresh episode of this task in the embedded world."""
        return HouseholdEnv(self, max_steps=max_steps)

    @property
    def game_file(self) -> str:
        """An ALFWorld-style game path: ``household/<split>/<family>-<Obj>-None-<Recep>-<floorplan>/trial_<n>``."""
        target = camel(self.goal.recep or self.goal.lamp or "None")
        room = f"{self.scene.room}{self.scene.floorplan}"
        return (f"household/{self.split}/{self.goal.family}-{camel(self.goal.obj)}-None-{target}-{room}/"
                f"trial_s{self.world_seed}_{self.index:05d}")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["game_file"] = self.game_file
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        """Inverse of :meth:`to_dict`."""
        s = d["scene"]
        scene = Scene(room=s["room"], floorplan=int(s["floorplan"]), receptacles=tuple(s["receptacles"]),
                      contents={k: tuple(v) for k, v in s["contents"].items()})
        return cls(task_id=d["task_id"], split=d["split"], index=int(d["index"]), world_seed=int(d["world_seed"]),
                   scene=scene, goal=Goal(**d["goal"]))
