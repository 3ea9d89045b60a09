"""`s2c train`: dataset checks, the per-row weighted loss, a real run, resume after a crash.

The slow tests train the embedded SmolLM2-135M-Instruct on tests/fixtures/train/tiny (16 coin-flip
rows: 8 'predict' rows with weight 1.0, 8 'explain' rows with weight 0.5; 4 validation rows).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from s2c.errors import S2Error
from s2c.train.data import load_dataset_dir
from s2c.train.sft import TrainSettings, train

TINY = Path(__file__).parent / "fixtures" / "train" / "tiny"
ROW = {"prompt": [{"role": "user", "content": "Is the coin heads up?"}],
       "completion": [{"role": "assistant", "content": "yes"}], "task": "predict", "weight": 1.0}
HINT = "  = hint: `s2c train` takes the folder `s2c compile` writes, with train.jsonl in it"


# ---- bad datasets: the whole rendered message, with file, row and column ----

def _write(folder: Path, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rendered(dataset_dir) -> str:
    with pytest.raises(S2Error) as info:
        load_dataset_dir(dataset_dir)
    return info.value.render()


def _row(**changes) -> str:
    row = {**ROW, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not ...})


def test_missing_folder(tmp_path):
    assert _rendered(tmp_path / "nope") == f"error: dataset folder {tmp_path / 'nope'} does not exist\n{HINT}"


def test_folder_without_train_jsonl(tmp_path):
    (tmp_path / "README.md").write_text("a dataset card\n")
    assert _rendered(tmp_path) == f"error: dataset folder {tmp_path} has no train.jsonl\n{HINT}"


def test_empty_train_jsonl(tmp_path):
    path = _write(tmp_path, "", "  ")
    assert _rendered(tmp_path) == f"{path}:1:1: error: train.jsonl has no rows\n{HINT}"


@pytest.mark.parametrize("bad_line, expected", [
    (_row(completion=...), ("{path}:2:1: error: row 2: missing 'completion'\n"
                           "  = hint: each row needs 'prompt' and 'completion' message lists")),
    (_row(weight=-1), "{path}:2:{col}: error: row 2: 'weight' must be a finite number >= 0, got -1"),
    (_row(weight="heavy"), '{path}:2:{col}: error: row 2: \'weight\' must be a number, got a string "heavy"'),
    (_row(weight=True), "{path}:2:{col}: error: row 2: 'weight' must be a number, got a boolean true"),
    (_row(prompt="Is the coin heads up?"),
     ('{path}:2:{col}: error: row 2: \'prompt\' must be a non-empty list of messages like '
     '{{"role": "user", "content": "..."}}, got a string')),
    (_row(prompt=[{"role": "human", "content": "hi"}]),
     "{path}:2:{col}: error: row 2: 'prompt'[0] has role \"human\"; expected one of system, user, assistant, tool"),
    (_row(completion=[{"role": "user", "content": "yes"}]),
     "{path}:2:{col}: error: row 2: 'completion' has no assistant message"),
    ('{"prompt": [', "{path}:2:13: error: row 2 is not valid JSON: Expecting value"),
])
def test_bad_row_is_located(tmp_path, bad_line, expected):
    path = _write(tmp_path, _row(), bad_line)
    key = next((k for k in ("weight", "prompt", "completion") if k in expected.split("error:")[1]), None)
    col = bad_line.find(f'"{key}"') + 1 if key else 1
    assert _rendered(tmp_path) == expected.format(path=path, col=col)


def test_all_weights_zero(tmp_path):
    path = _write(tmp_path, _row(weight=0), _row(weight=0.0))
    assert _rendered(tmp_path) == (f"error: {path}: every row has weight 0, so there is nothing to learn\n"
                                   "  = hint: give the rows to learn from a positive 'weight'")


def test_fixture_reads_with_tasks_and_weights():
    data = load_dataset_dir(TINY)
    assert data.train.tasks == {"explain": 8, "predict": 8}
    assert {(r["task"], r["weight"]) for r in data.train.rows} == {("predict", 1.0), ("explain", 0.5)}
    assert data.validation.tasks == {"explain": 2, "predict": 2}
    assert data.meta["program"] == "coinflip.s2"


def test_parquet_only_folder_reads_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (TINY / "train.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    data = load_dataset_dir(tmp_path)
    assert data.train.path.name == "train.parquet"
    assert data.train.rows == load_dataset_dir(TINY).train.rows


def test_bad_flags_fail_before_loading_a_model(tmp_path):
    with pytest.raises(S2Error, match=r"--max-length 8: must be >= 16 tokens"):
        train(TINY, TrainSettings(max_length=8), out=tmp_path)
    with pytest.raises(S2Error, match=r"--epochs 0: must be > 0 \(or give --max-steps N\)"):
        train(TINY, TrainSettings(epochs=0), out=tmp_path)


def test_resume_refuses_a_checkpoint_of_another_dataset(tmp_path):
    ckpt = tmp_path / "checkpoints" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"global_step": 3}')
    (tmp_path / "train_config.json").write_text(json.dumps({"dataset_sha256": "0" * 64}))
    with pytest.raises(S2Error) as info:
        train(TINY, TrainSettings(max_steps=4), out=tmp_path)
    message = info.value.render()
    assert message.startswith(f"error: cannot resume from {ckpt}: the run changed (dataset_sha256: '0000")
    assert message.endswith("= hint: pass --no-resume to start over, or --out DIR to train into another folder")


def test_resume_compares_the_lora_alpha_the_run_uses(tmp_path):
    """lora_alpha defaults to 2 * lora_r: a new rank alone changes the recorded alpha too."""
    ckpt = tmp_path / "checkpoints" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"global_step": 3}')
    (tmp_path / "train_config.json").write_text(json.dumps({"lora_r": 16, "lora_alpha": 32}))
    with pytest.raises(S2Error, match=r"the run changed \(lora_r: 16 -> 8, lora_alpha: 32 -> 16\)$"):
        train(TINY, TrainSettings(lora_r=8), out=tmp_path)


def test_lora_alpha_is_twice_the_rank_unless_given():
    assert TrainSettings().alpha == 32 and TrainSettings(lora_r=8).alpha == 16
    assert TrainSettings(lora_r=8, lora_alpha=4).alpha == 4
    assert TrainSettings(lora_r=8).record() | {"lora_r": 8, "lora_alpha": 16} == TrainSettings(lora_r=8).record()
    with pytest.raises(S2Error, match=r"^--lora-alpha 0: must be >= 1$"):
        TrainSettings(lora_alpha=0).check()


# ---- `s2c train`'s flags are TrainSettings' fields, with its defaults ----

def _parser():
    from s2c.cli import train as cli

    parser = argparse.ArgumentParser(prog="s2c")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def _settings(*flags) -> TrainSettings:
    from s2c.cli.train import settings_from

    return settings_from(_parser().parse_args(["train", str(TINY), *flags]))


def test_flags_default_to_the_settings_defaults():
    assert _settings() == TrainSettings()


def test_each_field_has_its_flag():
    settings = _settings("--epochs", "2.5", "--max-steps", "7", "--lr", "1e-3", "--lora-r", "8", "--lora-alpha", "4",
                         "--lora-dropout", "0", "--batch-size", "2", "--grad-accum", "3", "--max-length", "64",
                         "--seed", "5", "--save-steps", "9")
    assert settings == TrainSettings(epochs=2.5, max_steps=7, lr=1e-3, lora_r=8, lora_alpha=4, lora_dropout=0.0,
                                     batch_size=2, grad_accum=3, max_length=64, seed=5, save_steps=9)
    assert _settings("--lora-r", "8").alpha == 16


def test_help_shows_each_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per flag
    from s2c.cli import train as cli

    train_parser = cli.register(argparse.ArgumentParser(prog="s2c").add_subparsers())
    lines = {line.split()[0]: line for line in train_parser.format_help().splitlines() if line.startswith("  --")}
    shown = {"--epochs": "1", "--max-steps": "-1: off", "--lr": "0.0002", "--lora-r": "16", "--lora-alpha": "2R",
             "--lora-dropout": "0.05", "--batch-size": "4", "--grad-accum": "1", "--max-length": "256",
             "--seed": "0", "--save-steps": "50"}
    assert {flag: lines[flag].rsplit("(default ", 1)[-1].rstrip(")") for flag in shown} == shown


# ---- the weighted loss, through the real SFTTrainer on the embedded model ----

@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """The `WeightedSFTTrainer` that `train` runs, with random LoRA B so every LoRA weight gets a gradient."""
    import torch

    from s2c.runtime.model import resolve_model
    from s2c.train.sft import build_trainer

    settings = TrainSettings(max_steps=1, lora_dropout=0.0)  # no dropout: passes are comparable
    tr = build_trainer(load_dataset_dir(TINY), resolve_model(None).path, settings,
                       tmp_path_factory.mktemp("weighted"))
    gen = torch.Generator().manual_seed(0)
    for name, p in tr.model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at 0, which would leave every lora_A gradient at 0
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    tr.model.train()
    return tr


def _loss_and_grads(tr, rows_and_weights):
    """One micro-batch through the trainer's own collator and compute_loss: (loss, LoRA gradients)."""
    batch = tr.data_collator([dict(row, weight=w) for row, w in rows_and_weights])
    tr.model.zero_grad(set_to_none=True)
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _assert_grads_close(a, b):
    import torch

    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_weight_column_survives_and_loss_is_completion_only(trainer):
    ds = trainer.train_dataset
    assert "weight" in ds.column_names and [ds[0]["weight"], ds[1]["weight"]] == [1.0, 0.5]
    tok = trainer.processing_class
    row = ds[1]  # an 'explain' row: prompt tokens are -100, the assistant turn is the target
    target = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tok.decode(target) == ("The coin was flipped 1 time, an odd number, so the answer is no."
                                  "<|im_end|>\n")
    batch = trainer.data_collator([ds[0], ds[1]])
    assert batch["weight"].tolist() == [1.0, 0.5]


