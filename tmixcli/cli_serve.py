"""`tmix serve`: keep the model loaded for later ask and prefill runs, or stop such a server."""

from __future__ import annotations

from typing import Optional

import typer

from tmixcli import cli_open, startup
from tmixcli.cli_options import (CompileOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, ModelOpt, QuietOpt,
                                 ServeThreadsOpt, check_model_options, env_options)


@startup.command
def serve(
    command: typer.Context, model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[str] = ServeThreadsOpt, compile: str = CompileOpt,
    quiet: bool = QuietOpt,
    stop: bool = typer.Option(False, "--stop", help="Stop the server started with these model options instead."),
) -> None:
    """Keep the model loaded: `ask` and `prefill` runs whose model options mean the same settings are answered here."""
    from tmixcli import serve as server
    from tmixcli import serve_client
    from tmixcli.serverkey import gpu_here, server_key

    check_model_options(device, dtype, device_map, threads, compile, model, env_options(command))
    if stop:  # found as `ask` finds it
        pid = serve_client.stop_server(server_key(model, device, dtype, device_map, compile),
                                       lambda line: cli_open.status(quiet, line))
        cli_open.status(quiet, f"stopped the tmix server (pid {pid})")
        return
    cuda = _cuda_available() if device == "auto" else None  # what auto means here, from torch itself
    key = server_key(model, device, dtype, device_map, compile, cuda)
    serve_client.socket_path(key)  # a cache folder that cannot be made fails here, before the model loads
    if cuda is not None and cuda != gpu_here():  # clients judge without torch (seconds): they would miss this one
        mine = "cuda" if cuda else "cpu"
        cli_open.warn(f"--device auto is {mine} here, which clients cannot tell without torch: "
                      f"ask with --device {mine}")
    with server.claim(key) as place:  # a second server with these settings is refused before its model loads
        lm = cli_open.load(model, device, dtype, quiet, device_map, threads, compile)
        server.run_server(lm, key, place, quiet)


def _cuda_available() -> bool:
    """Whether torch finds a CUDA GPU (imports torch: seconds)."""
    import torch

    return torch.cuda.is_available()
