"""CUDA paths end to end: dense tail chunks, tmix dispatch on a bf16 model, chunked prefill, KV load to GPU."""

from __future__ import annotations

import time

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("s,lq,h,hkv,d", [(4096, 1000, 32, 8, 128), (3001, 777, 8, 8, 64), (5000, 2048, 28, 4, 128)])
def test_dense_tail_matches_reference(s, lq, h, hkv, d):
    from tmix_kernels.dense import dense_tail_attention
    from tmix_kernels.reference import triangle_reference

    g = torch.Generator(device="cuda").manual_seed(s + lq)
    q = torch.randn(1, h, lq, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = torch.randn(2, 1, hkv, s, d, device="cuda", dtype=torch.bfloat16, generator=g)
    out = dense_tail_attention(q, k, v)
    ref = triangle_reference(q, k, v, 0, s + 1, 0)  # plain causal, bottom-right aligned
    assert out.shape == (1, lq, h, d) and _rel(out, ref) < 2e-2


def _model(seed: int = 0, layers: int = 4):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=layers,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_position_embeddings=8192)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).cuda().eval()


def test_trimix_bf16_model_close_to_fp32_cpu_path():
    from tmixcli import attention, generate
    from tmixcli.config import AttentionConfig

    model = _model()
    ids = torch.randint(0, 512, (3000,)).tolist()
    attn = AttentionConfig(method="trimix", start_layer=1, n_init=8, n_local=256, last_n=64)
    attention.attach(model, attn)
    _, gpu = generate.prefill(model, ids)
    cpu_model = model.float().cpu()
    attention.attach(cpu_model, attn)
    _, cpu = generate.prefill(cpu_model, ids)
    assert torch.nn.functional.cosine_similarity(gpu.cpu(), cpu, dim=0) > 0.99


def test_compiled_norms_mlp_match_eager_gpu():
    from tmixcli import attention, generate
    from tmixcli.config import AttentionConfig
    from tmixcli.fuse import compile_blocks

    model = _model(3)
    attention.attach(model, AttentionConfig(method="trimix", start_layer=2, n_local=256, last_n=64))
    ids = torch.randint(0, 512, (2049,)).tolist()
    _, eager = generate.prefill(model, ids)
    compile_blocks(model)
    _, fused = generate.prefill(model, ids)
    _, again = generate.prefill(model, ids[:1500])  # a new length reuses the dynamic graph
    assert torch.nn.functional.cosine_similarity(eager, fused, dim=0) > 0.999 and torch.isfinite(again).all()


@pytest.mark.parametrize("chunk", [512, 1000])
def test_chunked_prefill_matches_one_shot_gpu(chunk):
    from tmixcli import attention, generate
    from tmixcli.config import AttentionConfig

    model = _model(1)
    ids = torch.randint(0, 512, (4099,)).tolist()
    for method in ("dense", "trimix"):
        attention.attach(model, AttentionConfig(method=method, start_layer=2, n_local=256, last_n=64))
        one, l1 = generate.prefill(model, ids)
        many, l2 = generate.prefill(model, ids, chunk_size=chunk)
        assert torch.nn.functional.cosine_similarity(l1, l2, dim=0) > 0.999
        for a, b in zip(one.layers, many.layers):
            assert _rel(b.keys, a.keys.double()) < 2e-2


