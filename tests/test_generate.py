"""Decoding helpers: loop detection, and the cache a kept chat turn leaves."""

from __future__ import annotations

import pytest
import torch

from runcli import TINY, ask_json, run
from tmixcli.loopstop import repeated_tail

HEAT = "The new heat pump will be used to heat the new children's corner. "  # 13 words


def test_loop_found_across_line_breaks():
    """The default model loops with its line breaks in different places each time (seen on the sample notes)."""
    intro = "The old oil boiler goes. "
    text = intro + HEAT + HEAT.replace("heat the ", "heat the\n") + HEAT.replace("pump ", "pump\n") + "The"
    cut = repeated_tail(text)
    assert cut and text[:cut] == intro + HEAT.rstrip()
    assert repeated_tail(intro + HEAT * 2 + "The") == 0  # two copies are not yet a loop
    assert repeated_tail((intro + HEAT * 3).rstrip()) == 0  # the last word may still grow ("corner." -> "corner.\"")
    assert repeated_tail(intro + HEAT * 3) == len(intro + HEAT) - 1


def test_cut_ends_on_a_full_sentence():
    text = "Heat pumps. " + ("will heat the corner. The new heat pump " * 3) + "will"
    assert text[:repeated_tail(text)] == "Heat pumps. will heat the corner."


def test_short_or_long_repeats_are_not_loops():
    assert repeated_tail("no, no, no, " * 2 + "fine ") == 0  # 12 words in all: text, not a loop
    assert repeated_tail("yes " * 24 + "x") == len("yes " * 8) - 1  # one word 24 times: a span of 8, thrice
    words = " ".join(f"w{i}" for i in range(70)) + " "
    assert repeated_tail(words * 3 + "x") == 0  # longer than max_period
    assert repeated_tail(words * 3 + "x", max_period=70) == len(words) - 1


def streamed_cut(text: str) -> str:
    """What is kept of `text` when it is checked word by word as it streams (as answer.ask_ids does); all of it
    when no loop is found."""
    for i, c in enumerate(text):
        if c.isspace() and (cut := repeated_tail(text[:i + 1])):
            return text[:cut]
    return text


ITEM = "The company has a range of products, including sonar and electronic charts, and has a range of products."


def test_numbered_list_that_loops_is_cut():
    """The default model on report.pdf page 2: the list number changes on every line, the rest repeats."""
    intro = "1. The products fall into three groups.\n"
    text = intro + "".join(f"{i}. {ITEM}\n" for i in range(2, 12)) + "12. The"
    assert streamed_cut(text) == intro + f"2. {ITEM}"  # the first copy, without the next line's "3."
    assert text[:repeated_tail(text)] == intro + "".join(f"{i}. {ITEM}\n" for i in range(2, 10)).rstrip()
    bullets = intro + f"- {ITEM}\n" * 3 + "- The"
    assert streamed_cut(bullets) == intro + f"- {ITEM}"  # as a bulleted loop is
    assert repeated_tail(intro + "".join(f"{i}. {ITEM}\n" for i in range(2, 4)) + "4. The") == 0  # two copies
    inline = "".join(f"Step {i}: {ITEM} " for i in range(1, 5))  # a counter inside the line, one paragraph
    assert streamed_cut(inline) == f"Step 1: {ITEM}"
    two = "".join(f"{2 * i + 1}. {ITEM}\n{2 * i + 2}. Heat pumps are cheap to run.\n" for i in range(4))
    assert streamed_cut(two) == f"1. {ITEM}\n2. Heat pumps are cheap to run."  # two items: numbers step by 2


def test_numbers_that_do_not_count_are_no_loop():
    """Lines equal but for their values (a table), or counters that jump, are content; so are real lists."""
    table = "".join(f"| {year} | revenue {rev} million | margin {m} percent | up |\n"
                    for year, rev, m in [(2019, 4.2, 12), (2020, 4.5, 14), (2021, 3.9, 9), (2022, 5.1, 15),
                                         (2023, 5.6, 13)])
    assert streamed_cut(table) == table
    jumps = "".join(f"{i}. {ITEM}\n" for i in (3, 5, 6, 9, 10))
    assert streamed_cut(jumps) == jumps
    real = ("1. Revenue rose by 12 percent to 4.2 million kroner in 2023. 2. Costs fell by 3 percent as the "
            "new plant opened. 3. The board approved a dividend of 1.5 kroner per share. 4. Staff grew to 310. ")
    assert streamed_cut(real) == real
    steps = "".join(f"Year {2019 + i}: sales of {100 + 7 * i} units, {20 + i} stores open. " for i in range(6))
    assert streamed_cut(steps) == steps  # every number counts on, but 3 of each 8 words change: a table


