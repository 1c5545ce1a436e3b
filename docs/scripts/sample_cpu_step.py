"""Sample questions with the default model on the CPU, each answered with the direct decode step (cpu_decode) and
with transformers' own forward (TMIX_CPU_STEP=0), in alternating order (figures.md)."""
import json
import os
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
for i, f in enumerate(facts):
    if f["doc"] not in ctxs:
        ctxs[f["doc"]] = opening.open_document(lm, load_documents([str(root / f["doc"])]), Settings(progress=False))
    row = {"q": f["question"]}
    for step in ((True, False) if i % 2 == 0 else (False, True)):
        os.environ["TMIX_CPU_STEP"] = "1" if step else "0"
        t0 = time.perf_counter()
        a = answer.ask(ctxs[f["doc"]], f["question"], Settings(progress=False))
        row["step" if step else "hf"] = dict(text=a.text, tokens=a.new_tokens, tok_s=round(a.decode_tokens_per_s, 2),
                                             s=round(time.perf_counter() - t0, 2))
    row["same"] = row["step"]["text"] == row["hf"]["text"]
    rows.append(row)
    print(json.dumps(row), flush=True)
timed = [r for r in rows if r["step"]["tok_s"] > 0 and r["hf"]["tok_s"] > 0]  # answers of 2 tokens or more
tot = {k: sum(r[k]["tokens"] - 1 for r in timed) / sum((r[k]["tokens"] - 1) / r[k]["tok_s"] for r in timed)
       for k in ("step", "hf")}
print(json.dumps({"questions": len(rows), "same_text": sum(r["same"] for r in rows),
                  "decode_tok_s_step": round(tot["step"], 2), "decode_tok_s_hf": round(tot["hf"], 2),
                  "answer_s_step": round(sum(r["step"]["s"] for r in rows), 1),
                  "answer_s_hf": round(sum(r["hf"]["s"] for r in rows), 1)}))
