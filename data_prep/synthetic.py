"""A synthetic dataset of any size, for scale work only (quality claims stay on real data).

    q2rec synthetic --users 100000 --items 1000000 [--seed 0] [--per-user 20 50] [--artifacts DIR]

Deterministic by seed, and written exactly as ``data_prep.prepare`` writes a real dataset (canonical
``interactions.parquet`` and ``items.parquet``, the leave-one-out split, ``prepare.json``) under
``<artifacts>/synthetic-<users>x<items>-s<seed>/``, so every stage runs on it unchanged. It has the structure
that makes the models' work real:

- **popularity** is a power law: item ``i`` of a topic is drawn with weight ``rank^-popularity_exponent``;
- **interests**: each user has a few topics and stays on the current one for several steps before it
  drifts to another (``stay``), so the next item depends on the recent ones and a sequential model beats
  popularity;
- **text**: an item's title and description are built from words of its topic (real English words, so a
  text encoder sees them), so retrieval by the last item's text beats chance.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.artifacts import ArtifactPaths
from data_prep.schema import DataError, RawDataset, finalize

log = logging.getLogger(__name__)

# topic -> words an item of the topic is described with
TOPICS: dict[str, tuple[str, ...]] = {
    "space": ("galaxy", "rocket", "astronaut", "planet", "orbit", "comet", "nebula", "starship"),
    "ocean": ("sailor", "reef", "whale", "harbor", "tide", "shipwreck", "island", "lighthouse"),
    "crime": ("detective", "heist", "gangster", "alibi", "witness", "smuggler", "verdict", "fugitive"),
    "romance": (
        "wedding",
        "lovers",
        "kiss",
        "heartbreak",
        "courtship",
        "sweetheart",
        "proposal",
        "valentine",
    ),
    "war": ("soldier", "battalion", "trench", "general", "invasion", "medal", "frontline", "siege"),
    "horror": ("ghost", "vampire", "haunted", "zombie", "curse", "graveyard", "nightmare", "demon"),
    "sports": ("coach", "championship", "stadium", "rookie", "tournament", "referee", "marathon", "trophy"),
    "music": ("guitar", "orchestra", "singer", "concert", "melody", "drummer", "ballad", "jazz"),
    "cooking": ("chef", "kitchen", "recipe", "bakery", "feast", "spices", "pastry", "restaurant"),
    "western": ("cowboy", "sheriff", "saloon", "ranch", "outlaw", "frontier", "stagecoach", "desert"),
    "animals": ("puppy", "tiger", "elephant", "farm", "jungle", "horse", "wolf", "zoo"),
    "history": ("emperor", "castle", "knight", "dynasty", "pharaoh", "revolution", "kingdom", "scroll"),
    "science": ("laboratory", "scientist", "experiment", "robot", "invention", "genetics", "physics", "atom"),
    "comedy": ("prankster", "clown", "sitcom", "jokes", "mishap", "roommates", "slapstick", "party"),
    "family": ("parents", "grandmother", "siblings", "holiday", "childhood", "home", "reunion", "twins"),
    "travel": ("journey", "passport", "mountains", "backpacker", "train", "safari", "voyage", "village"),
    "politics": (
        "senator",
        "election",
        "president",
        "scandal",
        "campaign",
        "parliament",
        "diplomat",
        "treaty",
    ),
    "fantasy": ("wizard", "dragon", "elves", "sorcery", "quest", "enchanted", "sword", "prophecy"),
    "medicine": ("doctor", "hospital", "surgeon", "nurse", "epidemic", "patient", "cure", "clinic"),
    "school": ("teacher", "classroom", "students", "exam", "campus", "graduation", "principal", "homework"),
    "art": ("painter", "museum", "sculpture", "gallery", "canvas", "portrait", "studio", "masterpiece"),
    "finance": ("banker", "stocks", "fortune", "merger", "investor", "wall street", "billionaire", "debt"),
    "technology": ("hacker", "computer", "software", "startup", "internet", "gadget", "virtual", "code"),
    "nature": ("forest", "river", "wilderness", "storm", "volcano", "glacier", "meadow", "canyon"),
}
FILLER = ("story", "tale", "adventure", "life", "world", "secret", "night", "days", "return", "legacy")


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 10_000
    items: int = 10_000
    seed: int = 0
    min_per_user: int = 20
    max_per_user: int = 50
    interests: int = 3  # topics per user at most
    stay: float = 0.8  # chance of staying on the current topic for the next interaction
    popularity_exponent: float = 1.0

    def __post_init__(self) -> None:
        for name in ("users", "items", "min_per_user"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        if self.max_per_user < self.min_per_user:
            raise DataError(f"--per-user: max {self.max_per_user} is below min {self.min_per_user}")
        if self.max_per_user * 2 > self.items:
            raise DataError(
                f"--items: {self.items} is too few for up to {self.max_per_user} distinct items per user; "
                "give at least 2x the per-user maximum"
            )
        if not 0 <= self.stay < 1:
            raise DataError(f"stay: must be in [0, 1), got {self.stay}")

    @property
    def topics(self) -> int:
        """Topics in use: as many as fit with 4x the per-user maximum items each (so a user on one topic
        still finds enough distinct items), at most the word lists'."""
        return max(1, min(len(TOPICS), self.items // (4 * self.max_per_user)))

    @property
    def name(self) -> str:
        """The artifacts folder: sizes and seed, and every setting that is not the default."""
        extra = "".join(
            f"-{f.name}{getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in ("users", "items", "seed") and getattr(self, f.name) != f.default
        )
        return f"synthetic-{self.users}x{self.items}-s{self.seed}{extra}"


def _catalog(
    cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
    """Items (id, title, genres, description), each item's topic, and per topic its items in popularity order."""
    names = list(TOPICS)[: cfg.topics]
    topic = rng.integers(0, len(names), cfg.items)
    words = [np.array(TOPICS[n]) for n in names]
    every = list(TOPICS)
    w = np.stack([rng.integers(0, 8, cfg.items) for _ in range(4)])  # four topic words per item
    filler = np.array(FILLER)[rng.integers(0, len(FILLER), cfg.items)]
    second = rng.integers(0, len(TOPICS), cfg.items)  # a minor topic word, as real texts wander
    titles, descriptions = [], []
    for i in range(cfg.items):
        ws = words[topic[i]][w[:, i]]
        titles.append(f"The {ws[0].title()} {filler[i].title()} #{i}")
        descriptions.append(f"A {names[topic[i]]} {filler[i]} of {ws[1]}, {ws[2]} and {ws[3]}, with a touch of "
                            f"{TOPICS[every[second[i]]][w[0, i]]}.")  # fmt: skip
    items = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(cfg.items)], "title": titles,
        "genres": [names[t] for t in topic], "description": descriptions,
    })  # fmt: skip
    by_topic = [rng.permutation(np.flatnonzero(topic == t)) for t in range(len(names))]  # popularity order
    return items, topic, by_topic


