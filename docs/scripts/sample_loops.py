"""Sample questions with the default model, each answered with and without the loop stop (figures.md)."""
import json
import time
from pathlib import Path

from tmixcli import answer, opening
from tmixcli.config import Settings
from tmixcli.documents import load_documents
from tmixcli.models import load_model

root = Path(__file__).resolve().parents[2] / "sample_docs"
facts = json.loads((root / "questions.json").read_text())["facts"]
lm = load_model(None, "cpu", "fp32", progress=False)
ctxs, rows = {}, []
for f in facts:
    if f["doc"] not in ctxs:
        ctxs[f["doc"]] = opening.open_document(lm, load_documents([str(root / f["doc"])]), Settings(progress=False))
        ctxs[f["doc"]].save()
    ctx = ctxs[f["doc"]]
    row = {"q": f["question"]}
    for stop in (True, False):
        s = Settings(stop_repeats=stop, progress=False)
        t0 = time.perf_counter()
        a = answer.ask(ctx, f["question"], s)
        row[stop] = dict(reason=a.stop_reason, tokens=a.new_tokens, s=round(time.perf_counter() - t0, 1),
                         ok=any(x.lower() in a.text.lower() for x in f["accept"]))
        if a.stop_reason != "repeat":
            break
    rows.append(row)
    print(json.dumps(row), flush=True)
looped = [r for r in rows if r[True]["reason"] == "repeat"]
print(json.dumps({"questions": len(rows), "looped": len(looped),
                  "ok_with_stop": sum(r[True]["ok"] for r in rows),
                  "tokens_with_stop": sum(r[True]["tokens"] for r in rows),
                  "tokens_without": sum(r.get(False, r[True])["tokens"] for r in rows),
                  "s_with_stop": round(sum(r[True]["s"] for r in rows), 1),
                  "s_without": round(sum(r.get(False, r[True])["s"] for r in rows), 1),
                  "ok_without": sum(r.get(False, r[True])["ok"] for r in rows)}))
