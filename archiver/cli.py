"""The `archiver` command line: the group, and the one place where errors become exit statuses and messages.

Each command lives in `archiver/commands/`: it parses options, calls one function, renders.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, MutableMapping
from typing import Any, NoReturn

import click
import sqlalchemy as sa

from archiver import __version__, db, logs
from archiver.commands.shared import say_error
from archiver.errors import ArchiverError, DatabaseUnavailable, InternalError, UsageError
from archiver.logs import configure_logging

log = logging.getLogger("archiver")

ENVIRONMENT = ("ARCHIVER_", "BASETEN_")  # the prefixes of the variables the options read


class ArchiverGroup(click.Group):
    """Turn the archiver's errors into messages and exit statuses, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        configure_logging()  # from the defaults: in-process callers run many commands
        wants_json = logs.asks_for_json(ctx.args)
        try:
            _refuse_undecodable(ctx.args)
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not wants_json:
                raise
            configure_logging(log_format="json")  # the option's own callback never ran
            logs.say(
                exc.format_message(), err=True, level="error", event="usage_error", exit_code=exc.exit_code
            )
            ctx.exit(exc.exit_code)
        except ArchiverError as exc:
            say_error(exc)
            ctx.exit(exc.exit_code)
        except sa.exc.DBAPIError as exc:
            # A safety net: expected database failures are ArchiverErrors already.
            say_error(DatabaseUnavailable(f"database error: {db.describe_db_error(exc)}"))
            ctx.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # The last net: a bug, said in one line (the traceback goes to the debug log, -vv).
            log.debug("internal error", exc_info=True)
            say_error(InternalError(exc))
            ctx.exit(InternalError.exit_code)


def _refuse_undecodable(args: list[str]) -> None:
    """Refuse bytes that are not UTF-8 (Python holds them as surrogates, which no database or URL takes).

    Only where they are is said: the text itself may be a key.
    """
    # The group's own args start after the command's name, argument 1.
    given = [f"argument {n}" for n, arg in enumerate(args, 2) if not _is_utf8(arg)]
    given += [
        name for name, value in os.environ.items() if name.startswith(ENVIRONMENT) and not _is_utf8(value)
    ]
    if given:
        raise UsageError(f"{', '.join(given)} is not UTF-8 text: give it again as UTF-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# Each command by name: its module in archiver/commands and the command's name there.
COMMANDS = {
    "sync": ("sync", "sync"),
    "runs": ("check", "runs"),
    "check": ("check", "check"),
    "rebuild": ("rebuild", "rebuild"),
    "db": ("db", "db_group"),
    "demo": ("demo", "demo"),
    "fake-api": ("fake_api", "fake_api"),
    "query": ("query", "query_command"),
    "docs": ("docs", "docs_command"),
    "report": ("report", "report"),
}


class Commands(MutableMapping[str, click.Command]):
    """The group's commands by name, each command's module imported when it is first asked for.

    A nightly sync then loads none of the others' modules (the fake API's generator, the checks,
    the reports): about 30 ms of every run's start.
    """

    def __init__(self, where: dict[str, tuple[str, str]]) -> None:
        self._where = dict(where)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, attribute = self._where[name]
            self._loaded[name] = getattr(importlib.import_module(f"archiver.commands.{module}"), attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._where.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._loaded and name not in self._where:
            raise KeyError(name)
        self._where.pop(name, None)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._where.keys() | self._loaded.keys()))

    def __len__(self) -> int:
        return len(self._where.keys() | self._loaded.keys())


@click.group(
    cls=ArchiverGroup, commands=Commands(COMMANDS), context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="archiver")
def cli() -> None:
    """Archive Baseten training checkpoints into SQLite or PostgreSQL.

    \b
    Try it without an API key:   archiver demo
    Archive your organisation:   BASETEN_API_KEY=... archiver sync
    Query the archive:           archiver query 'SELECT * FROM checkpoint_facts LIMIT 5'

    \b
    Exit status: each command's help lists its own; 2 usage error; 70 an unexpected
    error (a bug: please report it).
    """


def load(args: list[str]) -> None:
    """Import the module of the command `args` name, if they start with one."""
    if args and args[0] in cli.commands:
        cli.commands[args[0]]


def main() -> NoReturn:
    """Entry point of the `archiver` console script."""
    cli.main(prog_name="archiver")
    raise SystemExit(0)
