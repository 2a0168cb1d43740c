"""One function per subcommand: (session, parsed arguments) → exit status."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from taskgate.v1 import task_service_pb2 as task_pb
from taskgate_client import filters as filter_specs
from taskgate_client.cli import config
from taskgate_client.cli.errors import CliError, Exit
from taskgate_client.cli.output import (
    as_dict,
    emit_json,
    note,
    status_name,
    task_details,
    task_line,
)
from taskgate_client.cli.progress import follow
from taskgate_client.sync import Client
from taskgate_client.transport import rpc_status

FORMATS = {
    "png": task_pb.IMAGE_FORMAT_PNG,
    "jpeg": task_pb.IMAGE_FORMAT_JPEG,
    "webp": task_pb.IMAGE_FORMAT_WEBP,
}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass
class Session:
    client: Client
    config_path: Path
    saved: config.Saved
    json: bool
    tls: config.Tls | None = None


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        raise CliError(Exit.USAGE, "no terminal to ask for the password: use --password-stdin")
    if not password:
        raise CliError(Exit.USAGE, "empty password")
    return password


def register(s: Session, args: argparse.Namespace) -> None:
    user = s.client.register(args.username, _password(args))
    if s.json:
        emit_json(as_dict(user))
    else:
        print(f"registered {user.username} ({user.user_id})")


def login(s: Session, args: argparse.Namespace) -> None:
    session = s.client.login(args.username, _password(args))
    saved = config.Saved(
        server=s.client.transport.target,
        token=session.session_id,
        username=args.username,
        tls=s.tls,
    )
    config.store(s.config_path, saved)
    if s.json:
        emit_json({**as_dict(session), "configFile": str(s.config_path)})
    else:
        print(f"logged in as {args.username} (session saved in {s.config_path})")


def logout(s: Session, args: argparse.Namespace) -> None:
    if s.saved.token:
        try:
            s.client.logout()
        except grpc.RpcError as exc:  # already gone on the server: forget it here too
            if rpc_status(exc)[0] not in {
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.NOT_FOUND,
            }:
                raise
    config.store(s.config_path, config.Saved(server=s.saved.server, tls=s.saved.tls))
    if s.json:
        emit_json({"loggedOut": True})
    else:
        print("logged out")


def filters(s: Session, args: argparse.Namespace) -> None:
    described = s.client.filters()
    if s.json:
        emit_json([as_dict(f) for f in described])
        return
    for item in described:
        params = ",".join(f"{p.name}={p.type}" for p in item.parameters)
        print(f"{item.name + (':' + params if params else ''):<45} {item.description}")


def _read_image(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(Exit.LOCAL_FILE, f"cannot read {path}: {exc.strerror or exc}") from None


def submit(s: Session, args: argparse.Namespace) -> int:
    try:
        specs = [filter_specs.parse(spec) for spec in args.filter]
    except filter_specs.FilterSyntaxError as exc:
        raise CliError(Exit.USAGE, str(exc)) from None
    image = _read_image(args.image)
    task = s.client.submit(
        image, specs, output_format=FORMATS[args.format], idempotency_key=args.idempotency_key
    )
    if s.json and not args.wait:
        emit_json(as_dict(task))
    elif not s.json:
        print(task.task_id, flush=True)
    if not args.wait:
        return Exit.OK
    return _wait_and_save(s, task.task_id, args.output)


def _wait_and_save(s: Session, task_id: str, output: str | None) -> int:
    last = follow(s.client.watch(task_id), json_lines=s.json)
    if last is None or last.status != task_pb.TASK_STATUS_COMPLETED:
        return _ended_badly(last, task_id)
    _save(s, task_id, output)
    return Exit.OK


def _ended_badly(last: task_pb.Task | None, task_id: str) -> int:
    status = status_name(last.status) if last is not None else "unknown"
    error = f": {last.error}" if last is not None and last.error else ""
    note(f"taskgate: task {task_id} ended {status}{error}")
    return Exit.TASK_FAILED


def _save(s: Session, task_id: str, output: str | None) -> None:
    body = s.client.result(task_id)
    if output == "-":
        sys.stdout.buffer.write(body.data)
        sys.stdout.flush()
        return
    path = Path(output or f"{task_id}.{EXTENSIONS.get(body.content_type, 'bin')}")
    try:
        path.write_bytes(body.data)
    except OSError as exc:
        raise CliError(Exit.LOCAL_FILE, f"cannot write {path}: {exc.strerror or exc}") from None
    if s.json:
        emit_json({"taskId": task_id, "file": str(path), "contentType": body.content_type,
                   "bytes": len(body.data)})  # fmt: skip
    else:
        note(f"saved {path} ({body.content_type}, {len(body.data)} bytes)")


def status(s: Session, args: argparse.Namespace) -> None:
    _show(s, s.client.task(args.task_id), task_details)


def watch(s: Session, args: argparse.Namespace) -> int:
    last = follow(s.client.watch(args.task_id), json_lines=s.json)
    if last is None or last.status != task_pb.TASK_STATUS_COMPLETED:
        return _ended_badly(last, args.task_id)
    if not s.json:
        print(task_line(last))
    return Exit.OK


def result(s: Session, args: argparse.Namespace) -> None:
    _save(s, args.task_id, args.output)


def cancel(s: Session, args: argparse.Namespace) -> None:
    _show(s, s.client.cancel(args.task_id), task_line)


def _show(s: Session, task: task_pb.Task, text: Callable[[task_pb.Task], str]) -> None:
    if s.json:
        emit_json(as_dict(task))
    else:
        print(text(task))


def list_tasks(s: Session, args: argparse.Namespace) -> None:
    wanted = task_pb.TaskStatus.Value(f"TASK_STATUS_{(args.status or 'unspecified').upper()}")
    tasks: list[task_pb.Task] = []
    token = ""
    while len(tasks) < args.limit:
        page = s.client.list_tasks(
            page_size=min(100, args.limit - len(tasks)), page_token=token, status=wanted
        )
        tasks.extend(page.tasks)
        token = page.next_page_token
        if not token:
            break
    if s.json:
        emit_json([as_dict(t) for t in tasks])
    else:
        for task in tasks:
            print(task_line(task))
