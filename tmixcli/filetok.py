"""A model's tokenizer and chat template read from its files with `tokenizers` and jinja2, without torch or
transformers (~0.2 s, not ~5 s), so a document that cannot fit the context is refused before the model loads.

Files are used only once a model load has found them to give what transformers gives (`remember`): the same
tokenizer pipeline, special tokens and rendered template. Other models are fitted after the load, as before."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tmixcli.modelinfo import config_limits, model_folder
from tmixcli.paths import models_dir
from tmixcli.filekind import read_regular

VERSION = "2"  # of this reading: a new one checks every model's files again (2: decode checked too)
SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
KEYED = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
         "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt")  # what a tokenizer load may read
LIBRARIES = ("transformers", "tokenizers", "jinja2")
PROBE_SYSTEM = "Answer in one line."
PROBE_TEXT = "Ünïcode café 12345 it's  two  spaces\n\n\ttab 東京 🙂\r\n"


class Unrendered(Exception):
    """The chat template cannot be rendered here as transformers would (a tag or error of its own)."""


@dataclass(frozen=True)
class FileModel:
    """What fitting a document needs of a model (fit.Sizing), read from its files."""

    tokenizer: FileTokenizer
    context: int


class FileTokenizer:
    """The parts of a transformers tokenizer that prompt.py and fit.py use, over a `tokenizers.Tokenizer`."""

    def __init__(self, files: dict[str, bytes]) -> None:
        from tokenizers import Tokenizer

        config = json.loads(files.get("tokenizer_config.json") or b"{}")
        self.backend = Tokenizer.from_str(files["tokenizer.json"].decode())
        self.backend.no_truncation()  # transformers encodes without them unless asked
        self.backend.no_padding()
        template = files.get("chat_template.jinja")
        self.chat_template = template.decode() if template is not None else config.get("chat_template")
        self.special_tokens_map = {k: _content(config[k]) for k in SPECIAL if config.get(k) is not None}
        extra = config.get("extra_special_tokens", config.get("additional_special_tokens")) or []
        extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
        self.all_special_tokens = list(dict.fromkeys([*self.special_tokens_map.values(), *map(_content, extra)]))
        self.split_special_tokens = bool(config.get("split_special_tokens", False))

    def __call__(self, text: str, add_special_tokens: bool = True,
                 split_special_tokens: bool | None = None) -> dict[str, list[int]]:
        split = self.split_special_tokens if split_special_tokens is None else split_special_tokens
        self.backend.encode_special_tokens = split
        return {"input_ids": self.backend.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids: list[int]) -> str:
        """The text of token ids, special tokens kept, as transformers decodes them where remember checked it."""
        return self.backend.decode(ids, skip_special_tokens=False)

    @property
    def added_tokens_decoder(self) -> dict:
        return self.backend.get_added_tokens_decoder()

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        """The template rendered as transformers renders it (its jinja2 settings, the special tokens as names)."""
        import jinja2

        if not isinstance(self.chat_template, str) or tokenize:
            raise Unrendered("no single chat template")
        try:
            return _compiled(self.chat_template).render(messages=messages, tools=None, documents=None,
                                                         add_generation_prompt=add_generation_prompt,
                                                         **self.special_tokens_map)
        except jinja2.TemplateError as err:
            raise Unrendered(str(err)) from None


def _content(token: object) -> str:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's fields."""
    if isinstance(token, dict):
        token = token["content"]
    if not isinstance(token, str):
        raise TypeError(f"a special token is {type(token).__name__}")
    return token


@functools.lru_cache(maxsize=4)
def _compiled(template: str) -> object:
    """The template in transformers' sandbox: trim_blocks, lstrip_blocks, loop controls, its tojson and globals."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: object, ensure_ascii: bool = False, indent: int | None = None, separators: tuple | None = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as err:  # e.g. transformers' own {% generation %} tag
        raise Unrendered(str(err)) from None


def _files(folder: Path) -> dict[str, bytes]:
    """The model folder's files a tokenizer load may read (KEYED), those present; OSError without tokenizer.json."""
    files = {}
    for name in KEYED:
        try:
            files[name] = read_regular(folder / name)
        except FileNotFoundError:
            continue
    if "tokenizer.json" not in files or "config.json" not in files:
        raise FileNotFoundError("no tokenizer.json or config.json")
    return files


