"""Chat prompt split into a cacheable document prefix and a question suffix (never empty)."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tmixcli.errors import TmixError

LAYOUT_VERSION = "1"
DOC_INTRO = "Read the document below, then answer the question that follows it.\n\n"
QUESTION_LEAD = "\n\nQuestion:"
QUESTION_MARK = "\x00TMIX-QUESTION\x00"
PLAIN_NOTE = "the model has no chat template: the prompt is plain text (the document, the question, then 'Answer:')"


class Tokenizer(Protocol):
    """What tmix calls on a Hugging Face tokenizer (a protocol, so tests may pass a small one of their own).
    chat_template, added_tokens_decoder, all_special_tokens, bos_token and eos_token are read with getattr."""

    eos_token_id: int | None

    def __call__(self, text: str, *, add_special_tokens: bool = ...,
                 split_special_tokens: bool = ...) -> Mapping[str, Any]:
        """An encoding whose "input_ids" are the ids of `text`."""

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]], *, tokenize: bool = ...,
                            add_generation_prompt: bool = ...) -> Any:
        """The chat text of `messages` (a str with tokenize=False, as tmix asks)."""

    def get_vocab(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Prompt:
    """prefix_ids + suffix_ids is the whole prompt; prefix_ids depends on the document only."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    template_hash: str

    @property
    def ids(self) -> list[int]:
        return self.prefix_ids + self.suffix_ids


def _render(tokenizer: Tokenizer, user: str, system: str | None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        return _chat(tokenizer, messages)
    sys_part = f"{system}\n\n" if system else ""
    return f"{sys_part}{user}\n\nAnswer:"  # base models without a chat template


def _chat(tokenizer: Tokenizer, messages: list[dict[str, str]]) -> str:
    """The model's chat template rendered with the generation prompt; a template that cannot be read, or raises on
    these messages (a system message, say), is one TmixError line naming what it said."""
    import jinja2

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateSyntaxError as err:
        raise TmixError(f"the model's chat template has a syntax error: {err.message} (line {err.lineno})") from None
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        why = str(err) or type(err).__name__
    hint = ""
    if messages[0]["role"] == "system":
        try:
            tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True)
            hint = " (it takes no system prompt: leave out --system)"
        except Exception:  # refused without the system message too: nothing to suggest
            pass
    raise TmixError(f"the model's chat template refused the prompt: {why}{hint}")


def plain_notes(tokenizer: Tokenizer) -> list[str]:
    """The status note of a model without a chat template (a base model, whose answers to a plain prompt are often
    poor), or none."""
    return [] if getattr(tokenizer, "chat_template", None) else [PLAIN_NOTE]


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _encode_around(tokenizer: Tokenizer, head: str, user: str, tail: str = "") -> list[int]:
    """Template text around user text (a document, a question) as one encoding; where the user text holds a
    special-token string ("<|im_end|>") it is encoded apart as plain text, so it cannot end or open a chat turn."""
    if not _special_pattern(tokenizer).search(user):
        return _encode(tokenizer, head + user + tail)
    plain = tokenizer(user, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return (_encode(tokenizer, head) if head else []) + list(plain) + (_encode(tokenizer, tail) if tail else [])


def _special_pattern(tokenizer: Tokenizer) -> re.Pattern:
    """One regex for all of the tokenizer's special-token strings (Llama 3 has ~256)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    words = {t.content for t in added.values() if getattr(t, "special", False)}
    words |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    return _alternation(tuple(sorted((w for w in words if w), key=len, reverse=True)))


@functools.lru_cache(maxsize=8)
def _alternation(words: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(map(re.escape, words))) if words else re.compile(r"(?!)")


def template_hash(tokenizer: Tokenizer, system: str | None) -> str:
    """Identifies everything besides the document that shapes the prefix tokens."""
    parts = [LAYOUT_VERSION, getattr(tokenizer, "chat_template", None) or "", system or "", DOC_INTRO, QUESTION_LEAD]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def split_template(tokenizer: Tokenizer, system: str | None = None) -> tuple[str, str]:
    """The rendered chat text around the document+question: (before, after) the question marker."""
    rendered = _render(tokenizer, QUESTION_MARK, system)
    before, _, after = rendered.partition(QUESTION_MARK)
    return before, after


def prefix_ids(tokenizer: Tokenizer, document: str, system: str | None = None) -> list[int]:
    """Token ids of everything up to and including "Question:": depends on the document only."""
    before, _ = split_template(tokenizer, system)
    return _encode_around(tokenizer, before, DOC_INTRO + document.strip() + QUESTION_LEAD)


def question_ids(tokenizer: Tokenizer, question: str, system: str | None = None) -> list[int]:
    """Token ids of the question, the end of the user turn and the assistant header (never empty)."""
    if not question.strip():
        raise TmixError("the question is empty")
    _, after = split_template(tokenizer, system)
    return _encode_around(tokenizer, "", " " + question.strip(), after)


def build_prompt(tokenizer: Tokenizer, document: str, question: str, system: str | None = None) -> Prompt:
    """The whole prompt split after "Question:", a boundary no BPE merge crosses (tests check the ids)."""
    return Prompt(prefix_ids(tokenizer, document, system), question_ids(tokenizer, question, system),
                  template_hash(tokenizer, system))


def followup_ids(tokenizer: Tokenizer, question: str, system: str | None = None) -> list[int]:
    """Ids that close the assistant's last answer and ask a new question (for chat --keep-history)."""
    if not question.strip():
        raise TmixError("the question is empty")
    marks = ["\x00TMIX-A\x00", "\x00TMIX-B\x00", "\x00TMIX-C\x00"]
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": marks[0]}, {"role": "assistant", "content": marks[1]},
        {"role": "user", "content": marks[2]}]
    if getattr(tokenizer, "chat_template", None):
        text = _chat(tokenizer, messages)
    else:
        text = f"{marks[0]}\n\nAnswer:{marks[1]}\n\nQuestion: {marks[2]}\n\nAnswer:"
    glue = text.split(marks[1], 1)[1].split(marks[2], 1)[0]
    after = text.split(marks[2], 1)[1]
    return _encode_around(tokenizer, glue, question.strip(), after)
