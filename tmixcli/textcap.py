"""How much text a model could use: its context times its longest token in characters (no token covers more), so
a longer text needs more tokens than the context holds and is refused, or cut, without being tokenized."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tmixcli.modelinfo import config_limits, model_folder
from tmixcli.paths import read_regular

FALLBACK_TEXT_BYTES = 64 << 20  # bytes of text read when the model's cap is not known yet (its files not on disk)
MAX_CONTAINER_BYTES = 512 << 20  # bytes of a PDF, ZIP-based or HTML document (its markup is not text)
BYTES_PER_CHAR = 4  # no text encoding tmix reads spends more bytes on a character (UTF-8, UTF-16, UTF-32, cp1252)
MARGIN = 4096  # characters past the cap searched for a line break to cut at
TAIL = 256  # characters of a cut text's end kept, so the prompt around the text tokenizes as around the whole


@dataclass(frozen=True)
class TextCap:
    """The most characters of document text a model's context could hold: context x longest token."""

    context: int
    longest: int

    @property
    def chars(self) -> int:
        return self.context * self.longest

    @property
    def text_bytes(self) -> int:
        """Raw bytes of a text file past which it surely holds more than `chars` characters."""
        return self.chars * BYTES_PER_CHAR


@dataclass
class Budget:
    """What a run may read of its documents: the model's TextCap (looked up once, when an input is large enough to
    need it) and whether --truncate keeps the beginning of a longer text instead of refusing it."""

    truncate: bool = False
    find: Callable[[], TextCap | None] = field(default=lambda: None)

    @functools.cached_property
    def cap(self) -> TextCap | None:
        return self.find()


def cap_of(context: int, vocab: Iterable[str]) -> TextCap:
    """The cap for a context and a tokenizer's vocabulary (its token strings, byte-level or not)."""
    return TextCap(context, max(map(len, vocab), default=1) or 1)


def cut(text: str, cap: TextCap) -> str:
    """`text` without what lies past any token the model could keep (--truncate): its first `cap.chars` characters
    and up to the next line break, then its last TAIL characters; unchanged when it is not much longer than that."""
    if len(text) <= cap.chars + MARGIN + TAIL + 2:
        return text
    end = text.rfind("\n", cap.chars, cap.chars + MARGIN)
    if end < 0:
        end = cap.chars + MARGIN
    return text[:end] + "\n\n" + text[-TAIL:]


def too_much(subject: str, cap: TextCap | None, pdf: bool = False) -> str:
    """The error for a document beyond what the model could read, e.g. subject "big.txt is 48 MiB"."""
    hint = "use --pages to pick pages, or --truncate to keep its beginning" if pdf else \
        "use --truncate to keep its beginning"
    if cap is None:
        return f"{subject}, more than tmix reads of a text before it knows the model's context; {hint}"
    return (f"{subject}, more than the model's {cap.context}-token context can hold (at most {cap.chars} characters: "
            f"{cap.context} tokens of up to {cap.longest}); {hint}")


def files_cap(spec: str | None) -> TextCap | None:
    """The cap of a --model value from its config.json and tokenizer.json alone (no torch): None when they are not
    on disk yet (a model not converted or downloaded) or do not say."""
    folder = model_folder(spec)
    if folder is None:
        return None
    try:
        context = config_limits(json.loads(read_regular(folder / "config.json"))).context
        data = json.loads(read_regular(folder / "tokenizer.json"))
        vocab = data["model"]["vocab"]
        words = list(vocab) if isinstance(vocab, dict) else [str(piece[0]) for piece in vocab]
        words += [str(t.get("content", "")) for t in data.get("added_tokens") or []]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return cap_of(context, words) if context is not None and words else None
