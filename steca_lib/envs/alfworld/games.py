"""Where ALFWorld games live: the released data (``$ALFWORLD_DATA/json_2.1.1``) or the kit's compiled splits.

The official scripts turn a game path into an id by slicing the absolute path at a fixed depth, which breaks
as soon as the data sit one folder deeper. Here a game's id is its trial folder relative to the split folder
(``pick_and_place_simple-Mug-None-Desk-308/trial_T2019...``), whatever the data root is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from steca_lib.errors import ConfigError, StecaError

#: Kit split -> folder of the released data (ALFWorld's train / eval_in_distribution / eval_out_of_distribution).
RELEASED_SPLITS = {"train": "train", "seen": "valid_seen", "unseen": "valid_unseen"}
#: Games per evaluation split in the paper's tables (solvable, without movable/sliced tasks).
RELEASED_COUNTS = {"seen": 140, "unseen": 134}
DOWNLOAD_HELP = (
    "ALFWorld's game data are not in the package and cannot be downloaded here. On a machine with network access "
    "run `alfworld-download` (it fills ~/.cache/alfworld), copy that folder here and point the kit to it with "
    "alfworld_data=<folder> or the ALFWORLD_DATA variable. The folder must contain json_2.1.1/{train,valid_seen,"
    "valid_unseen}/<task>/<trial>/game.tw-pddl and traj_data.json.")


@dataclass(frozen=True)
class GameRef:
    """One playable game: a stable id, its ``game.tw-pddl`` path, and its task family."""

    game_id: str
    path: Path
    family: str


class AlfworldDataError(StecaError, FileNotFoundError):
    """The released ALFWorld data are not where the settings say."""


def locate_data(path: str | os.PathLike | None = None, folders: tuple[str, ...] = tuple(RELEASED_SPLITS.values())
                ) -> Path:
    """The ``json_2.1.1`` folder of the released data (argument, else ``$ALFWORLD_DATA``) holding the split
    ``folders`` that are needed (default: all three); a clear error if absent."""
    root = path or os.environ.get("ALFWORLD_DATA")
    if not root:
        raise AlfworldDataError("No ALFWorld data folder given. " + DOWNLOAD_HELP)
    root = Path(root).expanduser()
    for candidate in (root / "json_2.1.1", root):
        if all((candidate / folder).is_dir() for folder in folders):
            return candidate
    raise AlfworldDataError(f"{root} does not hold ALFWorld's json_2.1.1 split folder(s) {', '.join(folders)}. "
                            + DOWNLOAD_HELP)


def split_folder(split: str) -> str:
    """The released data's folder of a kit split."""
    if split not in RELEASED_SPLITS:
        raise ConfigError(f"ALFWorld has no split {split!r}; expected one of {', '.join(RELEASED_SPLITS)}")
    return RELEASED_SPLITS[split]


def collect_games(split_root: str | os.PathLike, families: tuple[str, ...] | None = None) -> list[GameRef]:
    """Every solvable game under ``split_root`` (as ALFWorld's collector: a trial folder with ``traj_data.json``
    and ``game.tw-pddl``, movable and sliced tasks left out), sorted by id."""
    split_root = Path(split_root)
    games = []
    for traj in split_root.rglob("traj_data.json"):
        folder = traj.parent
        game = folder / "game.tw-pddl"
        if "movable" in str(folder) or "Sliced" in str(folder) or not game.is_file():
            continue
        family = json.loads(traj.read_text())["task_type"]
        if families is not None and family not in families:
            continue
        if not json.loads(game.read_text()).get("solvable", False):
            continue
        games.append(GameRef(folder.relative_to(split_root).as_posix(), game, family))
    return sorted(games, key=lambda g: g.game_id)


def released_games(data: str | os.PathLike | None, split: str) -> list[GameRef]:
    """The released games of a kit split (``train``, ``seen``, ``unseen``)."""
    folder = split_folder(split)
    return collect_games(locate_data(data, (folder,)) / folder)
