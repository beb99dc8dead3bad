"""The ``lamina`` command: the script and ``python -m lamina``.

One short-lived process, so the garbage collector is tuned for one, before click and the
library are imported. Importing them and building their attrs classes allocates ~25,000
objects that live until exit and makes few cycles; at the default threshold (700) the
collector scanned them over and over (~60 collections, 5-10 ms of a hello build). The young
generation is collected every 100,000 allocations instead: none while starting, and a bound
on what cyclic garbage can hold (a few tens of MB) in the longest build. At exit everything
is frozen, so the interpreter's final full collections skip it: they cost ~15 ms more. Every
output is written and closed by then; what is left goes with the process.

``lamina --help`` alone prints click's rendering of it, kept in lamina.helptext, without
importing click (two thirds of its time), when click would render it that way: for a
terminal of 80 columns or more, or no terminal. And ``lamina build ...`` is first checked up
to date as a command line (lamina.quickcheck), before click and the library load: a no-op
rebuild is then a stat of every input and nothing else.
"""

from __future__ import annotations

import gc
import sys


def _columns() -> int:
    """The width click's help formatter starts from (shutil.get_terminal_size's rules)."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


# Flags that make a build one lamina.uptodate never records (or always rebuilds): such a
# command line is not looked up at all.
_NEVER_REMEMBERED = frozenset({"--no-cache", "--force", "--push", "--check-reproducible", "--provenance-key", "-"})


def _up_to_date() -> int | None:
    """``lamina build ...`` answered by lamina.quickcheck (0), or None: not known, build."""
    try:
        from lamina.quickcheck import check

        found = check(sys.argv[1:])
        if found is None:
            return None
        digest, quiet = found  # the outputs are up to date with this very command line
        if not quiet and sys.stderr.isatty():
            sys.stderr.write("lamina: up to date\n")
        sys.stdout.write(digest + "\n")
        sys.stdout.flush()
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("lamina: error: interrupted\n")
        return 130
    except OSError as exc:  # stdout failed (closed pipe, full disk): said once, and never flushed to again
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush would fail again
        if not isinstance(exc, BrokenPipeError):  # as the CLI: a reader that went away is told nothing more
            sys.stderr.write(f"lamina: error: cannot write the digest: {exc.strerror}\n")
        return 1


def main() -> None:
    if sys.argv[1:] in (["--help"], ["-h"]) and sys.stdout is not None and _columns() >= 80:
        from lamina.helptext import TOP

        sys.stdout.write(TOP)
        sys.stdout.flush()
        sys.exit(0)
    if (sys.argv[1:2] == ["build"] and sys.stdout is not None and sys.stderr is not None
            and _NEVER_REMEMBERED.isdisjoint(sys.argv)):
        code = _up_to_date()
        if code is not None:
            sys.exit(code)
    gc.set_threshold(100_000, 10, 10)
    from lamina.cli import run

    code = run()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    main()
