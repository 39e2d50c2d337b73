#!/usr/bin/env bash
# Set up .venv with the pinned CPU stack, then run the command given, if any, inside it:
#
#     bash scripts/setup.sh                                                  # set up only
#     bash scripts/setup.sh python examples/mnist_svi.py --data-dir ../shared/data
#     bash scripts/setup.sh python -m pytest -q
#
# The exact versions live here and only here (setup.cfg holds ranges; .ci/run calls this script).
# torch goes first, from its CPU wheel: an unpinned torch, or a torchvision other than 0.28.0 (which
# requires torch==2.13.0), would pull a CUDA build of torch and gigabytes of CUDA packages. On a
# machine with a GPU, install the torch and torchvision that suit it instead, then
# `pip install -e ".[test,docs]"`.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH="torch==2.13.0"
PINS="torchvision==0.28.0 pyro-ppl==1.9.2 numpy==2.4.6 matplotlib==3.11.2 tqdm==4.70.1 arviz==0.23.4
      pytest==9.2.0 ruff==0.17.6 sphinx==9.0.4 myst-parser==5.2.0 myst-nb==1.4.0 ipykernel==7.4.0
      ipython==9.18.1 jupyter-client==8.10.0 jupyter-cache==1.0.1 nbclient==0.11.0 nbformat==5.11.1"

quiet_pip() {  # pip, without the warnings this machine's package mirror prints for every lookup
  python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
quiet_pip "$TORCH"
# shellcheck disable=SC2086
quiet_pip $PINS -e ".[test,docs]"

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
echo "set up: activate with '. .venv/bin/activate'"
