"""Fitting a document and a question into the model's context: the token budget, --truncate, and errors that
name what takes the room."""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from tmixcli import prompt, textcap
from tmixcli.config import Settings
from tmixcli.documents import Document, joined_text, within_cap
from tmixcli.errors import TmixError
from tmixcli.pdfpages import cut_place

QUESTION_ROOM = 64  # question tokens kept where the question is not known yet (prefill, chat); --truncate's least
ANSWER_ROOM = Settings.max_new_tokens  # answer tokens --truncate leaves at least, whatever --max-new-tokens says
MIN_DOC_ROOM = 64  # with less room than this left for the document, the error names what takes the rest
SHORT_TEXT = 16  # characters per context token below which a text is tokenized whole, without the text cap


class Sizing(Protocol):
    """What fitting needs of a model: its tokenizer and context length (models.LoadedModel, filetok.FileModel)."""

    tokenizer: object

    @property
    def context(self) -> int: ...


def context_limit(lm: Sizing) -> int:
    """The model's context length in tokens (max_position_embeddings; unbounded when it has none)."""
    return lm.context


def question_room(lm: Sizing, s: Settings) -> int:
    """Question tokens a document leaves room for: QUESTION_ROOM, or `ask`'s own question's when shorter (or, with
    --truncate, longer: shorter ones all cut alike, sharing prefill's KV file); a longer one is check_question's."""
    if s.question is None:
        return QUESTION_ROOM
    n_question = len(prompt.question_ids(lm.tokenizer, s.question, s.system))
    return max(n_question, QUESTION_ROOM) if s.truncate else min(n_question, QUESTION_ROOM)


def _answer_room(s: Settings) -> int:
    """The answer tokens a document leaves room for: --max-new-tokens, at least ANSWER_ROOM with --truncate."""
    return max(ANSWER_ROOM, s.max_new_tokens) if s.truncate else s.max_new_tokens


def reserved_room(lm: Sizing, s: Settings) -> int:
    """The tokens a document prompt leaves for the question and the answer (what a --truncate cut leaves)."""
    return question_room(lm, s) + _answer_room(s)


def fit_document(lm: Sizing, doc: Document, s: Settings) -> tuple[list[int], list[str]]:
    """Prefix ids of the document; refuse (or with --truncate cut the end) when it does not fit the context.

    --truncate cuts to leave question_room + max(ANSWER_ROOM, --max-new-tokens) tokens, so `prefill` and `ask`
    with any shorter --max-new-tokens cut a document alike and share its KV file. Several documents are cut to a
    fair share each: the short ones stay whole, the long ones lose their ends."""
    _, ids, notes = _fitted(lm, doc, s)
    return ids, notes


def fitted_text(lm: Sizing, doc: Document, s: Settings) -> tuple[str, list[str]]:
    """The documents' text as the prompt holds it (fit_document: with --truncate, cut) and the notes on the cut."""
    text, _, notes = _fitted(lm, doc, s)
    return text, notes


def _fitted(lm: Sizing, doc: Document, s: Settings) -> tuple[str, list[int], list[str]]:
    """fit_document's text, prefix ids and notes."""
    tok, limit = lm.tokenizer, context_limit(lm)
    doc, ids = _whole(lm, doc, s)
    question = question_room(lm, s)
    room = question + _answer_room(s)
    need = len(ids) + room
    if need <= limit:
        return doc.text, ids, []
    fixed = _refuse_unfit(lm, doc, len(ids), s)
    parts = doc.parts or (doc,)
    part_ids = [tok(p.text, add_special_tokens=False)["input_ids"] for p in parts]
    budget = sum(map(len, part_ids)) - (need - limit) - 8 * len(parts)
    whole = len(ids) - fixed
    while budget > 0:
        caps = fair_share([len(p) for p in part_ids], budget)
        texts = [tok.decode(p[:c]) for p, c in zip(part_ids, caps)]
        text = texts[0] if not doc.parts else joined_text([(p.name, t) for p, t in zip(parts, texts)])
        ids = prompt.prefix_ids(tok, text, s.system)
        if len(ids) + room > limit:
            budget -= 16
            continue
        if not doc.parts:  # counted as the status line counts document tokens: the prompt's less the template's
            return text, ids, [_cut_note(doc, texts[0], len(ids) - fixed, whole, limit, "document tokens")]
        return text, ids, [_cut_note(p, t, c, len(i), limit, "tokens")
                           for p, t, i, c in zip(parts, texts, part_ids, caps) if c < len(i)]
    raise TmixError(f"{doc.name} cannot be cut to fit: the model's {limit}-token context leaves it "
                    f"{limit - fixed - room} tokens after {_taken(lm, s, fixed, question, room)}")


