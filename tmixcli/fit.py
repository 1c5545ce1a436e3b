"""Fitting a document and a question into the model's context: the token budget, --truncate, and errors that
name what takes the room."""

from __future__ import annotations

from tmixcli import prompt, textcap
from tmixcli.config import Settings
from tmixcli.documents import Document, joined_text, within_cap
from tmixcli.errors import TmixError
from tmixcli.models import LoadedModel

QUESTION_ROOM = 64  # question tokens every document leaves room for (ask, chat and prefill alike)
ANSWER_ROOM = Settings.max_new_tokens  # answer tokens --truncate leaves at least, whatever --max-new-tokens says
MIN_DOC_ROOM = 64  # with less room than this left for the document, the error names what takes the rest
SHORT_TEXT = 16  # characters per context token below which a text is tokenized whole, without the text cap


def context_limit(lm: LoadedModel) -> int:
    """The model's context length in tokens (max_position_embeddings; unbounded when it has none)."""
    return int(getattr(lm.model.config, "max_position_embeddings", 0) or 1 << 30)


def fit_document(lm: LoadedModel, doc: Document, s: Settings) -> tuple[list[int], list[str]]:
    """Prefix ids of the document; refuse (or with --truncate cut the end) when it does not fit the context.

    --truncate cuts to leave QUESTION_ROOM + max(ANSWER_ROOM, --max-new-tokens) tokens, so `prefill` and `ask`
    with any shorter --max-new-tokens cut a document alike and share its KV file. Several documents are cut to a
    fair share each: the short ones stay whole, the long ones lose their ends."""
    tok = lm.tokenizer
    limit = context_limit(lm)
    if len(doc.text) > SHORT_TEXT * limit:  # shorter texts are cheap to tokenize whole: no vocabulary scan for them
        doc = within_cap(doc, textcap.cap_of(limit, tok.get_vocab()), s.truncate)
    ids = prompt.prefix_ids(tok, doc.text, s.system)
    room = QUESTION_ROOM + (max(ANSWER_ROOM, s.max_new_tokens) if s.truncate else s.max_new_tokens)
    need = len(ids) + room
    if need <= limit:
        return ids, []
    fixed = len(prompt.prefix_ids(tok, "", s.system))  # the prompt without the document
    if limit - fixed - room < MIN_DOC_ROOM:
        raise TmixError(_crowded_out(lm, doc, s, len(ids), fixed, room))
    if not s.truncate:
        system = f" ({_system_tokens(lm, s)} of them the system prompt)" if s.system else ""
        longest = limit - len(ids) - QUESTION_ROOM  # the longest answer beside the whole document
        shorter = f", or --max-new-tokens {longest} or less" if longest > 0 else ""
        raise TmixError(f"{doc.name} needs {len(ids)} prompt tokens{system} + {QUESTION_ROOM} question + "
                        f"{s.max_new_tokens} answer = {need} tokens, over the model's {limit}; "
                        f"use --truncate to cut the document{shorter}")
    parts = doc.parts or (doc,)
    part_ids = [tok(p.text, add_special_tokens=False)["input_ids"] for p in parts]
    budget = sum(map(len, part_ids)) - (need - limit) - 8 * len(parts)
    while budget > 0:
        caps = fair_share([len(p) for p in part_ids], budget)
        texts = [tok.decode(p[:c]) for p, c in zip(part_ids, caps)]
        text = texts[0] if not doc.parts else joined_text([(p.name, t) for p, t in zip(parts, texts)])
        ids = prompt.prefix_ids(tok, text, s.system)
        if len(ids) + room <= limit:
            return ids, [f"truncated {p.name}: kept its first {c} of "
                         f"{f'more than {limit}' if p.partial else len(i)} tokens"
                         for p, i, c in zip(parts, part_ids, caps) if c < len(i)]
        budget -= 16
    raise TmixError(f"{doc.name} cannot be cut to fit: the model's {limit}-token context leaves it "
                    f"{limit - fixed - room} tokens after {_taken(lm, s, fixed, room)}")


