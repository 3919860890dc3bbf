"""Nearest-neighbour search over stored vectors, one faiss index per namespace (per owning agent).

The vectors themselves are kept in SQLite next to the versions they describe
(committed in the same transaction), so this index is derived state: it is
rebuilt from the database when storage opens and updated after each commit.
Exact inner-product search (``IndexFlatIP`` over normalised vectors = cosine)
is used because agents' stores are thousands of files, not billions; faiss
keeps it fast and lets a search be restricted to a candidate set (a folder)
without scanning in Python.

sqlite-vec would keep the index inside the database, but it needs
``sqlite3.Connection.enable_load_extension``, which many Python builds
(including this project's pyenv build) leave out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class VectorIndex:
    """Thread-safe: searches and updates may come from several storage worker threads."""

    def __init__(self, dim: int) -> None:
        import faiss  # noqa: F401 - fail here, with the package name, if it is missing

        self.dim = dim
        self._indexes: dict[str, object] = {}
        self._lock = threading.Lock()

    def _index(self, namespace: str):  # noqa: ANN202
        import faiss

        index = self._indexes.get(namespace)
        if index is None:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            self._indexes[namespace] = index
        return index

    def upsert(self, namespace: str, ids: Iterable[int], vectors: "np.ndarray") -> None:
        import numpy as np

        id_array = np.fromiter(ids, dtype=np.int64)
        if id_array.size == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(id_array.size, self.dim)
        with self._lock:
            index = self._index(namespace)
            index.remove_ids(id_array)
            index.add_with_ids(vectors, id_array)

    def remove(self, namespace: str, ids: Iterable[int]) -> None:
        import numpy as np

        id_array = np.fromiter(ids, dtype=np.int64)
        with self._lock:
            index = self._indexes.get(namespace)
            if index is not None and id_array.size:
                index.remove_ids(id_array)

    def size(self, namespace: str | None = None) -> int:
        with self._lock:
            if namespace is not None:
                index = self._indexes.get(namespace)
                return 0 if index is None else int(index.ntotal)
            return sum(int(i.ntotal) for i in self._indexes.values())

    def search(self, namespace: str, vector: "np.ndarray", k: int, candidates: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """Up to ``k`` (id, cosine score) pairs, best first; ``candidates`` restricts the ids considered."""
        import faiss
        import numpy as np

        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            index = self._indexes.get(namespace)
            if index is None or index.ntotal == 0:
                return []
            params = None
            if candidates is not None:
                cand = np.fromiter(candidates, dtype=np.int64)
                if cand.size == 0:
                    return []
                params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(cand))
            scores, ids = index.search(query, min(k, int(index.ntotal)), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
