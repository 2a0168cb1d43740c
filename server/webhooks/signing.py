"""What a delivery sends: its body and its Standard Webhooks 1.0 headers.

The body is ``{"type", "timestamp", "data"}``, ``data`` being the TaskEvent
as the JSON API shows it. The headers are ``webhook-id`` (``evt_`` and the
event id: the same on every retry, for the receiver to drop duplicates),
``webhook-timestamp`` (this attempt's time, in seconds) and
``webhook-signature``: one ``v1,<base64 HMAC-SHA256>`` per key, space
separated (two while a rotated secret still signs), made by the reference
implementation, ``standardwebhooks``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import datetime

from google.protobuf import json_format
from standardwebhooks.webhooks import Webhook

from server.models import TaskEvent
from server.rpc.convert_tasks import event_to_proto

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format of a key, not a key
SECRET_BYTES = 32


def new_secret() -> str:
    """A signing key: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def webhook_id(event_id: int) -> str:
    return f"evt_{event_id}"


def body(event: TaskEvent) -> bytes:
    data = json_format.MessageToDict(event_to_proto(event))
    envelope = {
        "type": event.type.value,
        "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def headers(*, msg_id: str, payload: bytes, keys: Sequence[str], now: datetime) -> dict[str, str]:
    """The headers of one attempt, signed with every key in ``keys``."""
    text = payload.decode()
    signatures = " ".join(Webhook(key).sign(msg_id, now, text) for key in keys)
    return {
        "content-type": "application/json",
        "user-agent": "taskgate-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
    }