def generate(cfg: SyntheticConfig) -> RawDataset:
    """The dataset ``cfg`` describes, validated by the same checks as every loader."""
    rng = np.random.default_rng(cfg.seed)
    items, _, by_topic = _catalog(cfg, rng)
    n_topics = len(by_topic)
    cdfs = []
    for members in by_topic:
        weight = np.arange(1, len(members) + 1, dtype=np.float64) ** -cfg.popularity_exponent
        cdfs.append(np.cumsum(weight) / weight.sum())
    lengths = rng.integers(cfg.min_per_user, cfg.max_per_user + 1, cfg.users)
    k = rng.integers(1, cfg.interests + 1, cfg.users)
    interests = rng.integers(0, n_topics, (cfg.users, cfg.interests))
    current = interests[:, 0].copy()
    # oversample steps: an item seen twice is dropped, and the user keeps the first time
    steps = 2 * cfg.max_per_user + 2
    chosen = np.empty((cfg.users, steps), dtype=np.int64)
    for t in range(steps):
        drift = rng.random(cfg.users) >= cfg.stay
        pick = interests[np.arange(cfg.users), rng.integers(0, k)]  # one of the user's own interests
        current = np.where(drift, pick, current)
        u = rng.random(cfg.users)
        for top in np.unique(current):
            rows = np.flatnonzero(current == top)
            chosen[rows, t] = by_topic[top][
                np.searchsorted(cdfs[top], u[rows], side="right").clip(max=len(cdfs[top]) - 1)
            ]
    users = np.repeat(np.arange(cfg.users), steps)
    frame = pd.DataFrame({"u": users, "i": chosen.ravel(), "step": np.tile(np.arange(steps), cfg.users)})
    frame = frame.drop_duplicates(["u", "i"], keep="first")
    frame = frame[frame.groupby("u").cumcount().to_numpy() < lengths[frame["u"].to_numpy()]]
    start = 1_600_000_000 + rng.integers(0, 86_400 * 365, cfg.users)
    inter = pd.DataFrame({
        "user_id": ["u" + s for s in frame["u"].astype(str)],
        "item_id": ["i" + s for s in frame["i"].astype(str)],
        "timestamp": start[frame["u"].to_numpy()] + frame["step"].to_numpy() * 3_600,
    })  # fmt: skip
    return finalize(cfg.name, inter, items, "synthetic interactions", "synthetic items")


def write(cfg: SyntheticConfig, artifacts_root: str | Path | None = None) -> ArtifactPaths:
    """Generate and write the dataset as ``data_prep.prepare`` writes one; a rerun reuses it."""
    from data_prep.prepare import already_prepared, write_prepared

    paths = ArtifactPaths.for_dataset(cfg.name, artifacts_root)
    config = {"synthetic": asdict(cfg)}
    if already_prepared(paths, config):
        log.info("%s: already generated, reusing", paths.root)
        return paths
    return write_prepared(generate(cfg), paths, config)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-user", type=int, nargs=2, default=(20, 50), metavar=("MIN", "MAX"))


def command(a: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    try:
        cfg = SyntheticConfig(a.users, a.items, a.seed, a.per_user[0], a.per_user[1])
        paths = write(cfg, a.artifacts)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {paths.root}")
    return 0
