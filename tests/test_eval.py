"""Synthetic tasks, scoring, `tmix eval` and its --facts (tiny random Llama + the real tokenizer)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from tmixcli.config import AttentionConfig
from tmixcli.eval_answer import _answered, answer_key
from tmixcli.eval_prefill import SharedPrefix, case_caches
from tmixcli.eval_run import hopeless, run_eval
from tmixcli.evaluate import eval_command, format_table
from tmixcli.listopts import parse_lengths
from tmixcli.paths import cache_dir
from tmixcli.prompt import build_prompt
from tmixcli.tasks import TASKS, make_cases, score

DEFAULT_DIR = cache_dir() / "models" / "smollm2-135m-instruct"  # resolved before the per-test cache dir
ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_init": 4, "n_local": 64, "last_n": 16}


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))


def test_lengths_within_ten_percent(tok) -> None:
    for length in (600, 1500):
        for case in make_cases(tok, TASKS, 4, length, seed=3):
            n = len(build_prompt(tok, case.document, case.question).ids)
            assert n == case.tokens
            assert abs(n - length) <= 0.1 * length, (case.task, n)


def test_seed_reproducible(tok) -> None:
    a = [c.to_dict() for c in make_cases(tok, TASKS, 4, 500, seed=1)]
    b = [c.to_dict() for c in make_cases(tok, TASKS, 4, 500, seed=1)]
    c = [c.to_dict() for c in make_cases(tok, TASKS, 4, 500, seed=2)]
    assert a == b
    assert all(x["document"] != y["document"] for x, y in zip(a, c, strict=True))


def test_answers_once_and_tasks(tok) -> None:
    cases = make_cases(tok, TASKS, 8, 700, seed=0)
    assert [c.task for c in cases] == list(TASKS) * 2
    for case in cases:
        if case.task == "vt":
            value = case.question.split("value ")[1].split("?")[0]
            assert case.document.count(f"= {value}.") == 1
            assert all(f"VAR {v} =" in case.document for v in case.answers)
        else:
            assert all(case.document.count(a) == 1 for a in case.answers)
        if case.task == "needle":
            assert re.findall(r"\d+", case.document) == case.answers  # the haystack has no digits
        assert case.reference.startswith(case.lead) and score(case.reference, case.answers)
    assert len({c.depth for c in cases}) == 2


def test_score() -> None:
    assert score("The number is 1234567.", ["1234567"])
    assert score("It is 1,234,567", ["1234567"])
    assert not score("It is 1234568", ["1234567"])
    assert score("VAR abcde and QWERT", ["ABCDE", "QWERT"])
    assert not score("only ABCDE", ["ABCDE", "QWERT"])
    assert parse_lengths("2k, 6k,3000") == [2048, 6144, 3000]
    assert answer_key("The special magic number for a-b is 5295152. This is") == "5295152"
    assert answer_key("are 2,765,716, 6890") == "2765716 6890"
    assert answer_key("I do not know.\nMore") == "i do not know."


def test_reused_prefix_and_layers_equal_full_prefill(tiny) -> None:
    from tmixcli.attention import attach
    from tmixcli.generate import prefill

    g = torch.Generator().manual_seed(0)
    hay = torch.randint(0, 1000, (400,), generator=g).tolist()
    ids = hay[:250] + [7, 8, 9] + hay[250:-20]  # a "needle" inserted at 250, a different total length
    methods = [AttentionConfig("trimix", start_layer=s, **SMALL) for s in (0, 2)]
    shared = SharedPrefix(tiny.model, hay, methods)
    assert shared.usable(ids) == 250 and shared.usable(hay[:200]) == 200 - 16 - 1
    got = dict(case_caches(tiny.model, ids, methods, shared))
    alone = dict(case_caches(tiny.model, ids, methods))
    for cfg in [None, *methods]:
        attach(tiny.model, cfg or AttentionConfig(method="dense"))
        full, _ = prefill(tiny.model, ids)
        for mine, solo, ref in zip(got[cfg], alone[cfg], full.layers, strict=True):
            for a, b, r in zip(mine, solo, (ref.keys, ref.values), strict=True):
                torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(b, r)  # without the shared prefix: same shapes of work, same bits


def test_tiny_eval(tiny) -> None:
    methods = [AttentionConfig("trimix", start_layer=s, **SMALL) for s in (1, 3)]
    res = run_eval(tiny, [400], 2, methods, ["needle", "multikey"], seed=0, max_new_tokens=4, progress=False)
    assert list(res["methods"]) == ["dense", "trimix@1", "trimix@3"]
    dense = res["methods"]["dense"]["overall"]
    assert dense["n"] == 2 and dense["agreement"] == 1.0 and dense["kl"] == 0.0
    for name in ("trimix@1", "trimix@3"):
        s = res["methods"][name]["by_length"]["400"]
        assert s["n"] == 2 and 0 <= s["agreement"] <= 1 and s["kl"] >= 0
    assert len(res["records"]) == 6
    assert "trimix@3" in format_table(res)
    json.dumps(res)


@pytest.mark.parametrize("text,first", [
    ("The project is managed by Dr. Amelia Castellanos. The", "The project is managed by Dr. Amelia Castellanos."),
    ("It costs approx. 5 million euros. It", "It costs approx. 5 million euros."),
    ("See e.g. the table on page 4. Next", "See e.g. the table on page 4."),
    ("The U.S. office is in Boston. It", "The U.S. office is in Boston."),
    ("The report is by J. Smith. He", "The report is by J. Smith."),
    ("Mrs. Berg and Prof. K. L. Olsen lead it. They", "Mrs. Berg and Prof. K. L. Olsen lead it."),
    ("1. Dr. Amelia Castellanos. 2", "1. Dr. Amelia Castellanos."),
    ("It is item No. 5 on the list. No", "It is item No. 5 on the list."),
    ("No. The manager is Tomas Brekke. He", "No."),
    ("Revenue was 48.7 million. The", "Revenue was 48.7 million."),
    ("It ended (in 2023). Then", "It ended (in 2023)."),
    ("Yes! It", "Yes!"),
    ("It is in Tromsø.\n", "It is in Tromsø."),
])
def test_fact_answers_end_at_sentences_not_abbreviations(text: str, first: str) -> None:
    from tmixcli.facts import first_sentence, sentence_done

    assert sentence_done(text) and first_sentence(text) == first
    for cut in range(len(first) + 1):  # while generating: never done before the end
        assert not sentence_done(first[:cut]), first[:cut]


def test_answer_stops_after_first_sentence() -> None:
    assert _answered("The special magic number for quiet-lizard is 5295152.")
    assert _answered("The variables are ABCDE, FGHJK and KLMNO.")
    assert not _answered("1.") and not _answered("1. ABCDE\n2.") and not _answered("It is a number.")


def test_hopeless() -> None:
    def rec(method: str, correct: bool, agree: bool = True) -> dict:
        return {"method": method, "correct": correct, "agree": agree}

    ok = [rec("dense", True), rec("m", True)]
    assert not hopeless(ok, 20, "m")
    assert hopeless(ok + [rec("dense", True), rec("m", True, agree=False)] * 2, 20, "m")  # 2 of 20 differ
    assert not hopeless([rec("dense", True), rec("m", False, agree=False)], 20, "m")
    assert hopeless([rec("dense", True), rec("m", False)] * 3, 4, "m")  # 3 behind with 1 case left


def test_eval_command_json(tiny, tmp_path: Path) -> None:
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)
    args = ["eval", "--model", str(tmp_path / "m"), "--lengths", "300", "--cases", "1", "--tasks", "needle",
            "--start-layers", "2,2", "--n-local", "64", "--last-n", "16", "--max-new-tokens", "3", "--json",
            "--quiet"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert set(res["methods"]) == {"dense", "trimix@2"} and res["params"]["n_local"] == 64
    assert res["model"] == "m" and "model_id" not in res  # named as ask --json names it
    assert res["methods"]["trimix@2"]["overall"]["n"] == 1  # a start layer given twice runs once


def test_eval_refuses_before_loading(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start layers past the model's depth and lengths past its context are refused from its config on disk."""
    import tmixcli.models as models
    from tmixcli.errors import TmixError

    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")

    def no_load(*args, **kw):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(models, "load_model", no_load)
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)
    base = ["eval", "--model", str(tmp_path / "m"), "--cases", "1"]
    for extra, needle in [(["--start-layers", "4"], "outside the model's 4 layers"),
                          (["--start-layers", "-1"], "negative"), (["--lengths", "0"], "at least 1 token"),
                          (["--lengths", "4k", "--start-layers", "1"], "exceed the model's context (4096)"),
                          (["--n-local", "0", "--start-layers", "1"], "--n-local must be at least 1, not 0")]:
        out = CliRunner().invoke(app, base + extra)
        assert isinstance(out.exception, TmixError) and needle in str(out.exception), (extra, out.exception)


