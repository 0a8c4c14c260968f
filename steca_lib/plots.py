"""Figures of the kit. Each function takes plain data (rows from the artifacts) and returns a matplotlib Figure."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

FAMILY_LABELS = {
    "pick_and_place_simple": "pick & place",
    "pick_two_obj_and_place": "pick two",
    "pick_clean_then_place_in_recep": "clean & place",
    "pick_heat_then_place_in_recep": "heat & place",
    "pick_cool_then_place_in_recep": "cool & place",
    "look_at_obj_in_light": "look in light",
}


def expert_steps_by_family(stats_rows: list[dict]):
    """Box plot of expert trajectory length per task family and split (``expert_stats.jsonl`` rows)."""
    import pandas as pd

    df = pd.DataFrame(stats_rows)
    df["family"] = df["family"].map(FAMILY_LABELS)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.boxplot(data=df, x="family", y="steps", hue="split", ax=ax, fliersize=2,
                order=list(FAMILY_LABELS.values()), hue_order=["train", "seen", "unseen"])
    ax.set(xlabel="task family", ylabel="expert steps", title="Expert trajectory length per task family")
    ax.legend(title="split", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def split_composition(stats_rows: list[dict]):
    """Stacked bars: the share of each task family and room type in every split (task counts on top)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    splits = ["train", "seen", "unseen"]
    sizes = {s: sum(r["split"] == s for r in stats_rows) for s in splits}
    labels = [f"{s}\n(n={sizes[s]})" for s in splits]
    for ax, key, names in ((axes[0], "family", FAMILY_LABELS), (axes[1], "room", None)):
        counts = {s: Counter(r[key] for r in stats_rows if r["split"] == s) for s in splits}
        cats = list(names) if names else sorted({r[key] for r in stats_rows})
        bottom = [0.0] * len(splits)
        for c, colour in zip(cats, sns.color_palette("tab10", len(cats))):
            vals = [100 * counts[s].get(c, 0) / max(sizes[s], 1) for s in splits]
            ax.bar(labels, vals, bottom=bottom, color=colour, label=names[c] if names else c)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set(ylabel="% of tasks", title=f"split composition by {key}", ylim=(0, 100))
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def save_figure(fig, run_dir, name: str, dpi: int = 120):
    """Save a figure as ``<run_dir>/figures/<name>.png`` (the reproduction copies these to ``figures/``)."""
    out = Path(run_dir) / "figures" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    return out


