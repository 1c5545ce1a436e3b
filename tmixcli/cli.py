"""The `tmix` command line: the Typer app, its subcommands registered in help order, and main (errors, Ctrl-C)."""

from __future__ import annotations

from tmixcli import startup  # first: Ctrl-C while the rest imports exits 130 with one line

import os
import re
import sys

import typer

from tmixcli import bench, calibrate, cli_ask, cli_cache, cli_chat, cli_help, cli_options, cli_serve, cli_text, \
    evaluate, oom, stdout, terminate
from tmixcli.errors import TmixError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Ask questions about long documents with a local LLM: TriangleMix prefill, reusable KV cache.")


def _print_version(value: bool) -> None:
    """--version: print the version and exit, before any command runs."""
    if value:
        from tmixcli import __version__

        print(f"tmix {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")) -> None:
    """Ask questions about long documents with a local LLM: TriangleMix prefill, reusable KV cache."""


def _register_commands() -> None:
    """The subcommands, each from its own module (a module that fails to import is an error, not a missing command)."""
    for command in (cli_ask.ask, cli_ask.prefill, cli_text.text, cli_chat.chat, cli_serve.serve):
        app.command()(command)
    app.add_typer(cli_cache.app, name="cache", help="List, inspect and remove cached KV files.")
    for name, command in (("bench", bench.bench_command), ("eval", evaluate.eval_command),
                          ("calibrate", calibrate.calibrate_command)):
        app.command(name)(startup.command(command))


_register_commands()
startup.imported()


def _gpu_oom_line(err: Exception) -> str:
    """One line for torch's CUDA out-of-memory error (its own message is a paragraph), after giving back what the
    failed work held: a `tmix serve` carries on with the next request."""
    import torch

    torch.cuda.empty_cache()
    asked = re.search(r"Tried to allocate ([\d.]+ \w+)", str(err))
    what = f" (tried to allocate {asked[1]})" if asked else ""
    return (f"tmix: error: the GPU ran out of memory{what}: a smaller --chunk-size, a shorter document (--truncate) "
            f"or --device cpu needs less")


def _usage_error_base() -> type[Exception]:
    """The class of click's usage errors as typer uses it (typer >= 0.2x vendors its own click)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_line(err: Exception) -> str:
    """One line for a usage error: click's message in tmix's lower case, and where help is (or, for an unknown
    option that is an existing file's name, how to give that file)."""
    msg = " ".join(err.format_message().split())
    msg = msg[:1].lower() + msg[1:]
    option = getattr(err, "option_name", None)
    named = [a for a in cli_options.ARGV if option and a.startswith(option) and os.path.exists(a)]
    if named:
        return (f"tmix: error: {msg}; a file whose name starts with '-' must be written ./{named[0]} (or put -- "
                "before it, after all the options)")
    ctx = getattr(err, "ctx", None)
    return f"tmix: error: {msg}" + (f" (see '{ctx.command_path} --help')" if ctx is not None else "")


_MODEL_COMMANDS = {"ask", "prefill", "chat", "serve", "bench", "eval", "calibrate"}  # they load torch


def _check_start(args: list[str]) -> None:
    """A command that loads a model, run from a deleted current folder (startup.working_folder) or under an
    address-space limit too low for torch (oom.check_import_room): one error line at once instead of torch's crash;
    `text`, `cache` and --help still run there."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name in _MODEL_COMMANDS and "--help" not in args:
        startup.working_folder()
        oom.check_import_room()


def _abort_writers() -> None:
    """A KV file still being written when the command ends (it failed after its prefill) is dropped, not left."""
    kvwrite = sys.modules.get("tmixcli.kvwrite")  # never imported (nor torch) by commands that wrote nothing
    if kvwrite is not None:
        kvwrite.abort_all()


def _end_work() -> None:
    """The command's CPU work ends: other tmix runs stop counting it (threads.stop); a server's next request decides its
    threads afresh."""
    threads = sys.modules.get("tmixcli.threads")  # never imported (nor torch) by commands that loaded no model
    if threads is not None:
        threads.stop()


def _say_interrupted() -> None:
    """'tmix: interrupted', saying why when it is the `tmix serve` answering this run that was stopped."""
    serve = sys.modules.get("tmixcli.serve")
    why = " (the tmix server was stopped)" if serve is not None and serve.served and serve.stopping() else ""
    print(f"{stdout.interrupt_lead() or stdout.last_line_lead()}tmix: interrupted{why}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: TmixError -> one line on stderr and its exit code; never a traceback for user errors."""
    with stdout.dropping_stderr():  # status lines that cannot be written are dropped, the answer still comes
        _main(argv)


def _main(argv: list[str] | None) -> None:
    """main's work, with stderr already dropping what it cannot write."""
    try:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        stdout.tolerant_streams()
        cli_options.ARGV[:] = sys.argv[1:] if argv is None else list(argv)
        command = typer.main.get_command(app)
        cli_help.plain_arguments(command)
        _check_start(cli_options.ARGV)
        misplaced = cli_help.option_after_dashes(command, cli_options.ARGV)
        if misplaced is not None:
            raise TmixError(misplaced)
        try:
            with terminate.handled(), stdout.guarded():
                code = command.main(args=argv, prog_name="tmix", standalone_mode=False)
        finally:
            _abort_writers()
            _end_work()
    except TmixError as err:
        print(f"tmix: error: {err}", file=sys.stderr)
        sys.exit(err.code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        print("tmix: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        _say_interrupted()
        sys.exit(130)
    except terminate.Terminated as err:  # SIGTERM, SIGHUP: cleaned up as after Ctrl-C (_abort_writers)
        print(f"{stdout.interrupt_lead() or stdout.last_line_lead()}{err.line()}", file=sys.stderr)
        sys.exit(err.code)
    except stdout.OutputClosed as err:
        if err.why is None:  # the reader of our output left: end quietly, as on SIGPIPE
            sys.exit(141)
        print(f"tmix: error: cannot write to stdout: {err.why}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as err:
        if type(err).__name__ == "OutOfMemoryError":  # torch's, on the GPU (torch is not imported here)
            print(_gpu_oom_line(err), file=sys.stderr)
            sys.exit(1)
        if oom.is_oom(err) or oom.failed_import(err):  # where no step said so (models, opening): an import, an answer
            print(f"tmix: error: {oom.unplaced(err)}", file=sys.stderr)
            sys.exit(1)
        if not isinstance(err, _usage_error_base()):
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `tmix` or `tmix cache`: the help text
            err.show()
        else:
            print(_usage_line(err), file=sys.stderr)
        sys.exit(err.exit_code)
    if code == 130:  # typer turns Ctrl-C into a return value of 130, without a word
        _say_interrupted()
    sys.exit(code if isinstance(code, int) else 0)
