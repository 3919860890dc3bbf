#!/usr/bin/env bash
# Build llama.cpp's own llama-server and llama-batched-bench from the very llama.cpp source vendored
# in the pinned llama-cpp-python sdist, with the same portable CMake flags as the wheel (the baseline
# every real-engine benchmark compares against must run the same kernels as the AIOS core).
#
# The two binaries land in a cache keyed by flags and version, like the wheelhouse:
#   ${AIOS_LLAMA_SERVER_CACHE:-~/.cache/aios/llama-server}/<hash>/{llama-server,llama-batched-bench}
# Safe to re-run: it does nothing when the binaries for this key exist. About 15-25 minutes on 2 cores.
# Usage: bash scripts/build_llama_server.sh [--print-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/llama_flags.sh
source scripts/llama_flags.sh

# The extra flags of the server build: no network client, no TLS, no prebuilt web UI download.
SERVER_CMAKE_ARGS="-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF"
# Keep this key in step with aios.bench.suites.agents.llama_cpp_server.cache_key().
key=$(printf '%s %s %s %s' "$CMAKE_ARGS" "$SERVER_CMAKE_ARGS" "$LLAMA_VERSION" "$LLAMA_PATCHES_HASH" | sha256sum | cut -c1-12)
CACHE_ROOT=${AIOS_LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aios/llama-server}
DEST="$CACHE_ROOT/$key"
if [ "${1:-}" = "--print-dir" ]; then
    echo "$DEST"
    exit 0
fi
if [ -x "$DEST/llama-server" ] && [ -x "$DEST/llama-batched-bench" ]; then
    echo "$DEST"
    exit 0
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/aios-llama-server.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetching the llama-cpp-python $LLAMA_VERSION sdist and applying scripts/patches..." >&2
src="$(llama_sdist_patched "$PYTHON" "$work")/vendor/llama.cpp"
[ -f "$src/CMakeLists.txt" ] || { echo "no vendored llama.cpp in the sdist ($src)" >&2; exit 1; }

echo "building llama-server and llama-batched-bench (portable flags, about 15-25 minutes on 2 cores)..." >&2
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
# shellcheck disable=SC2086  # the flag strings are word lists on purpose
cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release $CMAKE_ARGS $SERVER_CMAKE_ARGS >&2
cmake --build "$work/build" --config Release --target llama-server llama-batched-bench >&2

mkdir -p "$DEST.tmp"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-batched-bench" "$DEST.tmp/"
printf '%s\n%s\n%s\npatches %s\n' "$LLAMA_VERSION" "$CMAKE_ARGS" "$SERVER_CMAKE_ARGS" "$LLAMA_PATCHES_HASH" > "$DEST.tmp/BUILD_FLAGS"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST"
