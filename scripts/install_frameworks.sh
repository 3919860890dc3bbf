#!/usr/bin/env bash
# Install the four agent frameworks (AutoGen 0.7, MetaGPT 0.8, Open-Interpreter 0.4, LangChain 1.x +
# LangGraph) into ONE Python 3.11 environment, then check that they import together.
#
# Usage: scripts/install_frameworks.sh [PIP]
#   PIP  the pip to use (default: pip); may be a command with arguments, e.g. ".venv/bin/python -m pip"
# Environment:
#   AIOS_SKIP_FRAMEWORK_CHECK=1   skip the final import check
#   AIOS_PIP_VERBOSE=1            show pip's full output
#
# Idempotent: a second run installs nothing. Fails on the first error.
#
# Why it is done in two steps: metagpt 0.8.2 and open-interpreter 0.4.3 declare exact or old pins
# (tiktoken 0.7, openai 1.39, starlette <0.38, protobuf, ...) that cannot coexist with AutoGen 0.7
# and LangChain 1.x. So every dependency is resolved in one run from curated lists, and the two
# frameworks are then added with --no-deps. See the comments in requirements/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a PIP <<< "${1:-pip}"
QUIET=(--quiet)
[ "${AIOS_PIP_VERBOSE:-0}" = 1 ] && QUIET=()
REQ=requirements

# 1. Everything but metagpt and open-interpreter, in one resolver run under the shared constraints.
"${PIP[@]}" install "${QUIET[@]}" -c "$REQ/constraints.txt" \
    -r "$REQ/frameworks.txt" \
    -r "$REQ/metagpt-runtime.txt" \
    -r "$REQ/interpreter-runtime.txt"

# 2. metagpt and open-interpreter themselves, without their conflicting pins.
"${PIP[@]}" install "${QUIET[@]}" --no-deps -r "$REQ/frameworks-nodeps.txt"

# 3. Fail loudly if the frameworks do not import together.
if [ "${AIOS_SKIP_FRAMEWORK_CHECK:-0}" != 1 ]; then
    # the interpreter behind this pip: "X/bin/python -m pip" -> X/bin/python, "X/bin/pip" -> X/bin/python
    first=$(command -v "${PIP[0]}") || { echo "install_frameworks.sh: ${PIP[0]} not found" >&2; exit 1; }
    case "$(basename "$first")" in
        python*) PYTHON=$first ;;
        *) PYTHON=$(dirname "$first")/python ;;
    esac
    log=$(mktemp)
    "$PYTHON" scripts/check_frameworks.py --imports-only > "$log" 2>&1 || {
        cat "$log" >&2
        rm -f "$log"
        echo "install_frameworks.sh: the frameworks do not import together (see above)" >&2
        exit 1
    }
    rm -f "$log"
    echo "install_frameworks.sh: AutoGen, MetaGPT, Open-Interpreter and LangChain/LangGraph import together"
fi
