"""Constrained decoding (llm(choice=|regex=|json=)): what the checker makes of the options, how the
runtime serves them (continuing each sample, get() on a json= reply), which engines enforce them,
and that a run an engine cannot constrain is refused before any call. The real engines' slow tests
are in test_engine_vllm.py and test_engine_openai.py; the check-time errors are goldens."""
from __future__ import annotations

import json

import pytest
from engine_fixtures import ScriptedServer, chat_response

from s2c.calls import Constraint, Message, Request, Sampling
from s2c.cli import main
from s2c.compiler.check import check
from s2c.compiler.pipeline import load_text
from s2c.dsl.parser import parse
from s2c.runtime.cache import CallCache, call_key
from s2c.runtime.engines.base import EngineError
from s2c.runtime.engines.fake import FakeEngine, in_language
from s2c.runtime.engines.http import HttpOptions
from s2c.runtime.engines.openai import OpenAIEngine
from s2c.runtime.run import Runner

PROGRAM = '''program p "constrained calls"
input question
cots = llm(n=3, temperature=0.7, max_tokens=64) """{{ question }} Think step by step."""
for cot in cots:
    answer = llm(continue=cot, choice=["yes", "no"], max_tokens=4) """Therefore, the answer (yes or no) is"""
final = vote(answer)
verdict = llm(regex="The answer is (yes|no)\\.") """{{ question }} Say: The answer is yes. or The answer is no."""
graded = llm(json={"answer": "text", "confidence": "number"}) """{{ question }} Reply in JSON."""
confidence = get(graded, "confidence") * 100
output final
output verdict
output confidence
'''


def checked(source: str = PROGRAM):
    return load_text(source, "p.s2")  # raises on an error


def script(request: Request, i: int) -> str:
    last = request.messages[-1].content
    if "Therefore" in last:
        return ["yes", "no", "yes"][int(request.messages[-2].content[-1])]  # the sample it continues
    if "Think" in last:
        return f"reasoning of sample {i}"
    if "JSON" in last:
        return '{"answer": "yes", "confidence": 0.75}'
    return "The answer is yes."


