"""Shrink fuzz/corpus/TARGET: keep, smallest first, each input that reaches a line-to-line
arc (in lamina, tarfile, tomllib or json) no smaller input reached; named seeds always stay.

    PYTHONPATH=src python fuzz/minimize.py TARGET...

After a fuzz run, copy fuzz/work/TARGET/* that end without a non-LaminaError into
fuzz/corpus/TARGET/ and run this: the replay test stays quick and keeps the coverage.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import targets
WANT = (f"{os.sep}lamina{os.sep}", "tarfile.py", "tomllib", f"json{os.sep}")
def run(t, data):
    arcs = set()
    last = {}
    def tracer(frame, event, arg):
        fn = frame.f_code.co_filename
        if not any(w in fn for w in WANT):
            return None
        def local(frame, event, arg):
            if event == "line":
                key = id(frame)
                arcs.add((fn, last.get(key), frame.f_lineno))
                last[key] = frame.f_lineno
            return local
        return local
    d = Path(tempfile.mkdtemp())
    sys.settrace(tracer)
    try:
        targets.run_one(t, data, d)
    except Exception:
        pass
    finally:
        sys.settrace(None)
        shutil.rmtree(d, ignore_errors=True)
    return arcs
for t in sys.argv[1:]:
    files = sorted(Path(__file__).resolve().parent / "corpus" / t.iterdir(), key=lambda p: (p.stat().st_size, p.name))
    seen, keep = set(), []
    for f in files:
        a = run(t, f.read_bytes())
        if not a <= seen:
            seen |= a
            keep.append(f)
    for f in files:
        if f not in keep and len(f.name) == 40:  # a libFuzzer unit (sha1 name), not a named seed
            f.unlink()
    print(t, len(files), "->", len(keep), "arcs", len(seen))
