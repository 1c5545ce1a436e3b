"""The documents tmix reads, by file suffix, and how errors and help name them (no reader imported: the CLI's
help and its question guard need only the names)."""

ZIP_SUFFIXES = (".docx", ".odt", ".pptx", ".epub")  # ZIP-based documents, read by zipdocs
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".tex", ".log")
# A document's name, read or not (an old Word .doc is refused, but names a document).
DOC_SUFFIXES = frozenset({".pdf", ".doc", *ZIP_SUFFIXES, *HTML_SUFFIXES, *TEXT_SUFFIXES})
FORMATS = f"PDF, {', '.join(ZIP_SUFFIXES)}, HTML or UTF-8 text"  # what tmix reads, for error messages
LISTED = f".pdf, {', '.join(ZIP_SUFFIXES)}, .html, text"  # the same, for help
FILES_HELP = f"Document(s) ({LISTED}; a folder; - for stdin)"  # a command's document arguments
