# Sourced by scripts/setup.sh and scripts/build_llama_server.sh: one definition of how llama.cpp is
# compiled here, so the llama-cpp-python wheel and the llama-server baseline run the same kernels.
#
# llama.cpp must be built without CPU-specific instructions: a native build uses AMX/AVX-512 when the
# build machine reports them, and faults on CPUs (or VMs) that do not execute them.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# The pinned llama-cpp-python release; its sdist vendors the llama.cpp source both builds use.
LLAMA_VERSION=0.3.36
# Patches to the vendored llama.cpp, applied to both builds (see scripts/patches/llama.cpp/README.md), and
# part of both cache keys: a wheel or a llama-server built without them is never picked up.
LLAMA_PATCH_DIR=scripts/patches/llama.cpp
LLAMA_PATCHES_HASH=$(export LC_ALL=C; cat "$LLAMA_PATCH_DIR"/*.patch | sha256sum | cut -c1-12)

# llama_sdist_patched PYTHON DIR: fetch the pinned sdist into DIR, unpack it, apply the patches, print the
# unpacked source's path. Every step returns on failure: callers run it in $(...), where set -e does not
# reach, and check its status (an unpatched tree must never be built under the patched key).
llama_sdist_patched() {
    local python=$1 dir=$2 root patch_file
    # --no-binary for this one package only: its build requirements may come as wheels (pip prepares the
    # sdist's metadata in an isolated environment; building cmake itself from source there takes ages)
    "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$dir" "llama-cpp-python==$LLAMA_VERSION" >&2 || return 1
    tar -xzf "$dir/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$dir" || return 1
    root="$dir/llama_cpp_python-$LLAMA_VERSION"
    for patch_file in $(LC_ALL=C ls "$LLAMA_PATCH_DIR"/*.patch); do
        if command -v patch >/dev/null 2>&1; then
            patch --quiet --batch --forward -p1 -d "$root" < "$patch_file" >&2
        else  # a machine without patch(1) has git: this is a clone
            git apply -p1 --directory="$root" --unsafe-paths "$patch_file" >&2
        fi || { echo "could not apply $patch_file to llama-cpp-python $LLAMA_VERSION's sdist" >&2; return 1; }
    done
    echo "$root"
}
