"""The CLI's own file: the server and session of the last ``taskgate login``.

``$TASKGATE_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/taskgate/cli.json``, else
``~/.config/taskgate/cli.json``. Written atomically with 0600 permissions
(it holds a session token).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from taskgate_runtime.settings import TaskgateSettings


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


class CliSettings(TaskgateSettings):
    """What the CLI reads from its environment: ``TASKGATE_SERVER``, ``TASKGATE_CLI_CONFIG``."""

    server: Annotated[str | None, BeforeValidator(_blank_is_none)] = None
    cli_config: Annotated[Path | None, BeforeValidator(_blank_is_none)] = None


def config_path(environ: Mapping[str, str]) -> Path:
    explicit = CliSettings.from_env(environ).cli_config
    if explicit is not None:
        return explicit
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "taskgate" / "cli.json"


@dataclass
class Saved:
    server: str | None = None
    token: str | None = None
    username: str | None = None


def load(path: Path) -> Saved:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Saved()
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise OSError(f"cannot read {path}: not a JSON object")
    return Saved(**{k: data.get(k) for k in ("server", "token", "username")})


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
