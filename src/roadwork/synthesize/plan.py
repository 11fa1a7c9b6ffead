"""Which source produces which synthetic child: a pure function of the split table and the params.

Rules of :func:`plan_children`
------------------------------
* **Splits never cross.** A source of split ``s`` (a row of ``splits.csv``) gives children in
  split ``s`` only, t2i and i2i alike: a t2i image drawn from a val_test caption is evaluation
  data, never training data. Children inherit the source's ``label`` and ``cluster`` too, so the
  group-aware rules of :mod:`roadwork.data.split` hold for them.
* **Which sources.** Per (split, label) the sources are ordered by ``stable_key(seed, id)`` and the
  first ``sources_per_label`` are taken (all when null): a seeded choice independent of the input
  order; enlarging the count only adds sources.
* **One prompt per source, one child per kind.** As the validators do (every prompt goes through
  every model), a source's caption is rewritten once and that prompt draws one child per kind.
* **Seeds.** Every random draw has its own seed, ``derive_seed(seed, source id, purpose)`` with
  purpose ``"prompt"`` (the rewrite's sampling) or the kind (the diffusion noise): a child is the
  same whatever else is planned, and a re-run reproduces it.
* **Ranks.** :func:`shard` gives rank ``r`` of ``w`` the sources at positions ``r, r + w, ...`` of
  the plan's order, with all their children: every rank knows its share without talking to the others.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

from roadwork.config import SPLITS
from roadwork.data.split import stable_key
from roadwork.synthesize_params import KINDS, SynthesizeParams

PLAN_COLUMNS = ["id", "source_id", "source_sha256", "cluster", "split", "label", "kind", "seed", "prompt_seed"]


class PlanError(ValueError):
    """The split table cannot be planned from; the message names the row and the problem."""


@dataclass(frozen=True)
class Child:
    id: str  # f"{kind}-{source_id}": unique, file-name safe when the source id is (ingest: 16 hex digits)
    source_id: str
    source_sha256: str
    cluster: str  # the source's dedup cluster (its id when it has none)
    split: str  # the source's split
    label: int  # the source's label
    kind: str  # "t2i" or "i2i"
    seed: int  # the diffusion noise's seed
    prompt_seed: int  # the rewrite's seed, shared by the source's children

    def row(self) -> dict:
        return asdict(self)


def derive_seed(seed: int, source_id: str, purpose: str) -> int:
    """A 63-bit seed of one random draw, from sha256 (no Python ``hash()``, no RNG state)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{source_id}\x00{purpose}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def child_id(kind: str, source_id: str) -> str:
    return f"{kind}-{source_id}"


def _check_rows(rows: Sequence[Mapping]) -> list[dict]:
    checked, seen = [], set()
    for number, row in enumerate(rows, start=2):  # line numbers of splits.csv (line 1: the header)
        where = f"splits row {number}"
        missing = [key for key in ("id", "label", "split") if row.get(key) in (None, "")]
        if missing:
            raise PlanError(f"{where}: missing {missing} (columns: id, sha256, label, cluster, split)")
        rid = str(row["id"])
        if rid in seen:
            raise PlanError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        if not all(c.isalnum() or c in "._" for c in rid):
            raise PlanError(f"{where}: id {rid!r} is not file-name safe (letters, digits, '.', '_')")
        if str(row["label"]).strip() not in ("0", "1"):
            raise PlanError(f"{where} (id {rid}): label must be 0 or 1, got {row['label']!r}")
        if row["split"] not in SPLITS:
            raise PlanError(f"{where} (id {rid}): unknown split {row['split']!r}, expected one of {list(SPLITS)}")
        cluster = row.get("cluster")
        checked.append(
            {
                "id": rid,
                "sha256": str(row.get("sha256") or ""),
                "label": int(str(row["label"]).strip()),
                "split": row["split"],
                "cluster": rid if cluster in (None, "") else str(cluster),
            }
        )
    return checked


def plan_children(rows: Sequence[Mapping], params: SynthesizeParams) -> list[Child]:
    """The children of the split table ``rows`` (dicts with id, sha256, label, cluster, split), in
    plan order: split (``SPLITS`` order), label, seeded source order, kind (``KINDS`` order)."""
    by_stratum: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in _check_rows(rows):
        if row["split"] in params.splits:
            by_stratum[row["split"], row["label"]].append(row)
    children = []
    kinds = [kind for kind in KINDS if kind in params.kinds]
    for split in SPLITS:
        for label in (0, 1):
            sources = sorted(
                by_stratum.get((split, label), []), key=lambda row: (stable_key(params.seed, row["id"]), row["id"])
            )
            for source in sources[: params.sources_per_label]:
                prompt_seed = derive_seed(params.seed, source["id"], "prompt")
                for kind in kinds:
                    children.append(
                        Child(
                            id=child_id(kind, source["id"]),
                            source_id=source["id"],
                            source_sha256=source["sha256"],
                            cluster=source["cluster"],
                            split=split,
                            label=label,
                            kind=kind,
                            seed=derive_seed(params.seed, source["id"], kind),
                            prompt_seed=prompt_seed,
                        )
                    )
    return children


def sources_in_order(children: Iterable[Child]) -> list[str]:
    """The plan's source ids, each once, in plan order."""
    return list(dict.fromkeys(child.source_id for child in children))


def shard(children: Sequence[Child], rank: int, world_size: int) -> list[Child]:
    """Rank ``rank``'s deterministic share: the children of every ``world_size``-th source, from ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    mine = set(sources_in_order(children)[rank::world_size])
    return [child for child in children if child.source_id in mine]


def training_children(children: Iterable[Child]) -> list[Child]:
    """The children training may mix in: those of train sources, and only those."""
    return [child for child in children if child.split == "train"]
