"""The status line after an answer: its TTFT, length and why it ended early; and the answer streamed as it comes."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tmixcli.sizes import count

if TYPE_CHECKING:
    from tmixcli.answer import Answer
    from tmixcli.context import Context

NO_ANSWER = "the model gave no answer"  # it ended its turn at once


def show(text: str) -> None:
    """Stream a piece of the answer to stdout at once."""
    sys.stdout.write(text)
    sys.stdout.flush()


def ttft_said(ans: Answer, waited: Context | None = None) -> str:
    """The time to the first answer token for the status line, counting in the prefill (or KV load) of `waited`, the
    context the question had to wait for."""
    if waited is None:
        return f"TTFT {ans.ttft_s:.2f} s"
    loaded = waited.cache_hit and waited.recomputed is None
    return (f"TTFT {waited.prefill_s + ans.ttft_s:.2f} s ({'KV load' if loaded else 'prefill'} "
            f"{waited.prefill_s:.2f} s + question {ans.ttft_s:.2f} s)")


def tokens_said(ans: Answer) -> str:
    """The answer's length for the status line, with the decode rate only where there is one (two tokens or more)."""
    if ans.new_tokens > 1:
        return f"{ans.new_tokens} tokens at {ans.decode_tokens_per_s:.1f} tok/s"
    return count(ans.new_tokens, "token")


def ending(ans: Answer) -> str:
    """Why an answer ended early, for the status line (nothing when the model finished it)."""
    if ans.stop_reason == "repeat":
        return "; cut: the answer began to repeat itself (--no-stop-repeats lets it run)"
    if ans.stop_reason == "length":
        return "; cut at --max-new-tokens"
    if ans.stop_reason == "context":
        return "; cut: the model's context is full (a shorter question leaves more room)"
    return ""


def empty_note(ans: Answer) -> str | None:
    """The status line (and --json note) for an answer without visible text: none at all, or tokens that are only
    whitespace (kept as generated) or print nothing; None for an answer with text."""
    if ans.text.strip():
        return None
    if ans.new_tokens == 0:
        return NO_ANSWER
    what = "was only whitespace" if ans.text else "had no visible text"
    return f"the model's answer {what} ({count(ans.new_tokens, 'token')})"
