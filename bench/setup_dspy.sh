#!/usr/bin/env bash
# Creates bench/.venv-dspy with DSPy for bench/dspy_bsm.py. DSPy is not an s2c dependency;
# it lives only in this venv. Idempotent: re-running keeps an existing venv with the right version.
set -euo pipefail
DSPY_VERSION="${DSPY_VERSION:-3.4.1}"
VENV="$(cd "$(dirname "$0")" && pwd)/.venv-dspy"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c "import dspy, sys; sys.exit(dspy.__version__ != '$DSPY_VERSION')" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "dspy==$DSPY_VERSION"
fi
"$VENV/bin/python" -c "import dspy; print('dspy', dspy.__version__, 'in', '$VENV')"
