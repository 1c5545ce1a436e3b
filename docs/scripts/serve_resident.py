"""`tmix serve` keeping the last KV file in memory, on a GPU at a long context (figures.md).

A random Llama with Llama-3.1-8B's KV shape (32 layers, 8 kv heads of 128; narrow elsewhere, so the model is small)
is saved to WORK/model; a document of about LENGTH tokens goes through a server: the first question prefills and
saves, the next ones are answered from the cache kept in memory, one with TMIX_SERVE=off loads the file from disk, and
a touched file is loaded afresh by the server. Prints each run's status lines, whole-command time and answer.
Usage: python docs/scripts/serve_resident.py WORK [LENGTH [DEVICE]]   (tests/ on PYTHONPATH; DEVICE cuda by default)
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from tiny import tiny_model, tiny_tokenizer

work, length = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 131072
device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
work.mkdir(parents=True, exist_ok=True)
model = tiny_model("llama", dtype=torch.bfloat16, layers=32, hidden_size=1024, intermediate_size=1024,
                   num_attention_heads=8, num_key_value_heads=8, head_dim=128, max_position_embeddings=length)
model.save_pretrained(work / "model")
tiny_tokenizer("llama").save_pretrained(work / "model")
root = Path(__file__).resolve().parents[2] / "sample_docs"
text = (root / "report.md").read_text() + (root / "notes.txt").read_text()
(work / "doc.txt").write_text(text * (length // 1000 + 1))  # --truncate cuts it to the context
env = {**os.environ, "TMIX_CACHE_DIR": str(work / "cache"), "TMIX_CACHE_MAX": "off"}
opts = ["--model", "model", "--device", device]
server = subprocess.Popen([sys.executable, "-m", "tmixcli", "serve", *opts], cwd=work, env=env, text=True,
                          stderr=subprocess.PIPE)
while not list((work / "cache" / "serve").glob("*.sock")):
    assert server.poll() is None, server.stderr.read()
    time.sleep(0.5)
ask = ["ask", "doc.txt", "What is the budget?", *opts, "--truncate", "--max-new-tokens", "16"]
rows = []


def run(label: str, extra_env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tmixcli", *ask], cwd=work, env={**env, **(extra_env or {})},
                       capture_output=True, text=True)
    row = {"run": label, "rc": r.returncode, "wall_s": round(time.perf_counter() - t0, 2),
           "status": [line for line in r.stderr.splitlines() if "cache" in line or "TTFT" in line],
           "answer": r.stdout.strip()}
    print(json.dumps(row), flush=True)
    rows.append(row)
    return row


run("served, first question: prefill + save")
run("served, follow-up: kept in memory")
run("served, follow-up: kept in memory")
run("local process (TMIX_SERVE=off): file loaded from disk", {"TMIX_SERVE": "off"})
kv = next((work / "cache" / "kv").glob("*.safetensors"))
os.utime(kv)  # changed on disk: the server loads it afresh
run("served, file touched: loaded from disk")
run("served, follow-up: kept in memory")
server.terminate()
server.wait(timeout=60)
answers = {r["answer"] for r in rows}
name = torch.cuda.get_device_name() if device == "cuda" else device
print(json.dumps({"device": name, "torch": torch.__version__, "length": length,
                  "kv_file_gib": round(kv.stat().st_size / 2**30, 2), "same_answer_everywhere": len(answers) == 1}))
