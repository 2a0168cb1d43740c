"""Schemathesis hooks for the fuzz test (loaded with SCHEMATHESIS_HOOKS).

``not_a_server_error`` would count grpc-gateway's answer to a known path with
the wrong method (UNIMPLEMENTED "Method Not Allowed", HTTP 501), which the
gateway gives on purpose; this check fails on every other 5xx.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

WRONG_METHOD = {"code": 12, "message": "Method Not Allowed", "details": []}


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx, except grpc-gateway's 501 for a method the path does not have."""
    if response.status_code < 500:
        return
    if response.status_code == 501:
        try:
            if json.loads(response.content) == WRONG_METHOD:
                return
        except ValueError:
            pass
    raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")
