"""A worker process: ``python -m server.processor.worker FD``.

It runs pipelines for the processor that started it, over the socket it
inherited as FD, one batch at a time, one pipeline after the other:

- in:  ``("run", [(seq, image, steps, format, max_pixels, max_result_bytes), ...])``,
  ``("cancel", seq)``
- out: ``("progress", seq, done)`` after each filter but the last, then, once
  the whole batch has run, ``("ended", [outcome, ...])`` with one of
  ``("done", seq, data, content_type, width, height)``,
  ``("failed", seq, message)`` (the input cannot be processed),
  ``("cancelled", seq, done)``, ``("error", seq, message)`` (a bug, retryable)
  for each pipeline.

Between two filters it looks for a cancellation without blocking. It exits
when the processor closes the socket (or dies: the socket closes with it).
"""

from __future__ import annotations

import select
import signal
import socket
import sys
from typing import Any

from server.imaging.errors import PipelineCancelled, UnprocessableImage
from server.imaging.filters import steps_from_json
from server.imaging.pipeline import run_pipeline
from server.processor.frames import HEADER, pack, unpack


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._cancelled: set[int] = set()

    def recv(self) -> tuple[Any, ...] | None:
        header = self._read(HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        body = self._read(length)
        return None if body is None else unpack(body)

    def send(self, *message: Any) -> None:
        self._sock.sendall(pack(message))

    def cancel_asked(self, seq: int) -> bool:
        """Whether a cancellation of job ``seq`` has arrived, without waiting for one."""
        while select.select([self._sock], [], [], 0)[0]:
            message = self.recv()
            if message is None:
                raise SystemExit(0)  # the processor is gone: nobody wants the result
            if message[0] == "cancel":
                self._cancelled.add(message[1])
        return seq in self._cancelled

    def forget_cancellations(self) -> None:
        """After a batch: its cancellations are moot now."""
        self._cancelled.clear()

    def _read(self, size: int) -> bytearray | None:
        """Exactly ``size`` bytes, received in place (an input image is megabytes)."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            n = self._sock.recv_into(view[got:])
            if not n:
                return None
            got += n
        return buffer


def run(
    channel: Channel,
    seq: int,
    image: bytes,
    steps: Any,
    output_format: str,
    max_pixels: int | None,
    max_result_bytes: int | None,
) -> tuple[Any, ...]:
    """Runs one pipeline; its outcome message."""
    pipeline = steps_from_json(steps)

    def progress(done: int) -> None:
        if done < len(pipeline):  # the last step's progress comes with the result
            channel.send("progress", seq, done)

    try:
        result = run_pipeline(
            image,
            pipeline,
            output_format,
            on_step=progress,
            cancelled=lambda: channel.cancel_asked(seq),
            max_pixels=max_pixels,
            max_result_bytes=max_result_bytes,
        )
    except PipelineCancelled as exc:
        return ("cancelled", seq, exc.done)
    except UnprocessableImage as exc:
        return ("failed", seq, exc.message)
    except Exception as exc:  # a bug: reported, and the task retried elsewhere
        return ("error", seq, f"{type(exc).__name__}: {exc}")
    return ("done", seq, result.data, result.content_type, result.width, result.height)


def serve(channel: Channel) -> None:
    while (message := channel.recv()) is not None:
        if message[0] == "run":
            channel.send("ended", [run(channel, *job) for job in message[1]])
            channel.forget_cancellations()


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group: the processor decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    try:
        serve(Channel(sock))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the processor went away mid-job
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
