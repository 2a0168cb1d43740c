"""Model → proto conversions shared by the servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from server.models import Session, User
from taskgate.v1 import session_service_pb2 as session_pb
from taskgate.v1 import user_service_pb2 as user_pb


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def user_to_proto(user: User) -> user_pb.User:
    return user_pb.User(
        user_id=str(user.id), username=user.username, create_time=timestamp(user.created_at)
    )


def session_to_proto(session: Session) -> session_pb.Session:
    return session_pb.Session(
        session_id=session.id,
        user_id=str(session.user_id),
        create_time=timestamp(session.created_at),
        expire_time=timestamp(session.expires_at),
    )
