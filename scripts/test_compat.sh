#!/usr/bin/env bash
# make test-compat: the default test suite on the oldest torch the code supports (torch 2.11 /
# torchvision 0.26, what the GPU machines have), in an environment of its own.
#
# The extension is compiled against one torch, and an editable install builds it into posenet/
# itself, so the suite runs on a copy of the working tree in .compat/repo (its own posenet/_C),
# with .compat/venv beside it; ../shared is linked beside the copy so the coco-mini tests run
# there too. The environment is rebuilt only when requirements.txt or the versions change.
#
#   scripts/test_compat.sh [PYTEST ARGS...]     (default: -m "not slow")
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${COMPAT_TORCH:-2.11.0}
TORCHVISION=${COMPAT_TORCHVISION:-0.26.0}
PYTHON=${PYTHON:-python3}
top=$PWD
work=$top/.compat
venv=$work/venv
stamp=$venv/.deps-$TORCH-$TORCHVISION-$(sha1sum requirements.txt | cut -c1-12)
pip=("$venv/bin/python" -m pip install -qq --disable-pip-version-check)

if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  # A new venv's pip (23.2) and setuptools (65) on Python 3.11 fail the editable build
  # ("invalid command 'bdist_wheel'", or a fallback to `setup.py develop` that builds in
  # isolation without torch), and torch 2.11 pulls in no newer setuptools: bring a pip and a
  # setuptools it accepts (it wants setuptools < 82) first.
  "${pip[@]}" "pip>=24" "setuptools>=70,<82" wheel
  grep -v -E '^(torch|torchvision)==' requirements.txt > "$work/requirements.txt"
  "${pip[@]}" "torch==$TORCH" "torchvision==$TORCHVISION" -r "$work/requirements.txt"
  "$venv/bin/python" -c "import torch, torchvision; print('compat env: torch', torch.__version__, 'torchvision', torchvision.__version__)"
  touch "$stamp"
fi

# A fresh copy of the working tree (tracked and untracked files, not the ignored ones).
rm -rf "$work/repo"
mkdir -p "$work/repo"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/repo" 2>/dev/null || true
if [ -d "$top/../shared" ]; then ln -sfn "$(cd "$top/../shared" && pwd)" "$work/shared"; fi
cd "$work/repo"
"${pip[@]}" --no-build-isolation --no-deps -e .
"$venv/bin/python" -c "import posenet.ops as o; assert o.has_compiled_nms(), 'compiled NMS failed to load'"
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec "$venv/bin/python" -m pytest "$@"
