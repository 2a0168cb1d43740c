"""Arguments → a command; errors → one line on stderr and a distinct exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from taskgate_client import filters as filter_specs
from taskgate_client.cli import commands, config
from taskgate_client.cli.errors import CliError, Exit, from_rpc
from taskgate_client.sync import Client
from taskgate_client.transport import DEFAULT_TARGET, TlsFiles, Transport
from taskgate_runtime.settings import ConfigError
from taskgate_runtime.tls import TlsFileError

Command = Callable[[commands.Session, argparse.Namespace], int | None]

EPILOG = """\
exit status: 0 ok, 1 server error, 2 bad arguments or filter syntax, 3 server
unreachable or too slow, 4 not logged in or session expired, 5 no such task,
6 request refused by the server, 7 task failed or cancelled, 8 local file error.
"""


def _with_password(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("username")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskgate",
        description="Submit image tasks to taskgate and follow them (gRPC).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server",
        help=f"host:port of the gRPC server (default: $TASKGATE_SERVER, the one you logged "
        f"in to, else {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, verifying the server against the system's CAs "
        "(remembered with the server at login)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="verify the server against this CA instead (implies --tls; default: "
        "$TASKGATE_CLI_CA_FILE)",
    )
    parser.add_argument(
        "--cert-file", metavar="PEM", help="client certificate, for a server requiring one"
    )
    parser.add_argument("--key-file", metavar="PEM", help="the client certificate's key")
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        help="the name the server's certificate carries, when not the host of --server",
    )
    parser.add_argument("--json", action="store_true", help="JSON output, for scripts")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Command, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(run=run)
        return command

    _with_password(add("register", commands.register, "create an account"))
    _with_password(add("login", commands.login, "log in and save the session (0600 file)"))
    add("logout", commands.logout, "end the saved session")
    add("filters", commands.filters, "list the filters and their parameters")
    submit = add("submit", commands.submit, "submit an image with filters; print the task id")
    submit.add_argument("image", help="image file (- for stdin)")
    submit.add_argument(
        "-f", "--filter", action="append", required=True, metavar="NAME[:K=V,...]",
        help=f"repeatable, applied in order; one of {', '.join(filter_specs.names())}",
    )  # fmt: skip
    submit.add_argument("--format", choices=sorted(commands.FORMATS), default="png")
    submit.add_argument("--idempotency-key", help="submitting twice with it makes one task")
    submit.add_argument("--wait", action="store_true", help="follow it, then save the result")
    submit.add_argument("-o", "--output", help="with --wait: file (- for stdout)")
    add("status", commands.status, "show a task").add_argument("task_id")
    add("watch", commands.watch, "follow a task's progress until it ends").add_argument("task_id")
    result = add("result", commands.result, "save a completed task's image")
    result.add_argument("task_id")
    result.add_argument("-o", "--output", help="file (default TASK_ID.EXT; - for stdout)")
    add("cancel", commands.cancel, "cancel a task").add_argument("task_id")
    listing = add("list", commands.list_tasks, "your tasks, newest first")
    listing.add_argument(
        "--status", choices=["pending", "running", "completed", "failed", "cancelled"]
    )
    listing.add_argument("--limit", type=int, default=50)
    return parser


def _session(args: argparse.Namespace) -> commands.Session:
    try:
        settings = config.CliSettings.from_env(os.environ)
    except ConfigError as exc:
        raise CliError(Exit.USAGE, f"configuration error: {exc}") from None
    path = config.config_path(os.environ)
    try:
        saved = config.load(path)
    except OSError as exc:
        raise CliError(Exit.LOCAL_FILE, str(exc)) from None
    target = args.server or settings.server or saved.server or DEFAULT_TARGET
    same_server = saved.server in {None, target}
    token = saved.token if same_server else None
    tls = _tls(args, settings) or (saved.tls if saved.server == target else None)
    try:
        client = Client(_transport(target, tls), token=token, timeout=args.timeout)
    except TlsFileError as exc:
        raise CliError(Exit.LOCAL_FILE, str(exc)) from None
    return commands.Session(client=client, config_path=path, saved=saved, json=args.json, tls=tls)


def _absolute(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


def _tls(args: argparse.Namespace, settings: config.CliSettings) -> config.Tls | None:
    """The TLS the flags (or TASKGATE_CLI_CA_FILE) ask for; None when they ask for none."""
    ca_file = args.ca_file or settings.cli_ca_file
    if (args.cert_file is None) != (args.key_file is None):
        raise CliError(Exit.USAGE, "--cert-file and --key-file go together")
    if not (args.tls or ca_file or args.cert_file or args.server_name):
        return None
    return config.Tls(
        ca_file=_absolute(ca_file),
        cert_file=_absolute(args.cert_file),
        key_file=_absolute(args.key_file),
        server_name=args.server_name,
    )


def _transport(target: str, tls: config.Tls | None) -> Transport:
    if tls is None:
        return Transport(target)
    files = TlsFiles(ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file)
    return Transport(target, tls=files, server_name=tls.server_name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    session: commands.Session | None = None
    try:
        session = _session(args)
        return int(args.run(session, args) or Exit.OK)
    except CliError as exc:
        status, message = exc.status, str(exc)
    except grpc.RpcError as exc:
        error = from_rpc(exc, session.client.transport.target if session else "?")
        status, message = error.status, str(error)
    except KeyboardInterrupt:
        return 130
    finally:
        if session is not None:
            session.client.close()
    print(f"taskgate: error: {message}", file=sys.stderr)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
