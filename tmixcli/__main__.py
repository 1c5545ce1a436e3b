from tmixcli.startup import main  # first: Ctrl-C while the command line imports exits 130 with one line

if __name__ == "__main__":
    try:
        main()
    finally:
        # Under `python -m`, CPython kills the process by SIGINT at exit, whatever exit code main() chose, when a
        # KeyboardInterrupt once ended a string exec (dataclasses make methods so) even though it was caught; a
        # string exec clears that mark, so Ctrl-C ends with 130 as from the `tmix` script.
        exec("")