def test_eval_lengths_checked_before_any_prefill(tok) -> None:
    from tmixcli.errors import TmixError
    from tmixcli.eval_plan import check_lengths, plan_cases
    from tmixcli.listopts import parse_ints
    from tmixcli.modelinfo import ModelLimits, model_limits

    assert model_limits() == ModelLimits(30, 8192)  # the default model's config, read without loading it
    assert model_limits("no/such/model") == model_limits("nobody/nothing-here") == ModelLimits()
    assert parse_ints("9,15,9", "--start-layers") == [9, 15]
    with pytest.raises(TmixError, match="at least 1 token"):
        parse_lengths("2k,0")
    with pytest.raises(TmixError, match=r"9216 prompt tokens \+ 24 for the answer exceed the model's context \(8192\)"):
        check_lengths([2048, 9216], 8192, 24)
    check_lengths([9216], None, 24)  # context not known yet: left to the check after the load
    with pytest.raises(TmixError, match="its facts and question alone take"):
        plan_cases(tok, [20], 1, ["needle"], 0, 8192, 24)
    with pytest.raises(TmixError, match="its prompts take up to"):  # prompts run a little past their length
        plan_cases(tok, [990], 4, ["needle", "vt"], 0, 1014, 24)
    assert [len(c) for c in plan_cases(tok, [300, 400], 2, ["needle"], 0, 8192, 24)] == [2, 2]


