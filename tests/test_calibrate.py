"""`tmix calibrate`: the calibration attention, the run, candidates and profiles (tiny random Llama + the real
tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tmix_kernels.blockwise import triangle_attention_blockwise
from tmixcli.attention import dense_attention
from tmixcli.calib_attention import fast_middle_scaled_attention, middle_scaled_attention
from tmixcli.calib_profile import load_profile, profile_path
from tmixcli.calib_run import pick_candidates, run_calibrate
from tmixcli.tasks import make_cases

SMALL = {"n_init": 4, "n_local": 64, "last_n": 16}


@pytest.fixture()
def solved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer scores right: the random tiny model 'solves' the task densely, so its eval can verify a start
    layer (a model that solves nothing leaves calibrate nothing to verify against)."""
    import tmixcli.tasks as tasks

    monkeypatch.setattr(tasks, "score", lambda text, answers: True)


@pytest.mark.parametrize("lq", [300, 40])
def test_calibration_attention_matches_triangle_and_dense(lq: int) -> None:
    torch.manual_seed(0)
    s = 300
    q = torch.randn(1, 6, lq, 16)
    k, v = torch.randn(1, 2, s, 16), torch.randn(1, 2, s, 16)
    total = s if lq == s else s - lq  # suffix rows (lq < s) attend densely, as after a prefill
    tri = triangle_attention_blockwise(q, k, v, 4, 32, 20, total)
    dense = dense_attention(q, k, v, None)
    at0 = middle_scaled_attention(q, k, v, torch.tensor(0.0), 4, 32, 20, total, chunk=64)
    at1 = middle_scaled_attention(q, k, v, torch.tensor(1.0), 4, 32, 20, total, chunk=64)
    torch.testing.assert_close(at0, tri, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(at1, dense, atol=1e-5, rtol=1e-4)
    if lq == s:
        assert (tri - dense).abs().max() > 1e-3  # the middle region matters here


@pytest.mark.parametrize("total", [300, 250, 100])
def test_fast_calibration_attention_matches_reference(total: int) -> None:
    torch.manual_seed(2)
    q = torch.randn(1, 6, 300, 16, requires_grad=True)
    k, v = torch.randn(1, 2, 300, 16), torch.randn(1, 2, 300, 16)
    w = torch.randn(1, 300, 6, 16)
    for a in (0.0, 0.5):
        ref = middle_scaled_attention(q, k, v, torch.tensor(a), 4, 32, 20, total, chunk=64)
        fast = fast_middle_scaled_attention(q, k, v, torch.tensor(a), 4, 32, 20, total)
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    grads = []
    for fn, kw in ((middle_scaled_attention, {"chunk": 64}), (fast_middle_scaled_attention, {})):
        alpha = torch.tensor(1.0, requires_grad=True)
        q.grad = None
        (fn(q, k, v, alpha, 4, 32, 20, total, **kw) * w).sum().backward()
        grads.append((alpha.grad.clone(), q.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-4)


def test_calibration_gradient_matches_finite_difference() -> None:
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 120, 8, dtype=torch.float64) for _ in range(3))
    w = torch.randn(1, 120, 2, 8, dtype=torch.float64)

    def f(a: torch.Tensor) -> torch.Tensor:
        return (middle_scaled_attention(q, k, v, a, 2, 16, 8, chunk=32) * w).sum()

    alpha = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    f(alpha).backward()
    eps = 1e-4
    fd = (f(torch.tensor(1 + eps, dtype=torch.float64)) - f(torch.tensor(1 - eps, dtype=torch.float64))) / (2 * eps)
    assert abs(alpha.grad.item() - fd.item()) < 1e-3 * max(1.0, abs(fd.item()))


def test_tiny_calibrate_and_profile(tiny, solved) -> None:
    prof = run_calibrate(tiny, samples=1, length=400, cases=1, tasks=["needle"], tolerance=1e9, seed=0,
                         progress=False, **SMALL)
    n = tiny.model.config.num_hidden_layers
    assert len(prof["importance"]) == n and all(x >= 0 for x in prof["importance"])
    assert any(x > 0 for x in prof["importance"][1:])
    assert prof["candidates"] == [1, 3]
    loaded = load_profile(prof["fingerprint"])
    assert loaded is not None and loaded["start_layer"] == prof["start_layer"]
    assert loaded["params"] == SMALL and set(loaded) >= {"model", "importance", "eval", "created",
                                                         "tmix_version"}
    assert tiny.model.config._attn_implementation == "tmix"
    assert load_profile("0" * 64) is None
    path = profile_path(prof["fingerprint"])
    path.write_text("{not json")
    assert load_profile(prof["fingerprint"]) is None
    path.write_text(json.dumps({"fingerprint": prof["fingerprint"], "start_layer": "x"}))
    assert load_profile(prof["fingerprint"]) is None