@pytest.mark.slow
def test_weighted_loss_zero_and_doubling(trainer):
    """The loss of B rows is sum_i w_i * nll_i / B (nll_i: row i's mean completion-token NLL).

    Compared, on LoRA gradients of every adapter weight (A and B, all linear layers) and on the loss:
    - weight 0: B * grad of [r1 w=1, r2 w=0] (B=2) equals grad of [r1 w=1] alone (B=1): the
      un-normalised objective sum_i w_i nll_i is the same, so r2 (longer, so also padding) adds nothing;
    - doubling: the contribution of r2, grad[r1 w=1, r2 w=w] - grad[r1 w=1, r2 w=0], at w=2 is
      twice the one at w=1.
    """
    import torch

    r1, r2 = trainer.train_dataset[0], trainer.train_dataset[1]
    assert len(r2["input_ids"]) > len(r1["input_ids"])
    loss_10, g_10 = _loss_and_grads(trainer, [(r1, 1.0), (r2, 0.0)])
    loss_1, g_1 = _loss_and_grads(trainer, [(r1, 1.0)])
    loss_11, g_11 = _loss_and_grads(trainer, [(r1, 1.0), (r2, 1.0)])
    loss_12, g_12 = _loss_and_grads(trainer, [(r1, 1.0), (r2, 2.0)])

    assert any(g.abs().sum() > 0 for n, g in g_1.items() if "lora_A" in n)
    assert any(g.abs().sum() > 0 for n, g in g_1.items() if "lora_B" in n)
    torch.testing.assert_close(2 * loss_10, loss_1, rtol=1e-5, atol=1e-6)
    _assert_grads_close({n: 2 * g for n, g in g_10.items()}, g_1)

    contribution_1 = {n: g_11[n] - g_10[n] for n in g_10}
    contribution_2 = {n: g_12[n] - g_10[n] for n in g_10}
    assert any(g.abs().sum() > 0 for g in contribution_1.values())
    _assert_grads_close({n: 2 * g for n, g in contribution_1.items()}, contribution_2)
    torch.testing.assert_close(loss_12 - loss_10, 2 * (loss_11 - loss_10), rtol=1e-5, atol=1e-6)

    # r1's term is its mean completion-token NLL, computed independently from the logits
    nll_1 = _mean_completion_nll(trainer, r1)
    torch.testing.assert_close(loss_1, nll_1, rtol=1e-4, atol=1e-5)


