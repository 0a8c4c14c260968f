"""What the embedded household contains: rooms, receptacles, objects, commonsense priors, task families.

The names, affordances and goal phrasings follow ALFWorld (Shridhar et al., 2021) so that what a learner sees
here reads like ALFWorld text games. The priors are hand-written commonsense weights ("apples are in fridges,
on countertops, in bowls"), used both to place objects (with noise) and by the expert to order its search.
"""

from __future__ import annotations

#: Receptacles that start closed and must be opened before their contents are visible.
OPENABLE = frozenset({"fridge", "microwave", "cabinet", "drawer", "safe"})

#: Receptacle types per room type, with (min, max) instance counts. A floorplan draws counts in these ranges.
ROOM_RECEPTACLES: dict[str, dict[str, tuple[int, int]]] = {
    "kitchen": {
        "cabinet": (2, 6), "drawer": (1, 4), "countertop": (1, 3), "fridge": (1, 1), "microwave": (1, 1),
        "sinkbasin": (1, 1), "stoveburner": (2, 4), "diningtable": (0, 1), "garbagecan": (1, 1),
        "shelf": (0, 2), "coffeemachine": (0, 1), "toaster": (0, 1),
    },
    "livingroom": {
        "sofa": (1, 1), "armchair": (0, 2), "coffeetable": (1, 1), "sidetable": (1, 2), "tvstand": (0, 1),
        "shelf": (1, 3), "drawer": (1, 3), "cabinet": (0, 2), "dresser": (0, 1), "garbagecan": (1, 1),
        "safe": (0, 1),
    },
    "bedroom": {
        "bed": (1, 1), "desk": (0, 1), "sidetable": (1, 2), "dresser": (1, 1), "drawer": (2, 5),
        "shelf": (1, 3), "armchair": (0, 1), "garbagecan": (1, 1), "safe": (0, 1), "laundryhamper": (0, 1),
    },
    "bathroom": {
        "countertop": (1, 1), "sinkbasin": (1, 2), "bathtubbasin": (0, 1), "toilet": (1, 1),
        "cabinet": (2, 4), "drawer": (0, 3), "shelf": (0, 2), "towelholder": (1, 1),
        "handtowelholder": (0, 1), "toiletpaperhanger": (1, 1), "garbagecan": (1, 1),
    },
}

