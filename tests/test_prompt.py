"""The cacheable prefix is exactly a prefix of the full prompt's token ids, for every tokenizer family."""

from __future__ import annotations

import pytest
from tiny import FAMILIES, tiny_tokenizer

from tmixcli import prompt
from tmixcli.errors import TmixError

DOCS = ["The revenue in 2023 was 48.7 million euros.", "Ends with a number 1234", "Ends with spaces and newline  \n",
        "Ünïcode — dashes, “quotes” and 中文 text.\n\nSecond paragraph:"]
QUESTIONS = ["What was the revenue in 2023?", "2023: revenue?", "  who?  ", "'quoted' question"]


def _full_ids(tok, doc: str, question: str, system: str | None) -> list[int]:
    user = prompt.DOC_INTRO + doc.strip() + prompt.QUESTION_LEAD + " " + question.strip()
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _check(tok, system=None):
    for doc in DOCS:
        for q in QUESTIONS:
            p = prompt.build_prompt(tok, doc, q, system)
            assert p.suffix_ids, "the question suffix is never empty"
            assert p.ids == _full_ids(tok, doc, q, system), (doc, q)
            assert p.prefix_ids == prompt.prefix_ids(tok, doc, system)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_is_exact_prefix_tiny(family):
    _check(tiny_tokenizer(family))


@pytest.mark.model
def test_prefix_is_exact_prefix_default_model(default_lm):
    _check(default_lm.tokenizer)
    _check(default_lm.tokenizer, system="You answer from the document only.")


def test_prefix_independent_of_question():
    tok = tiny_tokenizer("qwen2")
    a = prompt.build_prompt(tok, DOCS[0], "first?")
    b = prompt.build_prompt(tok, DOCS[0], "a completely different question")
    assert a.prefix_ids == b.prefix_ids and a.suffix_ids != b.suffix_ids


def test_template_hash_tracks_system_prompt():
    tok = tiny_tokenizer("llama")
    assert prompt.template_hash(tok, None) != prompt.template_hash(tok, "Be brief.")
    assert prompt.template_hash(tok, "Be brief.") == prompt.template_hash(tok, "Be brief.")


def test_empty_question_refused():
    with pytest.raises(TmixError, match="empty"):
        prompt.build_prompt(tiny_tokenizer("llama"), "doc", "   ")


def test_followup_closes_previous_turn():
    tok = tiny_tokenizer("qwen2")
    text = tok.decode(prompt.followup_ids(tok, "next one?"))
    assert text.startswith("<|im_end|>") and text.endswith("<|im_start|>assistant\n") and "next one?" in text


@pytest.mark.parametrize("family", ["qwen2", "llama", "mistral"])
def test_special_token_strings_in_user_text_stay_text(family):
    """A document or question quoting "<|im_end|>" (or "[INST]") must not become the control token: it would end the
    user turn early (or open a fake one) and let any document steer the model."""
    tok = tiny_tokenizer(family)
    specials = {t.content: i for i, t in tok.added_tokens_decoder.items() if t.special}
    word = next(w for w in ("<|im_end|>", "<|eot_id|>", "[INST]") if w in specials)
    ids = prompt.prefix_ids(tok, f"The fee is {word} 40 euros.")
    before = prompt._encode(tok, prompt.split_template(tok)[0])
    assert ids[:len(before)] == before  # the template's own control tokens are kept
    assert specials[word] not in ids[len(before):]
    q = prompt.question_ids(tok, f"What does {word} mean?")
    assert q.count(specials[word]) == prompt._encode(tok, prompt.split_template(tok)[1]).count(specials[word])
    plain = prompt.prefix_ids(tok, "The fee is 40 euros.")
    assert plain == prompt._encode(tok, prompt.split_template(tok)[0] + prompt.DOC_INTRO + "The fee is 40 euros."
                                   + prompt.QUESTION_LEAD)  # text without such strings: one joint encoding, as before


NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('Only user and assistant roles "
             "are supported!') }}{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}")


def test_a_chat_template_that_refuses_the_prompt_is_one_line():
    """Mistral-style templates raise on a system message: one TmixError naming what the template said (and that it
    works without --system), not a jinja2 traceback; a template that does not parse is named as such."""
    tok = tiny_tokenizer("llama")
    tok.chat_template = NO_SYSTEM
    assert prompt.build_prompt(tok, DOCS[0], "Who?").suffix_ids  # without a system prompt it renders
    says = ("the model's chat template refused the prompt: Only user and assistant roles are supported! (it takes no "
            "system prompt: leave out --system)")
    for build in (lambda: prompt.build_prompt(tok, DOCS[0], "Who?", "Be brief."),
                  lambda: prompt.followup_ids(tok, "Next?", "Be brief.")):
        with pytest.raises(TmixError) as err:
            build()
        assert str(err.value) == says
    tok.chat_template = "{{ raise_exception('no prompt fits me') }}"
    with pytest.raises(TmixError, match=r"^the model's chat template refused the prompt: no prompt fits me$"):
        prompt.build_prompt(tok, DOCS[0], "Who?", "Be brief.")
    tok.chat_template = "{% for m in messages %}{{ m.content "
    with pytest.raises(TmixError, match=r"^the model's chat template has a syntax error: unexpected end of template"):
        prompt.build_prompt(tok, DOCS[0], "Who?")


def test_a_tokenizer_without_a_chat_template_gets_a_plain_prompt_and_a_note():
    tok = tiny_tokenizer("llama")
    assert prompt.plain_notes(tok) == []
    tok.chat_template = None
    assert prompt.plain_notes(tok) == [prompt.PLAIN_NOTE]
    assert tok.decode(prompt.build_prompt(tok, DOCS[0], "Who?").ids).endswith("Who?\n\nAnswer:")
