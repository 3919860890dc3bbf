"""Per-agent path sandboxing: the one place that decides whether a path stays inside an agent's space.

Two kinds of path reach the managers. *Virtual* paths name files in the
storage manager (``notes/today.md``): they are normalised to a relative POSIX
path, and anything that could mean "somewhere else" (an absolute path, a
drive letter, a ``..`` component, a backslash, a control or bidi character,
a component longer than 255 bytes) is
refused rather than silently cleaned, so an agent that tries to escape learns
it was refused and the attempt is audited. *Real* paths name files in a
workspace directory on disk (where sandboxed code runs); they are resolved with
symlinks followed, and a link that leads outside the workspace is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from aios_core.errors import AccessDeniedError

#: longest virtual path accepted (bytes of UTF-8); SQLite keys and file systems both stay happy below it
MAX_PATH_BYTES = 1024
#: longest path component accepted (bytes of UTF-8), as on every common file system (NAME_MAX)
MAX_COMPONENT_BYTES = 255
#: C0 and C1 controls, DEL, bidi embedding/override/isolate marks (they make a name print as another:
#: "txt.exe" shown as "exe.txt") and lone surrogates (not encodable, so not storable)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class SandboxPathError(AccessDeniedError):
    """A path would leave the agent's sandbox (absolute, ``..``, or a symlink pointing outside)."""

    code = "path_escape"
    http_status = 403


def normalize_path(path: str, *, allow_empty: bool = False) -> str:
    """Return ``path`` as a clean relative POSIX path, or raise :class:`SandboxPathError`.

    ``allow_empty`` admits ``""`` (and ``"."``), meaning "the agent's root", for listing and search.
    """
    if not isinstance(path, str):
        raise SandboxPathError(f"a path must be a string, got {type(path).__name__}")
    bad = _CONTROL.search(path)
    if bad:
        raise SandboxPathError(
            f"path {path.encode('ascii', 'backslashreplace').decode()!r} contains a control, bidi or surrogate character "
            f"(U+{ord(bad.group()):04X}); use printable names"
        )
    if "\\" in path:
        raise SandboxPathError(f"path {path!r} contains a backslash; use '/' to separate folders")
    if path.startswith("/") or _DRIVE.match(path):
        raise SandboxPathError(f"path {path!r} is absolute; paths are relative to the agent's own space")
    if path.startswith("~"):
        raise SandboxPathError(f"path {path!r} starts with '~'; paths are relative to the agent's own space")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SandboxPathError(f"path {path!r} contains '..'; paths may not leave the agent's own space")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise SandboxPathError(f"path component {part[:40]!r}... is longer than {MAX_COMPONENT_BYTES} bytes; use shorter names")
    clean = "/".join(parts)
    if not clean and not allow_empty:
        raise SandboxPathError(f"path {path!r} names no file")
    if len(clean.encode("utf-8")) > MAX_PATH_BYTES:
        raise SandboxPathError(f"path is longer than {MAX_PATH_BYTES} bytes")
    return clean


def is_under(path: str, prefix: str) -> bool:
    """Whether normalised ``path`` equals ``prefix`` or lies in the folder ``prefix``."""
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def resolve_in(root: str | os.PathLike[str], path: str) -> Path:
    """The real location of ``path`` inside directory ``root``, symlinks followed; refuse anything outside.

    The file need not exist (outputs are resolved before they are read), but
    every existing symlink on the way is followed, so ``out.txt -> /etc/passwd``
    or ``dir -> /`` is caught.
    """
    clean = normalize_path(path)
    base = Path(root).resolve(strict=True)
    target = (base / PurePosixPath(clean)).resolve(strict=False)
    if target != base and not target.is_relative_to(base):
        raise SandboxPathError(f"path {path!r} resolves outside the sandbox (through a symbolic link)", path=path)
    return target
