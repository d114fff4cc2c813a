#!/usr/bin/env bash
# Prepares the wheel folder that bench/gpu_setup.sh installs from, offline. Run it here, where
# PyPI is reachable; the folder is git-ignored (.wheels/) and travels to a GPU machine through
# the device tool's `carry` (64 MiB for the checkout and every carried path together).
#
#   bash bench/gpu_wheels.sh          # device: .wheels/cp312, for the GPU machines (Python 3.12,
#                                     #   torch 2.11.0+cu130, Triton 3.6, torchvision 0.26, no network)
#   bash bench/gpu_wheels.sh local    # this machine's Python: .wheels/cp3XY, for the same set-up here
#                                     #   (bash bench/gpu_setup.sh --dry-run in a venv that has torch)
#
# What goes in: lthfast's dependencies (pyproject.toml) except torch and torchvision, which
# every target brings, plus pytest (gpu_check's pytest section) and setuptools and wheel (the
# editable install runs without build isolation), each with what it needs, one version of each.
# `device` leaves out numpy, scipy, matplotlib and pillow: the GPU image holds them (the lent
# machines' package list), and their Python 3.12 wheels with matplotlib's come to 74 MiB, over
# the 64 MiB carry by themselves. It keeps the small ones the image also holds (tqdm,
# filelock, pybind11, ninja, pytest and its needs, setuptools, wheel): 3.5 MiB in all, so the
# set-up leans on the image's list for those four alone. The image lacks fire (and termcolor).
# `local` takes everything, and the test extra's Ray too (for LTHFAST_EXTRAS=test: the suite).
#
# Measured 2026-12 here: device .wheels/cp312, 13 wheels, 3.5 MiB, in 1 s; local .wheels/cp311,
# 40 wheels, 157 MiB (78 MiB of them without Ray and its needs), in 6 s.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-device}
# The dependencies as pyproject.toml writes them (the newest release that fits), less torch
# and torchvision; then what the check itself runs.
mapfile -t deps < <(python3 - <<'EOF'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for dep in project["dependencies"]:
    name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0)
    if name.lower() not in ("torch", "torchvision"):
        print(dep)
EOF
)
deps+=(pytest "setuptools>=64" wheel)

case $target in
device)
    dest=.wheels/cp312
    image_has='^(numpy|scipy|matplotlib|pillow)$'
    wanted=()
    for dep in "${deps[@]}"; do
        [[ ${dep,,} =~ $image_has ]] || wanted+=("$dep")
    done
    platforms=(--only-binary=:all: --implementation cp --python-version 3.12)
    for tag in manylinux1 manylinux2010 manylinux2014 manylinux_2_{5,12,17,24,27,28,31,34,35,39}; do
        platforms+=(--platform "${tag}_x86_64")
    done
    ;;
local)
    dest=.wheels/$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    wanted=("${deps[@]}" "ray>=2.9")
    platforms=(--only-binary=:all:)
    ;;
*)
    echo "usage: bash bench/gpu_wheels.sh [device|local]" >&2
    exit 2
    ;;
esac

start=$(date +%s.%N)
rm -rf "$dest"
mkdir -p "$dest"
echo "gpu_wheels: ${wanted[*]} -> $dest"
# This machine's pip configuration adds local indexes that print a warning for every name they
# lack; those lines are left out.
python3 -m pip download -q --disable-pip-version-check "${platforms[@]}" -d "$dest" "${wanted[@]}" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
ls "$dest"
printf 'gpu_wheels: %s: %d wheels, %s, in %.0f s\n' "$dest" "$(ls "$dest" | wc -l)" \
    "$(du -sh "$dest" | cut -f1)" "$(echo "$(date +%s.%N) - $start" | bc)"
