"""Every method the kit trains and compares, in one registry: the rows of the paper's Table 1 and its ablations.

A method is its table label, its reinforced-training loss (stage 05; none for SFT), the stage-04 calibration it
needs (None: the run's main one), other stage-05 settings (an ablation's sets), its rounds of re-exploration
(iterated ETO/IPR) and the paper's numbers where the paper gives them. The loss of the official trainer is

    loss_i = r_i · ( −log σ(β·Δ_i) − s · log π(chosen_i) )

with β the DPO strength, s the SFT term's weight and r_i the stage-04 sample weight (or 1 when not ``weighted``);
see :mod:`steca_lib.reinforced`. Stage 05's ``variant`` names a method that defines a loss (:data:`VARIANTS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from steca_lib.calibration import BASELINE_SETS
from steca_lib.calibration import SETS as STECA_SETS


@dataclass(frozen=True)
class Loss:
    """A reinforced-training loss: DPO strength β (0: the DPO term is the constant log 2), the SFT term's weight,
    whether stage 04's sample weights apply, and the stage-04 sets it trains on."""

    beta: float
    sft: float
    weighted: bool
    sets: tuple[str, ...]


@dataclass(frozen=True)
class Method:
    """A row of the comparison (see the module docstring)."""

    label: str
    loss: Loss | None = None
    """Its own loss (it is then a stage-05 variant of that name); None: it trains as ``variant`` or not at all."""
    variant: str = ""
    """The stage-05 variant it trains with, when it has no loss of its own (ablations: ``steca``)."""
    calibration: dict | None = None
    """Stage-04 settings of the calibration it needs (None: the run's main calibration)."""
    training: dict | None = None
    """Other stage-05 settings (an ablation's ``sets``, another ``calibration`` folder)."""
    rounds: int = 1
    """Rounds of explore → pairs → train (:mod:`steca_lib.iteration`); 1 = stage 05 once."""
    paper: tuple[float, float] | None = None
    """The paper's ALFWorld success (%) seen / unseen, Llama-2-7B-Chat (Tables 1 and 3)."""
    paper_average: float | None = None
    """The paper's average over VirtualHome and ALFWorld seen/unseen (Table 1), where that is all it gives."""

    @property
    def trains(self) -> bool:
        return self.loss is not None or bool(self.variant)


_D_S = ("expert_sub", "traj_pairs")
METHODS = {
    "sft": Method("SFT", paper_average=63.3),
    "rft": Method("RFT", Loss(0.0, 1.0, False, BASELINE_SETS)),
    "eto": Method("ETO (1 iteration)", Loss(0.1, 0.0, False, ("traj_pairs",))),
    "ipr": Method("IPR (1 iteration)", Loss(0.1, 1.0, False, _D_S), paper=(70.3, 74.7), paper_average=68.6),
    "sft+dpo": Method("STeCa data + SFT+DPO", Loss(0.1, 1.0, True, STECA_SETS), paper_average=70.0),
    "wo-rt": Method("STeCa w/o reinforced training", Loss(0.0, 1.0, False, STECA_SETS), paper_average=69.6),
    "steca": Method("STeCa", Loss(0.0, 1.0, True, STECA_SETS), paper=(74.3, 76.1), paper_average=70.9),
    # iterated baselines: each extra round explores again (cpu: about 1.5 h per round), so they are opt-in there
    "eto-3": Method("ETO (3 iterations)", variant="eto", rounds=3),
    "ipr-3": Method("IPR (3 iterations)", variant="ipr", rounds=3, paper=(70.3, 74.7), paper_average=68.6),
}
ABLATIONS = {
    "no-calibrated": Method("STeCa w/o D_c", variant="steca", training={"sets": ["explored", *_D_S]}),
    "no-explored": Method("STeCa w/o D_e", variant="steca", training={"sets": ["calibrated", *_D_S]}),
    "no-expert_sub": Method("STeCa w/o D_s", variant="steca", training={"sets": ["calibrated", "explored"]}),
    "self-reflection": Method("STeCa, reflection by the agent itself", variant="steca",
                              calibration={"label": "self", "reflector": "self"}, training={"calibration": "self"},
                              paper=(71.4, 73.3)),
    **{f"paper-rule{d:+g}": Method(f"STeCa, paper rule δ = {d:g}", variant="steca",
                                   calibration={"label": f"paper{d:+g}", "rule": "paper", "delta": d},
                                   training={"calibration": f"paper{d:+g}"})
       for d in (0.0, -0.01, 0.05, 0.1)},
}
#: Stage 05's variants: the methods with a loss of their own.
VARIANTS = {key: m.loss for key, m in METHODS.items() if m.loss is not None}


def method(key: str) -> Method:
    """A method or ablation by key; a clear error for an unknown one."""
    if key in METHODS:
        return METHODS[key]
    if key in ABLATIONS:
        return ABLATIONS[key]
    raise KeyError(f"unknown method {key!r}; methods: {sorted(METHODS)}, ablations: {sorted(ABLATIONS)}")


def stage05_settings(key: str) -> dict | None:
    """The stage-05 settings of a method (its variant plus its other settings), or None for SFT."""
    m = method(key)
    if not m.trains:
        return None
    return {"variant": key if m.loss is not None else m.variant, **(m.training or {})}