@pytest.mark.model
def test_default_model_small_eval() -> None:
    from tmixcli.models import load_model

    if not (DEFAULT_DIR / "config.json").is_file():
        pytest.skip("default model not converted yet")
    lm = load_model(str(DEFAULT_DIR), progress=False)
    res = run_eval(lm, [500], 1, [AttentionConfig("trimix", start_layer=15, n_local=128, last_n=32)],
                   ["needle"], seed=0, max_new_tokens=20, progress=False)
    assert res["methods"]["dense"]["overall"]["correct"] == 1
    assert res["methods"]["trimix@15"]["overall"]["kl"] < 0.5


def test_facts_file_checked_and_matching() -> None:
    from tmixcli.errors import TmixError
    from tmixcli.facts import FactSet, matches

    fs = FactSet.from_file(ROOT / "sample_docs" / "questions.json")
    assert len(fs.prompts) == 4 and len(fs.facts) == 19 and fs.facts[0].accept == ("48.7 million",)
    assert all((fs.root / d).is_file() for p in fs.prompts for d in p)
    for bad, needle in [({"facts": []}, "non-empty"), ({"facts": [{"doc": "a", "question": "q?"}]}, "accept"),
                        ({"facts": [{"doc": "a", "question": "q", "accept": ["x"]}], "prompts": [["b"]]}, "holds a"),
                        ({"facts": [{"doc": "a", "question": "q", "answer": "x"}], "prompts": "a"}, "lists")]:
        with pytest.raises(TmixError, match=needle):
            FactSet.from_dict(bad, ROOT)
    one = FactSet.from_dict({"facts": [{"doc": "a.txt", "question": "q", "answer": "x"}]}, ROOT)
    assert one.prompts == (("a.txt",),)  # without "prompts", each document alone
    assert matches("They delivered 1,140 units.", ("1,140",)) and matches("1140 units", ("1,140",))
    assert matches("It filed 6 patents", ("six", "6")) and not matches("It filed 16 patents", ("six", "6"))
    assert not matches("in 1186", ("86",)) and matches("Sick leave was 3.9 percent.", ("3.9 percent",))


def test_both_scorers_read_an_answer_alike() -> None:
    """One normalisation for tasks.score and facts.matches (they had drifted: facts took no plain space as a
    thousands separator, tasks did but left the answers as written and spacing as it came)."""
    from tmixcli.facts import matches

    for text, answer in [("It is 1 234 567.", "1234567"), ("Revenue: 4\u00a0200 kroner", "4200"),
                         ("It is 1234567", "1,234,567"), ("It is 1\u202f234\u202f567", "1 234 567")]:
        assert score(text, [answer]) and matches(text, (answer,)), (text, answer)
    assert matches("In 2023 340 units were sold", ("340",)) and matches("Q2 340 units", ("340",))  # two numbers
    assert score("The number is\n1,234,567.", ["1234567"]) and matches("Project\n  Forest", ("project forest",))
    assert not matches("It is 12345,678", ("12345678",))  # not written in threes: no thousands separator


