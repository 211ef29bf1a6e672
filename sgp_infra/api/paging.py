"""Filtering, sorting and the two pagination styles of the SGP API.

v4 pages by number (``page`` from 1, ``limit`` up to 10,000) and reports
``total_item_count``; v5 pages by cursor (``starting_after``/``ending_before``
an item id) and reports ``has_more``.  Both operate on lists of response
dicts already narrowed to what the caller may see.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import orjson

from .errors import ApiError

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
#: Most sort keys one list query may give (each is a full sort of the list): a 422 beyond.
MAX_SORT_KEYS = 8


def _sort_key(field: str):  # type: ignore[no-untyped-def]
    def key(item: dict[str, Any]) -> tuple[int, Any]:
        value = item.get(field)
        if value is None:
            return (1, "")
        if isinstance(value, (dict, list)):
            return (0, orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
        if isinstance(value, bool):
            return (0, int(value))
        return (0, value)
    return key


def sort_items(items: list[dict[str, Any]], specs: Sequence[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Stable multi-key sort; ``specs`` is ``[(field, descending), ...]`` most significant first."""
    out = list(items)
    for field, descending in reversed(specs):
        try:
            out.sort(key=_sort_key(field), reverse=descending)
        except TypeError:  # mixed types in one field: compare their text
            out.sort(key=lambda i: str(i.get(field)), reverse=descending)
    return out


def parse_v4_sort(sort_by: Optional[Iterable[str]], allowed: Iterable[str]) -> list[tuple[str, bool]]:
    """``["name:asc", "created_at:desc"]`` → specs; unknown fields and more than
    :data:`MAX_SORT_KEYS` keys are a 422."""
    allowed = set(allowed)
    specs: list[tuple[str, bool]] = []
    for raw in sort_by or ():
        for part in raw.split(","):  # tolerate comma-joined lists
            if not part:
                continue
            if len(specs) == MAX_SORT_KEYS:
                raise ApiError(422, f"too many sort_by keys: at most {MAX_SORT_KEYS} per query")
            field, _, direction = part.partition(":")
            direction = direction or "asc"
            if field not in allowed or direction not in ("asc", "desc"):
                raise ApiError(422, f"invalid sort_by {part!r}: use <field>:asc or <field>:desc with a field of "
                                    f"{', '.join(sorted(allowed))}")
            specs.append((field, direction == "desc"))
    return specs


def page_v4(items: list[dict[str, Any]], page: int, limit: int) -> dict[str, Any]:
    start = (page - 1) * limit
    return {
        "items": items[start:start + limit],
        "current_page": page,
        "items_per_page": limit,
        "total_item_count": len(items),
    }


def page_v5(items: list[Any], limit: int, starting_after: Optional[str], ending_before: Optional[str],
            id_of: Callable[[Any], str] = lambda item: item["id"]) -> dict[str, Any]:
    """One cursor page of ``items`` (response dicts, or anything ``id_of`` reads an id from)."""
    if starting_after and ending_before:
        raise ApiError(422, "give starting_after or ending_before, not both")
    def position(cursor: str, name: str) -> int:
        for i, item in enumerate(items):
            if id_of(item) == cursor:
                return i
        raise ApiError(422, f"{name} {cursor!r} is not the id of an item in this list")

    if starting_after:
        start = position(starting_after, "starting_after") + 1
        chunk = items[start:start + limit]
        has_more = start + limit < len(items)
    elif ending_before:
        end = position(ending_before, "ending_before")
        begin = max(0, end - limit)
        chunk = items[begin:end]
        has_more = begin > 0
    else:
        chunk = items[:limit]
        has_more = limit < len(items)
    return {"object": "list", "items": chunk, "has_more": has_more, "limit": limit, "total": len(items)}
