"""Views for notebooks: a text rendering of trajectories (works headless) and an ipywidgets play console."""

from __future__ import annotations

import io
import textwrap

from steca_lib.envs.household import HouseholdEnv, Task


def render_conversation(record: dict, skip_instruction: bool = True, width: int = 110) -> str:
    """A trajectory as readable text: the task, then numbered Thought/Action and Observation lines."""
    conv = record["conversations"]
    lines = []
    start = 2 if skip_instruction else 0
    step = 0
    for turn in conv[start:]:
        if turn["from"] == "gpt":
            step += 1
            for part in turn["value"].split("\n"):
                lines.append(textwrap.fill(part, width, initial_indent=f"[{step:>2}] " if part.startswith("Thought")
                                           else "     ", subsequent_indent="     "))
        else:
            lines += [textwrap.fill(part, width, subsequent_indent="     ") for part in turn["value"].split("\n")]
    return "\n".join(lines)


# The widgets below write into Output widgets with ``append_stdout`` and show figures as PNG ``Image`` widgets, never
# with ``with output:`` capture. Under papermill/nbclient a capture makes the client send comm messages on the
# shell channel while it waits there for the cell's reply, and that wait then sometimes misses the reply: the cell
# stalls until the execution timeout (forever without one). ``benchmarks/soak_notebook.py`` measures it.


def play_widget(task: Task, max_steps: int = 40):
    """Play a task by hand: type an action (or pick an admissible one) and read the observation."""
    import ipywidgets as w

    env = HouseholdEnv(task, max_steps=max_steps)
    log = w.Output(layout=w.Layout(border="1px solid #ccc", max_height="320px", overflow="auto"))
    box = w.Text(placeholder="e.g. go to fridge 1", layout=w.Layout(width="50%"))
    menu = w.Dropdown(description="admissible", layout=w.Layout(width="45%"))
    status = w.HTML()

    def refresh():
        menu.options = [""] + env.admissible_actions()
        status.value = f"<b>step {env.steps}/{max_steps}</b> &nbsp; {'WON' if env.won else ''}"

    def act(action: str):
        if not action:
            return
        result = env.step(action)
        log.append_stdout(f"> {action}\n{result.observation}\n")
        box.value = ""
        refresh()

    box.on_submit(lambda _: act(box.value))
    menu.observe(lambda ch: act(ch["new"]) if ch["name"] == "value" and ch["new"] else None, names="value")
    log.append_stdout(env.reset() + "\n")
    refresh()
    return w.VBox([status, log, w.HBox([box, menu])])


def step_reward_browser(rows: list[dict]):
    """Pick a task and see its branch map with Monte Carlo step rewards (``plots.branch_map``)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from steca_lib.plots import branch_map

    tasks = sorted({r["task_id"] for r in rows})
    pick = w.Dropdown(options=tasks, description="task")
    image = w.Image(format="png")

    def show(task_id: str) -> None:
        fig = branch_map([r for r in rows if r["task_id"] == task_id])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        image.value = buffer.getvalue()

    pick.observe(lambda ch: show(ch["new"]), names="value")
    show(tasks[0])
    return w.VBox([pick, image])


def _lines(turns: list[dict], width: int) -> list[str]:
    out = []
    for t in turns:
        prefix = "agent: " if t["from"] == "gpt" else "       "
        for part in t["value"].split("\n"):
            out += textwrap.wrap(part, width - 7, initial_indent=prefix, subsequent_indent="       ") or [""]
            prefix = "       "
    return out


def calibration_text(sample: dict, width: int = 60, context: int = 2) -> str:
    """A calibrated sample side by side with the agent's own continuation: the last ``context`` turns before the
    deviated step, the deviated step, then what the agent did (left) and the calibrated trajectory (right)."""
    head = _lines(sample["prompt"][-2 - 2 * context:], 2 * width + 3)
    left, right = _lines(sample["rejected"], width), _lines(sample["chosen"], width)
    rows = [f"{a:<{width}} | {b}" for a, b in zip(left + [""] * (len(right) - len(left)),
                                                   right + [""] * (len(left) - len(right)))]
    title = f"{'what the agent did next':<{width}} | calibrated: reflection + expert continuation"
    return "\n".join([*head, "-" * (2 * width + 3), title, "-" * (2 * width + 3), *rows])


def calibration_browser(samples: list[dict]):
    """Pick a calibrated sample and read it next to the agent's own continuation (:func:`calibration_text`)."""
    import ipywidgets as w

    labels = [(f"{s['meta']['task_id']} step {s['meta']['step'] + 1} ({s['meta']['family']})", i)
              for i, s in enumerate(samples)]
    pick = w.Dropdown(options=labels, description="sample", layout=w.Layout(width="480px"))
    view = w.HTML()

    def show(i: int) -> None:
        import html

        view.value = f"<pre style='font-size:11px'>{html.escape(calibration_text(samples[i]))}</pre>"

    pick.observe(lambda ch: show(ch["new"]), names="value")
    show(0)
    return w.VBox([pick, view])
