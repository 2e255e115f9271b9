"""Prompts grounded in item metadata, and validation of what the LLM writes back.

Small models invent facts and echo their input. So every prompt carries the item's own metadata and says to
use only it; two short examples from different genres show the format (one line of keywords); and the
output is cleaned and checked before it is used. The retrieval text always keeps the metadata and appends
the generated words after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Domain = Literal["movie", "product", "item"]

SYSTEM = {
    "movie": (
        "You write search keywords for a movie catalog. Use only the title, year and genres given. "
        "Answer with one line of 6 to 12 comma-separated keywords about genre, mood, themes and audience. "
        "Do not repeat the title and do not invent names."
    ),
    "product": (
        "You write search keywords for a shop catalog. Use only the product facts given. Answer with one line "
        "of 6 to 12 comma-separated keywords about product type, use, features, style and who it is for. "
        "Do not repeat the title and do not invent brands."
    ),
    "item": (
        "You write search keywords for a catalog. Use only the facts given. Answer with one line of 6 to 12 "
        "comma-separated keywords about kind, mood, themes, use and audience. Do not repeat the title."
    ),
}

EXAMPLES = {
    "movie": [
        ({"title": "Heat", "year": 1995, "genres": "Action, Crime, Thriller"},
         "tense, gritty, heist, cat-and-mouse chase, shootouts, cops and robbers, for adults"),
        ({"title": "Babe", "year": 1995, "genres": "Children's, Comedy, Drama"},
         "heartwarming, gentle humor, talking animals, farm life, underdog story, family friendly"),
    ],
    "product": [
        ({"title": "Hydrating Face Cream 50ml", "categories": "Beauty, Skin Care, Face, Creams"},
         "moisturizer, dry skin, daily face care, hydrating, lightweight cream, skincare routine"),
        ({"title": "Stainless Steel Chef Knife 8 inch", "categories": "Home & Kitchen, Cutlery, Knives"},
         "kitchen knife, cooking, sharp blade, meal prep, durable steel, home cooks"),
    ],
    "item": [
        ({"title": "Heat", "year": 1995, "categories": "Action, Crime"},
         "tense, gritty, heist, chase, crime story, for adults"),
        ({"title": "Face Cream", "categories": "Beauty, Skin Care"},
         "moisturizer, dry skin, daily care, hydrating, skincare"),
    ],
}  # fmt: skip

FIELDS = ("title", "year", "genres", "categories", "brand", "description")
_ARTEFACTS = re.compile(r"<\|[^|>]*\|>|</?s>", re.IGNORECASE)
_LEADING_LABEL = re.compile(r"^\s*(?:(?:assistant|keywords?|answer|output)\s*:|[-*•])\s*", re.IGNORECASE)
_REFUSAL = re.compile(r"\b(i'm sorry|i am sorry|as an ai|i cannot|i can't)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")


def infer_domain(columns: Iterable[str]) -> str:
    """The catalog's domain word for prompts, from its metadata columns: movie, product or item."""
    cols = set(columns)
    if "genres" in cols:
        return "movie"
    if "categories" in cols:
        return "product"
    return "item"


@dataclass
class ItemRecord:
    """An item's metadata, as the prompt sees it. Empty fields are left out of the prompt."""

    item_id: str
    title: str
    year: int | None = None
    genres: str = ""
    categories: str = ""
    brand: str = ""
    description: str = ""
    reviews: list[str] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> ItemRecord:
        year = row.get("year")
        try:
            year = int(year) if year is not None and str(year) not in ("", "nan", "<NA>", "None") else None
        except (TypeError, ValueError):
            year = None
        reviews = row.get("reviews")
        return cls(
            item_id=str(row["item_id"]),
            title=str(row.get("title") or ""),
            year=year,
            **{f: _text(row.get(f)) for f in ("genres", "categories", "brand", "description")},
            reviews=[str(r) for r in reviews] if reviews is not None else [],
        )


def _text(value: Any) -> str:
    return "" if value is None or str(value) in ("nan", "<NA>", "None") else str(value).strip()


def metadata_lines(item: ItemRecord | Mapping[str, Any], max_description: int = 300) -> list[str]:
    get = item.get if isinstance(item, Mapping) else lambda f, d=None: getattr(item, f, d)
    lines = []
    for f in FIELDS:
        value = _text(get(f))
        if value:
            lines.append(f"{f.capitalize()}: {value[:max_description]}")
    return lines


def metadata_text(item: ItemRecord | Mapping[str, Any]) -> str:
    """The metadata-only retrieval text: ``Toy Story (1995). Genres: Animation, Children's, Comedy.``"""
    get = item.get if isinstance(item, Mapping) else lambda f, d=None: getattr(item, f, d)
    title, year = _text(get("title")), _text(get("year"))
    head = f"{title} ({year})" if year else title
    parts = [head]
    for f in ("genres", "categories", "brand"):
        value = _text(get(f))
        if value:
            parts.append(f"{f.capitalize()}: {value}")
    desc = _text(get("description"))
    if desc:
        parts.append(desc[:300])
    return ". ".join(parts) + "."


def enriched_text(item: ItemRecord | Mapping[str, Any], description: str) -> str:
    """Metadata first, then the generated features: what the encoder embeds for retrieval."""
    base = metadata_text(item)
    return f"{base} {description.strip()}" if description and description.strip() else base


