"""Per-row loss weights for TRL's `SFTTrainer`: the `weight` column scales each row's loss.

The loss of a micro-batch of B rows is

    loss = sum_i weight_i * nll_i / B,   nll_i = mean NLL over row i's completion tokens

divided (by `Trainer`) by the gradient-accumulation steps, so an optimizer step averages over
the B * grad_accum rows it saw. The normaliser is the row count, never the sum of the weights:

- the loss is linear in each weight: weight 0 adds nothing, doubling a weight doubles that row's
  share of the loss and of the gradient;
- over random batches it estimates the dataset objective (1/N) sum_i w_i nll_i, the
  `L_label + lambda * L_rationale` of Mind's Mirror and `(1-a) L_r + a L_a` of CasCoD. Dividing by
  sum(w) would cancel the weights in any batch whose rows share one weight (a batch of rationale
  rows only), which is the thing the weights are there to express.

How the column gets through TRL 1.16: `_prepare_dataset` maps the dataset and keeps extra
columns; `Trainer._remove_unused_columns` then drops every column not in `_signature_columns`,
so `weight` is added there; TRL's `DataCollatorForLanguageModeling` ignores unknown keys, so
`WeightedCollator` wraps it and adds a float `weight` tensor; `compute_loss` pops it.
"""
from __future__ import annotations

import functools

WEIGHT = "weight"


def weighted_row_loss(log_probs, label_mask, weights):
    """(loss, per-row mean NLL) from per-token log-probs (B, T), their mask (B, T) and weights (B,)."""
    mask = label_mask.float()  # sums in fp32: bf16 counts tokens exactly only up to 256
    tokens = mask.sum(dim=1).clamp(min=1)  # TRL drops rows with no completion token; guard anyway
    row_nll = -(log_probs.float() * mask).sum(dim=1) / tokens
    loss = (weights.to(row_nll) * row_nll).sum() / row_nll.numel()
    return loss, row_nll


class WeightedCollator:
    """Wraps TRL's collator: the rows' `weight` values travel with the batch as a float tensor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        import torch

        if any(WEIGHT not in e for e in examples):
            raise RuntimeError("a batch reached the collator without its 'weight' column")  # a bug
        weights = [float(e[WEIGHT]) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != WEIGHT} for e in examples])
        batch[WEIGHT] = torch.tensor(weights, dtype=torch.float32)
        return batch


@functools.cache
def weighted_sft_trainer():
    """The `SFTTrainer` subclass, built on first use so that importing s2c never imports TRL."""
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        # compute_loss returns the micro-batch loss; Trainer divides it by the accumulation steps
        loss_is_scaled_for_ga = False

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = WeightedCollator(self.data_collator)

        def _send_telemetry(self):
            pass  # TRL pings the Hugging Face hub from a thread; s2c never contacts the hub

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if WEIGHT not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, WEIGHT]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            weights = inputs.pop(WEIGHT)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            loss, row_nll = weighted_row_loss(outputs.log_probs, outputs.label_mask, weights)
            self._record_metrics(mode, inputs, outputs, row_nll)
            return (loss, outputs) if return_outputs else loss

        def _record_metrics(self, mode, inputs, outputs, row_nll):
            """The metrics TRL logs (entropy, token accuracy, tokens seen) plus the unweighted NLL."""
            gather = self.accelerator.gather_for_metrics
            valid = gather(outputs.label_mask.sum()).sum()
            n = max(valid.item(), 1)
            m = self._metrics[mode]
            m["entropy"].append(gather(outputs.entropy.detach().sum()).sum().item() / n)
            m["mean_token_accuracy"].append(gather(outputs.is_top1.sum()).sum().item() / n)
            m["nll"].append(gather(row_nll.detach().mean()).mean().item())
            if mode == "train":
                self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
            m["num_tokens"] = [self._total_train_tokens]

    return WeightedSFTTrainer
