"""Measuring a language model: perplexity on token windows, greedy answers, the time of a forward pass.

Units: perplexity is exp(mean negative log-likelihood per predicted token, in nats); times are milliseconds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import validate
from .model import check_ids

__all__ = ["perplexity", "generate", "forward_ms"]


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> float:
    """exp(mean negative log-likelihood) of every next token in ``windows`` (int64, (n, seq_len)), in batches."""
    validate.module(model)
    check_ids(windows, model, "windows", min_len=2)
    validate.integer(batch_size, "batch_size", 1)
    model.eval()
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        logits = model(input_ids=batch, use_cache=False).logits
        if logits.dim() != 3 or logits.shape[:2] != batch.shape:
            raise TypeError(f"model must be a causal language model (*ForCausalLM) whose logits are (batch, tokens, "
                            f"vocabulary), got {type(model).__name__} with logits of shape {tuple(logits.shape)}")
        logits = logits[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                          reduction="sum")
        total += nll.item()
        count += batch[:, 1:].numel()
    if not math.isfinite(total):
        raise ValueError("perplexity is undefined: the model's log-likelihood is NaN or infinite on these windows "
                         "(its logits hold NaN or inf — a NaN weight, or an overflow after quantization?)")
    return math.exp(total / count)


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int = 20) -> list[str]:
    """Greedy answers of a chat model to each user prompt (chat template applied), without the prompt."""
    validate.module(model)
    prompts = validate.strings(prompts, "prompts")
    validate.integer(max_new_tokens, "max_new_tokens", 1)
    if not getattr(tokenizer, "chat_template", None) or not hasattr(tokenizer, "apply_chat_template"):
        raise ValueError(f"tokenizer must be a chat model's tokenizer with a chat template, got "
                         f"{type(tokenizer).__name__} without one: generate() answers user prompts as a chat")
    answers = []
    for prompt in prompts:
        enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        answers.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


@torch.no_grad()
def forward_ms(model: nn.Module, batch: torch.Tensor, repeats: int = 3) -> float:
    """Median milliseconds of one forward pass over ``batch`` (int64 token ids), after one warm-up pass."""
    import statistics
    import time

    validate.module(model)
    check_ids(batch, model, "batch")
    validate.integer(repeats, "repeats", 1)
    model(input_ids=batch, use_cache=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=batch, use_cache=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
