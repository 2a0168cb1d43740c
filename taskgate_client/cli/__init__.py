"""``taskgate``: the command line for people (see ``taskgate --help``)."""

from taskgate_client.cli.main import main

__all__ = ["main"]