def test_shipped_profile_used_when_none_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmixcli.calib_profile as calib_profile

    fp = "ab" * 32
    monkeypatch.setattr(calib_profile, "BUILTIN_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / f"{fp[:24]}.json").write_text(json.dumps({"fingerprint": fp, "start_layer": 9}))
    assert load_profile(fp)["source"] == "shipped" and load_profile(fp)["start_layer"] == 9
    calib_profile.save_profile({"fingerprint": fp, "start_layer": 12})
    assert load_profile(fp)["source"] == "saved" and load_profile(fp)["start_layer"] == 12
    assert load_profile("cd" * 32) is None


def test_merge_candidate_evals() -> None:
    from tmixcli.calib_run import _merge_evals, recommend

    def rec(method: str, start: int | None, ok: bool, agree: bool = True) -> dict:
        return {"method": method, "start_layer": start, "correct": ok, "agree": agree, "same_text": agree,
                "kl": 0.0, "seconds": 1.0, "length": 100, "task": "needle"}

    first = {"lengths": [100], "stopped_early": True, "wall_s": 2.0, "methods": {"dense": {}, "trimix@3": {}},
             "records": [rec("dense", None, True), rec("trimix@3", 3, True, agree=False)] * 2}
    second = {"lengths": [100], "stopped_early": False, "wall_s": 5.0, "methods": {"dense": {}, "trimix@5": {}},
              "records": [rec("dense", None, True), rec("trimix@5", 5, True)] * 4}
    merged = _merge_evals([first, second])
    assert merged["methods"]["dense"]["overall"]["n"] == 4 and merged["wall_s"] == 7.0
    assert merged["methods"]["trimix@3"]["stopped_early"] and not merged["methods"]["trimix@5"]["stopped_early"]
    assert recommend(merged) == 5 and _merge_evals([]) is None


def test_pick_candidates() -> None:
    assert pick_candidates([5.0, 1.0, 0.5, 0.01, 0.01, 0.0], tolerance=0.05) == [3, 5]
    assert pick_candidates([5.0, 1.0, 0.5, 0.5], tolerance=0.0) == [3]


def test_calibrate_facts_step_up(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start layer that fails on the facts moves up two layers; dense answers once for all of them."""
    import tmixcli.facts as facts_mod
    from tmixcli.calib_run import confirm_on_facts

    (tmp_path / "a.txt").write_text("The budget is 12 kroner. " * 30)
    fs = facts_mod.FactSet.from_dict({"facts": [{"doc": "a.txt", "question": "Budget?", "answer": "12"}]}, tmp_path)
    monkeypatch.setattr(facts_mod, "passes", lambda summary, name: summary[name]["start_layer"] >= 3)
    found, check = confirm_on_facts(tiny, fs, 1, progress=False, **SMALL)
    assert found == 3 and list(check["methods"]) == ["dense", "trimix@1", "trimix@3"]
    assert [r["method"] for r in check["records"]] == ["dense", "trimix@1", "trimix@3"]
    monkeypatch.setattr(facts_mod, "passes", lambda summary, name: False)
    assert confirm_on_facts(tiny, fs, 2, progress=False, **SMALL)[0] is None


def test_calibration_lengths_and_short_profiles(tiny, tok, solved) -> None:
    """Too short to calibrate is refused; a profile calibrated under twice the triangle's span is neither saved nor
    used; --cases 0 says the start layer is not verified; the status line names the calibration length."""
    from tmixcli.calib_profile import profile_label, save_profile
    from tmixcli.calib_report import format_report
    from tmixcli.calib_run import importance_profile
    from tmixcli.errors import TmixError

    with pytest.raises(TmixError, match="--length 84 is too short to calibrate.*give at least 85"):
        run_calibrate(tiny, samples=1, length=84, cases=1, progress=False, **SMALL)
    with pytest.raises(TmixError, match="--grad-length 80 is too short"):
        run_calibrate(tiny, samples=1, length=400, grad_length=80, cases=1, progress=False, **SMALL)
    with pytest.raises(TmixError, match="--length 5000: 5000 prompt tokens"):
        run_calibrate(tiny, samples=1, length=5000, cases=1, progress=False, **SMALL)
    short = run_calibrate(tiny, samples=1, length=150, cases=1, tolerance=1e9, progress=False, **SMALL)
    assert "path" not in short and "needs --length 168" in short["not_saved"]
    assert "profile not saved: at 150 tokens" in format_report(short)
    assert load_profile(short["fingerprint"]) is None
    save_profile(short)  # saved by an older tmix: not used either
    assert load_profile(short["fingerprint"]) is None
    skipped = run_calibrate(tiny, samples=1, length=400, cases=0, progress=False, **SMALL)
    assert skipped["start_layer"] is None and not skipped["verified"]
    assert "recommended start layer: not verified (eval skipped" in format_report(skipped)
    assert profile_label({"settings": {"length": 6144}, "source": "shipped"}) == (
        "calibrated profile at 6K tokens, shipped with tmix")
    assert profile_label({"settings": {"length": 3000}}) == "calibrated profile at 3000 tokens"
    cases = make_cases(tok, ["needle"], 1, 200)  # every prefix row within last_n: no middle region anywhere
    prof = importance_profile(tiny, cases, 4, 64, 512, progress=False)
    assert prof["importance"] == [0.0] * tiny.model.config.num_hidden_layers


def test_nothing_verified_or_saved_when_dense_fails_every_case(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agreeing with a dense model that gets every case wrong measures nothing: no start layer, no profile."""
    import tmixcli.tasks as tasks
    from tmixcli.calib_report import format_report

    monkeypatch.setattr(tasks, "score", lambda text, answers: False)
    prof = run_calibrate(tiny, samples=1, length=400, cases=1, tasks=["needle"], tolerance=1e9, progress=False,
                         **SMALL)
    why = ("dense attention got 0 of 1 case right at 400 tokens: nothing to verify a start layer against (calibrate "
           "on --tasks the model solves densely; see tmix eval)")
    assert prof["no_signal"] == why and prof["start_layer"] is None and not prof["verified"]
    assert "path" not in prof and load_profile(prof["fingerprint"]) is None
    report = format_report(prof)
    assert report.endswith(f"recommended start layer: none: {why}\nprofile not saved")
    assert "verified" not in report.replace("nothing to verify", "")


def test_a_saved_profile_says_what_it_overrides(tiny, solved, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Later runs take the saved start layer instead of the shipped (or default) one: the report says so, and how
    to go back."""
    import tmixcli.calib_profile as calib_profile
    from tmixcli.calib_report import format_report

    prof = run_calibrate(tiny, samples=1, length=400, cases=1, tasks=["needle"], tolerance=1e9, progress=False,
                         **SMALL)
    assert prof["without_profile"] == {"start_layer": 2, "source": "default"}  # half of 4 layers
    how = "verified on 1 case" if prof["verified"] else "no candidate passed"
    assert format_report(prof).endswith(
        f"profile saved: {prof['path']}\nlater runs of this model (ask, prefill, chat, bench) use its start layer "
        f"{prof['start_layer']} ({how}) instead of start layer 2 (default); delete the file to go back")
    fp = prof["fingerprint"]
    monkeypatch.setattr(calib_profile, "BUILTIN_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / f"{fp[:24]}.json").write_text(json.dumps(
        {"fingerprint": fp, "start_layer": 3, "settings": {"length": 6144}}))
    assert calib_profile.without_saved(fp, "llama", 4) == {
        "start_layer": 3, "source": "calibrated profile at 6K tokens, shipped with tmix"}


def test_calibrate_json_names_and_status_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tiny,
                                              solved) -> None:
    """`model` as ask --json names it, `created` to the second as the KV metadata; a saved profile is told on stderr."""
    import re

    import tmixcli.models as models
    from runcli import run
    from tmixcli.calib_report import override_line

    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny)
    code, out, err = run(capsys, "calibrate", "--length", "400", "--samples", "1", "--cases", "1", "--tolerance",
                         "1e9", "--n-init", "4", "--n-local", "64", "--last-n", "16", "--json")
    assert code == 0, err
    prof = json.loads(out)
    assert prof["model"] == "tiny-llama" and "model_id" not in prof
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", prof["created"]), prof["created"]
    assert err.splitlines()[-1] == f"calibrate: profile saved: {prof['path']}; {override_line(prof)}"


@pytest.mark.parametrize("argv,message", [
    (["--n-local", "0"], "--n-local must be at least 1, not 0"),
    (["--last-n", "-1"], "--last-n must be at least 0, not -1"),
    (["--seed", "-5"], "--seed must be from 0 to 2**64-1 (18446744073709551615), not -5"),
    (["--tasks", "needle,"], "--tasks has an empty item in 'needle,': remove the extra comma or give the missing "
     "value"),
])
def test_calibrate_option_errors_name_the_option(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                 argv: list[str], message: str) -> None:
    import tmixcli.models as models
    from runcli import run

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    code, out, err = run(capsys, "calibrate", *argv)
    assert (code, out, err) == (2, "", f"tmix: error: {message}\n")
