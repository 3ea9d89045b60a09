"""A role bound to an engine of its own (engines/roles.py; --role-url ROLE=URL, or
s2c.Engine(..., roles={"teacher": s2c.EngineSettings("openai", ...)})): each request goes to its
role's engine, the cache keys keep each engine's model, and a server and a local engine in flight
together both finish. The real server and vLLM together: test_engine_openai.py (slow)."""
from __future__ import annotations

import argparse
import time

import pytest
from engine_fixtures import ScriptedServer, chat_response

import s2c
from s2c.cli.common import add_data_args, add_engine_args, engine_from
from s2c.compiler.pipeline import load_text
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache, engine_model
from s2c.runtime.engines.fake import FakeEngine, request_text
from s2c.runtime.engines.openai import OpenAIEngine
from s2c.runtime.engines.roles import RoleEngines
from s2c.runtime.run import Runner

PROGRAM = '''program p "a teacher's CoT, the student's answer"
input question
cot = llm(role="teacher") """{{ question }} Think step by step."""
answer = llm() """{{ question }} Notes: {{ cot }} Answer:"""
output answer
'''
ROWS = [(f"q{i}", {"question": f"{i}+{i}?"}) for i in range(6)]


def test_each_role_goes_to_its_engine_and_is_cached_under_that_engines_model(tmp_path):
    student, teacher = FakeEngine(default="4", model="student"), FakeEngine(default="think", model="big")
    engine = RoleEngines(student, {"teacher": teacher})
    cache = CallCache(tmp_path / "calls.sqlite")
    out = Runner(engine, cache, progress=False).execute(load_text(PROGRAM, "p.s2"), ROWS, tmp_path / "run")
    assert [request_text(r) for r in teacher.calls] == [f"{i}+{i}? Think step by step." for i in range(6)]
    assert all("Notes: think" in request_text(r) for r in student.calls) and len(student.calls) == 6
    assert engine_model(engine, "teacher") == "fake:fake:big"  # as if the teacher's engine ran alone
    assert engine_model(engine, "default") == engine_model(student) == "fake:fake:student"
    assert out.summary.models == {"default": "fake:student", "teacher": "fake:big"}
    models = {m for (m,) in cache.db.execute("SELECT DISTINCT model FROM calls")}
    assert models == {"fake:fake:student", "fake:fake:big"}
    cache.close()


def test_a_server_and_a_local_engine_in_flight_together_all_finish(tmp_path):
    def reply(path, body, attempt):
        time.sleep(0.2)  # a server slower than the local engine: replies arrive while it steps
        return 200, chat_response(["think"]), {}
    with ScriptedServer(reply) as server:
        teacher = OpenAIEngine(None, base_url=server.url)
        engine = RoleEngines(FakeEngine(default="4"), {"teacher": teacher})
        try:
            out = Runner(engine, progress=False).execute(load_text(PROGRAM, "p.s2"), ROWS, tmp_path / "run")
        finally:
            engine.close()
    assert [r["answer"] for r in out.records()] == ["4"] * 6
    assert out.summary.engine_calls == 12 and len(server.posts) == 6


def parse(argv: list[str]):
    p = argparse.ArgumentParser()
    add_engine_args(p)
    add_data_args(p)
    return engine_from(p.parse_args(["--data", "x", *argv]))


def test_role_url_binds_a_role_to_a_server_named_by_its_role_flag():
    settings = parse(["--engine", "vllm", "--role-url", "teacher=http://127.0.0.1:8000/v1",
                      "--role-url", "teacher=http://127.0.0.1:8001/v1", "--role", "teacher=big", "--role", "judge=small"])
    assert settings.roles == {"teacher": s2c.EngineSettings("openai", "big", base_url=(
        "http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1")), "judge": "small"}


def test_a_bound_role_cannot_go_with_shards():
    with pytest.raises(S2Error, match="--role-url teacher: a sharded run has one engine per shard"):
        parse(["--engine", "ray", "--shards", "2", "--role-url", "teacher=http://127.0.0.1:8000/v1"])
