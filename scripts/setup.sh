#!/usr/bin/env bash
# One-step set-up of a fresh clone: a virtualenv in .venv with AIOS, its cores, the four agent
# frameworks and the test tools. Safe to re-run: it does nothing when the inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${AIOS_VENV:-.venv}

# CMAKE_ARGS (portable CPU flags) and LLAMA_VERSION: shared with scripts/build_llama_server.sh
source scripts/llama_flags.sh

# tests/dashboard drive a real headless browser: Debian's chromium (Playwright cannot download one offline).
# Checked on every run, before the up-to-date check, so a venv set up earlier still gets it.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium for the dashboard's browser tests..." >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
    else
        echo "note: the dashboard's browser tests need chromium; install it with: sudo apt-get install -y chromium" >&2
    fi
fi

inputs_hash=$(cat pyproject.toml requirements/*.txt scripts/setup.sh scripts/llama_flags.sh scripts/install_frameworks.sh "$LLAMA_PATCH_DIR"/*.patch 2>/dev/null | sha256sum | cut -c1-16)
stamp="$VENV/.aios-setup-$inputs_hash"
if [ -f "$stamp" ]; then
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip wheel setuptools

# Build the llama-cpp-python wheel once per flag and patch set, in a wheelhouse keyed by both, so that a
# wheel built elsewhere with unsafe flags (pip's own cache does not key on CMAKE_ARGS) or without the
# patches is never used.
flags_hash=$(printf '%s %s %s' "$CMAKE_ARGS" "$LLAMA_VERSION" "$LLAMA_PATCHES_HASH" | sha256sum | cut -c1-12)
WHEELHOUSE=${AIOS_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/aios/wheels/$flags_hash}
mkdir -p "$WHEELHOUSE"
if ! ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LLAMA_VERSION with portable CPU flags and scripts/patches (about 10 minutes on 2 cores)..." >&2
    work=$(mktemp -d "${TMPDIR:-/tmp}/aios-llama-wheel.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    src=$(llama_sdist_patched "$VENV/bin/python" "$work")
    $PIP wheel --no-deps --no-cache-dir -w "$WHEELHOUSE" "$src"
fi
# this very wheel, even over an unpatched llama-cpp-python of the same version installed before
$PIP install --quiet --no-deps --force-reinstall "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl

# torch: the pinned CPU build (an unpinned torch would pull a multi-GB CUDA build)
$PIP install --quiet --find-links "$WHEELHOUSE" "torch==2.13.0"
CONSTRAINTS=()
[ -f requirements/constraints.txt ] && CONSTRAINTS=(-c requirements/constraints.txt)
$PIP install --quiet --find-links "$WHEELHOUSE" "${CONSTRAINTS[@]}" -e ".[all,transformers,embeddings,dev]"
if [ -f scripts/install_frameworks.sh ]; then
    bash scripts/install_frameworks.sh "$PIP"
fi
# examples/plugins/*: separately installable plugin packages, installed like a user would
for plugin in examples/plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && $PIP install --quiet --no-deps -e "$plugin"
done

rm -f "$VENV"/.aios-setup-*
touch "$stamp"