def fallback_description(item: ItemRecord) -> str:
    """A description built from metadata alone, used when the LLM output fails validation twice."""
    words = [w.strip() for w in (item.genres or item.categories).split(",") if w.strip()]
    if item.year:
        words.append(str(item.year))
    if item.brand:
        words.append(item.brand)
    return ", ".join(words) if words else item.title


@dataclass
class ItemPrompt:
    """Builds the chat conversation for one item."""

    domain: Domain = "movie"
    max_reviews: int = 3
    max_review_chars: int = 200

    def conversation(self, item: ItemRecord) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": SYSTEM[self.domain]}]
        for example, answer in EXAMPLES[self.domain]:
            msgs.append({"role": "user", "content": "\n".join(metadata_lines(example))})
            msgs.append({"role": "assistant", "content": answer})
        lines = metadata_lines(item)
        for review in item.reviews[: self.max_reviews]:
            lines.append(f"Review: {review[: self.max_review_chars]}")
        msgs.append({"role": "user", "content": "\n".join(lines)})
        return msgs


@dataclass
class OutputRules:
    """Bounds for a generated line; see ``validate``."""

    min_words: int = 3
    max_words: int = 60
    max_chars: int = 400
    max_overlap_with_input: float = 0.8  # share of output words that merely repeat the metadata
    min_unique_ratio: float = 0.5
    max_keywords: int = 12


def clean(text: str, max_keywords: int = 12) -> str:
    """Strip chat artefacts, labels, list markers and quotes; keep the first non-empty line; drop repeated
    comma-separated keywords (small models loop on them) and keep at most ``max_keywords``."""
    text = _ARTEFACTS.sub("", text)
    for line in text.splitlines():
        previous = None
        while previous != line:
            previous = line
            line = _LEADING_LABEL.sub("", line).strip().strip('"').strip("'").strip()
        line = line.rstrip(",;.")
        if not line:
            continue
        if "," not in line:
            return line
        seen: dict[str, str] = {}
        for kw in line.split(","):
            kw = kw.strip().strip(".;").strip()
            if kw and kw.lower() not in seen:
                seen[kw.lower()] = kw
        return ", ".join(list(seen.values())[:max_keywords])
    return ""


def _shape_reason(out: str, words: list[str], rules: OutputRules) -> str | None:
    """The checks every generated line gets: empty, too short, too long, refusal."""
    if not out:
        return "empty"
    if len(words) < rules.min_words:
        return "too short"
    if len(words) > rules.max_words or len(out) > rules.max_chars:
        return "too long"
    if _REFUSAL.search(out):
        return "refusal"
    return None


def validate(text: str, item: ItemRecord, rules: OutputRules | None = None) -> tuple[str, str | None]:
    """(cleaned text, reason it is rejected or None)."""
    rules = rules or OutputRules()
    out = clean(text, rules.max_keywords)
    words = _WORD.findall(out.lower())
    if reason := _shape_reason(out, words, rules):
        return out, reason
    if re.search(r"\b(title|year|genres|categories)\s*:", out, re.IGNORECASE):
        return out, "echoes the prompt format"
    source = set(_WORD.findall(" ".join(metadata_lines(item)).lower()))
    if sum(w in source for w in words) / len(words) > rules.max_overlap_with_input:
        return out, "echoes the metadata"
    if len(set(words)) / len(words) < rules.min_unique_ratio:
        return out, "repetitive"
    return out, None


_STOPWORDS = frozenset(
    "a an and the of for with to in on or by from that this is it its who what like more movie movies film "  # noqa: SIM905
    "films stories story something some new best latest next watch want".split()
)


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def vocabulary(texts: list[str]) -> set[str]:
    """Singular lower-case words of ``texts``: what a grounded query may draw on."""
    return {_singular(w) for t in texts for w in _WORD.findall(t.lower())}


def validate_query_text(
    text: str,
    history_titles: list[str],
    rules: OutputRules | None = None,
    vocabulary: set[str] | None = None,
) -> tuple[str, str | None]:
    """(cleaned query, reason it is rejected or None).

    Rejected: a query that lists watched titles or names a title with its year ("Heat (1995)"), and, when a
    ``vocabulary`` (words of the history's tags and descriptions) is given, a query none of whose content
    words occurs in it: small models otherwise invent unrelated titles and plots.
    """
    rules = rules or OutputRules()
    out = clean(text, rules.max_keywords)
    words = _WORD.findall(out.lower())
    if reason := _shape_reason(out, words, rules):
        return out, reason
    if re.search(r"\b(most recent|watched)\s*:", out, re.IGNORECASE):
        return out, "echoes the prompt format"
    lowered = out.lower()
    named = sum(1 for t in history_titles if len(t) > 3 and t.lower() in lowered)
    if named >= 2 or re.search(r"\(\s*(19|20)\d\d\s*\)", out):
        return out, "lists titles"
    content = [w for w in words if w not in _STOPWORDS and not w.isdigit()]
    if vocabulary is not None and not any(_singular(w) in vocabulary for w in content):
        return out, "ungrounded"
    if len(set(words)) / len(words) < rules.min_unique_ratio:
        return out, "repetitive"
    return out, None
