"""The HTTP API's request and response bodies (pydantic), shared by the ingress and its OpenAPI page.

Ids are strings as the catalog spells them; a JSON number is accepted wherever an id is (MovieLens ids
are numbers) and read as its decimal string. Every id (user, item, event) is checked at the edge, before
any store sees it: 1..128 printable characters (no control character, no lone surrogate); free text
must be encodable as UTF-8.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


def _id_text(value: object) -> object:
    """A JSON integer id becomes its decimal string; anything else is left to the str validation."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


MAX_ID_CHARS = 128


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id (None: it is one)."""
    if not 1 <= len(value) <= MAX_ID_CHARS:
        return f"must be 1..{MAX_ID_CHARS} characters, got {len(value)}"
    if not value.isprintable() or not value.strip():
        return "must be printable text (no control characters, not only spaces)"
    return text_problem(value)


def text_problem(value: str) -> str | None:
    """Why ``value`` is not valid text (None: it is): a lone surrogate cannot be encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def _check(problem):
    def check(value: str) -> str:
        why = problem(value)
        if why is not None:
            raise ValueError(why)
        return value

    return AfterValidator(check)


Id = Annotated[str, BeforeValidator(_id_text), _check(id_problem)]
Text = Annotated[str, _check(text_problem)]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(None, description="a known user")
    history: list[Id] | None = Field(
        None, max_length=5000, description="item ids, oldest first, for a user without a user_id (cold start)"
    )
    k: int = Field(10, description="items to return, 1..catalog size")
    exclude_seen: bool = True
    query: Text | None = Field(
        None,
        max_length=10_000,
        description="free-text intent, blended into retrieval (at most the app's max_query_chars)",
    )


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float
    cf_rank: int | None
    cf_score: float | None
    retrieval_rank: int | None
    retrieval_score: float | None


class QueryUsed(BaseModel):
    text: str | None = Field(
        description="the user's query (the first of texts), or none when retrieval uses no text"
    )
    texts: list[str] = Field(
        default_factory=list, description="every query text used: the query and its extra samples"
    )
    source: str = Field(
        description="llm, fallback (built from the history's metadata), or none (retrieval from the history "
        "items' vectors alone)"
    )
    cached: bool = Field(
        description="written earlier (batch job or a previous request) for this exact history"
    )
    intent: str | None = None
    items: list[str] = Field(default_factory=list, description="the history items the query comes from")


class RecommendResponse(BaseModel):
    user_id: str | None
    items: list[RecommendedItem]
    query: QueryUsed
    alpha: float | None
    degraded: list[str]
    version: str = Field(description="the build that answered (artifacts and fusion config): one per answer")
    timings_ms: dict[str, float]


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[Id] = Field(..., min_length=1, max_length=1000, description="interactions, oldest first")
    event_id: Id | None = Field(
        None,
        description="the client's id of this batch: a repeat within the retention window is stored once "
        "and answered with the first answer (also accepted as the Idempotency-Key header)",
    )


class EventsResponse(BaseModel):
    user_id: str
    appended: int
    history_length: int
    created: bool
    query_invalidated: bool
    duplicate: bool = Field(False, description="a repeat of an event_id already stored: nothing was appended")
    dropped: int = Field(
        0, description="oldest online items dropped to keep the user's stored history at its cap"
    )


class NewItem(BaseModel):
    """An item in the catalog's schema; a field the catalog does not have is refused (422 naming it)."""

    model_config = ConfigDict(extra="forbid")

    item_id: Id
    title: Text = Field(..., min_length=1, max_length=500)
    year: int | None = Field(None, ge=0, le=9999)
    genres: Text | None = Field(None, max_length=1000)
    categories: Text | None = Field(None, max_length=1000)
    brand: Text | None = Field(None, max_length=500)
    description: Text | None = Field(None, max_length=5000)


class NewItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[NewItem] = Field(..., min_length=1, max_length=1000, description="items to add, all or none")


class NewItemsResponse(BaseModel):
    added: list[str] = Field(description="the ids added, in the order given")
    catalog_size: int = Field(description="items in the catalog now, withdrawn ones included")
    catalog_seq: int = Field(description="the catalog log's position after the addition")


class WithdrawnResponse(BaseModel):
    item_id: str
    withdrawn: bool = Field(description="false: it was withdrawn before (nothing changed)")
    catalog_seq: int


class ItemSummary(BaseModel):
    item_id: str
    title: str
    meta: dict[str, str | int | float | bool | None] = Field(
        description="the item's other catalog fields (year, genres, …), long texts cut short"
    )


class ItemsResponse(BaseModel):
    items: list[ItemSummary]


class UserResponse(BaseModel):
    user_id: str
    history_length: int
    recent: list[ItemSummary] = Field(description="the most recent items, oldest first")
