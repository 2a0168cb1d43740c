"""The CLI's own file: the server, session and TLS choice of the last ``taskgate login``.

``$TASKGATE_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/taskgate/cli.json``, else
``~/.config/taskgate/cli.json``. Written atomically with 0600 permissions
(it holds a session token). The TLS choice is kept with the server, so a later
command to that server never falls back to plaintext (and never sends the
token in the clear) because a flag was left out.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from taskgate_runtime.settings import TaskgateSettings


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


class CliSettings(TaskgateSettings):
    """What the CLI reads from its environment: ``TASKGATE_SERVER``, ``TASKGATE_CLI_CONFIG``,
    ``TASKGATE_CLI_CA_FILE``."""

    server: Annotated[str | None, BeforeValidator(_blank_is_none)] = None
    cli_config: Annotated[Path | None, BeforeValidator(_blank_is_none)] = None
    cli_ca_file: Annotated[Path | None, BeforeValidator(_blank_is_none)] = None


def config_path(environ: Mapping[str, str]) -> Path:
    explicit = CliSettings.from_env(environ).cli_config
    if explicit is not None:
        return explicit
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "taskgate" / "cli.json"


@dataclass
class Tls:
    """TLS to the server: a CA (None: the system's roots), a client certificate, a name."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Tls | None:
        if not isinstance(data, dict):
            return None
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass
class Saved:
    server: str | None = None
    token: str | None = None
    username: str | None = None
    tls: Tls | None = None


def load(path: Path) -> Saved:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Saved()
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise OSError(f"cannot read {path}: not a JSON object")
    return Saved(
        **{k: data.get(k) for k in ("server", "token", "username")},
        tls=Tls.from_json(data.get("tls")),
    )


def store(path: Path, saved: Saved) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cli-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(saved), out, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
