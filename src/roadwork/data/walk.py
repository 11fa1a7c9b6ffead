"""Listing folders someone hands you without hanging, crashing or leaving them.

Every entry is looked at with ``lstat``/``stat`` first and opened only when it is a regular file:
a FIFO, socket or device (e.g. a symlink to ``/dev/zero``) is never opened, so nothing blocks or
reads forever. Symlinks are followed only where they stay inside the root (or where the caller
allows leaving it); a symlink loop, a dangling symlink, an entry that cannot be listed or a name
that is not UTF-8 becomes a row with its reason instead of an exception. Reasons name the entry
by its path relative to the root and never name a symlink's target: nothing from outside the
root reaches an output.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

OUTSIDE_HINT = "(data.local.allow_outside_root: true allows it)"
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symlink",
}


class NotReadable(OSError):
    """A file that is not (or no longer) a regular file within the size cap: nothing was read."""


@dataclass(frozen=True)
class Entry:
    rel: str  # the entry's path relative to the root, "/"-separated (a folder's name for a refused folder)
    path: Path  # where it was found (not resolved)
    problem: str = ""  # "" for a regular file that may be read, else why it is not (names only `rel`)
    size: int = 0


def kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def printable(rel: str) -> str:
    """`rel` as text that encodes as UTF-8 (an undecodable byte of a file name shows as \\xNN)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def inside(path: str | os.PathLike, root: Path) -> bool:
    """Whether `path`, after every symlink, lies in `root` (itself already resolved)."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def problem_of(error: OSError, rel: str, path: Path) -> str:
    """The reason for an OSError met on the entry `rel` (at `path`), in the words of quarantine.csv."""
    prefix = "not a regular file: "
    if isinstance(error, NotReadable):
        text = str(error)
        if text.startswith(prefix):
            return f"{prefix}{rel} is {text[len(prefix) :]}"
        return f"file too large: {rel} ({text})"
    if error.errno == errno.ELOOP:
        return f"symlink loop: {rel}"
    if error.errno == errno.ENOENT:
        return f"missing file: {rel}" + (" (a dangling symlink)" if os.path.islink(path) else "")
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"unreadable: {rel} (permission denied)"
    return f"unreadable: {rel} ({error.strerror or type(error).__name__})"


def check_file(
    path: Path, rel: str, root: Path, allow_outside_root: bool = False, max_file_bytes: int | None = None
) -> Entry:
    """Why the file at `path` may not be read ("" if it may), from ``stat`` alone: never opens it.

    Checked in this order: it exists (a symlink loop, a dangling symlink, a permission error are
    named as such), it resolves inside `root` (unless allowed; the target is not named), it is a
    regular file (not a FIFO, socket, device or folder), it is within `max_file_bytes`.
    """
    rel = printable(rel)
    try:
        info = os.stat(path)
    except OSError as error:
        return Entry(rel, path, problem_of(error, rel, path))
    except ValueError:  # a NUL byte in a manifest's path
        return Entry(rel, path, f"unreadable: {rel!r} (the path contains a NUL byte)")
    if not allow_outside_root and not inside(path, root):
        return Entry(rel, path, f"outside data.local.path: {rel} resolves outside the root {OUTSIDE_HINT}")
    if not stat.S_ISREG(info.st_mode):
        return Entry(rel, path, f"not a regular file: {rel} is {kind(info.st_mode)}")
    if max_file_bytes is not None and info.st_size > max_file_bytes:
        return Entry(
            rel,
            path,
            f"file too large: {rel} has {info.st_size} bytes, more than data.max_file_bytes ({max_file_bytes})",
            info.st_size,
        )
    return Entry(rel, path, "", info.st_size)


def open_regular(path: str | os.PathLike, max_bytes: int | None = None):
    """A binary file object of a regular file, never opening anything else: ``stat`` first (a FIFO,
    socket or device raises `NotReadable` unopened), then opened non-blocking and checked again on
    the descriptor (``fstat``), so a FIFO swapped in after the check cannot block either. Files over
    `max_bytes` raise `NotReadable`. Other errors (missing, loop, permission) are the usual OSError."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotReadable(f"not a regular file: {kind(mode)}")
    handle = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)), "rb", closefd=True)
    handle.raw.name = os.fspath(path)  # messages (PIL's among them) name the file, not the descriptor number
    info = os.fstat(handle.fileno())
    problem = (
        f"not a regular file: {kind(info.st_mode)}"
        if not stat.S_ISREG(info.st_mode)
        else f"{info.st_size} bytes, more than the cap of {max_bytes}"
        if max_bytes is not None and info.st_size > max_bytes
        else ""
    )
    if problem:
        handle.close()
        raise NotReadable(problem)
    return handle


