"""A write that failed, said as it is: its reason in words (a file-size limit named as such), whether writing the
file elsewhere (-o) can help, and its exit code: 2 where the folder given refuses files (not writable, read-only, not
there), 1 where the disk or a limit of this process ran out (full, a quota, ulimit -f, an I/O error): outside the
input, as README's exit codes have it."""

from __future__ import annotations

import errno
import resource

from tmixcli.sizes import human_size

_REFUSING = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}
_ELSEWHERE = {errno.EACCES, errno.EPERM, errno.EROFS}  # a folder that takes no files: another one would


def reason(err: OSError) -> str:
    """Why the write failed: the system's words ("Disk quota exceeded"), and for a file past this process's size
    limit, that limit (ulimit -f)."""
    said = err.strerror or str(err)
    if err.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            said += f" (files this process writes are limited to {human_size(limit)} by ulimit -f)"
    return said


def elsewhere_helps(err: BaseException) -> bool:
    """Whether writing the file to another folder (-o) gets round `err`: a folder that is read-only or not writable."""
    return isinstance(err, OSError) and err.errno in _ELSEWHERE


def exit_code(err: OSError) -> int:
    """2 where the folder given refuses the file (bad input: another place is needed), else 1."""
    return 2 if err.errno in _REFUSING else 1
