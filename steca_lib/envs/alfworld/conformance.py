"""How the embedded world and ALFWorld's real engine differ on the same scene and actions, in one place.

``tests/test_alfworld.py`` plays the same action sequences in both and compares :func:`canonical` observations
step by step; whatever is not covered by :data:`KNOWN_DIFFERENCES` must be identical.
"""

from __future__ import annotations

import re

#: Every difference that remains after the adapter's translation, and why it is there.
KNOWN_DIFFERENCES = {
    "arrival prefix": "The engine answers `go to X` with `You arrive at X. ` before the description (ALFWorld 0.4; "
                      "the paper's data, from ALFWorld 0.3, say `You arrive at loc N.`). The embedded world and "
                      "its expert data give the description only.",
    "listing order": "The engine lists a receptacle's contents sorted by ALFRED object id (type name, then "
                     "instance number descending); the embedded world lists them in placement order.",
    "bathtub cleaning": "ALFWorld cleans only at a `sinkbasin`; the embedded world also accepts a `bathtubbasin`.",
    "heat/cool": "In ALFWorld heating an object makes it no longer cool and cooling makes it no longer hot; in the "
                 "embedded world the two marks are independent.",
    "lenient parsing": "The embedded world forgives case, extra spaces, a final period and `toggle X` for `use X`; "
                       "the engine accepts only exact admissible commands (anything else: `Nothing happens.`).",
    "adapter translation": "Not a difference the agent sees: the adapter strips the `-= Welcome to TextWorld, "
                           "ALFRED! =-` banner and translates `put X in/on Y` to ALFWorld 0.4's `move X to Y` and "
                           "its answer back.",
}

_ARRIVAL = re.compile(r"^You arrive at [a-z]+ \d+\. ")
_LISTING = re.compile(r"you see (.*?)\.")


def canonical(observation: str) -> str:
    """An observation with the arrival prefix dropped and every listing sorted, so both worlds compare equal."""
    text = _ARRIVAL.sub("", observation)
    return _LISTING.sub(lambda m: "you see " + ", ".join(sorted(re.split(r", and |, ", m.group(1)))) + ".", text)
