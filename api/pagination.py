"""Cursor pagination: the cursor is the opaque (base64 JSON) key of the last item returned, so
pages stay stable while rows are added, unlike offsets."""

from __future__ import annotations

import base64
from typing import Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from api.errors import ApiError

T = TypeVar("T")
MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page"
    )


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise ApiError(422, "invalid_cursor", "the cursor is not valid") from None
    if not isinstance(key, list) or len(key) != arity:
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    if not all(isinstance(k, str | int | float) for k in key):
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    return key


LimitQ = Query(50, ge=1, le=MAX_LIMIT, description="Page size")
CursorQ = Query(None, max_length=512, description="Cursor from the previous page")


def page_of(items: list[T], limit: int, key: Any) -> Page[T]:
    """Build a page from up to limit+1 fetched items; `key(item)` gives the cursor key."""
    more = len(items) > limit
    items = items[:limit]
    return Page[T](items=items, next_cursor=encode_cursor(key(items[-1])) if more else None)