def test_loop_check_stays_cheap():
    """One check per decoded word: well under a millisecond on a full window, loop or not."""
    import time

    text = "".join(f"Sentence number {i} says something new about item {i * 7 % 13}. " for i in range(2000))
    start = time.perf_counter()
    for _ in range(100):
        repeated_tail(text)
    assert (time.perf_counter() - start) / 100 < 0.005


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("max_new", [5, 40])  # 40: on CUDA the steps after the first replay a graph
def test_kept_turn_holds_exactly_the_answer(max_new, device):
    """chat --keep-history: after an answer the cache equals a one-pass run of prefix + question + answer ids."""
    from tiny import tiny_model, tiny_tokenizer

    from tmixcli import answer, generate, opening, prompt
    from tmixcli.config import Settings
    from tmixcli.documents import Document
    from tmixcli.models import LoadedModel

    tok = tiny_tokenizer("llama")
    lm = LoadedModel(tiny_model("llama").to(device), tok, "tiny", torch.device(device), torch.float32)
    s = Settings(method="dense", use_cache=False, max_new_tokens=max_new)
    ctx = opening.open_document(lm, Document("d.txt", "The project manager is Tomas Brekke. " * 4, "0" * 64, None), s)
    q_ids = prompt.question_ids(tok, "Who is the project manager?", None)
    ans = answer.ask_ids(ctx, q_ids, s, keep=True)
    assert len(ans.ids) == ans.new_tokens >= 1
    assert ctx.cache.get_seq_length() == len(ctx.prefix_ids) + len(q_ids) + ans.new_tokens
    fresh, _ = generate.prefill(lm.model, ctx.prefix_ids + q_ids + ans.ids)
    for kept, ref in zip(ctx.cache.layers, fresh.layers, strict=True):
        torch.testing.assert_close(kept.keys, ref.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(kept.values, ref.values, rtol=1e-4, atol=1e-5)


def test_kept_turn_after_a_cut_loop_holds_one_copy(monkeypatch):
    from tiny import tiny_model, tiny_tokenizer

    from tmixcli import answer, generate, opening, prompt
    from tmixcli.config import Settings
    from tmixcli.documents import Document
    from tmixcli.models import LoadedModel

    tok = tiny_tokenizer("llama")
    lm = LoadedModel(tiny_model("llama"), tok, "tiny", torch.device("cpu"), torch.float32)
    s = Settings(method="dense", use_cache=False, max_new_tokens=400)
    ctx = opening.open_document(lm, Document("d.txt", "The budget is four million kroner.", "0" * 64, None), s)
    loop = tok(" " + HEAT.strip(), add_special_tokens=False).input_ids

    def looping(model, cache, suffix_ids, *args, on_first=None, **kw):  # feeds the cache as generate_ids does
        generate.extend(model, cache, suffix_ids)
        for tok in loop * 10:
            yield tok
            generate.extend(model, cache, [tok])

    monkeypatch.setattr(generate, "generate_ids", looping)
    q_ids = prompt.question_ids(tok, "What heats the corner?", None)
    ans = answer.ask_ids(ctx, q_ids, s, keep=True)
    assert ans.stop_reason == "repeat" and ans.text.strip() == HEAT.strip()
    assert ctx.cache.get_seq_length() == len(ctx.prefix_ids) + len(q_ids) + len(loop)
    fresh, _ = generate.prefill(lm.model, ctx.prefix_ids + q_ids + loop)
    torch.testing.assert_close(ctx.cache.layers[-1].keys, fresh.layers[-1].keys, rtol=1e-4, atol=1e-5)


def test_loop_check_reads_only_the_tail():
    long_text = "".join(f"Sentence number {i} says something new. " for i in range(2000))  # ~80K chars, no loop
    assert repeated_tail(long_text) == 0
    looped = long_text + HEAT * 3
    assert looped[:repeated_tail(looped)] == long_text + HEAT.rstrip()


@pytest.mark.parametrize("keep", [True, False])
def test_interrupted_turn_leaves_the_cache_as_before(keep):
    """Ctrl-C in the middle of an answer (chat) drops the whole turn, also with --keep-history."""
    from tiny import tiny_model, tiny_tokenizer

    from tmixcli import answer, opening, prompt
    from tmixcli.config import Settings
    from tmixcli.documents import Document
    from tmixcli.models import LoadedModel

    tok = tiny_tokenizer("llama")
    lm = LoadedModel(tiny_model("llama"), tok, "tiny", torch.device("cpu"), torch.float32)
    s = Settings(method="dense", use_cache=False, max_new_tokens=30, stop_repeats=False)
    ctx = opening.open_document(lm, Document("d.txt", "The budget is four million kroner. " * 3, "0" * 64, None), s)
    base = ctx.cache.get_seq_length()
    q_ids = prompt.question_ids(tok, "What is the budget?", None)
    seen = []

    def interrupt(piece):
        seen.append(piece)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        answer.ask_ids(ctx, q_ids, s, interrupt, keep=keep)
    assert ctx.cache.get_seq_length() == base
    assert all(layer.keys.shape[-2] == base for layer in ctx.cache.layers)
    again = answer.ask_ids(ctx, q_ids, s, keep=keep)
    assert again.new_tokens >= 3 and "".join(seen) == again.text[:len("".join(seen))]


def test_looping_answer_is_cut_and_trimmed(capsys, monkeypatch, tmp_path, tiny_dir):
    """An answer that loops stops after three copies of the loop; --json keeps one copy, streaming shows all."""
    from transformers import AutoTokenizer

    from tmixcli import generate

    said = "The budget for the library renovation is four million kroner."  # 10 words
    loop = AutoTokenizer.from_pretrained(tiny_dir)(" " + said, add_special_tokens=False).input_ids
    closed = []

    def looping(model, cache, suffix_ids, stops, max_new_tokens=256, *rest, on_first=None):
        try:
            on_first()
            yield from (loop * 100)[:max_new_tokens]
        finally:
            closed.append(True)

    monkeypatch.setattr(generate, "generate_ids", looping)
    doc = tmp_path / "budget.txt"
    doc.write_text("The budget is four million kroner.")
    args = (str(doc), "Budget?", "--model", tiny_dir, "--max-new-tokens", "400", "--no-cache", *TINY)
    full = ask_json(capsys, *args, "--no-stop-repeats")
    cut = ask_json(capsys, *args)
    assert full["stop_reason"] == "length" and full["new_tokens"] == 400
    assert cut["stop_reason"] == "repeat" and 3 * len(loop) < cut["new_tokens"] < 4 * len(loop)
    assert cut["answer"] == said and closed == [True, True]
    code, out, err = run(capsys, "ask", *args)  # streamed: all three copies shown, then the status says why
    assert code == 0 and out.strip().startswith(" ".join([said] * 3)) and "began to repeat itself" in err
