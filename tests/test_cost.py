"""Prices, costs and --max-cost: prices from a file or flags, the cost per node and per run in
summary.json and the run table, what cached calls cost when made, and a budget that stops a run
before a call could pass it (against the test server in its own process), resumed with a higher
budget to the uncapped run's outputs."""
from __future__ import annotations

import json

import pytest
from helpers.llm_server import serve

from s2c.cli import main
from s2c.compiler.pipeline import load_text
from s2c.errors import S2Error
from s2c.runtime.cache import CallCache
from s2c.runtime.engines.fake import FakeEngine
from s2c.runtime.executor import RunOptions
from s2c.runtime.prices import Price, Prices
from s2c.runtime.run import Runner, token_table

ONE_CALL = '''program ask "one call per row"
input question
reply = llm(max_tokens=16) """Answer briefly: {{ question }}"""
output reply
'''


def test_prices_from_a_toml_file_a_json_file_and_flags(tmp_path):
    toml = tmp_path / "prices.toml"
    toml.write_text('["gpt-4o-mini"]\ninput = 0.15\ncached_input = 0.075\noutput = 0.6\nbatch_input = 0.075\n'
                    'batch_output = 0.3\n\n["other@http://10.0.0.1:8000/v1"]\ninput = 1\noutput = 2\n')
    prices = Prices.load(toml, ["gpt-4o-mini=input:0.2,output:0.8"])  # a flag wins over the file
    assert prices.for_model("gpt-4o-mini@https://api.openai.com/v1") == Price(0.2, 0.8)
    assert prices.for_model("other@http://10.0.0.1:8000/v1") == Price(1.0, 2.0)
    assert prices.for_model("other@http://10.0.0.2:8000/v1") is None  # priced on one server only
    mini = Prices.load(toml).for_model("gpt-4o-mini")
    assert mini.cost(prompt=1_000_000, cached=400_000, generated=100_000) == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.06)
    assert mini.cost(1_000_000, 0, 1_000_000, batch=True) == pytest.approx(0.375)
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"m": {"input": 1, "output": 3}}))
    assert Prices.load(as_json).for_model("m") == Price(1.0, 3.0)
    assert Prices.load(None, []) is None


@pytest.mark.parametrize("content, flag, message", [
    ('["m"]\ninput = 1\n', None, "'m' needs 'output' (USD per million tokens)"),
    ('["m"]\ninput = 1\noutput = 2\noutptu = 3\n', None, "'m' has no price 'outptu'"),
    ('["m"]\ninput = -1\noutput = 2\n', None, "'m' input = -1: a number of US dollars per million tokens, >= 0"),
    ('["m"\ninput = 1\n', None, "prices.toml: "),
    (None, "m=input:cheap,output:2", "--price m=input:cheap,output:2: write MODEL=input:USD,output:USD"),
])
def test_a_bad_price_is_a_clear_error(tmp_path, content, flag, message):
    path = None
    if content is not None:
        path = tmp_path / "prices.toml"
        path.write_text(content)
    with pytest.raises(S2Error, match=".*") as e:
        Prices.load(path, [flag] if flag else [])
    assert message in str(e.value)


def test_costs_per_node_and_run_and_what_the_cache_served_cost_when_made(tmp_path):
    cp = load_text(ONE_CALL, "ask.s2")
    engine = FakeEngine(lambda r, i: "seven words make up this one reply")
    prices = Prices.parse({engine.model_id("default"): {"input": 1000.0, "output": 2000.0}})
    rows = [(f"r{i}", {"question": f"what is {i}"}) for i in range(4)]
    cache = CallCache(tmp_path / "c.sqlite")
    first = Runner(engine, cache, RunOptions(prices=prices), progress=False).execute(cp, rows, tmp_path / "a")
    s = first.summary
    node = s.nodes["reply"]
    expected = (node.prompt_tokens * 1000 + node.generated_tokens * 2000) / 1e6
    assert s.cost == pytest.approx(expected) and s.cost_made == pytest.approx(expected) and s.cost > 0
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert saved["cost"]["paid"] == pytest.approx(expected) and saved["nodes"]["reply"]["cost"]["made"] == pytest.approx(expected)
    assert saved["prices"] == prices.as_dict()
    again = Runner(FakeEngine(), cache, RunOptions(prices=prices), progress=False).execute(cp, rows, tmp_path / "b")
    assert again.summary.cost == 0 and again.summary.cost_made == pytest.approx(expected)
    caption = token_table(again.summary).caption
    assert f"cost: $0.0000 paid by this run; its outputs cost ${expected:,.4f} to make" in caption
    assert f"4 calls served from the cache cost {node.generated_tokens} generated tokens when they were made " \
           f"(${expected:,.4f} at the given prices); this run paid 0 engine calls, 0 generated tokens, $0.0000" in caption
    Runner(FakeEngine(), cache, progress=False).execute(cp, rows, tmp_path / "c")
    assert "cost" not in json.loads((tmp_path / "c" / "summary.json").read_text())


