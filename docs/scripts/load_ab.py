"""One machine, page cache dropped before each cold load: an older kvstore.load_kv vs the current one (kvread.load_kv).

Run as root on the GPU machine:
`git show 9e3cb48:tmixcli/kvstore.py > /tmp/old_kvstore.py; python docs/scripts/load_ab.py /tmp/old_kvstore.py`
(writes $OUT/ab_load.json, or ./ab_load.json without $OUT). Random 128K-token Llama-3.1-8B-shaped KV, 16 GiB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from tmixcli import kvread, kvwrite

TOKENS = 131072


def _drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _load_seconds(module, path: str) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    module.load_kv(path, "cuda")
    torch.cuda.synchronize()
    took = time.perf_counter() - start
    torch.cuda.empty_cache()
    return round(took, 3)


def main() -> None:
    spec = importlib.util.spec_from_file_location("old_kvstore", sys.argv[1])
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    layers = [SimpleNamespace(keys=torch.randn(1, 8, TOKENS, 128, device="cuda", dtype=torch.bfloat16),
                              values=torch.randn(1, 8, TOKENS, 128, device="cuda", dtype=torch.bfloat16))
              for _ in range(32)]  # keys/values: [1, Hkv, T, D]
    path = "/root/ab.safetensors"
    kvwrite.save_kv(path, SimpleNamespace(layers=layers), list(range(TOKENS)), {"probe": "load_ab"})
    del layers
    torch.cuda.empty_cache()
    rows: dict = {"old_cold": [], "new_cold": [], "old_warm": [], "new_warm": []}
    for _ in range(2):
        for name, module in (("old", old), ("new", kvread)):
            _drop_page_cache()
            rows[name + "_cold"].append(_load_seconds(module, path))
            rows[name + "_warm"].append(_load_seconds(module, path))
            print(name, rows[name + "_cold"][-1], rows[name + "_warm"][-1], flush=True)
    rows["device"] = torch.cuda.get_device_name()
    print(json.dumps(rows))
    with open(os.path.join(os.environ.get("OUT", "."), "ab_load.json"), "w") as f:
        json.dump(rows, f, indent=1)
    os.unlink(path)


if __name__ == "__main__":
    main()
