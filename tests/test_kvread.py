"""Reading KV files in parallel pieces, and prefilling again instead when the disk is slower than the prefill."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from runcli import DOCS, TINY, ask_json, run

from tmixcli import context, kvheader, kvread

QUESTION = "Who is the project manager?"


def _file(tmp_path: Path, rows: int = 40) -> tuple[str, torch.Tensor, dict]:
    """A raw [1, Hkv, T, D] fp32 tensor file, its data and its safetensors-style entry."""
    data = torch.randn(1, 3, rows, 8)  # data: [1, Hkv, T, D]
    path = tmp_path / "t.bin"
    path.write_bytes(data.numpy().tobytes())
    return str(path), data, {"shape": list(data.shape), "data_offsets": [0, data.numel() * 4]}


def _slow_disk(monkeypatch, seconds: float) -> None:
    """Every read of a piece waits this long first."""
    fast = kvread._pread

    def crawl(fd, out, offset):
        time.sleep(seconds)
        fast(fd, out, offset)

    monkeypatch.setattr(kvread, "_pread", crawl)


def test_pieces_fill_the_rows_asked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(kvread, "PIECE_BYTES", 72)  # 2.25 rows of 8 fp32
    path, data, info = _file(tmp_path)
    dst = torch.full((1, 3, 50, 8), float("nan"))  # dst: [1, Hkv, capacity, D], spare rows stay untouched
    todo = kvread.pieces(0, info, dst, 33)
    kvread.read_pieces(path, todo, workers=4)
    assert torch.equal(dst[:, :, :33], data[:, :, :33]) and dst[:, :, 33:].isnan().all()


def test_give_up_stops_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(kvread, "PIECE_BYTES", 64)
    path, data, info = _file(tmp_path)
    _slow_disk(monkeypatch, 0.02)
    seen = []

    def give_up(done, total, elapsed):
        seen.append((done, total))
        return elapsed > 0.06

    dst = torch.zeros(1, 3, 40, 8)
    with pytest.raises(kvread.Abandoned):
        kvread.read_pieces(path, kvread.pieces(0, info, dst, 40), workers=2, give_up=give_up)
    assert seen and seen[-1][0] < seen[-1][1] == data.numel() * 4
    kvread.read_pieces(path, kvread.pieces(0, info, dst, 40), workers=2, give_up=lambda *_: False)
    assert torch.equal(dst, data)


def test_a_slow_disk_is_skipped_by_prefilling_again(capsys, monkeypatch, tiny_dir, tmp_path):
    """A file whose projected read time exceeds its recorded prefill is recomputed: same ids, same answer."""
    doc = tmp_path / "notes.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:1000])
    args = (str(doc), QUESTION, "--model", tiny_dir, "--max-new-tokens", "12", *TINY)
    cold = ask_json(capsys, *args)
    made_in = float(kvheader.read_meta(Path(cold["kv_path"]))["prefill_s"])
    assert made_in > 0
    warm = ask_json(capsys, *args)
    assert warm["cache_hit"] and not warm["kv_recomputed"]
    _slow_disk(monkeypatch, 0.05)  # far slower than the tiny model's prefill: seconds for the whole file
    monkeypatch.setattr(kvread, "PIECE_BYTES", 4096)
    monkeypatch.setattr(context, "WARM_S", 0.0)
    monkeypatch.setattr(context, "LOOK_S", 0.0)
    code, out, err = run(capsys, "ask", *args)
    assert code == 0 and "prefilled again (reading the file was on course to take longer" in err, err
    slow = ask_json(capsys, *args)
    assert slow["cache_hit"] and slow["kv_recomputed"] and slow["answer"] == cold["answer"]
    assert slow["kv_path"] == cold["kv_path"] and slow["prompt_tokens"] == cold["prompt_tokens"]
    monkeypatch.setattr(context, "timing_device", lambda lm: "another GPU")  # its prefill was timed elsewhere
    assert not ask_json(capsys, *args)["kv_recomputed"]


def test_interrupt_waits_for_the_workers(tmp_path, monkeypatch):
    """Ctrl-C in the waiting thread stops the readers before their file is closed (none is left reading)."""
    monkeypatch.setattr(kvread, "PIECE_BYTES", 64)
    path, _, info = _file(tmp_path)
    _slow_disk(monkeypatch, 0.01)

    def interrupt(done, total, elapsed):
        raise KeyboardInterrupt

    dst = torch.zeros(1, 3, 40, 8)
    with pytest.raises(KeyboardInterrupt):
        kvread.read_pieces(path, kvread.pieces(0, info, dst, 40), workers=3, give_up=interrupt)
    assert not [t for t in threading.enumerate() if t.name == "tmix-kvread"]
