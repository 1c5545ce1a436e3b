"""`tmix chat`'s turns on a document's prefilled state.

Without history every question starts from the document's state. With history the cache holds the document prefix,
then each turn's question and answer ids; when the next question and a full answer no longer fit the model's
context, the oldest turns are dropped: the cache goes back to the prefix and the kept turns are run again on it, the
first of them as a first question, so the state is exactly that of a conversation that began with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tmixcli import answer, context, fit, generate, prompt
from tmixcli.config import Settings


class Conversation:
    """Questions asked one after another on `ctx`; `keep` carries the conversation on (chat --keep-history)."""

    def __init__(self, ctx: context.Context, s: Settings, keep: bool, say: Callable[[str], None]) -> None:
        self.ctx, self.s, self.keep, self.say = ctx, s, keep, say
        self.turns: list[tuple[str, list[int]]] = []  # (question, the answer ids the cache holds)

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> answer.Answer:
        """Answer `question`, streaming to `on_text`; with history the turn is kept (an interrupted one is not)."""
        if not self.keep:
            return answer.ask(self.ctx, question, self.s, on_text)
        self._make_room(question)
        q_ids = self._question_ids(question, first=not self.turns)
        base = self.ctx.cache.get_seq_length()
        ans = answer.ask_ids(self.ctx, q_ids, self.s, on_text, keep=True)
        self.turns.append((question, ans.ids[:self.ctx.cache.get_seq_length() - base - len(q_ids)]))
        return ans

    def restart(self, ctx: context.Context) -> None:
        """Go on from a new state of the documents (read again): the conversation so far is dropped."""
        self.ctx, self.turns = ctx, []

    def _question_ids(self, question: str, first: bool) -> list[int]:
        ids = prompt.question_ids if first else prompt.followup_ids
        return ids(self.ctx.lm.tokenizer, question, self.ctx.system)

    def _history_ids(self, turns: Sequence[tuple[str, list[int]]]) -> list[int]:
        """The ids the cache holds after the prefix when the conversation is `turns`."""
        return [t for i, (q, a) in enumerate(turns) for t in self._question_ids(q, first=i == 0) + a]

    def _make_room(self, question: str) -> None:
        """Drop the oldest turns until `question` and a full answer fit the context, then run the kept ones again."""
        limit, prefix = fit.context_limit(self.ctx.lm), len(self.ctx.prefix_ids)
        room = max(1, min(self.s.max_new_tokens, limit - prefix - fit.QUESTION_ROOM))  # what a first question has

        def fits(turns: Sequence[tuple[str, list[int]]]) -> bool:
            asked = self._question_ids(question, first=not turns)
            return prefix + len(self._history_ids(turns)) + len(asked) + room <= limit

        dropped = 0
        while dropped < len(self.turns) and not fits(self.turns[dropped:]):
            dropped += 1
        if dropped:
            self._replay(self.turns[dropped:], dropped, limit)

    def _replay(self, kept: list[tuple[str, list[int]]], dropped: int, limit: int) -> None:
        """Rebuild the cache as the prefix and the `kept` turns (an interruption leaves the prefix alone)."""
        start = time.perf_counter()
        self.turns = []
        context.rewind(self.ctx.cache, len(self.ctx.prefix_ids))
        history = self._history_ids(kept)
        try:
            if history:
                generate.extend(self.ctx.lm.model, self.ctx.cache, history)
        except BaseException:
            context.rewind(self.ctx.cache, len(self.ctx.prefix_ids))
            self.say("the conversation starts over (interrupted while its last turns were read again)")
            raise
        self.turns = kept
        what = f", the last {len(kept)} kept (read again in {time.perf_counter() - start:.2f} s)" if kept else ""
        self.say(f"the conversation no longer fits the model's {limit}-token context: dropped its {dropped} oldest "
                 f"turn{'s' if dropped > 1 else ''}{what}")

