"""The greedy head's C eval callback: the same answers as the Python one, node for node, and a Python fallback.

Without the model: tensors laid out as ggml lays out ``struct ggml_tensor`` are handed to both callbacks, which
must agree on every call (inactive, another node, the node asked for, copied, stopped or not, a layout neither
reads, more rows than the buffer holds) and hand over the same rows. The library is compiled into a fresh cache
here (``cc`` is on every machine that builds the wheel); without a compiler, with one that fails, or turned off,
the head gets the Python tap. With the model: a core on the C tap gives the text of one on the Python tap, and a
refused head's context is made again without the C callback as it is without the Python one.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np
import pytest

from aios_core.cores import llamacpp_native_tap as nt
from aios_core.cores.llamacpp_head import (
    HIDDEN_NODE,
    TENSOR_DATA_OFFSET,
    TENSOR_NAME_OFFSET,
    TENSOR_NB_OFFSET,
    TENSOR_NE_OFFSET,
    HiddenTap,
)

N_EMBD = 8


@pytest.fixture
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.delenv(nt.DISABLE_ENV, raising=False)
    nt.native_tap_library.cache_clear()
    lib = nt.native_tap_library()
    assert lib is not None, "cc must compile the tap here"
    assert len(list((tmp_path / "native").glob("llamacpp_native_tap-*.so"))) == 1
    lib.aios_native_tap_on_node.argtypes = [ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p]
    yield lib
    nt.native_tap_library.cache_clear()


class FakeTensor:
    """The fields of ``struct ggml_tensor`` the taps read, at ggml's offsets, over float32 rows."""

    def __init__(self, rows: np.ndarray, name: bytes = HIDDEN_NODE, nb0: int = 4) -> None:
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.raw = ctypes.create_string_buffer(TENSOR_NAME_OFFSET + 64)
        n, width = self.rows.shape
        (ctypes.c_int64 * 4).from_buffer(self.raw, TENSOR_NE_OFFSET)[:] = [width, n, 1, 1]
        (ctypes.c_size_t * 4).from_buffer(self.raw, TENSOR_NB_OFFSET)[:] = [nb0, 4 * width, 4 * width * n, 4 * width * n]
        ctypes.c_void_p.from_buffer(self.raw, TENSOR_DATA_OFFSET).value = self.rows.ctypes.data
        ctypes.memmove(ctypes.addressof(self.raw) + TENSOR_NAME_OFFSET, name + b"\0", len(name) + 1)

    @property
    def address(self) -> int:
        return ctypes.addressof(self.raw)


def both(library, capacity: int = 16) -> tuple[HiddenTap, nt.NativeTap]:  # noqa: ANN001
    return HiddenTap(N_EMBD), nt.NativeTap(library, N_EMBD, capacity)


def call(tap, library, tensor: FakeTensor | None, ask: bool) -> bool:  # noqa: ANN001
    address = tensor.address if tensor is not None else None
    if isinstance(tap, nt.NativeTap):
        return bool(library.aios_native_tap_on_node(address, ask, tap.user_data))
    return bool(tap._on_node(address, ask, None))


def test_the_c_tap_answers_every_call_as_the_python_tap_and_hands_over_the_same_rows(library):
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((3, N_EMBD)), rng.standard_normal((2, N_EMBD))
    other = FakeTensor(rng.standard_normal((3, N_EMBD)), name=b"result_output")
    longer_name = FakeTensor(first, name=HIDDEN_NODE + b"_x")
    for stop in (False, True):
        answers = []
        for tap in both(library):
            seen = [call(tap, library, FakeTensor(first), ask=True)]  # inactive: wants nothing
            tap.active, tap.stop = True, stop
            seen += [call(tap, library, None, ask=True), call(tap, library, other, ask=True), call(tap, library, longer_name, ask=True)]
            for rows in (first, second):  # two micro-batches
                tensor = FakeTensor(rows)
                seen += [call(tap, library, tensor, ask=True), call(tap, library, tensor, ask=False)]
            answers.append((seen, tap.take(), tap.take()))
        (py_seen, py_rows, py_again), (c_seen, c_rows, c_again) = answers
        assert c_seen == py_seen == [False, False, False, False, True, not stop, True, not stop]
        np.testing.assert_array_equal(c_rows, np.concatenate([first, second]).astype(np.float32))
        np.testing.assert_array_equal(c_rows, py_rows)
        assert c_again.shape == py_again.shape == (0, N_EMBD)  # taken once


