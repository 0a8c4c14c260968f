"""ScienceWorld simulators lent from a pool, all in one JVM, with a lean step.

ScienceWorld's Python package starts one JVM per environment (about 2 s and 0.5 GB each). The kit starts one JVM
per process and creates further simulators inside it through its gateway: each is an independent instance of the
simulator's Python interface (about 0.2 s). Loading a task variation still takes 0.2–2 s, so an episode borrows a
simulator only while it runs and gives it back when it ends; a simulator that already holds the wanted variation
is lent first. The lean step asks the simulator for the observation and the score only: the package's ``step``
also computes ``look``, ``inventory`` and every valid action-object combination for its info dict, about 10x the
step itself.

ScienceWorld lists a few objects of a starting room in a different order after every reset (the art studio's three
paint cups; seen with the package's own environment too, and not seedable from Python), so an opening text, unlike
the embedded world's, can differ between runs. The observations along a gold path were the same in our checks.
"""

from __future__ import annotations

Variation = tuple[str, int, str]  # task name, variation index, simplification
_GATEWAY = None  # the package's environment that started this process's JVM


def _gateway():
    """The process's ScienceWorld JVM (started on first use; the package stops it when Python exits)."""
    global _GATEWAY
    if _GATEWAY is None:
        try:
            from scienceworld import ScienceWorldEnv
        except ImportError as err:
            raise ImportError("ScienceWorld needs the `scienceworld` extra: pip install -e '.[scienceworld]' "
                              "(scienceworld==1.2.3) and a Java 17 runtime") from err
        _GATEWAY = ScienceWorldEnv("", envStepLimit=10**6)
    return _GATEWAY


class Simulator:
    """One simulator instance: load a variation, restart it, step it, read its gold path."""

    def __init__(self):
        self._server = _gateway()._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self.loaded: Variation | None = None

    def load(self, variation: Variation) -> None:
        """Load a task variation (with its gold path) unless it is the one already loaded."""
        if self.loaded != variation:
            task_name, index, simplification = variation
            names = list(self._server.getTaskNames())
            if task_name not in names:
                raise ValueError(f"unknown ScienceWorld task {task_name!r}; known: {names}")
            self._server.load(task_name, int(index), simplification, True)
            self.loaded = variation

    def start(self) -> str:
        """Restart the loaded variation; the opening text is the first ``look around`` and the task description
        (what the package's ``reset`` does, without its info dict)."""
        self._server.reset()
        observation = self._server.step("look around")
        return f"{observation.strip()}\n\n{self._server.getTaskDescription().strip()}"

    def step(self, action: str) -> tuple[str, int]:
        """The observation and the score (0–100, negative for a failed task) after one action."""
        observation = self._server.step(action)
        return observation.strip(), int(round(100 * self._server.getScore()))

    def gold_actions(self) -> list[str]:
        """The variation's gold action sequence."""
        return list(self._server.getGoldActionSequence())

    def variations(self, split: str) -> list[int]:
        """Variation indices of the loaded task in ScienceWorld's ``train``, ``dev`` or ``test`` set."""
        return list(getattr(self._server, f"getVariations{split.capitalize()}")())


class SimulatorPool:
    """Idle simulators, lent out and given back; new ones start when none is idle."""

    def __init__(self):
        self._idle: list[Simulator] = []

    def acquire(self, variation: Variation) -> Simulator:
        """A simulator with ``variation`` loaded (an idle one that already holds it when there is one)."""
        match = next((i for i, s in enumerate(self._idle) if s.loaded == variation), None)
        if match is not None:
            return self._idle.pop(match)
        sim = self._idle.pop() if self._idle else Simulator()
        sim.load(variation)
        return sim

    def release(self, sim: Simulator) -> None:
        self._idle.append(sim)

    def __len__(self) -> int:
        return len(self._idle)


#: The process's pool: evaluation, exploration and expert data all borrow from it.
POOL = SimulatorPool()