#: Commonsense prior: for each object type, weights over receptacle types where it is usually found.
#: Object types absent from a room simply never appear there.
OBJECT_PRIORS: dict[str, dict[str, float]] = {
    # kitchen
    "apple": {"fridge": 4, "countertop": 3, "diningtable": 2, "garbagecan": 1, "microwave": 1},
    "potato": {"fridge": 3, "countertop": 3, "diningtable": 2, "garbagecan": 1, "cabinet": 1},
    "tomato": {"fridge": 4, "countertop": 3, "diningtable": 2, "sinkbasin": 1},
    "lettuce": {"fridge": 5, "countertop": 2, "diningtable": 2},
    "egg": {"fridge": 5, "countertop": 2, "diningtable": 1, "garbagecan": 1},
    "bread": {"countertop": 4, "diningtable": 3, "fridge": 1, "cabinet": 1},
    "mug": {"cabinet": 3, "coffeemachine": 3, "countertop": 2, "shelf": 1, "sinkbasin": 1},
    "cup": {"cabinet": 3, "countertop": 2, "diningtable": 2, "fridge": 1, "sinkbasin": 1},
    "plate": {"cabinet": 4, "countertop": 2, "diningtable": 2, "shelf": 1},
    "bowl": {"cabinet": 3, "countertop": 2, "diningtable": 2, "shelf": 1, "fridge": 1},
    "pan": {"stoveburner": 4, "cabinet": 2, "countertop": 1},
    "pot": {"stoveburner": 4, "cabinet": 2, "countertop": 1},
    "kettle": {"stoveburner": 4, "countertop": 2, "cabinet": 1},
    "knife": {"drawer": 3, "countertop": 3, "diningtable": 1},
    "butterknife": {"drawer": 3, "countertop": 2, "diningtable": 2},
    "fork": {"drawer": 4, "countertop": 2, "diningtable": 2},
    "spoon": {"drawer": 4, "countertop": 2, "diningtable": 1, "sinkbasin": 1},
    "spatula": {"drawer": 3, "countertop": 2, "diningtable": 1},
    "ladle": {"drawer": 3, "countertop": 2, "diningtable": 1},
    "saltshaker": {"countertop": 3, "cabinet": 2, "shelf": 2, "diningtable": 1},
    "peppershaker": {"countertop": 3, "cabinet": 2, "shelf": 2, "diningtable": 1},
    "dishsponge": {"sinkbasin": 3, "countertop": 3, "drawer": 1, "cabinet": 1},
    "winebottle": {"fridge": 2, "countertop": 2, "cabinet": 2, "shelf": 1, "diningtable": 1},
    # living room / bedroom
    "book": {"shelf": 3, "desk": 2, "bed": 2, "coffeetable": 2, "sidetable": 2, "sofa": 1, "drawer": 1},
    "remotecontrol": {"coffeetable": 3, "sofa": 3, "armchair": 2, "tvstand": 2, "sidetable": 1},
    "keychain": {"sidetable": 2, "drawer": 2, "coffeetable": 2, "dresser": 2, "shelf": 1, "safe": 1},
    "creditcard": {"drawer": 2, "sidetable": 2, "desk": 2, "dresser": 1, "coffeetable": 1, "safe": 1},
    "cellphone": {"bed": 2, "sidetable": 2, "desk": 2, "dresser": 1, "sofa": 1, "drawer": 1},
    "laptop": {"desk": 3, "bed": 3, "sofa": 2, "coffeetable": 2, "armchair": 1},
    "pillow": {"sofa": 3, "bed": 3, "armchair": 2},
    "newspaper": {"coffeetable": 3, "sofa": 2, "sidetable": 2, "armchair": 1, "garbagecan": 1},
    "statue": {"shelf": 3, "coffeetable": 2, "sidetable": 2, "tvstand": 1, "dresser": 1},
    "vase": {"shelf": 3, "coffeetable": 2, "sidetable": 2, "tvstand": 1, "cabinet": 1},
    "watch": {"sidetable": 2, "dresser": 2, "drawer": 2, "coffeetable": 1, "safe": 1},
    "box": {"shelf": 2, "coffeetable": 2, "sidetable": 1, "cabinet": 1, "dresser": 1},
    "alarmclock": {"sidetable": 3, "desk": 2, "dresser": 2, "shelf": 1},
    "cd": {"drawer": 2, "shelf": 2, "desk": 2, "sidetable": 1, "safe": 1},
    "pen": {"desk": 3, "drawer": 3, "sidetable": 2, "shelf": 1},
    "pencil": {"desk": 3, "drawer": 3, "sidetable": 2, "shelf": 1},
    "desklamp": {"sidetable": 3, "desk": 3, "dresser": 2},
    # bathroom
    "soapbar": {"sinkbasin": 2, "bathtubbasin": 2, "countertop": 2, "cabinet": 1, "toilet": 1},
    "soapbottle": {"countertop": 3, "cabinet": 2, "shelf": 2, "toilet": 1, "sinkbasin": 1},
    "cloth": {"cabinet": 2, "countertop": 2, "bathtubbasin": 1, "drawer": 1, "toilet": 1},
    "candle": {"countertop": 2, "shelf": 2, "toilet": 2, "cabinet": 1},
    "spraybottle": {"cabinet": 3, "toilet": 2, "countertop": 1, "garbagecan": 1},
    "toiletpaper": {"toiletpaperhanger": 3, "cabinet": 2, "toilet": 2, "countertop": 1, "drawer": 1},
    "towel": {"towelholder": 5, "bathtubbasin": 1, "countertop": 1},
    "handtowel": {"handtowelholder": 5, "countertop": 1, "cabinet": 1},
    "tissuebox": {"toilet": 2, "countertop": 2, "shelf": 2, "cabinet": 1},
}

#: Object types that appear in each room type (the desklamp is handled separately: one per lit room).
ROOM_OBJECTS: dict[str, tuple[str, ...]] = {
    "kitchen": ("apple", "potato", "tomato", "lettuce", "egg", "bread", "mug", "cup", "plate", "bowl", "pan",
                "pot", "kettle", "knife", "butterknife", "fork", "spoon", "spatula", "ladle", "saltshaker",
                "peppershaker", "dishsponge", "winebottle"),
    "livingroom": ("book", "remotecontrol", "keychain", "creditcard", "cellphone", "laptop", "pillow",
                   "newspaper", "statue", "vase", "watch", "box"),
    "bedroom": ("book", "keychain", "creditcard", "cellphone", "laptop", "pillow", "alarmclock", "cd", "pen",
                "pencil", "watch", "mug", "box"),
    "bathroom": ("soapbar", "soapbottle", "cloth", "candle", "spraybottle", "toiletpaper", "towel",
                 "handtowel", "tissuebox"),
}

#: Appliances that transform a held object, per transformation verb (ALFWorld: sinkbasin, microwave, fridge).
TRANSFORM_APPLIANCE = {"clean": ("sinkbasin", "bathtubbasin"), "heat": ("microwave",), "cool": ("fridge",)}

