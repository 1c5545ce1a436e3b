"""Questions with known answers about real documents (`tmix eval --facts FILE`): dense vs TriangleMix layers.

The file names the prompts (one document, or several read together) and the facts; each fact is asked on
every prompt that holds its document. Synthetic needles are easy to find; real text shows what a start layer
costs on the answers users get."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError
from tmixcli.eval_answer import normalised

if TYPE_CHECKING:
    from tmixcli.models import LoadedModel


@dataclass(frozen=True)
class Fact:
    """A question about one document and the answers that count as correct."""

    doc: str
    question: str
    accept: tuple[str, ...]  # any one of these in the answer counts as correct


@dataclass(frozen=True)
class FactSet:
    """A facts file, checked: the prompts (each a list of documents read together) and the facts asked on them."""

    root: Path  # documents are named relative to the facts file
    prompts: tuple[tuple[str, ...], ...]
    facts: tuple[Fact, ...]
    source: str = "facts"

    @classmethod
    def from_file(cls, path: str | Path) -> FactSet:
        """Read and check a facts file: {"prompts": [[doc, ...], ...], "facts": [{doc, question, accept}]}."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TmixError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise TmixError(f"{path} is not a readable JSON facts file ({err})") from None
        return cls.from_dict(data, path.parent, str(path))

    @classmethod
    def from_dict(cls, data: Any, root: Path, label: str = "facts") -> FactSet:
        """Check parsed facts (`label` names them in errors); without "prompts", each document is a prompt alone."""
        if not isinstance(data, dict) or not isinstance(data.get("facts"), list) or not data["facts"]:
            raise TmixError(f"{label}: expected an object with a non-empty \"facts\" list")
        facts = []
        for i, f in enumerate(data["facts"]):
            accept = f.get("accept", [f.get("answer")]) if isinstance(f, dict) else None
            accept = [accept] if isinstance(accept, str) else accept
            ok = (isinstance(f, dict) and all(isinstance(f.get(k), str) and f[k].strip() for k in ("doc", "question"))
                  and isinstance(accept, list) and accept and all(isinstance(a, str) and a.strip() for a in accept))
            if not ok:
                raise TmixError(f"{label}: fact {i + 1} needs \"doc\", \"question\" and \"accept\" (or \"answer\")")
            facts.append(Fact(f["doc"], f["question"], tuple(accept)))
        prompts = data.get("prompts") or [[d] for d in dict.fromkeys(f.doc for f in facts)]
        if not all(isinstance(p, list) and p and all(isinstance(d, str) for d in p) for p in prompts):
            raise TmixError(f"{label}: \"prompts\" must be a list of document lists")
        orphans = sorted({f.doc for f in facts} - {d for p in prompts for d in p})
        if orphans:
            raise TmixError(f"{label}: no prompt holds {', '.join(orphans)}")
        return cls(root, tuple(tuple(p) for p in prompts), tuple(facts), label)


def matches(text: str, accept: tuple[str, ...]) -> bool:
    """Any accepted string appears as whole words (eval_answer.normalised: case, spacing and thousands separators
    aside)."""
    t = normalised(text)
    return any(re.search(rf"(?<!\w){re.escape(normalised(a))}(?!\w)", t) for a in accept)


_MARK = re.compile(r"(?<=\S)[.!?]+[\"')\]\u2019\u201d]*(?=\s)")  # "48.7" is no end: a space must follow
_TITLES = frozenset("mr mrs ms dr prof st sr jr rev fr gen col capt lt sgt hon approx cf vs dept".split())
_BEFORE_NUMBERS = frozenset("no nos vol fig figs pp ca".split())  # "No. 5", but "No. The ..." ends
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # "e.g", "U.S", "i.e" (before their last dot)


def sentence_end(text: str) -> int | None:
    """Just after the first sentence's mark, once the text after it shows an end; None before. A "." after "Dr.",
    "approx.", "e.g.", "U.S.", "No. 5", an initial, a list number, or before a lower-case word is no end."""
    for m in _MARK.finditer(text):
        after = text[m.end():]
        nxt = after.lstrip()
        if "\n" in after[: len(after) - len(nxt)] or "!" in m.group() or "?" in m.group():
            return m.end()
        if not nxt:
            return None  # the next word decides
        before = text[:m.start()]
        raw = re.search(r"\S*\Z", before).group()
        word = raw.strip("([{\"'\u2018\u201c").lower()
        line_start = not before[: len(before) - len(raw)].split("\n")[-1].strip()
        if (nxt[0].islower() or word in _TITLES or (word in _BEFORE_NUMBERS and nxt[0].isdigit())
                or (len(word) == 1 and word.isalpha()) or _DOTTED.fullmatch(word)
                or (word.isdigit() and line_start)):
            continue
        return m.end()
    return None


