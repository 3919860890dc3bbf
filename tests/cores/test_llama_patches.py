"""The patches to the vendored llama.cpp (scripts/patches/llama.cpp) change speed, never outputs.

The flash-attention patch replaces ggml's per-cell test of a masked KV cell by a search for the next
unmasked one. If that search ever stopped on a masked cell, or stepped over an unmasked one, a row would
attend to the wrong cells. The helper is compiled here from the patch file itself, in its AVX2 form and
its portable form, and compared with the per-cell loop it replaces on masks laid out as a shared cache
leaves them (prompt-long runs, interleaved steps, -0.0, ragged ends).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PATCH = REPO / "scripts" / "patches" / "llama.cpp" / "0001-ggml-cpu-flash-attn-skip-masked-cells-prefetch-next.patch"

CHECK = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
typedef uint16_t ggml_fp16_t;

%(helper)s

// the loop the patch replaces: test every cell, skip those whose mask is -inf
static int64_t per_cell(const ggml_fp16_t * mp, int64_t ic, int64_t end) {
    while (ic < end && mp[ic] == 0xFC00) ++ic;
    return ic;
}

int main() {
    std::mt19937 rng(7);
    long checked = 0, wrong = 0;
    static ggml_fp16_t mask[4096];
    for (int trial = 0; trial < 20000; ++trial) {
        const int n = 1 + rng() %% 4096;
        const int layout = rng() %% 3;
        const int seqs = 1 + rng() %% 32;
        const int own = rng() %% seqs;
        for (int i = 0; i < n; ++i) {
            bool visible;
            if (layout == 0) visible = (i %% seqs) == own;          // interleaved decoding steps
            else if (layout == 1) visible = (i / 300) %% seqs == own; // prompt-long runs
            else visible = rng() %% 17 == 0;                        // scattered
            mask[i] = visible ? (ggml_fp16_t) (rng() %% 2 ? 0x0000 : 0x8000 | (rng() %% 0x7C00)) : 0xFC00;
        }
        for (int k = 0; k < 8; ++k) {
            const int64_t start = rng() %% n, end = start + rng() %% (n - start + 1);
            ++checked;
            wrong += ggml_fa_next_unmasked(mask, start, end) != per_cell(mask, start, end);
        }
    }
    std::printf("%%ld %%ld\n", checked, wrong);
    return wrong != 0;
}
"""


def added_helper(patch: Path) -> str:
    """The lines the patch adds before ggml's one-chunk kernel: the helper and its preprocessor guard."""
    added = [line[1:] for line in patch.read_text().splitlines() if line.startswith("+") and not line.startswith("+++")]
    text = "\n".join(added)
    end = text.index("    return ic;\n}") + len("    return ic;\n}")
    return text[:end]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler (setup.sh builds llama.cpp with one)")
@pytest.mark.parametrize("flags", [["-mavx2"], []], ids=["avx2", "portable"])
def test_the_skip_stops_exactly_where_the_per_cell_loop_does(tmp_path, flags):
    helper = added_helper(PATCH)
    assert "ggml_fa_next_unmasked" in helper and "GGML_FA_SKIP_AVX2" in helper
    source = tmp_path / "check.cpp"
    source.write_text(CHECK % {"helper": helper})
    binary = tmp_path / "check"
    subprocess.run(["g++", "-O2", "-std=c++17", *flags, str(source), "-o", str(binary)], check=True, capture_output=True)
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    checked, wrong = map(int, out.stdout.split())
    assert checked == 160_000 and wrong == 0 and out.returncode == 0


def test_the_patch_calls_the_skip_only_for_a_masked_cell():
    """The kernel's loop jumps only after its own test found -inf, and lands one before the found cell (the
    loop's ++ic then visits it)."""
    added = [line[1:].strip() for line in PATCH.read_text().splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert "ic = ggml_fa_next_unmasked(mp, ic + 1, ic_end) - 1;" in added
    lines = PATCH.read_text().splitlines()
    [at] = [i for i, line in enumerate(lines) if "ic = ggml_fa_next_unmasked(" in line]
    assert lines[at - 1].strip() == "if (mv == -INFINITY) {" and lines[at + 1].strip() == "continue;"
