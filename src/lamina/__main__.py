"""The ``lamina`` command: the script and ``python -m lamina``.

One short-lived process, so the garbage collector is tuned for one, before click and the
library are imported. Importing them and building their attrs classes allocates many objects
that live until exit and makes few cycles: the young generation is collected every 10,000
allocations rather than 700. At exit everything is frozen, so the interpreter's final full
collections skip it: they cost ~15 ms of a 0.15 s build. Every output is written and closed
by then; what is left goes with the process.
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    gc.set_threshold(10_000, 10, 10)
    from lamina.cli import run

    code = run()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    main()