def test_tiny_facts_eval(tiny, tmp_path: Path) -> None:
    from tmixcli.facts import FactSet, format_table, passes, run_facts

    (tmp_path / "a.txt").write_text("The budget is 12 kroner. " * 30)
    (tmp_path / "b.txt").write_text("The manager is Tomas Brekke. " * 30)
    fs = FactSet.from_dict({"prompts": [["a.txt"], ["a.txt", "b.txt"]], "facts": [
        {"doc": "a.txt", "question": "What is the budget?", "accept": ["12 kroner"]},
        {"doc": "b.txt", "question": "Who is the manager?", "answer": "Tomas Brekke"}]}, tmp_path)
    methods = [AttentionConfig("trimix", start_layer=s, **SMALL) for s in (1, 4)]
    res = run_facts(tiny, fs, methods, max_new_tokens=4, progress=False)
    assert res["prompts"] == ["a.txt", "a.txt + b.txt"] and len(res["records"]) == 3 * 3
    m = res["methods"]
    assert m["dense"]["agreement"] == 1.0 and m["dense"]["kl"] == 0.0 and m["dense"]["n"] == 3
    four = [r["text"] for r in res["records"] if r["method"] == "trimix@4"]
    assert four == [r["text"] for r in res["records"] if r["method"] == "dense"]  # start = num_layers is dense
    assert m["trimix@4"]["kl"] < 1e-9 and passes(m, "trimix@4") and "trimix@1" in format_table(res)
    json.dumps(res)


def test_facts_prompts_checked_before_any_prefill(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmixcli.generate as generate
    from tmixcli.errors import TmixError
    from tmixcli.facts import FactSet, run_facts

    (tmp_path / "a.txt").write_text("The budget is 12 kroner. ")
    (tmp_path / "b.txt").write_text("The manager is Tomas Brekke. " * 800)
    fs = FactSet.from_dict({"prompts": [["a.txt"], ["b.txt"]], "facts": [
        {"doc": "a.txt", "question": "What is the budget?", "answer": "12"},
        {"doc": "b.txt", "question": "Who is the manager?", "answer": "Tomas Brekke"}]}, tmp_path)

    def no_prefill(*args, **kw):
        raise AssertionError("prefilled")
    monkeypatch.setattr(generate, "prefill", no_prefill)
    with pytest.raises(TmixError, match="b.txt: .* prompt tokens do not fit the model's 4096"):
        run_facts(tiny, fs, [], progress=False)


@pytest.mark.parametrize("argv,message", [
    (["--n-local", "0"], "--n-local must be at least 1, not 0"),
    (["--last-n", "-1"], "--last-n must be at least 0, not -1"),
    (["--n-init", "-1"], "--n-init must be at least 0, not -1"),
    (["--seed", "-1"], "--seed must be from 0 to 2**64-1 (18446744073709551615), not -1"),
    (["--lengths", "1k,,2k"], "--lengths has an empty item in '1k,,2k': remove the extra comma or give the missing "
     "value"),
    (["--tasks", "needle,,vt"], "--tasks has an empty item in 'needle,,vt': remove the extra comma or give the "
     "missing value"),
    (["--start-layers", "9,,20"], "--start-layers has an empty item in '9,,20': remove the extra comma or give the "
     "missing value"),
    (["--start-layers", "9,x"], "--start-layers takes comma-separated integers, not '9,x'"),
])
def test_eval_option_errors_name_the_option(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                            argv: list[str], message: str) -> None:
    """One line naming the option, before the model loads; an empty item is a likely typo, not skipped."""
    import tmixcli.models as models
    from runcli import run

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    code, out, err = run(capsys, "eval", *argv)
    assert (code, out, err) == (2, "", f"tmix: error: {message}\n")


def test_list_items() -> None:
    from tmixcli.errors import TmixError
    from tmixcli.listopts import items

    assert items(" a, b ,c", "--x") == ["a", "b", "c"] and items("", "--x") == items(" , ", "--x") == []
    for text in ("a,,b", "a,", ",a", "a, ,b"):
        with pytest.raises(TmixError, match=f"^--x has an empty item in {text!r}"):
            items(text, "--x")