@pytest.mark.parametrize("stage", [None, 1000])
def test_kv_round_trip_to_gpu(tmp_path, monkeypatch, stage):
    """Save from the GPU cache's views through pinned staging, load back through pinned pieces (whole or odd sizes)."""
    from tmixcli import attention, generate, kvread, kvstore, kvwrite
    from tmixcli.config import AttentionConfig

    if stage:  # odd sizes: pieces end mid-row, each worker cycles its two pinned buffers many times
        monkeypatch.setattr(kvwrite, "STAGE_BYTES", stage)
        monkeypatch.setattr(kvread, "PIECE_BYTES", stage + 24)

    model = _model(2)
    attn = AttentionConfig(method="trimix", start_layer=2, n_local=256, last_n=64)
    attention.attach(model, attn)
    ids = torch.randint(0, 512, (1500,)).tolist()
    cache, _ = generate.prefill(model, ids)
    meta = kvstore.build_meta(model_id="tiny", fingerprint="f", dtype=torch.bfloat16, attn=attn, doc_name="d",
                              doc_sha256="0", template_hash="t", n_tokens=len(ids))
    path = tmp_path / "kv.safetensors"
    kvwrite.save_kv(path, cache, ids, meta)
    loaded, stored, _ = kvread.load_kv(path, "cuda")
    assert stored == ids
    for a, b in zip(cache.layers, loaded.layers):
        assert b.keys.is_cuda and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    want = generate.extend(model, cache, [5, 6, 7])
    got = generate.extend(model, loaded, [5, 6, 7])
    assert torch.equal(want, got)
    devices = [torch.device("cuda" if i % 2 else "cpu") for i in range(len(cache.layers))]
    mixed, _, _ = kvread.load_kv(path, devices, rows=1001)  # layers on two devices, the first rows only
    for a, b, d in zip(cache.layers, mixed.layers, devices):
        assert b.keys.device.type == d.type and torch.equal(a.keys[:, :, :1001].to(d), b.keys)
        assert torch.equal(a.values[:, :, :1001].to(d), b.values)


@pytest.mark.parametrize("chunk,stage", [(None, None), (700, 1000)])
def test_kv_written_during_gpu_prefill(tmp_path, monkeypatch, chunk, stage):
    """Rows handed to kvwrite by each layer as the GPU prefill runs (side stream, pinned buffer) give the file of
    the finished cache, and decoding right after is unchanged."""
    from tmixcli import attention, generate, kvread, kvstore, kvwrite
    from tmixcli.config import AttentionConfig

    if stage:
        monkeypatch.setattr(kvwrite, "STAGE_BYTES", stage)
    model = _model(5)
    attn = AttentionConfig(method="trimix", start_layer=2, n_local=256, last_n=64)
    attention.attach(model, attn)
    ids = torch.randint(0, 512, (2501,)).tolist()
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(model.config)
    w = kvwrite.KVWriter(tmp_path / "kv.safetensors", n_layers, kv_heads, head_dim, torch.bfloat16, ids, {})
    cache, _ = generate.prefill(model, ids, chunk_size=chunk, on_rows=w.rows)
    w.finish()
    # an answer decoded (CUDA graph captured and replayed) while the writer still copies on its own stream
    answer = list(generate.generate_ids(model, cache, [5, 6, 7], set(), 24))
    w.wait()
    loaded, stored, _ = kvread.load_kv(tmp_path / "kv.safetensors", "cuda")
    assert stored == ids
    for a, b in zip(cache.layers, loaded.layers):
        assert torch.equal(a.keys[:, :, :len(ids)], b.keys) and torch.equal(a.values[:, :, :len(ids)], b.values)
    assert answer == list(generate.generate_ids(model, loaded, [5, 6, 7], set(), 24))


def test_ask_on_gpu_writes_its_kv_file_during_the_prefill(capsys, tmp_path, tiny_dir, monkeypatch):
    """`tmix ask --device cuda`: a miss writes its KV file as the layers finish, the hit answers the same, and a grown
    document (its reused rows handed to the writer first) gives a file the next question hits."""
    from runcli import DOCS, TINY, ask_json

    from tmixcli import kvfolder

    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    doc = tmp_path / "notes.txt"
    text = (DOCS / "notes.txt").read_text()
    doc.write_text(text[:900])
    args = (str(doc), "Who is the project manager?", "--model", tiny_dir, "--device", "cuda", "--max-new-tokens",
            "12", *TINY)
    first = ask_json(capsys, *args)
    hit = ask_json(capsys, *args)
    assert not first["cache_hit"] and hit["cache_hit"] and hit["answer"] == first["answer"]
    doc.write_text(text[:1000])  # the notes grew
    grown = ask_json(capsys, *args)
    again = ask_json(capsys, *args)
    assert grown["reused_tokens"] > 0 and again["cache_hit"] and again["answer"] == grown["answer"]
    assert kvfolder.temp_files() == [] and len(kvfolder.list_entries()) == 2


