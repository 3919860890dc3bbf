# Sourced by scripts/setup.sh and scripts/build_llama_server.sh: one definition of how llama.cpp is
# compiled here, so the llama-cpp-python wheel and the llama-server baseline run the same kernels.
#
# llama.cpp must be built without CPU-specific instructions: a native build uses AMX/AVX-512 when the
# build machine reports them, and faults on CPUs (or VMs) that do not execute them.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# The pinned llama-cpp-python release; its sdist vendors the llama.cpp source both builds use.
LLAMA_VERSION=0.3.36
