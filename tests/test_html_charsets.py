"""HTML <meta charset> labels read as browsers read them (the WHATWG Encoding Standard's table), and a page that
declares a multibyte charset never read as Windows-1252."""

from __future__ import annotations

import pytest
from docfiles import expect_error, write

from tmixcli.documents import load_document
from tmixcli.htmlcodec import LABELS


def page(label: str, body: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta http-equiv="Content-Type" content="text/html; charset={label}">'
            f"<title>t</title></head><body><p>{body}</p></body></html>")


@pytest.mark.parametrize("label, body, codec", [
    ("gb2312", "总经理是朱镕基。收入为48.7百万元。", "gbk"),  # 镕 is in GBK, not in GB2312
    ("GBK", "总经理是朱镕基。", "gb18030"),
    ("iso-8859-1", "The CEO said “growth is back” – revenue rose to €48.7m.", "cp1252"),
    ("latin1", "Café “owner” – €5", "cp1252"),
    ("us-ascii", "It’s “quoted”", "cp1252"),
    ("shift_jis", "① 売上高は48.7億円です。② 社長は髙橋です。", "cp932"),
    ("euc-kr", "똑샘 매출은 48.7억 원입니다.", "cp949"),
    ("tis-620", "รายได้ 48.7 ล้านบาท €", "cp874"),
    ("big5", "營收為48.7億元。", "big5hkscs"),
    ("euc-jp", "① 売上高は48.7億円です。", "euc_jis_2004"),
    ("windows-1251", "Выручка 48,7 млн", "cp1251"),
    ("utf-16", "declared UTF-16 in an ASCII meta: read as UTF-8 ✓", "utf-8"),
])
def test_meta_charset_labels_read_as_browsers_read_them(tmp_path, label, body, codec):
    """QA22 F7: gb2312 pages with a GBK character, iso-8859-1 pages with curly quotes and €, shift_jis pages with
    Windows-932 characters: read as a browser shows them."""
    path = write(tmp_path, "page.html", page(label, body).encode(codec))
    assert load_document(path).text == body


def test_a_page_that_declares_a_multibyte_charset_is_never_read_as_windows_1252(tmp_path):
    """Bytes that are not GB18030 in a page declaring gb2312: one clear line, not Windows-1252 mojibake."""
    raw = page("gb2312", "总经理").encode("gbk").replace("经".encode("gbk"), b"\x81\x20")
    expect_error(write(tmp_path, "bad.html", raw), "bad.html declares charset gb2312 (read as GB18030",
                 "do not decode", "iconv")


def test_a_label_browsers_do_not_know_is_ignored(tmp_path):
    """An unknown label (or a Python codec name that is no WHATWG label) falls back to Windows-1252, as browsers do."""
    for label in ("undefined", "cp437", "hex"):
        path = write(tmp_path, f"{label}.html", page(label, "Caf\u00e9 \u201cx\u201d").encode("cp1252"))
        assert load_document(path).text == "Caf\u00e9 \u201cx\u201d"


def test_every_label_names_a_codec_python_has():
    import codecs

    assert len(LABELS) > 200
    for label, names in LABELS.items():
        assert label == label.lower() and names, label
        for name in names:
            codecs.lookup(name)


def test_an_xhtml_pages_xml_declaration_names_its_encoding(tmp_path):
    """An XHTML page (an EPUB chapter) may declare its encoding only in its XML declaration."""
    raw = ('<?xml version="1.0" encoding="gb2312"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
           "<p>总经理是朱镕基。</p></body></html>").encode("gbk")
    assert load_document(write(tmp_path, "ch1.xhtml", raw)).text == "总经理是朱镕基。"