def test_a_prefill_told_to_stop_stops_the_gpu_within_a_few_layers():
    """The host queues a GPU prefill far ahead of the GPU; generate.stoppable_layers keeps it two layers ahead, so a
    check that raises (a `tmix serve` client gone) also ends the GPU's work, not only the queueing of it."""
    from tmixcli import checkpoints, generate
    from tmixcli.models import decoder_layers

    model = _model(layers=32)
    for _ in range(2):  # the second time calibrates: ~50 ms of GPU time per layer
        torch.cuda.synchronize()
        start = time.perf_counter()
        torch.cuda._sleep(10**7)
        torch.cuda.synchronize()
    cycles = int(10**7 * 0.05 / (time.perf_counter() - start))
    hooks = [layer.register_forward_hook(lambda *_: torch.cuda._sleep(cycles)) for layer in decoder_layers(model)]
    t0, told = time.perf_counter(), []

    def check() -> None:
        if time.perf_counter() - t0 > 0.5:  # ~10 of the prefill's 32 layers (1.6 s) are done by then
            told.append(time.perf_counter())
            raise KeyboardInterrupt

    checkpoints.between_steps.append(check)  # what generate's checks run
    try:
        with pytest.raises(KeyboardInterrupt):
            generate.prefill(model, [i % 500 + 1 for i in range(4096)])  # one shot: no sync between layers
        torch.cuda.synchronize()
        after = time.perf_counter() - told[0]
    finally:
        checkpoints.between_steps.remove(check)
        for h in hooks:
            h.remove()
    assert after < 0.4, f"the GPU worked on for {after:.2f} s"


def test_prefill_from_reused_rows_matches_one_shot_gpu(tmp_path):
    """A grown prompt prefilled from an older KV file's first rows (reuse.py) matches its one-shot prefill."""
    from tmixcli import attention, generate, kvread, kvstore, kvwrite, reuse
    from tmixcli.config import AttentionConfig

    model = _model(4)
    attn = AttentionConfig(method="trimix", start_layer=2, n_local=256, last_n=64)
    attention.attach(model, attn)
    old = torch.randint(0, 512, (3001,)).tolist()
    new = old[:2900] + torch.randint(0, 512, (1211,)).tolist()
    cache, _ = generate.prefill(model, old)
    meta = kvstore.build_meta(model_id="tiny", fingerprint="f", dtype=torch.bfloat16, attn=attn, doc_name="d",
                              doc_sha256="0", template_hash="t", n_tokens=len(old))
    path = tmp_path / "kv.safetensors"
    kvwrite.save_kv(path, cache, old, meta)
    found = reuse.best_file(new, {"model_fingerprint": "f"}, attn, folder=tmp_path)
    assert found == (path, 2900)
    base, _, _ = kvread.load_kv(path, "cuda", rows=2900, headroom=len(new) - 2900)
    got, l2 = generate.prefill(model, new, cache=base)
    one, l1 = generate.prefill(model, new)
    assert torch.nn.functional.cosine_similarity(l1, l2, dim=0) > 0.999
    for a, b in zip(one.layers, got.layers):
        assert _rel(b.keys, a.keys.double()) < 2e-2 and _rel(b.values, a.values.double()) < 2e-2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_device_map_over_two_gpus_matches_one_gpu(tmp_path):
    """A model split by accelerate over two GPUs gives the single-GPU answer (triangle kernels on each device)."""
    from transformers import AutoModelForCausalLM

    from tmixcli import attention, generate
    from tmixcli.config import AttentionConfig

    _model(3).save_pretrained(tmp_path)
    one = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).cuda().eval()
    split = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="auto",
                                                 max_memory={0: "20MiB", 1: "10GiB"}).eval()
    devices = {p.device.index for p in split.parameters()}
    assert devices == {0, 1}
    attn = AttentionConfig(method="trimix", start_layer=1, n_local=256, last_n=64)
    ids = torch.randint(0, 512, (3000,)).tolist()
    outs = []
    for model in (one, split):
        attention.attach(model, attn)
        cache, _ = generate.prefill(model, ids, chunk_size=1024)
        outs.append(generate.extend(model, cache, [1, 2, 3]).cpu())
    assert torch.nn.functional.cosine_similarity(outs[0], outs[1], dim=0) > 0.999

    # the split model's KV file loads back with each layer's tensors on that layer's GPU
    from tmixcli import kvread, kvwrite
    from tmixcli.models import layer_devices

    cache, _ = generate.prefill(split, ids, chunk_size=1024)
    path = tmp_path / "split.kv.safetensors"
    kvwrite.save_kv(path, cache, ids, {})
    devices = layer_devices(split)
    assert {d.index for d in devices} == {0, 1}
    loaded, _, _ = kvread.load_kv(path, devices)
    assert [layer.keys.device for layer in loaded.layers] == devices
    again = generate.extend(split, loaded, [1, 2, 3]).cpu()
    assert torch.nn.functional.cosine_similarity(outs[1], again, dim=0) > 0.9999


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_graph_decode_matches_eager_decode(family):
    """Steps replayed from the captured graph give the eager step's logits and leave the same cache behind."""
    from tiny import tiny_model

    from tmixcli import attention, generate, graph_decode
    from tmixcli.config import AttentionConfig

    model = tiny_model(family, dtype=torch.bfloat16, max_position_embeddings=4096).cuda().eval()
    attention.attach(model, AttentionConfig(method="trimix", start_layer=1, n_local=64, last_n=16))
    ids = torch.randint(3, 300, (1500,)).tolist()
    graph_cache, _ = generate.prefill(model, ids)
    eager_cache, _ = generate.prefill(model, ids)
    dec = graph_decode.start(model, graph_cache, 40)
    assert dec is not None, "graph capture failed"
    for tok in torch.randint(3, 300, (40,)).tolist():
        a, b = dec.step(tok), generate.extend(model, eager_cache, [tok])
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999
    dec.close()
    assert graph_cache.get_seq_length() == eager_cache.get_seq_length() == 1540
    for x, y in zip(graph_cache.layers, eager_cache.layers):
        assert _rel(x.keys, y.keys.double()) < 1e-2
    tokens = list(generate.generate_ids(model, graph_cache, [5, 6, 7], set(), max_new_tokens=30))
    assert len(tokens) == 30 and graph_cache.get_seq_length() == 1540 + 3 + 29