def read_regular(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file within `max_bytes` (:func:`open_regular`)."""
    with open_regular(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1 if max_bytes is not None else -1)
    if max_bytes is not None and len(data) > max_bytes:  # grew after the check
        raise NotReadable(f"more than the cap of {max_bytes} bytes")
    return data


def walk(
    tops: list[tuple[Path, str]], root: Path, allow_outside_root: bool = False, max_file_bytes: int | None = None
) -> Iterator[Entry]:
    """Every non-folder entry below the folders `tops` ((folder, its name relative to `root`) pairs).

    Real sub-folders are walked first, in name order; then the symlinks to folders met on the way,
    each walked when it resolves inside `root` (or `allow_outside_root`) and leads to a folder not
    walked yet ((device, inode) pairs, the root's included), else it is one entry with the reason. So
    a folder is listed once, under its real path when it has one, and a loop ends. A folder that
    cannot be listed is one entry with the reason. Files are checked with :func:`check_file` (stat
    only)."""
    visited = {_stat_key(root)} - {_stat_key(top) for top, _ in tops} - {None}  # a link back to the root: a loop
    links: list[tuple[Path, str]] = []
    for top, rel in tops:
        yield from _walk_real(top, rel, root, allow_outside_root, max_file_bytes, visited, links)
    while links:
        path, rel = links.pop(0)
        if not allow_outside_root and not inside(path, root):
            yield Entry(
                rel,
                path,
                f"outside data.local.path: {rel} is a symlink to a folder outside the root; not walked {OUTSIDE_HINT}",
            )
        else:
            yield from _walk_real(path, rel, root, allow_outside_root, max_file_bytes, visited, links)


def _walk_real(
    top: Path,
    rel: str,
    root: Path,
    allow_outside_root: bool,
    max_file_bytes: int | None,
    visited: set[tuple[int, int]],
    links: list[tuple[Path, str]],
) -> Iterator[Entry]:
    """The files below `top` through real folders; symlinked folders are appended to `links`."""
    shown = printable(rel)
    try:
        key = _key(os.stat(top))
        if key in visited:
            yield Entry(
                shown,
                top,
                f"listed twice: {shown} leads to a folder already listed (a symlink loop or a "
                "second path to it); not walked again",
            )
            return
        visited.add(key)
        with os.scandir(top) as listing:
            children = sorted(listing, key=lambda child: child.name)
    except OSError as error:
        yield Entry(shown, top, problem_of(error, shown, top).replace(": ", " folder: ", 1))
        return
    for child in children:
        child_rel = f"{rel}/{child.name}" if rel else child.name
        path = top / child.name
        if printable(child_rel) != child_rel:
            yield Entry(
                printable(child_rel),
                path,
                f"unreadable: {printable(child_rel)} (the name is not valid UTF-8; rename it)",
            )
            continue
        try:
            is_link, is_dir = child.is_symlink(), stat.S_ISDIR(child.stat(follow_symlinks=True).st_mode)
        except OSError:
            is_link, is_dir = True, False  # a loop or an unreadable target: check_file names it
        if is_dir and is_link:
            links.append((path, child_rel))
        elif is_dir:
            yield from _walk_real(path, child_rel, root, allow_outside_root, max_file_bytes, visited, links)
        else:
            yield check_file(path, child_rel, root, allow_outside_root, max_file_bytes)


def _key(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        return _key(os.stat(path))
    except OSError:
        return None
