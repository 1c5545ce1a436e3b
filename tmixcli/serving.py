"""The request a `tmix serve` runs in this process, if any: serve.py writes it, the commands it runs read it here.
Imports nothing, so reading it pulls in neither the server nor anything else."""

served: dict = {}  # while a server runs a request: {"key": ..., "lm": LoadedModel, "resident": ResidentKV, "conn": ...}
