#!/usr/bin/env bash
# Rebuilds linux-x64/libmetastone_bf16.so from metastone_bf16.c (checked in, so neither the build nor CI needs a C
# compiler). Needs gcc ≥ 10 (AVX512-BF16 intrinsics). Depends on libc only.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p linux-x64
gcc -O3 -std=c11 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -mavx512f -mavx512bw -mavx512vl -mavx512bf16 \
    -o linux-x64/libmetastone_bf16.so metastone_bf16.c
strip --strip-unneeded linux-x64/libmetastone_bf16.so
ls -l linux-x64/libmetastone_bf16.so
