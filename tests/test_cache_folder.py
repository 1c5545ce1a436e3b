"""A cache folder tmix cannot use or write (under a file, read-only, unreadable): one line, or the answer anyway."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from kvfiles import _aged
from runcli import ROOT, TINY, _count_calls, ask_json, one_error, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)
from tmixcli import kvfolder
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError


@pytest.mark.parametrize("argv", [["serve"], ["cache", "ls"]])
def test_unusable_cache_folder_one_line(capsys, monkeypatch, tmp_path, argv):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TMIX_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    monkeypatch.chdir(ROOT)
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "cannot use the cache folder" in err, err


def _unusable_cache(monkeypatch, tmp_path, how: str) -> tuple[Path, str]:
    """A cache folder that cannot be made (under a file), or an empty one on a read-only file system (nothing in it
    can be made: chmod does not stop root); returns it and the reason the error names."""
    import errno

    if how == "under a file":
        (tmp_path / "file").write_text("")
        root = tmp_path / "file" / "cache"
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        return root, "a part of its path is a file, not a folder"
    root = tmp_path / "ro-cache"
    root.mkdir()
    monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if root in self.absolute().parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    return root, "Read-only file system"


@pytest.mark.parametrize("how", ["under a file", "read-only"])
def test_unusable_cache_folder_costs_an_answer_nothing(capsys, monkeypatch, tiny_dir, short_doc, tmp_path, how):
    """--no-cache and -o never touch the cache folder, nor does stdin need it; a plain ask answers with one status
    line saying why no KV file was saved; only prefill without -o, whose product is that file, fails."""
    import io

    root, why = _unusable_cache(monkeypatch, tmp_path, how)
    args = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    code, out, err = run(capsys, "ask", short_doc, *args, "--no-cache")
    assert code == 0 and out.strip() and "cache folder" not in err and "(cache off)" in err, err
    code, out, err = run(capsys, "prefill", short_doc, "-o", str(tmp_path / "x.kv"), "--model", tiny_dir, *TINY)
    assert code == 0 and out.strip() == str(tmp_path / "x.kv") and "cache folder" not in err, err
    for docs in ([short_doc], ["-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(short_doc).read_bytes())))
        code, out, err = run(capsys, "ask", *docs, *args)
        said = [line for line in err.splitlines() if "cache folder" in line]
        assert code == 0 and out.strip() and "error" not in err, err
        assert len(said) == 2 and said[0].startswith("tmix: KV file not saved: cannot use the cache folder")
        assert why in said[0] and said[1].endswith("(cache folder unusable)"), err
    res = ask_json(capsys, short_doc, *args)
    assert res["kv_path"] is None and res["answer"] and res["notes"] == [] and not res["kv_saved"]
    assert any("KV file not saved" in n for n in res["kv_notes"])
    code, out, err = run(capsys, "prefill", short_doc, "--model", tiny_dir, *TINY)
    assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()], err
    assert "cannot use the cache folder" in err and why in err and "elsewhere with -o" in err
    assert not root.exists() or not list(root.iterdir())


def test_calibrate_on_a_profiles_folder_that_cannot_be_written(capsys, monkeypatch, tiny_dir, tmp_path):
    """A profiles folder that refuses writes: `tmix calibrate` says so in one line before loading the model, and
    save_profile fails in one line leaving no temp file and the old profile whole; a save refused after calibrating
    still prints the report (root ignores permissions, so the refusals are simulated)."""
    import errno
    import tempfile

    from tmixcli import calib_profile, calibrate, models
    from tmixcli.errors import TmixError

    def refused(*args, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    places = [(tempfile, "mkstemp"), (calib_profile.os, "fsync"), (calib_profile.os, "replace")]
    reals = [getattr(module, name) for module, name in places]
    loads = _count_calls(monkeypatch, models, "load_model")
    folder = tmp_path / "tmix-cache" / "profiles"
    old = calib_profile.save_profile({"fingerprint": "ab" * 32, "start_layer": 3})
    assert old.parent == folder
    if os.geteuid() == 0:
        monkeypatch.setattr(tempfile, "mkstemp", refused)
    else:
        folder.chmod(0o500)
    err = one_error(capsys, "calibrate", "--model", tiny_dir)
    folder.chmod(0o700)
    assert err == f"tmix: error: cannot save the calibration profile in {folder}: Permission denied" and loads == []
    for place in places:  # refused at the temp file, at its fsync, at the rename
        for (module, name), real in zip(places, reals):
            monkeypatch.setattr(module, name, refused if (module, name) == place else real)
        with pytest.raises(TmixError) as said:
            calib_profile.save_profile({"fingerprint": "ab" * 32, "start_layer": 12})
        assert str(said.value) == f"cannot save the calibration profile in {folder}: Permission denied"
        assert [p.name for p in folder.iterdir()] == [old.name], place
        assert json.loads(old.read_text())["start_layer"] == 3
    for (module, name), real in zip(places, reals):
        monkeypatch.setattr(module, name, real)

    def calibrated(*args, **kw):  # what a calibration found, then a save the folder refuses
        profile = {"fingerprint": "ab" * 32, "start_layer": 2, "verified": True, "importance": [0.5, 0.1, 0.0],
                   "candidates": [2], "settings": {"tolerance": 0.05}, "eval": {}}
        monkeypatch.setattr(calib_profile.os, "replace", refused)
        calib_profile.keep_profile(profile)
        monkeypatch.setattr(calib_profile.os, "replace", reals[2])
        return profile
    monkeypatch.setattr(models, "load_model", lambda *args, **kw: None)
    monkeypatch.setattr(calibrate, "run_calibrate", calibrated)
    code, out, err = run(capsys, "calibrate")
    assert code == 2 and "recommended start layer: 2" in out and "profile not saved (use --start-layer 2" in out
    assert err.strip() == f"tmix: error: cannot save the calibration profile in {folder}: Permission denied"
    assert [p.name for p in folder.iterdir()] == [old.name]


def test_unreadable_cache_folder_is_one_line_and_offers_nothing_to_reuse(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys) -> None:
    from tmixcli import reuse

    _aged({"old": 400})

    def denied(self: Path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(TmixError, match="cannot read the cache folder .*: Permission denied"):
        kvfolder.list_entries()
    assert reuse.best_file(list(range(300)), {}, AttentionConfig()) is None
    assert "cannot read the cache folder" in one_error(capsys, "cache", "ls")


def test_cache_folder_that_is_a_file_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tmixcli.paths import cache_dir, cache_subdir

    (tmp_path / "file").write_text("")
    for root, says in ((tmp_path / "file", "it exists and is not a folder"),
                       (tmp_path / "file" / "cache", "a part of its path is a file, not a folder")):
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        with pytest.raises(TmixError, match=f"cannot use the cache folder {root} \\(TMIX_CACHE_DIR\\): {says}$"):
            cache_dir()
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "kv").write_text("")
    with pytest.raises(TmixError, match="cannot use the cache folder .*kv: it exists and is not a folder$"):
        cache_subdir("kv")


@pytest.fixture()
def unsearchable(tmp_path: Path):
    """A cache folder whose files this user cannot reach (another user's 0700 folder), and the command prefix that
    runs tmix as such a user: root, which passes every permission, runs it under setpriv without the capabilities
    that let it (skipped where setpriv cannot); anyone else gets a folder of their own without search permission."""
    import shutil
    import subprocess

    folder = tmp_path / "theirs"
    folder.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps", "-all"]
        if not shutil.which("setpriv") or subprocess.run([*prefix, "true"], capture_output=True).returncode:
            pytest.skip("root needs setpriv to drop its permission override")
        os.chown(folder, 65534, -1)  # nobody's
        folder.chmod(0o700)
    else:
        folder.chmod(0o600)
    yield folder, prefix
    folder.chmod(0o700)


def test_cache_folder_that_cannot_be_searched(unsearchable, tiny_dir: str, short_doc: str) -> None:
    """Another user's 0700 cache folder (stat works, nothing in it can be reached): `ask` answers, saying why no KV
    file was saved, through a server lookup or not; `prefill`, `serve`, `serve --stop` and `cache ls` fail in one
    line naming the folder (was a PermissionError traceback); so does a models folder of that kind."""
    import subprocess

    folder, prefix = unsearchable
    said = f"cannot use the cache folder {folder} (TMIX_CACHE_DIR): Permission denied"
    model = ("--model", tiny_dir, *TINY)

    def tmix(*argv: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, sys.executable, "-m", "tmixcli", *argv], capture_output=True, text=True,
                              env={**os.environ, "TMIX_CACHE_DIR": str(folder), **env}, cwd=ROOT, timeout=300)
    for serve in ("on", "off"):
        res = tmix("ask", short_doc, "Who is the project manager?", "--max-new-tokens", "3", *model, TMIX_SERVE=serve)
        assert res.returncode == 0 and res.stdout.strip() and "Traceback" not in res.stderr, res.stderr
        assert f"tmix: KV file not saved: {said}" in res.stderr.splitlines(), res.stderr
    served = ("--model", tiny_dir)
    for argv in (("prefill", short_doc, *model), ("serve", *served), ("serve", "--stop", *served), ("cache", "ls")):
        res = tmix(*argv)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert res.stderr.startswith(f"tmix: error: {said}") and len(res.stderr.splitlines()) == 1, res.stderr
    res = tmix("ask", short_doc, "Who?", TMIX_MODELS_DIR=str(folder), TMIX_CACHE_DIR=str(folder.parent / "cache"))
    assert res.returncode == 2 and res.stderr == (f"tmix: error: cannot use the models folder {folder} "
                                                  "(TMIX_MODELS_DIR): Permission denied\n"), res.stderr
