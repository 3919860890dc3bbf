"""The core's small C helpers: compiled on first use with the system's C compiler, loaded only if safe.

Each helper is one C file beside its Python module, with no header but the C
library's (and pthreads'), so that any C compiler builds it: ``$CC``, else
``cc`` or ``gcc``. The shared library goes into the user cache, keyed by the
source, the compiler and the machine. Its path is predictable, so a file is
loaded only if this user owns it and nobody else can write it or its
directory. Every failure (no compiler, a failed compile, a library someone else
could have written) is logged with what the caller does instead, and the
caller falls back to llama.cpp's or Python's own path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cache_dir", "compiled_library"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``<user cache>/aios/native`` (``AIOS_NATIVE_CACHE`` overrides it)."""
    override = os.environ.get("AIOS_NATIVE_CACHE")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("aios", appauthor=False)) / "native"


def _compile(compiler: str, source: Path, out: Path, flags: Sequence[str]) -> None:
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        # $CC may carry words of its own ("ccache gcc", "gcc -m64"), as make reads it
        command = [*shlex.split(compiler), "-O2", "-shared", "-fPIC", *flags, "-o", str(tmp), str(source)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        os.replace(tmp, out)  # another process compiling the same source writes the same bytes
    finally:
        tmp.unlink(missing_ok=True)


def _trusted(path: Path) -> bool:
    """Whether code at ``path`` may be loaded into the kernel: owned by this user, and neither it nor its directory
    writable by anyone else (the path is predictable, so a file planted there by another user must not run)."""
    for p in (path, path.parent):
        info = p.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return False
    return True


def compiled_library(source: Path, needs: str, otherwise: str, flags: Sequence[str] = ()) -> ctypes.CDLL | None:
    """``source`` compiled (once per source, compiler, flags and machine) and loaded, or None, logged with
    ``otherwise`` (what the caller does instead: "the greedy head's tap runs in Python"). ``needs``: the function
    the caller calls; a library without it is not used."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    text = source.read_bytes()
    key = hashlib.sha256(text + f"{compiler} {' '.join(flags)} {platform.machine()} {platform.system()}".encode()).hexdigest()[:12]
    out = cache_dir() / f"{source.stem}-{key}.so"
    if not out.is_file():
        if compiler is None:
            log.info("no C compiler ($CC, cc, gcc) for %s: %s", source.name, otherwise)
            return None
        try:
            _compile(compiler, source, out, flags)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:  # ValueError: $CC shlex cannot split
            detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
            log.warning("could not compile %s with %s (%s): %s", source.name, compiler, detail, otherwise)
            return None
    if not _trusted(out):  # checked right before loading, whoever compiled it
        log.warning("%s is not this user's alone (owner or write permission): not loaded; %s. Remove it to have it "
                    "compiled again.", out, otherwise)
        return None
    try:
        lib = ctypes.CDLL(str(out))
        getattr(lib, needs)
    except (OSError, AttributeError) as exc:
        log.warning("could not load %s (%s): %s", out, exc, otherwise)
        return None
    return lib