def _mean_completion_nll(tr, row):
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor(row["labels"][1:])
    with torch.no_grad():
        logits = tr.model(input_ids=ids).logits[0, :-1].float()
    return F.cross_entropy(logits, labels, ignore_index=-100)


# ---- real runs of `s2c train` ----

def _cli(argv) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_s2c_train_tiny_run(tmp_path, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    rc = _cli(["train", str(TINY), "--out", str(out), "--max-steps", "4", "--batch-size", "2",
               "--max-length", "128"])
    assert rc == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.strip() == str(out / "adapter")
    assert "s2c: step 4/4  loss " in stderr and "s2c: validation loss " in stderr

    records = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    assert {"lr", "epoch", "nll"} <= steps[0].keys()
    evals = [r for r in records if "eval_loss" in r]
    assert len(evals) == 1 and evals[0]["step"] == 4 and math.isfinite(evals[0]["eval_loss"])
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = json.loads((out / "train_config.json").read_text())
    assert config["status"] == "done" and config["result"]["steps"] == 4
    assert config["result"]["final_loss"] == steps[-1]["loss"]
    assert config["result"]["eval_loss"] == evals[0]["eval_loss"]
    assert config["rows"] == {"train": 16, "validation": 4}
    assert config["tasks"]["train"] == {"explain": 8, "predict": 8}
    assert config["weight_per_task"]["explain"] == {"min": 0.5, "mean": 0.5, "max": 0.5}
    assert config["model"] == "smollm2-135m" and config["dataset"] == str(TINY.resolve())
    assert config["settings"] | {"max_steps": 4, "batch_size": 2, "max_length": 128, "lora_r": 16,
                                 "lora_alpha": 32} == config["settings"]
    assert config["precision"] == ("bf16" if torch.cuda.is_available() else "fp32")

    base = AutoModelForCausalLM.from_pretrained(config["model_path"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 30 * 7  # every linear layer of the 30 blocks: q k v o gate up down
    assert any(p.abs().sum() > 0 for p in lora_b)  # trained: PEFT initialises B to 0


def _crash_after_save(step):
    """A TrainerCallback that kills the run right after the checkpoint of `step` is written."""
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise RuntimeError(f"simulated crash after checkpoint {step}")

    return Crash()


def _step_recorder(seen):
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(state.global_step)

    return Record()


@pytest.mark.slow
def test_resume_after_crash(tmp_path):
    out = tmp_path / "run"
    # one row a step keeps it cheap; a checkpoint after every step
    settings = TrainSettings(max_steps=4, save_steps=1, batch_size=1, max_length=128)
    with pytest.raises(RuntimeError, match="simulated crash after checkpoint 2"):
        train(TINY, settings, out=out, log=lambda m: None, callbacks=[_crash_after_save(2)])
    assert (out / "checkpoints" / "checkpoint-2").is_dir()

    messages, steps = [], []
    result = train(TINY, settings, out=out, log=messages.append, callbacks=[_step_recorder(steps)])
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert f"s2c: resuming from checkpoint {ckpt} (step 2); pass --no-resume to start over" in messages
    assert steps == [3, 4]  # only the steps after the checkpoint ran again
    assert result.steps == 4 and result.resumed_from == ckpt
    records = [json.loads(line) for line in result.loss_log.read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # the crashed run's log, continued
    assert json.loads(result.config.read_text())["result"]["resumed_from"] == str(ckpt)
