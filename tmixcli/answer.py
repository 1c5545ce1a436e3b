"""Asking a question against a prefilled document (context.Context): the answer streamed, the cache rewound."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tmixcli import generate, kvfolder, loopstop, prompt
from tmixcli.config import Settings
from tmixcli.context import Context, now, rewind
from tmixcli.errors import TmixError
from tmixcli.fit import context_limit, question_fits, question_too_long
from tmixcli.models import LoadedModel
from tmixcli.prompt import Tokenizer


@dataclass
class Answer:
    """One answer and what --json and the status lines report of it: its text, tokens, time to first token, decode
    speed and why it ended."""

    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    stop_reason: str = "end"  # end (a stop token), length (--max-new-tokens), context (full first), repeat (a loop)
    ids: list[int] = field(default_factory=list)  # the answer's tokens (a cut loop's copies included)


def ask(ctx: Context, question: str, s: Settings, on_text: Callable[[str], None] | None = None,
        keep: bool = False) -> Answer:
    """Answer one question on top of the document's state; the cache is rewound afterwards unless `keep`."""
    return ask_ids(ctx, prompt.question_ids(ctx.lm.tokenizer, question, ctx.system), s, on_text, keep)


def ask_ids(ctx: Context, q_ids: list[int], s: Settings, on_text: Callable[[str], None] | None = None,
            keep: bool = False) -> Answer:
    """Run question ids on top of the cache and stream the answer; rewinds the cache unless `keep`."""
    lm = ctx.lm
    base = ctx.cache.get_seq_length()
    if not question_fits(lm, base, len(q_ids)):
        before = "document prompt" if base == len(ctx.prefix_ids) else "document prompt and conversation"
        raise TmixError(question_too_long(lm, base, len(q_ids), s, before))
    budget = min(s.max_new_tokens, context_limit(lm) - base - len(q_ids))
    stops = generate.stop_ids(lm.tokenizer, lm.model)
    start = now(lm)
    first: list[float] = []
    tokens = generate.generate_ids(lm.model, ctx.cache, q_ids, stops, budget, s.temperature, s.top_p, s.seed,
                                   on_first=lambda: first.append(now(lm)))
    pieces: list[str] = []
    tokens = _explained(ctx, tokens)
    ids: list[int] = []
    cut = 0
    stream = generate.stream_text(lm.tokenizer, _record(tokens, ids))
    try:
        for piece in stream:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
            # a word ends only at whitespace, so only then can the check's answer change
            if s.stop_repeats and any(c.isspace() for c in piece) and (cut := loopstop.repeated_tail("".join(pieces))):
                break
    except BaseException:  # Ctrl-C in chat: an interrupted turn is dropped, never half kept in the history
        keep = False
        raise
    finally:
        stream.close()
        tokens.close()
        if not keep:
            rewind(ctx.cache, base)
    text = "".join(pieces)
    kept = _tokens_for(lm.tokenizer, ids, cut) if cut else ids
    if keep:
        _close_turn(lm, ctx.cache, base + len(q_ids), kept)
    end = now(lm)
    ttft = (first[0] if first else end) - start
    n = len(ids)
    rate = (n - 1) / (end - first[0]) if first and n > 1 and end > first[0] else 0.0
    reason = "repeat" if cut else "end" if n < budget else "length" if budget == s.max_new_tokens else "context"
    if cut and on_text is None:  # nothing was shown yet: drop the repeated copies
        text = text[:cut]
    return Answer(text, base + len(q_ids), n, ttft, rate, reason, ids)


def _explained(ctx: Context, tokens: Iterator[int]) -> Iterator[int]:
    """Pass the tokens on; non-numbers from the model say which input is at fault (a damaged cache file is removed)."""
    try:
        yield from tokens
    except generate.NonFiniteOutput as err:
        if not ctx.cache_hit or ctx.kv_path is None:
            raise TmixError(f"{err}: the model overflows in {str(ctx.lm.dtype).removeprefix('torch.')} on this "
                            "input; try another --dtype (fp32, or bf16 on a GPU)") from None
        if ctx.kv_path.parent == kvfolder.kv_dir() and not ctx.kept_in_memory:
            ctx.kv_path.unlink(missing_ok=True)
            raise TmixError(f"{err}: the cached KV file {ctx.kv_path.name} is damaged; removed it, so the next run "
                            "prefills again") from None
        raise TmixError(f"{err}: the KV file {ctx.kv_path} is damaged; make it again with tmix prefill") from None


def _close_turn(lm: LoadedModel, cache: object, answer_start: int, kept: list[int]) -> None:
    """Leave exactly `kept` answer tokens in a kept cache: one copy of a cut loop, a last token never fed."""
    want = answer_start + len(kept)
    have = cache.get_seq_length()
    if have > want:
        rewind(cache, want)
    elif have < want:
        generate.extend(lm.model, cache, kept[have - answer_start:])


def _tokens_for(tokenizer: Tokenizer, ids: list[int], chars: int) -> list[int]:
    """The shortest prefix of `ids` whose text reaches `chars` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= chars:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]


def _record(tokens, ids: list[int]):
    """Pass tokens on, keeping them in `ids`."""
    for tok in tokens:
        ids.append(tok)
        yield tok
