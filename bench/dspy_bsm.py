"""Reference row for docs/benchmarks.md: DSPy's per-call overhead on the BSM program.

Runs Branch-Solve-Merge (programs/bsm.s2: branch -> up to 5 criteria -> one solve call per
criterion -> merge -> regex verdict) written the ordinary DSPy way (signatures + dspy.Predict
inside a dspy.Module, ChatAdapter), against a zero-latency LM that returns canned replies
instantly. What is timed is therefore DSPy's own work per LM call (prompt formatting, adapter
parsing, history, module plumbing), comparable with bench/overhead.py's figure for s2c.

DSPy is not an s2c dependency; it lives in its own venv:

    bash bench/setup_dspy.sh
    bench/.venv-dspy/bin/python bench/dspy_bsm.py --inputs 2000 --mode call
    bench/.venv-dspy/bin/python bench/dspy_bsm.py --inputs 2000 --mode batch [--threads 8]

--mode call: one program call at a time in a loop; --mode batch: program.batch(examples).
Prints one JSON line; asserts every input got a verdict and calls == 7 * inputs.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import threading
import time
import warnings
from types import SimpleNamespace

import dspy

PLAN = "1. Helpfulness: is it helpful\n2. Accuracy: is it right\n3. Relevance\n4. Clarity\n5. Depth"
BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")  # as s2c's lines()


class ZeroLatencyLM(dspy.BaseLM):
    """Answers instantly with canned ChatAdapter-formatted replies; counts calls (thread-safe)."""

    def __init__(self):
        super().__init__(model="zero-latency", cache=False)
        self.calls = 0
        self._lock = threading.Lock()

    def forward(self, prompt=None, messages=None, **kwargs):
        with self._lock:
            self.calls += 1
        last = messages[-1]["content"]  # ChatAdapter ends it naming the first output field
        if "[[ ## evaluation_plan ## ]]" in last:
            field, text = "evaluation_plan", PLAN
        elif "[[ ## evaluation ## ]]" in last:
            field, text = "evaluation", "7\n5"
        else:
            field, text = "judgement", "A is more helpful overall. [[A]]"
        content = f"[[ ## {field} ## ]]\n{text}\n\n[[ ## completed ## ]]"
        # The OpenAI chat-completion shape BaseLM._process_completion reads.
        return SimpleNamespace(model=self.model, usage={"prompt_tokens": 100, "completion_tokens": 5},
                               choices=[SimpleNamespace(message=SimpleNamespace(content=content))])


class Branch(dspy.Signature):
    """We want to evaluate the quality of the responses provided by two AI assistants to the user question displayed below. Your task is to propose an evaluation plan that can be executed to compare the two responses. The evaluation plan should consist of a list of up to five factors that one should consider such as helpfulness, relevance, accuracy, etc. In each line, write an evaluation criterion along with a short description of how we should evaluate that criterion."""  # noqa: E501

    question: str = dspy.InputField(desc="User Question")
    evaluation_plan: str = dspy.OutputField()


class Solve(dspy.Signature):
    """You are given a user question and responses provided by two AI assistants. Your task is to evaluate and score the quality of the responses based on a single evaluation criterion displayed below. Make sure to evaluate only based on the criterion specified and none other. In the first line, provide a score between 1 to 10 for Assistant A's response. In the second line, provide a score between 1 to 10 for Assistant B's response."""  # noqa: E501

    question: str = dspy.InputField()
    response_a: str = dspy.InputField(desc="Assistant A's Answer")
    response_b: str = dspy.InputField(desc="Assistant B's Answer")
    criterion: str = dspy.InputField(desc="Evaluation Criterion")
    evaluation: str = dspy.OutputField()


class Merge(dspy.Signature):
    """We want to evaluate the quality of the responses provided by two AI assistants to the user question displayed below. For that, each response was evaluated based on several criteria. We will provide you the user question, the two responses, and the evaluations of the two responses based on each criterion. You should combine the evaluations to reach a final verdict. Begin your evaluation by giving a short explanation. Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. After providing your explanation, output your final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie."""  # noqa: E501

    question: str = dspy.InputField()
    response_a: str = dspy.InputField(desc="Assistant A's Answer")
    response_b: str = dspy.InputField(desc="Assistant B's Answer")
    evaluations: str = dspy.InputField(desc="Per-criterion evaluations")
    judgement: str = dspy.OutputField()


class BSM(dspy.Module):
    def __init__(self):
        super().__init__()
        self.branch = dspy.Predict(Branch, temperature=0, max_tokens=256)
        self.solve = dspy.Predict(Solve, temperature=0, max_tokens=256)
        self.merge = dspy.Predict(Merge, temperature=0, max_tokens=512)

    def forward(self, question, response_a, response_b):
        plan = self.branch(question=question).evaluation_plan
        criteria = [BULLET.sub("", l).strip() for l in plan.splitlines() if l.strip()][:5]
        solves = [self.solve(question=question, response_a=response_a, response_b=response_b,
                             criterion=c).evaluation for c in criteria]
        evaluations = "\n\n".join(f"[Evaluation of {c}]\n{s}" for c, s in zip(criteria, solves))
        merge = self.merge(question=question, response_a=response_a, response_b=response_b,
                           evaluations=evaluations).judgement
        matches = re.findall(r"\[\[(A|B|C)\]\]", merge)
        return dspy.Prediction(verdict=matches[-1] if matches else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=2000)
    ap.add_argument("--mode", choices=["call", "batch"], default="call")
    ap.add_argument("--threads", type=int, default=8, help="num_threads for --mode batch")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # BaseLM.forward is deprecated in 3.4
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = ZeroLatencyLM()
    dspy.configure(lm=lm, adapter=dspy.ChatAdapter())
    program = BSM()
    rows = [{"question": f"Question number {i}?", "response_a": f"a {i}", "response_b": f"b {i}"}
            for i in range(args.inputs)]

    t0 = time.perf_counter()
    if args.mode == "call":
        results = [program(**r) for r in rows]
    else:
        examples = [dspy.Example(**r).with_inputs("question", "response_a", "response_b") for r in rows]
        results = program.batch(examples, num_threads=args.threads, disable_progress_bar=True)
    seconds = time.perf_counter() - t0

    assert all(r is not None and r.verdict == "A" for r in results), "some inputs got no verdict"
    assert lm.calls == 7 * args.inputs, (lm.calls, 7 * args.inputs)
    print(json.dumps({
        "system": "dspy", "version": dspy.__version__, "mode": args.mode, "inputs": args.inputs,
        **({"threads": args.threads} if args.mode == "batch" else {}),
        "calls": lm.calls, "seconds": round(seconds, 3), "calls_per_second": round(lm.calls / seconds),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