def test_a_budget_needs_a_price_for_every_model(tmp_path):
    cp = load_text(ONE_CALL, "ask.s2")
    with pytest.raises(S2Error, match="--max-cost needs the price of every model: give --prices FILE"):
        Runner(FakeEngine(), progress=False, options=RunOptions(max_cost=1.0)).execute(cp, [], tmp_path / "a")
    priced = Prices.parse({"someone-else": {"input": 1, "output": 1}})
    with pytest.raises(S2Error, match="none is given for fake"):  # the model as summary.json's models names it
        Runner(FakeEngine(), progress=False, options=RunOptions(max_cost=1.0, prices=priced)).execute(cp, [], tmp_path / "b")


def test_max_cost_stops_within_the_budget_and_a_higher_budget_finishes_with_the_uncapped_outputs(tmp_path, capsys):
    """20 rows against the test server at $1000 per million tokens: a call costs about $0.013 and
    counts $0.027 in the worst case. --max-cost 0.1 stops with at most $0.10 paid and every
    call it paid for cached; --max-cost 1 then finishes without paying any call twice, and the
    outputs equal an uncapped run's."""
    program = tmp_path / "ask.s2"
    program.write_text(ONE_CALL)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "question": f"what is {i} plus {i}"}) + "\n" for i in range(20)))
    log = tmp_path / "server.log"
    with serve(tmp_path, log=log) as url:
        def run(out, cache, *extra):
            return main(["run", str(program), "--data", str(data), "--engine", "openai", "--base-url", url,
                         "--out", str(tmp_path / out), "--cache", str(tmp_path / cache), "--no-progress",
                         "--price", "echo-model=input:1000,output:1000", *extra])

        assert run("capped", "c.sqlite", "--max-cost", "0.1") == 1
        err = capsys.readouterr().err
        assert "error: --max-cost 0.1 reached: $0." in err and "rerun with a higher --max-cost" in err
        capped = json.loads((tmp_path / "capped" / "summary.json").read_text())
        assert 0 < capped["cost"]["paid"] <= 0.1 and capped["examples"] < 20
        assert capped["stopped"].startswith("--max-cost 0.1 reached")
        posts = sum(1 for line in log.read_text().splitlines() if json.loads(line)["event"] == "done")
        assert posts == capped["engine_calls"]  # every call paid for was finished, counted and cached
        assert run("capped", "c.sqlite", "--max-cost", "1") == 0
        resumed = json.loads((tmp_path / "capped" / "summary.json").read_text())
        assert resumed["examples"] == 20 and resumed["cache_hits"] == capped["engine_calls"]
        assert resumed["engine_calls"] == 20 - capped["engine_calls"]  # no call paid twice
        assert run("uncapped", "u.sqlite") == 0
    assert outputs(tmp_path / "capped") == outputs(tmp_path / "uncapped")


def outputs(run_dir) -> list[tuple[str, str]]:
    from s2c.runtime.store import RunStore

    return sorted((t.example_id, t.outputs["reply"]) for t in RunStore.open(run_dir).traces())


def test_the_dataset_card_says_what_the_dataset_cost_per_kept_row(tmp_path):
    from s2c.compiler.pipeline import load_program
    from s2c.distill.build import DistillSettings, distill_program
    from s2c.runtime.run import validate_rows

    cp = load_program("cot_zeroshot.s2")
    engine = FakeEngine(lambda r, i: "Two and two. Final answer: 4")
    prices = Prices.parse({engine.model_id("default"): {"input": 100.0, "output": 400.0}})
    rows, _ = validate_rows(cp, [{"id": f"q{i}", "question": "2+2?", "answer": "4" if i else "5"} for i in range(3)])
    res = distill_program(cp, rows, Runner(engine, options=RunOptions(prices=prices), progress=False), tmp_path / "ds",
                          DistillSettings(data="fixture"))
    cost = res.meta["tokens"]["cost"]
    assert res.report["kept"] == 2 and cost["made"] == pytest.approx(res.summary.cost_made) and cost["made"] > 0
    assert cost["per_kept_row"] == pytest.approx(round(cost["made"] / 2, 6))
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"- cost at the given prices: ${cost['made']:,.4f} to make (${cost['per_kept_row']:,.5f} per kept row); " \
           f"this compile paid ${cost['paid']:,.4f}" in card