def _system_tokens(lm: LoadedModel, s: Settings) -> int:
    """The tokens of --system itself (the chat template around it aside)."""
    return len(lm.tokenizer(s.system or "", add_special_tokens=False)["input_ids"])


def _taken(lm: LoadedModel, s: Settings, fixed: int, room: int) -> str:
    """What a prompt holds besides the document, in tokens: "prompt template 40 + system prompt 9000 + ..."."""
    system = _system_tokens(lm, s) if s.system else 0
    parts = [f"prompt template {fixed - system}"] + ([f"system prompt {system}"] if system else [])
    return " + ".join([*parts, f"question {QUESTION_ROOM}", f"answer {room - QUESTION_ROOM}"])


def _crowded_out(lm: LoadedModel, doc: Document, s: Settings, n_ids: int, fixed: int, room: int) -> str:
    """The error when the answer room (--max-new-tokens) or the system prompt leaves a document under MIN_DOC_ROOM
    tokens of the context: it names that culprit, the numbers and what to do."""
    limit = context_limit(lm)
    numbers = (f"{_taken(lm, s, fixed, room)} = {fixed + room} tokens of the model's {limit}-token context, "
               f"leaving {max(0, limit - fixed - room)} for {doc.name}")
    extra = room - QUESTION_ROOM - ANSWER_ROOM  # answer room asked for beyond the default
    if extra > 0 and limit - fixed - room + extra >= MIN_DOC_ROOM:
        whole = limit - n_ids - QUESTION_ROOM  # the longest answer beside the whole document
        keeps_all = whole > 0 and (whole >= ANSWER_ROOM or not s.truncate)
        hint = (f"{whole} or less to keep all of {doc.name}" if keeps_all else
                f"at most {limit - fixed - QUESTION_ROOM - MIN_DOC_ROOM}, with --truncate")
        return f"--max-new-tokens {s.max_new_tokens} is too large: {numbers}; use {hint}"
    if s.system:
        system = _system_tokens(lm, s)
        whole = limit - room - (n_ids - system)  # the longest system prompt beside the whole document
        hint = (f"to {whole} tokens or less to keep all of {doc.name}" if whole > 0 else
                f"to under {limit - room - (fixed - system) - MIN_DOC_ROOM} tokens, with --truncate")
        return f"the system prompt (--system) is too long: {numbers}; shorten it {hint}"
    return f"the model's context is too small for {doc.name}: {numbers}; use a shorter --max-new-tokens"


def fair_share(lengths: list[int], budget: int) -> list[int]:
    """Per-item caps summing to at most `budget`: items under an equal share keep all, the rest split what is left."""
    caps = [0] * len(lengths)
    left, todo = budget, sorted(range(len(lengths)), key=lengths.__getitem__)
    for k, i in enumerate(todo):
        caps[i] = min(lengths[i], left // (len(todo) - k))
        left -= caps[i]
    return caps


def check_question(lm: LoadedModel, n_prefix: int, s: Settings) -> None:
    """Refuse `ask`'s question (`s.question`) when it leaves no room for an answer after the `n_prefix`-token
    document prompt: told before a prefill or a KV file load, not after."""
    if s.question is None:
        return
    n_question = len(prompt.question_ids(lm.tokenizer, s.question, s.system))
    if n_prefix + n_question + 1 > context_limit(lm):
        raise TmixError(question_too_long(lm, n_prefix, n_question, s))


def question_too_long(lm: LoadedModel, base: int, n_question: int, s: Settings,
                      before: str = "document prompt") -> str:
    """The error for a question that leaves no room for an answer: its tokens, what comes before it, the context."""
    limit = context_limit(lm)
    room = limit - base - s.max_new_tokens
    hint = (f"shorten it to {room} tokens or less (room for a {s.max_new_tokens}-token answer)" if room > 0
            else "shorten it")
    return (f"the question does not fit: {n_question} tokens after the {base}-token {before} exceed the model's "
            f"{limit}-token context; {hint}")
