"""Input perturbations for `keep consistent(...)`: swap two fields, or shuffle a list of choices.

A perturbed copy of an example runs through the same program (id `ID~swap` / `ID~shuffle`);
its answer is mapped back (A<->B for a swap; choice letters through the permutation for a
shuffle) and compared with the original answer.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Perturbation:
    kind: str  # swap | shuffle
    fields: tuple[str, ...]
    mapping: dict | None = None  # answer label map for swap

    @property
    def suffix(self) -> str:
        return f"~{self.kind}"

    def apply(self, ex_id: str, row: dict, seed: int = 0) -> tuple[dict, dict]:
        """The perturbed row and what is needed to map its answer back."""
        out = dict(row)
        if self.kind == "swap":
            a, b = self.fields
            out[a], out[b] = row[b], row[a]
            return out, {}
        (f,) = self.fields
        items = list(row[f])
        perm = list(range(len(items)))
        rng = random.Random(f"{seed}:{ex_id}")
        while len(items) > 1 and perm == list(range(len(items))):
            rng.shuffle(perm)  # a real permutation, never the identity
        out[f] = [items[i] for i in perm]
        return out, {"perm": perm}

    def map_back(self, answer, info: dict):
        if self.kind == "swap":
            if self.mapping is None:
                return answer
            return self.mapping.get(str(answer).strip(), answer)
        perm = info["perm"]
        s = str(answer).strip()
        m = re.fullmatch(r"\(?([A-Za-z])\)?", s)
        if m:  # a choice letter: the k-th shown option was the perm[k]-th original one
            k = ord(m.group(1).upper()) - ord("A")
            if 0 <= k < len(perm):
                return chr(ord("A") + perm[k])
        return answer  # the choice text itself: unchanged by a shuffle


def from_rule(args: dict) -> Perturbation:
    if args.get("swap") is not None:
        return Perturbation("swap", tuple(args["swap"]), args.get("map"))
    return Perturbation("shuffle", (args["shuffle"],))