def sentence_done(text: str) -> bool:
    """A real answer ends with its first sentence (see `sentence_end`)."""
    return sentence_end(text) is not None


def first_sentence(text: str) -> str:
    """The answer up to its first sentence's end (the word the stop waited for dropped)."""
    end = sentence_end(text)
    return text if end is None else text[:end]


def prompt_ids(lm: LoadedModel, fs: FactSet, max_new_tokens: int) -> dict[str, tuple[tuple[str, ...], list[int]]]:
    """Each prompt's name -> (its documents, prefix ids), every one checked to fit the context before any prefill."""
    from tmixcli import prompt
    from tmixcli.documents import load_documents
    from tmixcli.modelinfo import model_context

    limit = model_context(lm.model)
    out = {}
    for docs in fs.prompts:
        name = " + ".join(docs)
        ids = prompt.prefix_ids(lm.tokenizer, load_documents([str(fs.root / d) for d in docs]).text)
        if len(ids) + 64 + max_new_tokens > limit:
            raise TmixError(f"{name}: {len(ids)} prompt tokens do not fit the model's {limit}")
        out[name] = (docs, ids)
    return out


def run_facts(lm: LoadedModel, fs: FactSet, methods: list[AttentionConfig], max_new_tokens: int = 32,
              progress: bool = True, reference: dict | None = None) -> dict:
    """Dense and every trimix config on every (prompt, fact); each prompt is prefilled once per method.

    `reference` keeps dense's answers between calls: pass the same dict again and dense is not rerun."""
    from tmixcli import attention, generate, prompt
    from tmixcli.context import rewind
    from tmixcli.eval_answer import answer, kl
    from tmixcli.eval_plan import method_name

    model, tok = lm.model, lm.tokenizer
    stops = generate.stop_ids(tok, model)
    start, records = time.perf_counter(), []
    for name, (docs, ids) in prompt_ids(lm, fs, max_new_tokens).items():
        asked = [f for f in fs.facts if f.doc in docs]
        ref = reference.setdefault(name, {}) if reference is not None else {}
        dense = [] if ref else [AttentionConfig(method="dense")]
        for cfg in dense + list(methods):
            label = "dense" if cfg.method == "dense" else method_name(cfg)
            attention.attach(model, cfg)
            t0 = time.perf_counter()
            cache, _ = generate.prefill(model, ids)
            for f in asked:
                q_ids = prompt.question_ids(tok, f.question)
                lp, text = answer(model, tok, cache, q_ids, stops, max_new_tokens, done=sentence_done)
                text = first_sentence(text)
                rewind(cache, len(ids))
                ref.setdefault(f.question, (lp, text))
                records.append({"prompt": name, "doc": f.doc, "question": f.question, "accept": list(f.accept),
                                "method": label, "start_layer": None if cfg.method == "dense" else cfg.start_layer,
                                "text": text, "correct": matches(text, f.accept),
                                "agree": text.split() == ref[f.question][1].split(),
                                "dense_correct": matches(ref[f.question][1], f.accept),
                                "kl": kl(ref[f.question][0], lp)})
            mine = [r for r in records if r["prompt"] == name and r["method"] == label]
            if progress:
                print(f"[{name}] {label}: {sum(r['correct'] for r in mine)}/{len(mine)} correct, "
                      f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return {"model": lm.model_id, "prompts": [" + ".join(p) for p in fs.prompts], "max_new_tokens": max_new_tokens,
            "methods": summarize(records), "records": records, "wall_s": time.perf_counter() - start}


def summarize(records: list[dict]) -> dict:
    """Per method: correct, kept (correct where dense is), same answer text as dense and first-token KL."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == name]
        n = len(mine)
        out[name] = {"start_layer": mine[0]["start_layer"], "n": n, "correct": sum(r["correct"] for r in mine),
                     "dense_correct": sum(r["dense_correct"] for r in mine),
                     "kept": sum(r["correct"] and r["dense_correct"] for r in mine),
                     "agreement": sum(r["agree"] for r in mine) / n, "kl": sum(r["kl"] for r in mine) / n}
    return out


def passes(summary: dict, name: str) -> bool:
    """The fidelity bar on real text: at least as many correct answers as dense, less one."""
    return summary[name]["correct"] >= summary[name]["dense_correct"] - 1


def format_table(result: dict) -> str:
    """run_facts' result as a plain text table, one row per method (dense's comparisons shown as "-")."""
    rows = [["method", "correct", "kept of dense's", "same text", "KL(first)"]]
    for name, s in result["methods"].items():
        dense = name == "dense"
        rows.append([name, f"{s['correct']}/{s['n']}", "-" if dense else f"{s['kept']}/{s['dense_correct']}",
                     "-" if dense else f"{s['agreement']:.0%}", "-" if dense else f"{s['kl']:.4f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
