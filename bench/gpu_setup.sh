#!/usr/bin/env bash
# Sets up a bare GPU machine from this checkout and runs the GPU check, in one command, inside
# 8 minutes: the machine must have Python with torch (2.11 to 2.14); nothing is fetched.
#
#   bash bench/gpu_wheels.sh                       # once, here: the wheels, into .wheels/cp312
#   bash bench/gpu_setup.sh [gpu_check arguments]  # there; with the device tool:
#       run(command="bash bench/gpu_setup.sh", carry=[".wheels/cp312"], timeout_s=540)
#
# 1. checks each of lthfast's requirements (pyproject.toml), pytest, setuptools and wheel
#    against what is installed; torch and torchvision must be there, in pyproject's range, and
#    are never installed or replaced. Installs the missing ones from the wheel folder
#    (pip --no-index --find-links .wheels/cpXY, or LTHFAST_WHEELS=DIR), then lthfast itself,
#    editable, --no-deps, --no-build-isolation. (One `pip install -e .` would also re-check
#    everything the installed torch requires: a package of the GPU image that another framework
#    moved off torch's exact pins would stop it, with nothing to fetch.) LTHFAST_EXTRAS=test
#    adds the test extra (Ray: its wheels come only with `bash bench/gpu_wheels.sh local`).
# 2. builds nothing: the extensions are built once, by gpu_check's `build` section
#    (LTHFAST_BUILD_CUDA=1 python setup.py build_ext --inplace, timed and recorded in its JSON);
#    lthfast installs with LTHFAST_BUILD_EXT=0 so that pip does not compile them a first time.
# 3. runs python bench/gpu_check.py with the arguments given; its --budget (default 450 s) is
#    shortened by the set-up's time unless given, so set-up and check end within 8 minutes
#    (gpu_check stops itself at budget + 20 s). The set-up's wall time is printed and recorded
#    in the JSON (environment.setup_seconds).
#
# PYTHON=... picks the interpreter (default: python3, the GPU image's torch venv).
# Measured 2026-12 on the 2-core CPU machine, busy beside it (load 4 to 5), in a venv holding
# only torch 2.11.0 and torchvision 0.26.0 (Python 3.11, .wheels/cp311), with
# `bash bench/gpu_setup.sh --dry-run`: set-up 13.6 s (fire, tqdm, matplotlib, pybind11, ninja,
# scipy, pytest, wheel and their needs from the folder, then lthfast). The GPU image lacks
# only fire and termcolor, by its package list. Not yet run on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

start=$(date +%s.%N)
py=${PYTHON:-python3}
tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheels=${LTHFAST_WHEELS:-.wheels/$tag}
if [ ! -d "$wheels" ]; then
    echo "gpu_setup: no wheel folder $wheels: prepare it where PyPI is reachable (bash bench/gpu_wheels.sh)" \
         "and carry it along" >&2
    exit 2
fi

# The requirements not met here, one a line (stderr: what is met, or why the set-up stops).
missing=$("$py" - <<'PY'
import os
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

with open("pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
wanted = [*project["dependencies"], "pytest", "setuptools>=64", "wheel"]
for extra in filter(None, os.environ.get("LTHFAST_EXTRAS", "").split(",")):
    wanted += project["optional-dependencies"][extra]
found = []
for line in wanted:
    req = Requirement(line)
    try:
        have = version(req.name)
    except PackageNotFoundError:
        have = None
    ok = have is not None and req.specifier.contains(have, prereleases=True)
    if req.name in ("torch", "torchvision") and not ok:
        sys.exit(f"gpu_setup: lthfast needs {line}, this Python has {req.name} {have}; this set-up installs no torch")
    if ok:
        found.append(f"{req.name} {have}")
    else:
        print(line)
print(f"gpu_setup: already here: {', '.join(found)}", file=sys.stderr)
PY
)
pip=("$py" -m pip install -q --no-index --find-links "$wheels" --no-warn-script-location)
if [ -n "$missing" ]; then
    mapfile -t missing <<<"$missing"
    echo "gpu_setup: from $wheels: ${missing[*]}"
    "${pip[@]}" "${missing[@]}"  # with what they need, from the folder or already here
fi
LTHFAST_BUILD_EXT=0 "${pip[@]}" --no-deps --no-build-isolation -e .
"$py" -c 'from importlib.metadata import version as v; print("gpu_setup: lthfast", v("lthfast"), "installed,"
          " torch", v("torch"), "kept")'

seconds=$(echo "$(date +%s.%N) - $start" | bc)
printf 'gpu_setup: set-up took %.1f s\n' "$seconds"
export LTHFAST_SETUP_SECONDS=$seconds
args=("$@")
if [[ " $* " != *" --budget"* ]]; then
    args+=(--budget "$(echo "450 - $seconds" | bc | cut -d. -f1)")
fi
exec "$py" bench/gpu_check.py "${args[@]}"
