"""What every local engine (vllm, hf, and the lazy wrapper around them) knows about its models:
one resolved model per role, the default role serving every role not named."""
from __future__ import annotations

from s2c.runtime.model import ModelRef, resolve_model


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
