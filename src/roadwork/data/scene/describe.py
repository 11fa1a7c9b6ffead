"""The roadwork description of a positive scene (the NATIX validators' scene_description)."""

from __future__ import annotations

_NUMBER_WORDS = {
    1: "a",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
}
_NOUNS = {
    "cone": ("traffic cone", "traffic cones"),
    "drum": ("traffic drum", "traffic drums"),
    "barrier": ("striped barrier", "striped barriers"),
    "sign": ("road work warning sign", "road work warning signs"),
    "worker": ("worker in a high-visibility vest and hard hat", "workers in high-visibility vests and hard hats"),
    "excavator": ("excavator", "excavators"),
    "arrow_board": ("flashing arrow board", "flashing arrow boards"),
    "dig": ("dug-up patch of road", "dug-up patches of road"),
}
_ORDER = ("cone", "drum", "barrier", "sign", "worker", "excavator", "arrow_board", "dig")


def describe(counts: dict[str, int], occluded: bool, single: bool) -> str:
    parts = []
    for kind in _ORDER:
        n = counts.get(kind, 0)
        if n:
            noun = _NOUNS[kind][0 if n == 1 else 1]
            word = _NUMBER_WORDS.get(n, str(n))
            if n == 1 and noun[0] in "aeiou":
                word = "an"
            parts.append(f"{word} {noun}")
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    head = "Road work: a single element, " if single else "Road work zone with "
    sentence = head + text
    if occluded:
        sentence += ", partly hidden behind a vehicle"
    return sentence + "."
