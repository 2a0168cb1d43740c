from __future__ import annotations

import logging

from taskgate_runtime.logs import GRPC_MESSAGE_LIMIT, GrpcLogFilter, install_grpc_filter


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("grpc._cython.cygrpc", logging.ERROR, __file__, 1, msg, args, None)


def test_undecodable_metadata_is_withheld_and_rate_limited() -> None:
    now = [100.0]
    grpc_filter = GrpcLogFilter(interval=10.0, clock=lambda: now[0])
    first = record(GrpcLogFilter.UNDECODABLE, b"Bearer secret\xff")
    assert grpc_filter.filter(first)
    assert "secret" not in first.getMessage()
    assert first.levelno == logging.WARNING
    assert not grpc_filter.filter(record(GrpcLogFilter.UNDECODABLE, b"x\xff"))
    assert not grpc_filter.filter(record(GrpcLogFilter.UNDECODABLE, b"x\xff"))
    now[0] += 10.0
    later = record(GrpcLogFilter.UNDECODABLE, b"y\xff")
    assert grpc_filter.filter(later)
    assert "2 more held back" in later.getMessage()


def test_other_grpc_records_are_cut() -> None:
    long = record("%s", "z" * 10_000)
    assert GrpcLogFilter().filter(long)
    assert len(long.getMessage()) <= GRPC_MESSAGE_LIMIT + 10
    short = record("fine %d", 1)
    assert GrpcLogFilter().filter(short)
    assert short.getMessage() == "fine 1"


def test_installing_twice_adds_one_filter() -> None:
    install_grpc_filter()
    install_grpc_filter()
    filters = logging.getLogger("grpc._cython.cygrpc").filters
    assert sum(isinstance(f, GrpcLogFilter) for f in filters) == 1
