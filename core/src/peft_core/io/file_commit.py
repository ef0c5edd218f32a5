"""Replace several files of a directory together: readers see all old files or all new ones.

An adapter is two files (config and weights) that must match: new weights under an old
config may load without error and compute something else (another alpha, say). Each file
is first written to a temp file; then a journal names the commit, the old files move to
backups, the new ones move into place, and deleting the journal is the commit point.
A crash at any step leaves a state from which ``readable_path`` finds the old pair (while
the journal exists) or the new one (after); the next commit in that directory rolls an
interrupted one back. An error during a commit undoes it before propagating.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

JOURNAL_NAME = ".adapter_commit.json"


def _staged(name: str, token: str) -> str:
    return f".{name}.{token}.tmp"


def _backup(name: str, token: str) -> str:
    return f".{name}.{token}.old"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform; the renames are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, write: Callable[[str], object]) -> None:
    write(str(path))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _read_journal(directory: Path) -> tuple[str, dict[str, bool]] | None:
    """(token, {file name: whether it existed before}) of an interrupted commit, if any."""
    path = directory / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        token, had = data["token"], data["had"]
        valid = isinstance(token, str) and token.isalnum() and isinstance(had, dict)
        valid = valid and all(isinstance(n, str) and n == Path(n).name and not n.startswith(".") for n in had)
    except (OSError, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise OSError(f"{path} is damaged; delete it, then check which adapter files are in {directory}")
    return token, {name: bool(existed) for name, existed in had.items()}


def readable_path(directory: str | os.PathLike[str], name: str) -> Path | None:
    """Where to read file ``name`` of ``directory`` so that it belongs with the others (None: absent).

    While an interrupted commit's journal exists, that is the old version (from its backup
    if it was already moved there); a file the commit was creating does not exist yet.
    """
    directory = Path(directory)
    journal = _read_journal(directory)
    if journal is None or name not in journal[1]:
        return directory / name if (directory / name).is_file() else None
    token, had = journal
    backup = directory / _backup(name, token)
    if backup.is_file():
        return backup
    return directory / name if had[name] and (directory / name).is_file() else None


def recover(directory: Path, names: Iterable[str]) -> None:
    """Roll back a commit that a crash interrupted (the old files win), and tidy up."""
    journal = _read_journal(directory)
    if journal is not None:
        token, had = journal
        for name, existed in had.items():
            backup = directory / _backup(name, token)
            if backup.exists():
                os.replace(backup, directory / name)
            elif not existed:
                (directory / name).unlink(missing_ok=True)
        _fsync_dir(directory)
        (directory / JOURNAL_NAME).unlink()
    for name in [*names, JOURNAL_NAME[1:]]:  # temp files and backups of crashed commits
        for leftover in [*directory.glob(f".{name}.*.tmp"), *directory.glob(f".{name}.*.old")]:
            leftover.unlink(missing_ok=True)


def commit_files(directory: str | os.PathLike[str], writers: Mapping[str, Callable[[str], object]]) -> None:
    """Write the files ``writers`` names (each callable writes to the path it is given) together."""
    directory = Path(directory)
    recover(directory, writers)
    token = secrets.token_hex(8)
    staged = {name: directory / _staged(name, token) for name in writers}
    had = {name: (directory / name).exists() for name in writers}
    journal = json.dumps({"token": token, "had": had})
    try:
        for name, write in writers.items():
            _write_synced(staged[name], write)
        _write_synced(directory / _staged(JOURNAL_NAME[1:], token), lambda p: Path(p).write_text(journal))
        os.replace(directory / _staged(JOURNAL_NAME[1:], token), directory / JOURNAL_NAME)
        _fsync_dir(directory)
        for name in writers:
            if had[name]:
                os.replace(directory / name, directory / _backup(name, token))
        for name in writers:
            os.replace(staged[name], directory / name)
        _fsync_dir(directory)
    except BaseException:
        recover(directory, writers)
        raise
    (directory / JOURNAL_NAME).unlink()  # the commit point
    _fsync_dir(directory)
    for name in writers:
        (directory / _backup(name, token)).unlink(missing_ok=True)