def test_the_estimate_before_any_call_against_a_compile_of_bsm_on_the_oasst2_fixture(tmp_path):
    """`s2c.estimate` renders every llm node's prompts for the rows and counts them with the
    server's tokenizer (/tokenize), before any completion is asked for; then the compile runs.
    - branch reads only the data: its prompt tokens are the run's usage, exactly;
    - solve fans out over the criteria branch writes, counted at their bound (5; the test server
      writes 3), so its calls are an upper bound;
    - the run's prompt tokens lie between the estimate's (replies it quotes counted empty) and the
      estimate plus the most those replies could add;
    - the graph's and the estimate's calls count the swapped copy compile runs (14 per input)."""
    from helpers.llm_server import serve as serve_llm

    import s2c

    fixture = "tests/fixtures/data/oasst2_sample.jsonl"
    log = tmp_path / "server.log"
    with serve_llm(tmp_path, log=log) as url:
        settings = s2c.EngineSettings("openai", base_url=(url,))
        data = s2c.Data(f"oasst2:{fixture}", limit=4)
        est = s2c.estimate("bsm", data, settings, prices=Prices.parse({"echo-model": {"input": 1, "output": 4}}))
        assert not [line for line in log.read_text().splitlines() if "recv" in line]  # no completion was asked for
        res = s2c.distill("bsm", data, settings, out=tmp_path / "ds", settings=s2c.RunSettings(cache=None, progress=False))
    assert est.tokenizer.startswith("the server's own count") and est.copies == 2 and est.rows == 4
    got = {nid: s for nid, s in res.summary.nodes.items() if s.engine_calls}
    d = est.as_dict()
    assert d["calls"] == 4 * 2 * (1 + 5 + 1) >= res.summary.engine_calls == 4 * 2 * (1 + 3 + 1)
    assert round(d["nodes"]["branch"]["prompt_tokens_per_input"] * 8) == got["branch"].prompt_tokens
    run_prompt = res.summary.prompt_tokens
    assert d["prompt_tokens"] * 3 / 5 <= run_prompt <= d["prompt_tokens"] + d["quoted_max"]
    assert d["cost_at_most"] == pytest.approx((d["prompt_tokens"] * 1 + d["max_generated_tokens"] * 4) / 1e6, rel=1e-3)
    print(f"bsm on 4 oasst2 rows: estimate {d['prompt_tokens']:,} prompt tokens (+ up to {d['quoted_max']:,} quoted), "
          f"run {run_prompt:,}; calls {d['calls']} estimated, {res.summary.engine_calls} made")


def test_the_estimate_names_its_approximation_where_no_tokenizer_is_known(tmp_path):
    """Without a server that counts tokens, prompts are counted at 4 characters a token, and the
    estimate says so."""
    from s2c.runtime.estimate import APPROXIMATION, estimate_run

    cp = load_text(ONE_CALL, "ask.s2")
    rows = [(f"r{i}", {"question": "x" * 40}) for i in range(3)]
    est = estimate_run(cp, rows[:2], 3, count=None, tokenizer="", compile=True)
    assert est.tokenizer == APPROXIMATION == "approximation: 4 characters a token"
    prompt = len("Answer briefly: " + "x" * 40)
    assert est.as_dict()["prompt_tokens"] == 3 * -(-prompt // 4) and est.as_dict()["calls"] == 3


def test_a_pilot_of_two_rows_brings_the_estimate_within_ten_percent_on_bsm(tmp_path):
    """--pilot 2: the first 2 rows of 6 run for real (into the call cache) and scale each node's
    calls and prompt tokens by what they made; the estimate for all 6 rows is then within 10 % of
    the compile's usage, and the compile pays nothing twice for the pilot's rows."""
    import s2c

    fixture = "tests/fixtures/data/oasst2_sample.jsonl"
    settings = s2c.RunSettings(cache=tmp_path / "calls.sqlite", progress=False)
    with serve(tmp_path) as url:
        engine = s2c.EngineSettings("openai", base_url=(url,))
        data = s2c.Data(f"oasst2:{fixture}", limit=6)
        est = s2c.estimate("bsm", data, engine, pilot=2, settings=settings)
        res = s2c.distill("bsm", data, engine, out=tmp_path / "ds", settings=settings)
    d = est.as_dict()
    assert est.pilot == 2 and "scaled by a pilot run of 2 rows" in est.tokenizer
    run_prompt, run_calls = res.summary.prompt_tokens, res.summary.engine_calls + res.summary.cache_hits
    assert abs(d["prompt_tokens"] - run_prompt) <= 0.10 * run_prompt, (d["prompt_tokens"], run_prompt)
    assert abs(d["calls"] - run_calls) <= 0.10 * run_calls and res.summary.cache_hits >= 2 * 2 * (1 + 3 + 1)
    print(f"bsm on 6 oasst2 rows, pilot 2: estimate {d['prompt_tokens']:,} prompt tokens and {d['calls']} calls, "
          f"run {run_prompt:,} and {run_calls}")
