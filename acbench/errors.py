"""User-facing errors: one line naming the file or field and the fix; the CLI exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (protocol, data, weights). Printed as one line, exit code 2."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def require_folder(path, option: str, hint: str = "", suffixes: Iterable[str] | None = None) -> None:
    """Raise a one-line `UserError` unless `path` is a folder holding at least one matching file.

    `option` names the setting as the user wrote it (e.g. "method memseg: options.texture_path");
    `suffixes` (lower-case, with dot) restricts which files count; `hint` says how to get the folder.
    """
    from pathlib import Path

    folder = Path(path).expanduser()
    fix = f"; {hint}" if hint else ""
    if not folder.is_dir():
        raise UserError(f"{option}: folder {folder} not found{fix}")
    wanted = {s.lower() for s in suffixes} if suffixes else None
    for f in folder.rglob("*"):
        if f.is_file() and not f.name.startswith(".") and (wanted is None or f.suffix.lower() in wanted):
            return
    kinds = f" ({', '.join(sorted(wanted))} files)" if wanted else ""
    raise UserError(f"{option}: folder {folder} holds no usable files{kinds}{fix}")
