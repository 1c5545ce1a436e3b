"""Byte counts, counts of things and token lengths as people read them, for status lines and errors of every layer."""


def human_size(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def count(n: int, thing: str) -> str:
    """"1 KV file", "2 KV files": a count of things, the plural with an s."""
    return f"{n} {thing}" + ("" if n == 1 else "s")


def kilo(n: int) -> str:
    """A token length as bench and calibration name it: 6144 -> "6K", 6000 -> "6000"."""
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)