def test_a_node_neither_tap_reads_gives_no_rows_and_lets_llama_cpp_finish(library):
    rng = np.random.default_rng(1)
    good = FakeTensor(rng.standard_normal((2, N_EMBD)))
    for bad in (FakeTensor(rng.standard_normal((2, N_EMBD + 1))), FakeTensor(rng.standard_normal((2, N_EMBD)), nb0=8)):
        for tap in both(library):
            tap.active = tap.stop = True
            assert call(tap, library, good, ask=False) is False  # copied, graph stopped
            assert call(tap, library, bad, ask=False) is True  # not read: the graph goes on
            assert len(tap.take()) < 4  # never the 4 rows of the two nodes: the caller uses llama.cpp's logits
    # more rows than the C tap's buffer holds: refused as well, and the next decode starts clean
    tap = nt.NativeTap(library, N_EMBD, capacity=3)
    tap.active = True
    assert call(tap, library, good, ask=False) and call(tap, library, good, ask=False)
    assert tap.take().shape == (0, N_EMBD)
    assert call(tap, library, good, ask=False) and tap.take().shape == (2, N_EMBD)
    assert tap.calls == 3


def test_without_a_compiler_or_turned_off_the_head_gets_the_python_tap(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AIOS_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.delenv(nt.DISABLE_ENV, raising=False)
    try:
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
        nt.native_tap_library.cache_clear()
        with caplog.at_level(logging.WARNING):
            assert nt.native_tap(N_EMBD, 4) is None
        assert "runs in Python" in caplog.text and not list((tmp_path / "native").glob("*"))
        broken = tmp_path / "broken-cc"
        broken.write_text("#!/bin/sh\necho 'cc: internal error' >&2\nexit 1\n")
        broken.chmod(0o755)
        monkeypatch.setenv("CC", str(broken))
        nt.native_tap_library.cache_clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert nt.native_tap_library() is None
        assert "internal error" in caplog.text and not list((tmp_path / "native").glob("*"))
        monkeypatch.setenv("CC", 'cc "-O0')  # a quote left open: refused, not raised
        nt.native_tap_library.cache_clear()
        assert nt.native_tap_library() is None
        monkeypatch.delenv("CC")
        monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
        nt.native_tap_library.cache_clear()
        assert nt.native_tap_library() is None
        monkeypatch.setenv(nt.DISABLE_ENV, "0")
        nt.native_tap_library.cache_clear()
        assert nt.native_tap_library() is None
    finally:
        nt.native_tap_library.cache_clear()


def test_cc_may_carry_words_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.delenv(nt.DISABLE_ENV, raising=False)
    monkeypatch.setenv("CC", "env cc")  # as "ccache gcc" is written
    nt.native_tap_library.cache_clear()
    try:
        assert nt.native_tap_library() is not None
    finally:
        nt.native_tap_library.cache_clear()


def test_a_library_others_could_have_written_is_not_loaded(library, tmp_path, caplog):
    """The library's path is predictable: a file another user could have planted or changed must not run in the kernel."""
    [built] = (tmp_path / "native").glob("llamacpp_native_tap-*.so")

    def load():  # noqa: ANN202
        nt.native_tap_library.cache_clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            return nt.native_tap_library()

    try:
        built.chmod(0o777)  # anyone could have changed the library
        assert load() is None and "not this user's alone" in caplog.text
        built.chmod(0o755)
        built.parent.chmod(0o777)  # anyone could have replaced it
        assert load() is None and "not this user's alone" in caplog.text
        built.unlink()  # compiled again into the directory anyone could write to: not loaded either
        assert load() is None and "not this user's alone" in caplog.text and built.is_file()
        built.parent.chmod(0o755)
        assert load() is not None  # this user's, written by nobody else
    finally:
        built.parent.chmod(0o755)
        built.chmod(0o755)


# --------------------------------------------------------------------------- with the model

from test_llamacpp_head import requests, text_of, texts  # noqa: E402 - tests/cores is on the path

from aios_core.cores.llamacpp import LlamaCppCore  # noqa: E402 - installed by scripts/setup.sh: missing fails, not skips


@pytest.mark.model
@pytest.mark.asyncio
async def test_a_core_on_the_c_tap_gives_the_text_of_one_on_the_python_tap():
    python, on_python = await texts(1, native_tap=False)
    native, on_native = await texts(1)
    assert native == python
    assert on_native.metrics().head_rows > 100 and on_python.metrics().head_rows > 100


@pytest.mark.model
@pytest.mark.asyncio
async def test_a_refused_head_leaves_no_c_callback_in_the_context(monkeypatch, caplog):
    made: list[nt.NativeTap] = []
    original = nt.NativeTap.__init__

    def wrong_width(self, library, n_embd, capacity):  # noqa: ANN001, ANN202
        original(self, library, n_embd + 32, capacity)
        made.append(self)

    monkeypatch.setattr(nt.NativeTap, "__init__", wrong_width)
    core = LlamaCppCore(name="refused", n_ctx=4096, max_batch=2, n_threads=1, prefix_slots=2, n_ubatch=1)
    with caplog.at_level(logging.WARNING):
        await core.start()
    try:
        [tap] = made
        at_load = tap.calls
        assert at_load > 0 and "llama.cpp computes every output layer" in caplog.text
        await text_of(core, requests()[0])
        assert tap.calls == at_load and core.metrics().head_rows == 0  # ggml calls no tap after load
    finally:
        await core.stop()