#: Object types each transformation applies to (ALFWorld's cleanable / heatable / coolable sets, reduced).
TRANSFORMABLE = {
    "clean": frozenset({"apple", "potato", "tomato", "lettuce", "egg", "mug", "cup", "plate", "bowl", "pan",
                        "pot", "kettle", "knife", "butterknife", "fork", "spoon", "spatula", "ladle",
                        "dishsponge", "soapbar", "cloth"}),
    "heat": frozenset({"apple", "potato", "tomato", "egg", "bread", "mug", "cup", "plate"}),
    "cool": frozenset({"apple", "potato", "tomato", "lettuce", "egg", "bread", "mug", "cup", "plate", "bowl",
                       "pan", "pot", "winebottle"}),
}

#: Objects that can be examined under a desk lamp (ALFWorld's look_at_obj_in_light family).
LOOKABLE = frozenset({"book", "cellphone", "creditcard", "keychain", "laptop", "pillow", "newspaper", "statue",
                      "vase", "watch", "box", "alarmclock", "cd", "pen", "pencil", "remotecontrol", "mug"})

#: Rooms that have a desk lamp somewhere (so that look-at-under-light tasks exist there).
LIT_ROOMS = frozenset({"livingroom", "bedroom"})

#: Receptacles that are valid places to put things for pick-and-place goals (appliance-only places excluded).
PLACEABLE_TARGETS = frozenset({
    "cabinet", "drawer", "countertop", "fridge", "microwave", "sinkbasin", "diningtable", "garbagecan",
    "shelf", "coffeemachine", "sofa", "armchair", "coffeetable", "sidetable", "tvstand", "dresser", "safe",
    "bed", "desk", "bathtubbasin", "toilet", "towelholder", "handtowelholder", "toiletpaperhanger",
    "laundryhamper", "stoveburner",
})

#: The six ALFWorld task families, their room types, and goal phrasings (several per family, as in ALFWorld).
FAMILIES: dict[str, dict] = {
    "pick_and_place_simple": {
        "rooms": ("kitchen", "livingroom", "bedroom", "bathroom"),
        "templates": ("put a {obj} in {recep}.", "put some {obj} on {recep}.", "put a {obj} on {recep}."),
    },
    "pick_two_obj_and_place": {
        "rooms": ("kitchen", "livingroom", "bedroom", "bathroom"),
        "templates": ("put two {obj} in {recep}.", "find two {obj} and put them in {recep}.",
                      "put two {obj} on {recep}."),
    },
    "pick_clean_then_place_in_recep": {
        "rooms": ("kitchen", "bathroom"),
        "templates": ("put a clean {obj} in {recep}.", "clean some {obj} and put it in {recep}."),
    },
    "pick_heat_then_place_in_recep": {
        "rooms": ("kitchen",),
        "templates": ("put a hot {obj} in {recep}.", "heat some {obj} and put it in {recep}."),
    },
    "pick_cool_then_place_in_recep": {
        "rooms": ("kitchen",),
        "templates": ("put a cool {obj} in {recep}.", "cool some {obj} and put it in {recep}."),
    },
    "look_at_obj_in_light": {
        "rooms": ("livingroom", "bedroom"),
        "templates": ("look at {obj} under the {lamp}.", "examine the {obj} with the {lamp}."),
    },
}

#: The transformation each family needs before placing, if any.
FAMILY_TRANSFORM = {
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
}

#: Short names used in game-file paths, in ALFWorld's CamelCase style.
CAMEL = {
    "sinkbasin": "SinkBasin", "countertop": "CounterTop", "diningtable": "DiningTable", "garbagecan": "GarbageCan",
    "coffeemachine": "CoffeeMachine", "stoveburner": "StoveBurner", "coffeetable": "CoffeeTable",
    "sidetable": "SideTable", "tvstand": "TVStand", "armchair": "ArmChair", "bathtubbasin": "BathtubBasin",
    "towelholder": "TowelHolder", "handtowelholder": "HandTowelHolder", "toiletpaperhanger": "ToiletPaperHanger",
    "laundryhamper": "LaundryHamper", "remotecontrol": "RemoteControl", "creditcard": "CreditCard",
    "cellphone": "CellPhone", "alarmclock": "AlarmClock", "butterknife": "ButterKnife",
    "saltshaker": "SaltShaker", "peppershaker": "PepperShaker", "dishsponge": "DishSponge",
    "winebottle": "WineBottle", "soapbar": "SoapBar", "soapbottle": "SoapBottle", "spraybottle": "SprayBottle",
    "toiletpaper": "ToiletPaper", "handtowel": "HandTowel", "tissuebox": "TissueBox", "desklamp": "DeskLamp",
    "keychain": "KeyChain",
}


def type_of(name: str) -> str:
    """The type of an entity name: ``"cabinet 3"`` -> ``"cabinet"``."""
    return name.rsplit(" ", 1)[0]


def camel(name: str) -> str:
    """ALFWorld-style CamelCase of a type name (``sinkbasin`` -> ``SinkBasin``)."""
    return CAMEL.get(name, name.capitalize())