def test_the_options_become_the_calls_constraints():
    cp = checked()
    by_name = {n.name: n.sampling.constraint for n in cp.llm_nodes()}
    assert by_name["cots"] is None
    assert by_name["answer"] == Constraint("choice", ("yes", "no"))
    assert by_name["verdict"] == Constraint("regex", "The answer is (yes|no)\\.")
    schema = json.loads(by_name["graded"].spec)
    assert schema == {"type": "object", "additionalProperties": False, "required": ["answer", "confidence"],
                      "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}}}


def test_a_json_fields_type_is_known_to_the_checker():
    checked()  # get(graded, "confidence") * 100: a number
    cp = check(parse(PROGRAM.replace('get(graded, "confidence") * 100', 'get(graded, "answer") * 100'), "p.s2"))
    assert [d.message for d in cp.errors] == ["'*' needs two numbers, but this is a text"]


def test_the_constraint_keys_the_cache_and_an_unconstrained_call_keeps_its_key():
    plain = Request(messages=(Message("user", "q"),), sampling=Sampling(max_tokens=4))
    choice = Request(messages=plain.messages, sampling=Sampling(max_tokens=4, constraint=Constraint("choice", ("a", "b"))))
    other = Request(messages=plain.messages, sampling=Sampling(max_tokens=4, constraint=Constraint("choice", ("a", "c"))))
    assert "constraint" not in plain.sampling.to_dict()  # so caches made before constraints still serve
    assert len({call_key("m", r, None) for r in (plain, choice, other)}) == 3


def test_each_sample_is_continued_in_its_own_conversation_and_json_fields_are_read(tmp_path):
    engine = FakeEngine(script)
    out = Runner(engine, CallCache(None), progress=False).execute(
        checked(), [("1", {"question": "Is the coin heads up?"})], tmp_path / "run")
    assert (out.summary.ok, out.summary.failed, out.summary.unparsed) == (1, 0, 0)
    continued = [r for r in engine.calls if r.messages[-1].content.startswith("Therefore")]
    assert [r.messages[1].content for r in continued] == [f"reasoning of sample {i}" for i in range(3)]
    assert all(r.messages[0] == engine.calls[0].messages[0] for r in continued)
    [record] = out.records()
    assert (record["final"], record["verdict"], record["confidence"]) == ("yes", "The answer is yes.", 75)


def test_the_fake_engine_fails_a_scripted_reply_outside_the_constraint(tmp_path):
    engine = FakeEngine(lambda request, i: "maybe" if "Therefore" in request.messages[-1].content else script(request, i))
    out = Runner(engine, CallCache(None), progress=False).execute(
        checked(), [("1", {"question": "q"})], tmp_path / "run")
    assert out.summary.failed == 1
    assert list(out.summary.nodes["answer"].failed) == ['engine: fake: the scripted reply \'maybe\' is not in choice=["yes", "no"]']


@pytest.mark.parametrize("constraint, text, ok", [
    (Constraint("choice", ("yes", "no")), "yes", True),
    (Constraint("choice", ("yes", "no")), "yes.", False),
    (Constraint("regex", "The answer is (yes|no)\\."), "The answer is no.", True),
    (Constraint("regex", "The answer is (yes|no)\\."), "So: The answer is no.", False),
    (Constraint("json", '{"required": ["a"], "properties": {"a": {"type": "string"}}}'), '{"a": "x"}', True),
    (Constraint("json", '{"required": ["a"], "properties": {"a": {"type": "string"}}}'), '{"b": "x"}', False),
])
def test_in_language_is_a_full_match(constraint, text, ok):
    assert in_language(constraint, text) is ok


def test_an_engine_that_cannot_constrain_refuses_the_run_before_any_call(tmp_path):
    class Unconstrained(FakeEngine):
        name = "plain"
        constraints = frozenset()

    engine = Unconstrained(script)
    with pytest.raises(EngineError) as e:
        Runner(engine, CallCache(None), progress=False).execute(checked(), [("1", {"question": "q"})], tmp_path / "run")
    assert str(e.value).startswith("p.s2:5:5: 'answer' is constrained (choice=), which the plain engine cannot enforce")
    assert engine.calls == [] and not (tmp_path / "run" / "run.sqlite").exists()


def test_the_hf_engine_is_refused_from_the_cli_in_one_line(tmp_path, capsys):
    pytest.importorskip("transformers")
    program = tmp_path / "p.s2"
    program.write_text(PROGRAM)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "1", "question": "q"}\n')
    rc = main(["run", str(program), "--data", str(rows), "--engine", "hf", "--out", str(tmp_path / "out"),
               "--cache", str(tmp_path / "calls.sqlite")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{program}:5:5: 'answer' is constrained (choice=), which the hf engine cannot enforce" in err
    assert "Traceback" not in err


def _chat_ok(path, body, attempt):
    return 200, chat_response(["yes"] * body["n"]), {}


@pytest.mark.parametrize("owned_by, constraint, sent", [
    ("vllm", Constraint("choice", ("yes", "no")), {"structured_outputs": {"choice": ["yes", "no"]}}),
    ("vllm", Constraint("regex", "yes|no"), {"structured_outputs": {"regex": "yes|no"}}),
    ("vllm", Constraint("json", '{"type": "object"}'), {"structured_outputs": {"json": {"type": "object"}}}),
    ("test", Constraint("json", '{"type": "object"}'),
     {"response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"}, "strict": True}}}),
])
def test_the_openai_engine_sends_what_the_server_enforces(owned_by, constraint, sent):
    with ScriptedServer(_chat_ok, owned_by=owned_by) as server:
        engine = OpenAIEngine(base_url=server.url, http=HttpOptions(backoff=0.01))
        try:
            engine.generate([Request(messages=(Message("user", "q"),), sampling=Sampling(constraint=constraint))])
        finally:
            engine.close()
        body = server.posts[0][1]
        assert {k: body[k] for k in sent} == sent


def test_a_server_that_is_not_vllm_enforces_only_json_and_the_run_is_refused(tmp_path):
    with ScriptedServer(_chat_ok, owned_by="someone") as server:
        engine = OpenAIEngine(base_url=server.url, http=HttpOptions(backoff=0.01))
        try:
            assert engine.constraints == frozenset({"json"})
            with pytest.raises(EngineError, match="'answer' is constrained \\(choice=\\), which the openai engine"):
                Runner(engine, CallCache(None), progress=False).execute(
                    checked(), [("1", {"question": "q"})], tmp_path / "run")
        finally:
            engine.close()
        assert server.posts == []


@pytest.mark.slow
def test_the_constrained_readme_job_parses_every_sample_on_the_embedded_model(tmp_path, s2c_home):
    """`s2c compile examples/coin_flip_sc_constrained.s2` on vLLM: every sampled chain of thought's
    answer is yes or no (bench/constrained.py measures 32 inputs against the original)."""
    pytest.importorskip("vllm")
    out = tmp_path / "coin"
    rc = main(["compile", "examples/coin_flip_sc_constrained.s2", "--data", "coin_flip", "--limit", "4",
               "--engine", "vllm", "--out", str(out), "--cache", str(tmp_path / "calls.sqlite")])
    assert rc == 0
    summary = json.loads((out / "run" / "summary.json").read_text())
    sample = summary["nodes"]["sample"]
    assert (sample["samples"], sample["unparsed"], sample["failed"]) == (24, 0, 0)
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(r["completion"][0]["content"] in ("yes", "no") for r in rows)
