"""Comparing JSON values the way protobuf's JSON mapping means them."""

from __future__ import annotations

from typing import Any


def without_nulls(value: Any) -> Any:
    """The value with every ``null`` member dropped, at any depth (an unset field)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