def _cut_note(doc: Document, kept: str, n_kept: int, n_whole: int, limit: int, unit: str) -> str:
    """The note on a document --truncate cut: the tokens kept, and where it was cut (the pages kept of a PDF, else the
    share kept): "truncated long.pdf: kept its first 7823 of 15114 document tokens: pages 1-20 of 40, page 20 in
    part"."""
    place = cut_place(doc.text, kept, doc.pages, doc.partial)
    share = f": {place}" if place else "" if doc.partial else f" ({100 * n_kept // max(1, n_whole)}%)"
    return (f"truncated {doc.name}: kept its first {n_kept} of {f'more than {limit}' if doc.partial else n_whole} "
            f"{unit}{share}")


def check_fit(lm: Sizing, doc: Document, s: Settings) -> None:
    """Raise what fit_document and check_question would raise for `doc`, without cutting it (a cut leaves the
    question and answer their room): the refusals that the tokenizer and the context alone can tell."""
    doc, ids = _whole(lm, doc, s)
    if len(ids) + question_room(lm, s) + _answer_room(s) > context_limit(lm):
        _refuse_unfit(lm, doc, len(ids), s)
    else:
        check_question(lm, len(ids), s)


def check_early(spec: str | None, doc: Document, s: Settings) -> None:
    """check_fit before the model loads, from its files where filetok can read them: the same error in ~0.5 s, not
    after torch's import and the load (else the check waits for the loaded model, as a `tmix serve`'s callers do)."""
    from tmixcli import filetok

    lm = filetok.files_model(spec)
    if lm is None:
        return
    try:
        check_fit(lm, doc, s)
    except filetok.Unrendered:
        return


def _whole(lm: Sizing, doc: Document, s: Settings) -> tuple[Document, list[int]]:
    """The document within the text cap (textcap: refused past it, or with --truncate cut) and its prefix ids."""
    limit = context_limit(lm)
    if len(doc.text) > SHORT_TEXT * limit:  # shorter texts are cheap to tokenize whole: no vocabulary scan for them
        doc = within_cap(doc, textcap.cap_of(limit, lm.tokenizer.get_vocab()), s.truncate)
    return doc, prompt.prefix_ids(lm.tokenizer, doc.text, s.system)


def _refuse_unfit(lm: Sizing, doc: Document, n_ids: int, s: Settings) -> int:
    """Refuse an `n_ids`-token document prompt over the context, unless --truncate can cut it; returns the tokens
    of the prompt without the document."""
    fixed = len(prompt.prefix_ids(lm.tokenizer, "", s.system))
    if not s.truncate or context_limit(lm) - fixed - question_room(lm, s) - _answer_room(s) < MIN_DOC_ROOM:
        raise TmixError(_unfit(lm, doc.name, n_ids, s, fixed))
    return fixed


def check_prefix(lm: Sizing, n_prefix: int, name: str, s: Settings) -> None:
    """Refuse a KV file's `n_prefix`-token prompt (--kv, a cached file) that leaves no room for the question and a
    --max-new-tokens answer, as fit_document refuses a document: told before the file's tensors are loaded."""
    if n_prefix + question_room(lm, s) + s.max_new_tokens > context_limit(lm):
        fixed = len(prompt.prefix_ids(lm.tokenizer, "", s.system))
        raise TmixError(_unfit(lm, name, n_prefix, s, fixed, can_cut=False))


def _unfit(lm: Sizing, name: str, n_ids: int, s: Settings, fixed: int, can_cut: bool = True) -> str:
    """The error for an `n_ids`-token document prompt (`fixed` of them the template) that leaves no room for the
    question and the answer: the document's size, or what crowds it out (crowded_out)."""
    limit, question = context_limit(lm), question_room(lm, s)
    room = question + _answer_room(s)
    if limit - fixed - room < MIN_DOC_ROOM:
        return _crowded_out(lm, name, s, n_ids, fixed, question, room)
    longest = limit - n_ids - question  # the longest answer beside the whole document
    shorter = f"--max-new-tokens {longest} or less" if longest > 0 else ""
    hint = f"use --truncate to cut the document{', or ' + shorter if shorter else ''}" if can_cut else (
        f"use {shorter}" if shorter else "ask a shorter question")
    return (f"{name} needs {n_ids - fixed} document tokens + {_taken(lm, s, fixed, question, room)} = "
            f"{n_ids + room} tokens, over the model's {limit}-token context; {hint}")


def _system_tokens(lm: Sizing, s: Settings) -> int:
    """The tokens of --system itself (the chat template around it aside)."""
    return len(lm.tokenizer(s.system or "", add_special_tokens=False)["input_ids"])


