"""The fast fuzz profile: about 2,000 generated programs through `s2c check`, on every push.

Each case is a shipped program mutated along the grammar, or a hostile program written from
scratch (tests/fuzz_programs.py). It must check clean or fail with located errors, and never end in
a traceback: a case that would reach the CLI's internal-error handler (exit 70) fails the test, as
does one still running after fuzz_programs.CASE_SECONDS. The long profile is scripts/fuzz.py.

derandomize=True: the same cases on every run, so a failure in CI is a failure here.
"""
from __future__ import annotations

import fuzz_programs as fz  # tests/ is on sys.path, as for engine_fixtures
import pytest
from hypothesis import HealthCheck, given, settings

FAST = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))  # slow, large cases are the point


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return fz.workspace(tmp_path_factory.mktemp("fuzz"))


def holds(case, folder) -> None:
    out = fz.run_case(case, folder)
    if out.error is not None:
        raise AssertionError(f"s2c check raised {out.signature}") from out.error
    assert not out.problems, (out.problems, out.stderr[:2000])


@settings(FAST, max_examples=1400)
@given(text=fz.mutated_programs())
def test_mutated_shipped_programs(folder, text):
    holds(text, folder)


@settings(FAST, max_examples=600)
@given(case=fz.generated_programs())
def test_hostile_programs_from_scratch(folder, case):
    holds(case, folder)


def test_the_property_catches_a_traceback(folder, monkeypatch):
    """A check that raises is reported with its signature, not passed: the fuzz can fail."""
    from s2c.compiler import pipeline

    def broken(path):
        raise KeyError("boom")

    monkeypatch.setattr(pipeline, "check_file", broken)
    out = fz.run_case(fz.CORPUS["bsm.s2"], folder)
    assert out.failed and out.signature.startswith("KeyError @ s2c/cli/__init__.py:")  # the innermost frame in s2c
    assert out.signature.endswith(" in cmd_check")


def test_the_property_catches_a_hang(folder, monkeypatch):
    import time

    from s2c.compiler import pipeline

    monkeypatch.setattr(pipeline, "check_file", lambda path: time.sleep(5))
    out = fz.run_case(fz.CORPUS["bsm.s2"], folder, limit=0.2)
    assert out.failed and out.signature.startswith("CaseTimeout")
