"""Run a program over N rows with a deterministic, slow fake engine (for the kill -9 test).

usage: python slow_run.py PROGRAM ROWS.jsonl OUT_DIR CACHE.sqlite CALL_LOG [DELAY]
Every request the engine receives is appended to CALL_LOG as its cache key.
"""
import json
import sys
import time

from s2c.compiler.pipeline import load_program
from s2c.runtime.cache import CallCache, call_key
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.executor import RunOptions
from s2c.runtime.run import Runner, validate_rows


def main():
    program, rows_path, out, cache_path, log_path = sys.argv[1:6]
    delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.2
    cp = load_program(program)
    rows = [json.loads(l) for l in open(rows_path)]
    good, _ = validate_rows(cp, rows)

    def script(req, i):
        text = req.messages[-1].content
        return f"reply {len(text)} {sum(map(ord, text)) % 97} Final answer: {len(text) % 3}"

    class Slow(FakeEngine):
        def generate(self, requests):
            time.sleep(delay)
            with open(log_path, "a") as f:
                for r in requests:
                    f.write(call_key(self.model_id(r.role), r, None) + "\n")  # no adapter
            return super().generate(requests)

    outcome = Runner(Slow(script), CallCache(cache_path), options=RunOptions(window=2), progress=False).execute(cp, good, out)
    print(json.dumps({"engine_calls": outcome.summary.engine_calls,
                      "outputs": {r.id: r.outputs for r in outcome.examples()}}, default=str))


if __name__ == "__main__":
    main()