def _taken(lm: Sizing, s: Settings, fixed: int, question: int, room: int) -> str:
    """What a prompt holds besides the document, in tokens: "prompt template 40 + system prompt 9000 + ..."."""
    system = _system_tokens(lm, s) if s.system else 0
    parts = [f"prompt template {fixed - system}"] + ([f"system prompt {system}"] if system else [])
    return " + ".join([*parts, f"question {question}", f"answer {room - question}"])


def _crowded_out(lm: Sizing, name: str, s: Settings, n_ids: int, fixed: int, question: int, room: int) -> str:
    """The error when the answer room (--max-new-tokens) or the system prompt leaves a document under MIN_DOC_ROOM
    tokens of the context: it names that culprit, the numbers and what to do."""
    limit = context_limit(lm)
    numbers = (f"{_taken(lm, s, fixed, question, room)} = {fixed + room} tokens of the model's {limit}-token "
               f"context, leaving {max(0, limit - fixed - room)} for {name}")
    extra = room - question - ANSWER_ROOM  # answer room asked for beyond the default
    cut = replace(s, truncate=True)  # what --truncate keeps besides the document: its question and answer room
    if extra > 0 and limit - fixed - room + extra >= MIN_DOC_ROOM:
        whole = limit - n_ids - question  # the longest answer beside the whole document
        too_large = f"--max-new-tokens {s.max_new_tokens} is too large: {numbers}"
        if whole > 0 and (whole >= ANSWER_ROOM or not s.truncate):
            return f"{too_large}; use {whole} or less to keep all of {name}"
        most = limit - fixed - question_room(lm, cut) - MIN_DOC_ROOM
        return (f"{too_large}; with --truncate, use {most} or less: {most} leaves {MIN_DOC_ROOM} tokens for the "
                f"beginning of {name}, each one less leaves one more")
    if s.system:
        system = _system_tokens(lm, s)
        whole = limit - room - (n_ids - system)  # the longest system prompt beside the whole document
        hint = (f"to {whole} tokens or less to keep all of {name}" if whole > 0 else
                f"to under {limit - question_room(lm, cut) - _answer_room(cut) - (fixed - system) - MIN_DOC_ROOM} "
                "tokens, with --truncate")
        return f"the system prompt (--system) is too long: {numbers}; shorten it {hint}"
    return f"the model's context is too small for {name}: {numbers}; use a shorter --max-new-tokens"


def fair_share(lengths: list[int], budget: int) -> list[int]:
    """Per-item caps summing to at most `budget`: items under an equal share keep all, the rest split what is left."""
    caps = [0] * len(lengths)
    left, todo = budget, sorted(range(len(lengths)), key=lengths.__getitem__)
    for k, i in enumerate(todo):
        caps[i] = min(lengths[i], left // (len(todo) - k))
        left -= caps[i]
    return caps


def check_question(lm: Sizing, n_prefix: int, s: Settings) -> None:
    """Refuse `ask`'s question (`s.question`) when it leaves no room for a --max-new-tokens answer after the
    `n_prefix`-token document prompt: told before a prefill or a KV file load, not after."""
    if s.question is None:
        return
    n_question = len(prompt.question_ids(lm.tokenizer, s.question, s.system))
    limit = context_limit(lm)
    if not question_fits(lm, n_prefix, n_question):
        raise TmixError(question_too_long(lm, n_prefix, n_question, s))
    if n_prefix + n_question + s.max_new_tokens > limit:
        raise TmixError(f"the question and its answer do not fit: {n_question} question + {s.max_new_tokens} answer "
                        f"tokens after the {n_prefix}-token document prompt exceed the model's {limit}-token "
                        f"context; shorten the question to {limit - n_prefix - s.max_new_tokens} tokens or less, "
                        f"or use --max-new-tokens {limit - n_prefix - n_question} or less")


def question_fits(lm: Sizing, n_before: int, n_question: int) -> bool:
    """Whether a question after `n_before` prompt tokens leaves the context room for at least one answer token."""
    return n_before + n_question + 1 <= context_limit(lm)


def question_too_long(lm: Sizing, base: int, n_question: int, s: Settings,
                      before: str = "document prompt") -> str:
    """The error for a question that leaves no room for an answer: its tokens, what comes before it, the context."""
    limit = context_limit(lm)
    room = limit - base - s.max_new_tokens
    hint = (f"shorten it to {room} tokens or less (room for a {s.max_new_tokens}-token answer)" if room > 0
            else "shorten it")
    return (f"the question does not fit: {n_question} tokens after the {base}-token {before} exceed the model's "
            f"{limit}-token context; {hint}")