def loss_curve(history: list[dict], title: str = "SFT loss (assistant tokens)",
               ylabel: str = "cross-entropy (nats/token)"):
    """Training loss per logged step (the trainer's ``log_history`` rows)."""
    rows = [h for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], marker=".", lw=1)
    ax.set(xlabel="optimiser step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def success_with_ci(results: dict[str, dict], splits=("seen", "unseen"), title: str = "Success rate (95% CI)",
                    reference: dict[str, tuple] | None = None, reference_label: str = "paper (ALFWorld)"):
    """Grouped bars of success per agent and split, with CI whiskers.

    ``results`` maps an agent label to its summary (``{split: {success, ci_low, ci_high}}``); ``reference`` maps a
    label to published success (%) per split (None where unknown), drawn as open diamonds.
    """
    import numpy as np

    labels = list(results)
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 3.4))
    for k, split in enumerate(splits):
        x = np.arange(len(labels)) + (k - (len(splits) - 1) / 2) * width
        mean = np.array([100 * results[lab][split]["success"] for lab in labels])
        low = mean - np.array([100 * results[lab][split]["ci_low"] for lab in labels])
        high = np.array([100 * results[lab][split]["ci_high"] for lab in labels]) - mean
        ax.bar(x, mean, width, yerr=[low, high], capsize=3, label=split)
        for xi, m in zip(x, mean):
            ax.text(xi, m + 1, f"{m:.0f}", ha="center", va="bottom", fontsize=8)
        ref = [(xi, (reference or {}).get(lab, (None,) * len(splits))[k]) for xi, lab in zip(x, labels)]
        ref = [(xi, v) for xi, v in ref if v is not None]
        if ref:
            ax.scatter(*zip(*ref), marker="D", facecolors="none", edgecolors="k", zorder=3,
                       label=reference_label if k == 0 else None)
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0,
                  ha="right" if len(labels) > 4 else "center")
    ax.set(ylabel="success (%)", ylim=(0, 105), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _clip(text: str, n: int = 44) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def branch_map(task_rows: list[dict], title: str = ""):
    """One task's branches: at each expert step j, the expert's action a_{j+1} beside the agent's explored action
    â_{j+1} (orange where they differ), with Monte Carlo step rewards when the rows carry them."""
    rows = sorted(task_rows, key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(9.5, 0.42 * len(rows) + 1.0))
    ax.set(xlim=(0, 1), ylim=(len(rows) - 0.5, -0.9))
    ax.axis("off")
    ax.text(0.03, -0.7, "step", weight="bold", fontsize=9)
    ax.text(0.10, -0.7, "expert action", weight="bold", fontsize=9)
    ax.text(0.55, -0.7, "explored action (agent, greedy)", weight="bold", fontsize=9)
    for y, r in enumerate(rows):
        colour = "#e8f5e9" if r["same_action"] else "#fff3e0"
        ax.add_patch(plt.Rectangle((0.0, y - 0.45), 1.0, 0.9, color=colour, lw=0))
        expert = _clip(r["expert_action"] or "")
        explored = _clip(r["explored_action"] or "(no action)")
        if "expert_reward" in r:
            expert += f"   r={r['expert_reward']:.2f}"
            explored += f"   r={r['explored_reward']:.2f}"
        ax.text(0.03, y, str(r["step"] + 1), va="center", fontsize=8)
        ax.text(0.10, y, expert, va="center", fontsize=8, family="monospace")
        ax.text(0.55, y, explored, va="center", fontsize=8, family="monospace")
    ax.set_title(title or f"branches of {rows[0]['task_id']}", fontsize=10)
    fig.tight_layout()
    return fig


def step_reward_by_position(rows: list[dict], min_count: int = 5, seed: int = 0):
    """The paper's Fig. 3 analogue: mean Monte Carlo step reward of expert and explored actions per step position
    along the expert trajectory, with bootstrap 95% CIs (positions with fewer than ``min_count`` rows omitted)."""
    from steca_lib.metrics import bootstrap_ci

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    steps = sorted({r["step"] for r in rows})
    for key, label, colour in (("expert_reward", "expert action", "C0"), ("explored_reward", "explored action", "C1")):
        xs, mean, low, high = [], [], [], []
        for s in steps:
            vals = [r[key] for r in rows if r["step"] == s]
            if len(vals) >= min_count:
                m, lo, hi = bootstrap_ci(vals, n_boot=2000, seed=seed)
                xs.append(s + 1), mean.append(m), low.append(lo), high.append(hi)
        ax.plot(xs, mean, marker="o", ms=3, color=colour, label=label)
        ax.fill_between(xs, low, high, color=colour, alpha=0.2)
    ax.set(xlabel="step along the expert trajectory", ylabel="MC step reward", ylim=(-0.02, 1.02),
           title="Monte Carlo step reward by position (95% CI)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reward_gap_hist(rows: list[dict]):
    """Distribution of explored − expert step reward; below zero the agent's own action was worse."""
    import numpy as np

    gap = np.array([r["explored_reward"] - r["expert_reward"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(gap, bins=np.linspace(-1, 1, 22), color="C1", edgecolor="white")
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="explored − expert step reward", ylabel="steps",
           title=f"Explored vs expert action ({(gap < 0).mean():.0%} of steps below zero)")
    fig.tight_layout()
    return fig


def calibration_funnel(funnel: list[dict], title: str = "From branch points to calibrated trajectories"):
    """How many branches survive each check of deviation detection and calibration (stage 04's funnel)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.34 * len(funnel) + 1.0))
    names = [f["check"] for f in funnel]
    counts = [f["count"] for f in funnel]
    ax.barh(range(len(funnel)), counts, color="C2")
    for y, c in enumerate(counts):
        ax.text(c, y, f" {c}", va="center", fontsize=8)
    ax.set_yticks(range(len(funnel)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="count", title=title, xlim=(0, max(counts + [1]) * 1.15))
    fig.tight_layout()
    return fig


def deviation_and_weights(sets: dict[str, list[dict]]):
    """Trajectory deviation distance (nDTW) and sample weight of every training set, one colour per set."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    for i, (name, samples) in enumerate(s for s in sets.items() if s[1]):
        for ax, key in zip(axes, ("deviation", "reward")):
            sns.histplot([s[key] for s in samples], ax=ax, color=f"C{i}", label=f"{name} ({len(samples)})",
                         element="step", fill=False, bins=20)
    axes[0].set(xlabel="trajectory deviation (nDTW, 1 − cos)", title="Deviation from the other side")
    axes[1].set(xlabel="sample weight (1 ± k·dev)", title="Weights in reinforced training")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def breakdown_heatmap(table: dict[str, dict[str, tuple[float, int]]], order: list[str] | None = None,
                      title: str = "", xlabel: str = ""):
    """Success (%) per method (rows) and group (columns) with the episode count in each cell."""
    import numpy as np

    methods = list(table)
    groups = order or sorted({g for row in table.values() for g in row})
    values = np.array([[100 * table[m][g][0] if g in table[m] else np.nan for g in groups] for m in methods])
    counts = [[table[m][g][1] if g in table[m] else 0 for g in groups] for m in methods]
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(groups), 0.9 + 0.45 * len(methods)))
    sns.heatmap(values, annot=[[f"{v:.0f}\n(n={n})" if n else "" for v, n in zip(vr, nr)]
                               for vr, nr in zip(values, counts)], fmt="", cmap="viridis", vmin=0, vmax=100,
                xticklabels=[FAMILY_LABELS.get(g, g) for g in groups], yticklabels=methods, ax=ax,
                cbar_kws={"label": "success (%)"}, annot_kws={"fontsize": 7})
    ax.set(title=title, xlabel=xlabel)
    fig.tight_layout()
    return fig
