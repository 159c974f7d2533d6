#!/usr/bin/env bash
# Install aligncoder-lsp into ./.venv (offline-capable: package registries only, no model hub).
#
#   ./setup.sh          the server, its dependencies and the embedded models
#   ./setup.sh --test   the same plus the test tools (pytest, pytest-lsp, Neovim, Emacs + eglot, llama.cpp's
#                       llama-server built from the same source) and the benchmark extra (matplotlib, tqdm)
#
# llama-cpp-python has no Linux wheel on PyPI and takes minutes to compile; the wheel built
# here is kept in ~/.cache/aligncoder-lsp/wheels/<build flags>/ and reused by later installs.
# For a GPU build set CMAKE_ARGS, e.g. CMAKE_ARGS="-DGGML_CUDA=on" ./setup.sh
set -euo pipefail
cd "$(dirname "$0")"

LLAMA_VERSION=0.3.36
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
started=$SECONDS

if [[ -z "${CMAKE_ARGS:-}" ]]; then
    # Portable x86-64 flags (-march=native also enables AMX kernels that crash on some VMs).
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }
    if has avx512f && has avx512vbmi && has avx512_vnni; then
        CMAKE_ARGS+=" -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON"
        has avx512_bf16 && CMAKE_ARGS+=" -DGGML_AVX512_BF16=ON"
    fi
fi
build_key=$(printf '%s %s' "$LLAMA_VERSION" "$CMAKE_ARGS" | sha1sum | cut -c1-12)
WHEELS=${ALIGNCODER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aligncoder-lsp/wheels}/$build_key

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    log "installing $TORCH_SPEC"
    "${PIP[@]}" install -q "$TORCH_SPEC"
fi

if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $LLAMA_VERSION once (several minutes), flags: $CMAKE_ARGS"
    mkdir -p "$WHEELS"
    CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "${PIP[@]}" wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS.partial"
    mv "$WHEELS.partial"/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$WHEELS.partial"
else
    log "reusing the cached llama-cpp-python wheel in $WHEELS"
fi

extras=""
[[ $WITH_TESTS == 1 ]] && extras="[test,bench]"
log "installing aligncoder-lsp$extras"
"${PIP[@]}" install -q --find-links "$WHEELS" --only-binary llama-cpp-python -e ".$extras"

if [[ $WITH_TESTS == 1 ]]; then
    # llama.cpp's own server, from the same llama.cpp source as the wheel, for the engine tests
    SERVER=$(dirname "$(dirname "$WHEELS")")/llama-server/$build_key/llama-server  # beside wheels/
    if [[ ! -x "$SERVER" ]]; then
        log "building llama.cpp's llama-server from the llama-cpp-python $LLAMA_VERSION source once (several minutes)"
        work=$(mktemp -d)
        "${PIP[@]}" download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$work"
        tar xzf "$work"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$work"
        command -v cmake >/dev/null || { "${PIP[@]}" install -q cmake; PATH="$VENV/bin:$PATH"; }
        # shellcheck disable=SC2086  # CMAKE_ARGS holds several flags
        cmake -S "$work/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
            $CMAKE_ARGS -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF \
            -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >"$work/cmake.log"
        cmake --build "$work/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >"$work/build.log"
        mkdir -p "$(dirname "$SERVER")" && cp "$work/build/bin/llama-server" "$SERVER.partial" && mv "$SERVER.partial" "$SERVER"
        rm -rf "$work"
    else
        log "reusing the cached llama-server in $(dirname "$SERVER")"
    fi
    cp "$SERVER" "$VENV/bin/llama-server"
fi

editors=()
if [[ $WITH_TESTS == 1 ]]; then
    command -v nvim >/dev/null || editors+=(neovim)
    command -v emacs >/dev/null || editors+=(emacs-nox elpa-eglot)
fi
if (( ${#editors[@]} )); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${editors[*]} (Debian packages) for the editor tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${editors[@]}" >/dev/null
    else
        log "warning: install the Debian packages ${editors[*]} to run the editor tests (they skip without them)"
    fi
fi

log "checking models and hardware"
"$VENV/bin/aligncoder-lsp" doctor
log "done in $((SECONDS - started)) s"
