"""An eval case's greedy answer on a prefilled cache and how it is compared: its answer key (agreement: the same
numbers / variable names as dense's), the same text, the first token's KL, and answers as the scorers read them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


KEY = re.compile(r"\d[\d,]{2,}\d|\d{3,}|\b[A-Z]{5}\b")  # an answer: a number of 3+ digits or a variable name
_GROUPED = re.compile(r"(?<![\w.,])\d{1,3}(?:[, ]\d{3})+(?!\d)")  # a number in threes: "1,234,567", "12 345"


def normalised(text: str) -> str:
    """An answer as the scorers (tasks.score, facts.matches) compare it: lower case, each run of whitespace one space
    (a space of any kind), and a number written in groups of three by its digits alone: "1,234", "1 234" and
    "1\u202f234" all read "1234", while "2023 340" stays two numbers."""
    return _GROUPED.sub(lambda m: m[0].replace(",", "").replace(" ", ""), " ".join(text.lower().split()))


def _answered(text: str) -> bool:
    """The text holds an answer and has just ended a sentence of more than three words (not "2." of a list)."""
    line = text.rstrip("\n").split("\n")[-1]
    return bool(re.search(r"[.!?]$", line)) and len(line.split()) > 3 and bool(KEY.search(text))


def answer(model: torch.nn.Module, tokenizer, cache, suffix_ids: list[int], stops: set[int],
           max_new_tokens: int, done: Callable[[str], bool] | None = None) -> tuple[torch.Tensor, str]:
    """Greedy answer on top of a prefilled cache until `done(text)` (default: the first sentence that holds a
    task's answer): (log-probs of the first answer token [V], text)."""
    import torch

    from tmixcli import cpu_decode
    from tmixcli.generate import extend

    logits = extend(model, cache, suffix_ids)
    first = torch.log_softmax(logits, dim=-1)
    ids: list[int] = []
    stepper = cpu_decode.start(model, cache)  # decode as `tmix ask` does on the CPU
    for i in range(max_new_tokens):
        tok = int(torch.argmax(logits))
        if tok in stops:
            break
        ids.append(tok)
        if (done or _answered)(tokenizer.decode(ids, skip_special_tokens=True)):
            break
        if i + 1 < max_new_tokens:
            logits = stepper.step(tok) if stepper is not None else extend(model, cache, [tok])
    return first, tokenizer.decode(ids, skip_special_tokens=True).strip()


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) in nats from log-probabilities."""
    return float((logp.exp() * (logp - logq)).sum().clamp_min(0.0))


def same_text(a: str, b: str) -> bool:
    """The same text but for whitespace."""
    return " ".join(a.split()) == " ".join(b.split())


def answer_key(text: str) -> str:
    """The answer a text gives: its numbers (3+ digits) and variable-like names in order, else its first line."""
    found = KEY.findall(text)
    if found:
        return " ".join(f.replace(",", "") for f in found)
    return " ".join(text.strip().split("\n")[0].split()).lower()
