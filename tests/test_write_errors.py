"""A KV file that cannot be written says why as it is (a file-size limit, a quota), points to -o only where another
folder would help, and `prefill` exits 1 for the disk or a limit (outside the input), 2 for a folder that refuses
files."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys

import pytest
from runcli import TINY, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)

from tmixcli import diskerrors


def _file_limit(limit: int):
    """A preexec_fn that gives the child process a file-size limit of `limit` bytes (ulimit -f)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def _tmix(*argv: str, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmixcli", *argv], capture_output=True, text=True, timeout=600,
                          preexec_fn=_file_limit(limit))


def test_a_file_size_limit_is_named_and_not_sent_to_o(tmp_path, tiny_dir, short_doc):
    """`ulimit -f` under the KV file's size: the limit is named, with no -o (which it stops too); no temp file left;
    Python ignores SIGXFSZ, so the write fails with EFBIG rather than killing tmix."""
    args = ("--model", tiny_dir, *TINY)
    said = "File too large (files this process writes are limited to 64.0 KiB by ulimit -f)"
    for out in (tmp_path / "x.kv", None):
        res = _tmix("prefill", short_doc, *(["-o", str(out)] if out else []), *args, limit=64 << 10)
        assert res.returncode == 1 and res.stdout == "", res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("tmix: error: could not write KV file ") and last.endswith(f": {said}"), res.stderr
    res = _tmix("ask", short_doc, "Who is the project manager?", "--max-new-tokens", "4", *args, limit=64 << 10)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    assert "tmix: KV file not saved: could not write KV file " in res.stderr and said in res.stderr, res.stderr
    assert "(file too large)" in res.stderr and "not writable" not in res.stderr and " -o" not in res.stderr
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "x.kv").exists()


@pytest.mark.parametrize("code,errno_,why", [
    (1, errno.EDQUOT, "Disk quota exceeded"),
    (1, errno.EIO, "Input/output error"),
    (2, errno.EACCES, "Permission denied"),  # a folder that refuses files (the read-only one: test_cli_save)
])
def test_each_write_error_has_its_reason_and_code(capsys, monkeypatch, tiny_dir, short_doc, code, errno_, why):
    """A write that fails once the file is started: `prefill` exits 1 for the disk, 2 for the folder."""
    from tmixcli import kvwrite

    def failing(*args):
        raise OSError(errno_, why)
    monkeypatch.setattr(kvwrite, "_pwrite", failing)
    args = ("--model", tiny_dir, *TINY)
    got, out, err = run(capsys, "prefill", short_doc, *args)
    line = err.strip().splitlines()[-1]
    assert got == code and out == "" and line.startswith("tmix: error: could not write KV file "), err
    assert line.endswith(f": {why}"), err
    got, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", "--max-new-tokens", "4", *args)
    said = [line for line in err.splitlines() if line.startswith("tmix: KV file not saved: could not write KV file ")]
    assert got == 0 and out.strip() and len(said) == 1, err  # before or after the answer, as the writer met it
    assert said[0].endswith(f": {why}"), err


def test_the_exit_code_follows_the_cause():
    assert diskerrors.exit_code(OSError(errno.ENOSPC, "No space left on device")) == 1
    assert diskerrors.exit_code(OSError(errno.EFBIG, "File too large")) == 1
    assert diskerrors.exit_code(OSError(errno.ENOTDIR, "Not a directory")) == 2
    assert diskerrors.reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "Disk quota exceeded"
    assert not diskerrors.elsewhere_helps(OSError(errno.EFBIG, "File too large"))
    assert diskerrors.elsewhere_helps(OSError(errno.EPERM, "Operation not permitted"))