def test_graph_decode_answers_like_eager_across_questions(monkeypatch):
    """fp32: greedy answers with graph replays equal the eager ones, question after question (rewound or kept)."""
    from tiny import tiny_model

    from tmixcli import attention, generate
    from tmixcli.context import rewind
    from tmixcli.config import AttentionConfig

    model = tiny_model("llama", max_position_embeddings=4096).cuda().eval()
    attention.attach(model, AttentionConfig(method="trimix", start_layer=1, n_local=64, last_n=16))
    ids = torch.randint(3, 300, (900,)).tolist()
    questions = [torch.randint(3, 300, (12,)).tolist() for _ in range(3)]
    runs = {}
    for graphs in ("1", "0"):
        monkeypatch.setenv("TMIX_CUDA_GRAPHS", graphs)
        cache, _ = generate.prefill(model, ids)
        answers = []
        for i, q in enumerate(questions):
            answers.append(list(generate.generate_ids(model, cache, q, set(), max_new_tokens=24)))
            if i == 0:
                rewind(cache, len(ids))  # like `ask`/`chat`; the later questions keep the history
        runs[graphs] = (answers, cache.get_seq_length())
    assert runs["1"] == runs["0"]


def test_tmix_bench_kernels_prints_one_table(capsys):
    import json

    from tmixcli.cli import main

    with pytest.raises(SystemExit) as done:
        main(["bench", "--kernels", "--arch", "smollm2-135m", "--lengths", "3000", "--json"])
    assert done.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert "H=9, Hkv=3, D=64" in out["header"]
    tri = next(r for r in out["rows"] if r["impl"] == "triangle")
    assert tri["length"] == 3000 and tri["ms"] > 0 and tri["err_vs_flex"] < 2e-2
