"""Time stamps that name a run's result files, claimed so that no two runs share one.

Every study and suite names its files ``<kind>-...-<stamp>.<ext>`` with the
time of day to the second. Two runs writing into one directory in the same
second (seeds in parallel, or two short studies ending together) would write
the same names, and the last to finish would silently replace the other's
results. A stamp is therefore claimed: a hidden file made exclusively, held
while the run writes and removed after; a stamp already claimed or already
used by a file of that kind gets a suffix (``-2``, ``-3``, ...).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

#: suffixes tried before giving up (a thousand runs in one second is a bug, not a load)
MAX_SUFFIX = 1000


def claim_stamp(out: Path, kind: str) -> tuple[str, contextlib.AbstractContextManager[None]]:
    """A stamp for ``kind``'s files in ``out`` that no other run holds or has used, and the claim on it.

    Hold the claim (``with``) until the files are written. ``out`` is made if
    missing.
    """
    out.mkdir(parents=True, exist_ok=True)
    base = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, MAX_SUFFIX):
        stamp = base if n == 1 else f"{base}-{n}"
        if any(out.glob(f"{kind}-*{stamp}.*")):
            continue
        marker = out / f".{kind}-{stamp}.claim"
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            continue

        @contextlib.contextmanager
        def held(marker: Path = marker) -> Iterator[None]:
            try:
                yield
            finally:
                marker.unlink(missing_ok=True)

        return stamp, held()
    raise RuntimeError(f"no free time stamp for {kind} results in {out}: {MAX_SUFFIX} runs claimed this second")