def _key(files: dict[str, bytes]) -> str:
    """Names the files and the libraries that read them: a change to any is checked again by the next load."""
    digest = hashlib.sha256(VERSION.encode())
    for lib in LIBRARIES:
        digest.update(f"\0{lib}={importlib.metadata.version(lib)}".encode())
    for name, data in sorted(files.items()):
        digest.update(f"\0{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:32]


def _context(files: dict[str, bytes]) -> int:
    """The context from config.json, as the loaded model's config has it (fit.context_limit)."""
    value = config_limits(json.loads(files["config.json"])).context
    if value is None:
        raise ValueError("no context length")
    return value


def _marker(key: str, create: bool = False) -> Path:
    """Where a load marks files as checked: in the models folder, shared by cache folders as the models are."""
    folder = models_dir() / ".tokenizers"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / key


def files_model(spec: str | None) -> FileModel | None:
    """The --model value's tokenizer and context from its files, where a model load has checked them (remember);
    None otherwise (not on disk, not checked, changed since, or not readable here)."""
    folder = model_folder(spec)
    if folder is None:
        return None
    try:
        files = _files(folder)
        if not _marker(_key(files)).is_file():
            return None
        return FileModel(FileTokenizer(files), _context(files))
    except Exception:  # files this reading cannot take (tokenizers raises plain Exceptions): the load checks them
        return None


def remember(lm: object, source: str) -> None:
    """After a model load from `source` (a folder or hub id): where its files read here give the same tokenizer,
    special tokens, rendered template and context as the load, mark them so, and later runs use files_model."""
    from tmixcli import prompt
    from tmixcli.errors import TmixError
    from tmixcli.modelinfo import model_context

    folder = model_folder(source)
    try:
        files = _files(folder) if folder is not None else None
        if files is None or _marker(_key(files)).is_file():
            return
        context = _context(files)
    except (OSError, KeyError, TypeError, ValueError, TmixError, importlib.metadata.PackageNotFoundError):
        return  # no files this reading takes (no tokenizer.json, no context length) or no models folder here
    try:
        mine = FileTokenizer(files)
    except Exception:  # noqa: BLE001 - tokenizers raises plain Exceptions on files it cannot take: nothing marked
        return
    theirs = lm.tokenizer
    if getattr(theirs, "backend_tokenizer", None) is None or context != model_context(lm.model):
        return  # a load without a `tokenizers` pipeline, or another context: nothing to compare with
    probe = " ".join([PROBE_TEXT, *theirs.all_special_tokens])
    try:
        same = (_same_pipeline(mine.backend.to_str(), theirs.backend_tokenizer.to_str())
                and mine.special_tokens_map == dict(theirs.special_tokens_map)
                and mine.all_special_tokens == list(theirs.all_special_tokens)
                and mine.split_special_tokens == bool(theirs.split_special_tokens)
                and mine.chat_template == theirs.chat_template
                and mine.decode(ids := mine(probe, add_special_tokens=False)["input_ids"]) == theirs.decode(ids)
                and all(prompt.split_template(mine, system) == prompt.split_template(theirs, system)
                        and prompt.prefix_ids(mine, probe, system) == prompt.prefix_ids(theirs, probe, system)
                        and prompt.question_ids(mine, probe, system) == prompt.question_ids(theirs, probe, system)
                        for system in (None, PROBE_SYSTEM)))
    except (TmixError, Unrendered):  # a template that refuses the probe (a system message), or renders only there
        return
    if same:
        with contextlib.suppress(OSError):  # a models folder this user cannot write: nothing marked
            _marker(_key(files), create=True).write_text(json.dumps({"folder": str(folder)}))


def _same_pipeline(mine: str, theirs: str) -> bool:
    """Whether two `tokenizers.Tokenizer`s (as JSON) encode alike: equal but for truncation and padding, which
    transformers sets per call."""
    if mine == theirs:
        return True
    a, b = json.loads(mine), json.loads(theirs)
    return all(a.get(k) == b.get(k) for k in {*a, *b} - {"truncation", "padding"})
