#!/usr/bin/env bash
# Wheels the GPU machine lacks, for bench/gpu_session.sh's DeepSpeed setting (run here, where pip
# reaches PyPI; the GPU machine has no network). The machine has torch, transformers, accelerate,
# numpy, einops, msgpack, ninja, psutil, py-cpuinfo, tqdm and pytest, but no deepspeed, hjson or
# pydantic. Writes .whl/ (git-ignored through .git/info/exclude), about 6 MB; the device call then
# names .whl in `carry`. Without these wheels the session skips the DeepSpeed setting and runs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# DeepSpeed is an sdist; its wheel is pure Python (its C++/CUDA ops are built just in time, and the
# session's ZeRO-2 step uses a torch optimizer, so none is built there).
"$PY" -m pip wheel --quiet --no-deps -w .whl "deepspeed==0.19.8"
# The GPU machine's python3 is CPython 3.12 on x86_64 (device README). pydantic and pydantic-core
# are a matched pair: keep them together.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "hjson==3.1.0" "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" \
    "typing-inspection==0.4.5"
ls -l .whl
du -sh .whl
