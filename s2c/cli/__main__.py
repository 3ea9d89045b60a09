"""`python -m s2c.cli`: the `s2c` command."""
from s2c.cli import run

if __name__ == "__main__":  # vLLM starts its engine in a subprocess that re-imports __main__: keep it guarded
    run()
