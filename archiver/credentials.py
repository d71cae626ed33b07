"""The Baseten API key: from --api-key / BASETEN_API_KEY or from a key file, never both."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from archiver.errors import UsageError

log = logging.getLogger("archiver")


def read_api_key(api_key: str | None, api_key_file: Path | None, *, typed: bool) -> str:
    """Return the one key given; `typed` says --api-key was on the command line (not the environment)."""
    if api_key_file is not None and api_key:
        given = "--api-key" if typed else None
        raise UsageError(
            f"{given or 'BASETEN_API_KEY'} and --api-key-file both give a key: keep one "
            f"({'drop --api-key' if given else 'unset BASETEN_API_KEY'}, or drop --api-key-file)"
        )
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --api-key-file {api_key_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"--api-key-file {api_key_file} is not text: it should hold the key alone"
            ) from None
        if not key:
            raise UsageError(f"--api-key-file {api_key_file} is empty")
        _warn_if_shared(api_key_file)
        return key
    if not api_key:
        raise UsageError(
            "no API key: set BASETEN_API_KEY, or pass --api-key-file PATH "
            "(try `archiver demo` to see the archiver work without one)"
        )
    return api_key


def _warn_if_shared(key_file: Path) -> None:
    """Warn, as ssh does, when users other than the owner may read or change the key file."""
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "--api-key-file %s is open to other users (mode %04o): make it its owner's alone, chmod 600 %s",
            key_file,
            mode,
            key_file,
            extra={"event": "key_file_open"},
        )
