"""lamina's benchmark: the same images built by lamina and by the tools users would pick instead.

Run with ``make bench`` (or ``.venv/bin/python bench/run.py [--runs N] [--quick] [--only W]``).
Every workload is run several times per tool, in the same session, and the medians are
compared; peak RSS is the maximum resident set of the whole process tree (GNU time %M, or
the rusage of a wrapper). Writes bench/results.md. Not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# LAMINA_BENCH_LAMINA: another lamina command line (e.g. a worktree's: "env PYTHONPATH=src python -m lamina").
LAMINA = os.environ.get("LAMINA_BENCH_LAMINA", str(ROOT / ".venv" / "bin" / "lamina")).split()
SCRATCH = Path(os.environ.get("LAMINA_BENCH_DIR", "/var/tmp/lamina-bench"))
OUT = ROOT / "testdata" / "out"

Result = dict[str, object]


def timed(cmd: list[str] | str, *, env: dict[str, str] | None = None, cwd: Path | None = None,
          prepare: Callable[[], None] | None = None) -> tuple[float, float]:
    """(seconds, peak MB) of one run; a shell string runs under sh (for pipelines). Each run
    starts on a quiet disk: what earlier runs (or rows) left to write back is synced first,
    so that no run pays for another's writeback (it once made a no-op row 0.26 s, alone 0.16 s)."""
    if prepare:
        prepare()
    os.sync()
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else cmd
    wrapper = [sys.executable, "-c",
               "import resource,subprocess,sys,time;t=time.perf_counter();r=subprocess.run(sys.argv[1:]);"
               "d=time.perf_counter()-t;print(d, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);sys.exit(r.returncode)",
               *argv]
    res = subprocess.run(wrapper, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[:6]} failed: {res.stderr[-800:]}")
    seconds, kb = res.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(kb) / 1024


def measure(name: str, tool: str, runs: int, cmd: list[str] | str, **kw: object) -> Result:
    times, peaks = [], []
    for _ in range(runs):
        t, m = timed(cmd, **kw)  # type: ignore[arg-type]
        times.append(t)
        peaks.append(m)
    result = {"workload": name, "tool": tool, "median": statistics.median(times), "runs": runs, "peak_mb": max(peaks)}
    print(f"  {name:<12} {tool:<34} {result['median']:8.3f} s  {result['peak_mb']:7.1f} MB  ({runs} runs)", flush=True)
    return result


def skipped(name: str, tool: str, why: str) -> Result:
    print(f"  {name:<12} {tool:<34} not measured: {why}", flush=True)
    return {"workload": name, "tool": tool, "median": None, "why": why}


# ---- inputs


def make_rootfs(target: Path, size_mb: int) -> None:
    """A real tree: subsets of /usr copied with cp -a until about size_mb."""
    if target.exists():
        return
    target.mkdir(parents=True)
    budget = size_mb << 20
    for src in ["/usr/lib/python3", "/usr/share/doc", "/usr/lib/x86_64-linux-gnu", "/usr/share/perl", "/usr/bin",
                "/usr/share/locale", "/usr/lib/gcc"]:
        if budget <= 0 or not os.path.isdir(src):
            continue
        dest = target / src.strip("/").replace("/", "_")
        subprocess.run(["cp", "-a", src, str(dest)], check=False)
        used = int(subprocess.run(["du", "-sb", str(target)], capture_output=True, text=True).stdout.split()[0])
        budget = (size_mb << 20) - used
        if budget < 0:
            # trim the last copy back toward the budget, largest files last
            for path in sorted(dest.rglob("*"), key=lambda p: p.lstat().st_size, reverse=True):
                if budget >= 0:
                    break
                if path.is_file() and not path.is_symlink():
                    budget += path.stat().st_size
                    path.unlink()


def make_many_small(target: Path, count: int) -> None:
    if target.exists():
        return
    rng = random.Random(42)
    for i in range(count):
        d = target / f"d{i // 1000:03d}" / f"e{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}").write_bytes(rng.randbytes(rng.randint(1024, 4096)))


def tree_stats(path: Path) -> str:
    size = int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])
    files = int(subprocess.run(f"find {path} | wc -l", shell=True, capture_output=True, text=True).stdout)
    return f"{size / 1e6:.0f} MB, {files} entries"


# ---- peers


class Docker:
    def __init__(self) -> None:
        from support.dockerd import DockerDaemon

        self.daemon = DockerDaemon(shutil.which("dockerd") or "dockerd", shutil.which("docker") or "docker")

    def cmd(self, context: Path, out: Path, tag: str) -> str:
        host = self.daemon.host
        return (f"DOCKER_BUILDKIT=0 docker -H {host} build -q -t {tag} {context} >/dev/null && "
                f"docker -H {host} save -o {out} {tag} && docker -H {host} rmi -f {tag} >/dev/null && "
                f"docker -H {host} builder prune -af >/dev/null 2>&1; true")

    def stop(self) -> None:
        self.daemon.stop()


def buildah_cmd(root: Path, copies: list[tuple[str, str]], out: Path) -> str:
    run = tempfile.mkdtemp(prefix="bh", dir="/tmp")  # buildah wants a short runroot path
    atexit.register(shutil.rmtree, run, True)
    base = f"buildah --root {root} --runroot {run} --storage-driver vfs"
    copy = " && ".join(f"{base} copy $c {src} {dst} >/dev/null" for src, dst in copies)
    return (f"c=$({base} from scratch) && {copy} && {base} config --cmd /hello $c && "
            f"{base} commit -q $c oci-archive:{out} >/dev/null && {base} rm $c >/dev/null && {base} rmi -af >/dev/null 2>&1; true")


def umoci_cmd(layout: Path, copies: list[tuple[str, str]]) -> str:
    inserts = " && ".join(f"umoci insert --image {layout}:t {src} {dst}" for src, dst in copies)
    return (f"rm -rf {layout} && umoci init --layout {layout} && umoci new --image {layout}:t && {inserts} && "
            f"umoci config --image {layout}:t --config.cmd /hello")


def dockerfile(context: Path, lines: list[str]) -> None:
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text("\n".join(["FROM scratch", *lines]) + "\n")


# ---- workloads


def run(args: argparse.Namespace) -> list[Result]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    runs = 1 if args.quick else args.runs
    slow_runs = 1 if args.quick else max(1, min(3, args.runs))
    env = {"XDG_CACHE_HOME": str(SCRATCH / "cache")}
    docker = None
    try:
        docker = Docker() if shutil.which("dockerd") and os.geteuid() == 0 else None
    except Exception as exc:  # the peer is missing, not lamina: record why
        print(f"docker unavailable: {exc}")
    want = set(args.only.split(",")) if args.only else {"hello", "rootfs", "many-small", "rebuild", "memory",
                                                         "registry", "startup", "noop", "index"}
    try:
        if "hello" in want:
            results += hello(runs, env, docker)
        rootfs = SCRATCH / "rootfs"
        if want & {"rootfs", "rebuild"}:
            make_rootfs(rootfs, 120 if args.quick else 500)
            print(f"rootfs tree: {tree_stats(rootfs)}")
        if "rootfs" in want:
            results += rootfs_workload(rootfs, slow_runs, env, docker)
        if "many-small" in want:
            small = SCRATCH / "many-small"
            make_many_small(small, 5000 if args.quick else 50_000)
            results += many_small(small, slow_runs, env)
        if "rebuild" in want:
            results += rebuild(rootfs, slow_runs, docker)
        if "memory" in want and not args.quick:
            results += memory(env)
        if "registry" in want:
            results += registry_workloads(3 if args.quick else 7, 100 if args.quick else 300)  # alternating pairs
        if "startup" in want:
            results += startup(max(10, runs), env)
        if "noop" in want:
            results += noop(SCRATCH / "noop-tree", max(10, runs), 1200 if args.quick else 12_000)
        if "index" in want:
            results += index_vs_build(slow_runs, 60 if args.quick else 300)
    finally:
        if docker is not None:
            docker.stop()
    return results


def hello(runs: int, env: dict[str, str], docker: Docker | None) -> list[Result]:
    print("hello: scratch + static Go hello + cacert.pem")
    out = SCRATCH / "hello"
    out.mkdir(exist_ok=True)
    copies = [(str(OUT / "hello-amd64"), "/hello"), (str(OUT / "cacert.pem"), "/etc/ssl/certs/cacert.pem")]
    res = [measure("hello", "lamina build", runs, [*LAMINA, "build", "-q", "--no-cache", "--add", f"{OUT / 'hello-amd64'}:/hello",
                   "--add", f"{OUT / 'cacert.pem'}:/etc/ssl/certs/", "--cmd", "/hello", "-o", str(out / "lamina.tar")], env=env)]
    res.append(measure("hello", "umoci init+new+insert+config", runs, umoci_cmd(out / "umoci", copies)))
    if shutil.which("buildah"):
        res.append(measure("hello", "buildah from/copy/commit", runs, buildah_cmd(SCRATCH / "buildah", copies, out / "buildah.tar")))
    else:
        res.append(skipped("hello", "buildah", "buildah not installed"))
    if docker is not None:
        ctx = out / "ctx"
        dockerfile(ctx, ["COPY hello /", "COPY cacert.pem /etc/ssl/certs/", 'CMD ["/hello"]'])
        shutil.copy(OUT / "hello-amd64", ctx / "hello")
        shutil.copy(OUT / "cacert.pem", ctx / "cacert.pem")
        res.append(measure("hello", "docker build + docker save", runs, docker.cmd(ctx, out / "docker.tar", "bench/hello")))
    res.append(pyoci(out, runs))
    return res


def pyoci(out: Path, runs: int) -> Result:
    """pyoci pulls its base over HTTPS only: serve one from a local TLS registry with a test CA."""
    venv = SCRATCH / "pyoci-venv"
    if not (venv / "bin" / "pyoci").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pyoci"], check=False)
    if not (venv / "bin" / "pyoci").exists():
        return skipped("hello", "pyoci build", "pyoci could not be installed from PyPI")
    if not shutil.which("docker-registry"):
        return skipped("hello", "pyoci build", "docker-registry (for its HTTPS base) is not installed")
    from support.registry import DistributionRegistry
    from support.tls import make_test_ca

    ca = make_test_ca(SCRATCH / "ca")
    registry = DistributionRegistry(shutil.which("docker-registry") or "", tls=(ca.cert, ca.key))
    try:
        base = out / "base.tar"  # the busybox rootfs: pyoci needs a base with a filesystem
        subprocess.run([*LAMINA, "build", "-q", "--tarball", str(OUT / "busybox-rootfs.tar.gz"), "-o", str(base)], check=True,
                       capture_output=True)
        subprocess.run([*LAMINA, "push", "-q", "--ca-file", str(ca.ca_pem), str(base), f"{registry.host}/base:v1"], check=True,
                       capture_output=True)
        ctx = out / "pyctx"  # pyoci builds Python projects: a minimal one carrying the same two files
        ctx.mkdir(exist_ok=True)
        (ctx / "pyproject.toml").write_text('[project]\nname = "hello"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n')
        shutil.copy(OUT / "hello-amd64", ctx / "hello")
        shutil.copy(OUT / "cacert.pem", ctx / "cacert.pem")
        cmd = [str(venv / "bin" / "pyoci"), "build", "--tag", "hello:latest", "--base-image", f"{registry.host}/base:v1",
               "--no-progress", "--no-cache", "--cache-dir", str(out / "pyoci-cache")]
        return measure("hello", "pyoci build (base over local HTTPS)", runs, cmd, env={"SSL_CERT_FILE": str(ca.ca_pem)}, cwd=ctx)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        return skipped("hello", "pyoci build", f"failed against the local HTTPS registry: {str(exc)[-300:]}")
    finally:
        registry.stop()


def rootfs_workload(rootfs: Path, runs: int, env: dict[str, str], docker: Docker | None) -> list[Result]:
    print("rootfs: one large real tree as one layer")
    out = SCRATCH / "rootfs-out"
    out.mkdir(exist_ok=True)
    res = []
    # --no-lint: the tree is a host /usr (dynamically linked binaries, no libc in the image), which
    # lint refuses; the peers do not lint, and build-time lint is measured on its own (tests, notes).
    for comp in ("gzip", "zstd", "none"):
        res.append(measure(f"rootfs-{comp}", "lamina build", runs, [*LAMINA, "build", "-q", "--no-cache", "--no-lint",
                                                                    "--compression", comp, "--add", f"{rootfs}:/",
                                                                    "-o", str(out / "lamina.tar")], env=env))
    tar = f"tar -C {rootfs} -cf - ."
    if shutil.which("igzip"):
        res.append(measure("rootfs-gzip", "floor: tar | igzip -2 | sha256sum", runs, f"{tar} | igzip -2 -c | sha256sum >/dev/null"))
    res.append(measure("rootfs-gzip", "tar | gzip -6 | sha256sum (zlib-6)", 1, f"{tar} | gzip -6 -n | sha256sum >/dev/null"))
    res.append(measure("rootfs-zstd", "floor: tar | zstd -3 -T0 | sha256sum", runs, f"{tar} | zstd -q -3 -T0 -c | sha256sum >/dev/null"))
    res.append(measure("rootfs-none", "floor: tar | sha256sum", runs, f"{tar} | sha256sum >/dev/null"))
    res.append(measure("rootfs-gzip", "umoci insert (gzip)", 1, umoci_cmd(out / "umoci", [(str(rootfs), "/")])))
    if shutil.which("buildah"):
        res.append(measure("rootfs-gzip", "buildah copy + commit", 1, buildah_cmd(SCRATCH / "buildah", [(str(rootfs) + "/.", "/")], out / "b.tar")))
    if docker is not None:
        ctx = out / "ctx"
        if not (ctx / "tree").exists():
            dockerfile(ctx, ["COPY tree/ /"])
            subprocess.run(["cp", "-a", str(rootfs), str(ctx / "tree")], check=True)
        res.append(measure("rootfs-gzip", "docker build + docker save", 1, docker.cmd(ctx, out / "d.tar", "bench/rootfs")))
    return res


def many_small(tree: Path, runs: int, env: dict[str, str]) -> list[Result]:
    print("many-small: 50,000 files of 1-4 KB as one layer")
    out = SCRATCH / "small-out"
    out.mkdir(exist_ok=True)
    res = [measure("many-small", "lamina build", runs, [*LAMINA, "build", "-q", "--no-cache", "--add", f"{tree}:/data",
                                                        "-o", str(out / "lamina.tar")], env=env)]
    if shutil.which("igzip"):
        res.append(measure("many-small", "floor: tar | igzip -2 | sha256sum", runs,
                           f"tar -C {tree} -cf - . | igzip -2 -c | sha256sum >/dev/null"))
    return res


def rebuild(rootfs: Path, runs: int, docker: Docker | None) -> list[Result]:
    print("rebuild: rootfs + hello, then again after changing only hello")
    work = SCRATCH / "rebuild"
    work.mkdir(exist_ok=True)
    hello = work / "hello"
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    cmd = [*LAMINA, "build", "-q", "--no-lint", "--add", f"{rootfs}:/", "--add", f"{hello}:/hello", "-o", str(work / "r.tar")]

    def cold() -> None:
        shutil.rmtree(work / "cache", ignore_errors=True)
        shutil.copy(OUT / "hello-amd64", hello)

    counter = [0]

    def touch_hello() -> None:
        counter[0] += 1
        with open(hello, "ab") as f:
            f.write(str(counter[0]).encode())

    res = [measure("rebuild", "lamina cold (empty cache)", runs, cmd, env=env, prepare=cold)]
    res.append(measure("rebuild", "lamina after changing hello", max(runs, 3), cmd, env=env, prepare=touch_hello))
    return res


def paired(name: str, runs: int, ours: tuple[str, list[str] | str], theirs: tuple[str, list[str] | str],
           env: dict[str, str], *, envs: tuple[dict[str, str], dict[str, str]] | None = None,
           prepares: tuple[Callable[[], None] | None, Callable[[], None] | None] = (None, None),
           warm_of_cold: bool = False) -> list[Result]:
    """Rows whose two commands alternate, so that load on a shared machine (and its drift
    within minutes) falls on both alike; the ratio is the median of the per-pair ratios:
    ours / theirs, or with ``warm_of_cold`` theirs / ours (``ours`` the cold run). ``envs``
    and ``prepares``: per side, instead of ``env`` and nothing."""
    times: tuple[list[float], list[float]] = ([], [])
    peaks: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for side, (_, cmd) in enumerate((ours, theirs)):
            t, m = timed(cmd, env=envs[side] if envs else env, prepare=prepares[side])
            times[side].append(t)
            peaks[side].append(m)
    pairs = zip(*times) if not warm_of_cold else zip(times[1], times[0])
    ratio = statistics.median(a / b for a, b in pairs)
    out = []
    for side, (tool, _) in enumerate((ours, theirs)):
        out.append({"workload": name, "tool": tool, "median": statistics.median(times[side]), "runs": runs,
                    "peak_mb": max(peaks[side]), **({"ratio": ratio} if side else {})})
        print(f"  {name:<12} {tool:<34} {out[-1]['median']:8.3f} s  ({runs} runs, alternating)", flush=True)
    print(f"  {name:<12} median of per-pair ratios: {ratio:.2f}", flush=True)
    return out


def startup(runs: int, env: dict[str, str]) -> list[Result]:
    """`lamina --help` (target 0.06 s) against bare Python, and hello against umoci, pairwise."""
    print("startup: lamina --help vs python -c pass; hello build vs umoci, alternating")
    out = SCRATCH / "startup"
    out.mkdir(exist_ok=True)
    res = paired("help", runs, ("lamina --help", [*LAMINA, "--help"]),
                 ("python -c pass (floor)", [sys.executable, "-c", "pass"]), env)
    copies = [(str(OUT / "hello-amd64"), "/hello"), (str(OUT / "cacert.pem"), "/etc/ssl/certs/cacert.pem")]
    hello_cmd = [*LAMINA, "build", "-q", "--no-cache", "--add", f"{OUT / 'hello-amd64'}:/hello", "--add",
                 f"{OUT / 'cacert.pem'}:/etc/ssl/certs/", "--cmd", "/hello", "-o", str(out / "lamina.tar")]
    res += paired("hello-pair", runs, ("lamina build", hello_cmd),
                  ("umoci init+new+insert+config", umoci_cmd(out / "umoci", copies)), env)
    return res


def noop(tree: Path, runs: int, count: int) -> list[Result]:
    """Up to date means no work: a rebuild with nothing changed (target 0.15 s for 12k entries)."""
    make_many_small(tree, count)
    print(f"noop: {tree_stats(tree)}; cold build, then rebuilds with nothing changed")
    work = SCRATCH / "noop"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    cmd = [*LAMINA, "build", "-q", "--add", f"{tree}:/data", "-o", str(work / "n.tar"),
           "--metadata-file", str(work / "n.json"), "--depfile", str(work / "n.d")]
    res = [measure("noop", "lamina cold (empty cache)", 1, cmd, env=env)]
    time.sleep(1.1)  # past the racy-clean second: the stats the next run records are trusted after it
    timed(cmd, env=env)
    res.append(measure("noop", "lamina no-op rebuild (up to date)", runs, cmd, env=env))
    res.append(measure("noop", "lamina --force (cache warm)", 1, [*cmd, "--force"], env=env))
    return res


def index_vs_build(runs: int, size_mb: int) -> list[Result]:
    """`lamina index` of two single-platform images against one multi-platform `lamina build`."""
    print(f"index: two {size_mb} MB single-platform images joined, vs one multi-platform build")
    work = SCRATCH / "index"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    data = work / "data"
    data.mkdir()
    rng = random.Random(7)
    for i in range(size_mb // 10):  # half random (incompressible), half text-like
        (data / f"blob{i:03d}").write_bytes(rng.randbytes(5 << 20) + bytes(range(256)) * (5 << 12))
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    for arch in ("amd64", "arm64"):
        subprocess.run([*LAMINA, "build", "-q", "--no-cache", "--platform", f"linux/{arch}", "--add", f"{data}:/data",
                        "-o", str(work / f"{arch}.tar")], check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    join = [*LAMINA, "index", str(work / "amd64.tar"), str(work / "arm64.tar"), "-o", str(work / "joined.tar")]
    # First joins: no census remembered (each run forgets them); then repeat joins, which reuse them.
    res = [measure("index", "lamina index (2 tarballs, first join)", runs, join, env=env,
                   prepare=lambda: shutil.rmtree(work / "cache" / "lamina" / "census", ignore_errors=True))]
    res.append(measure("index", "lamina index (2 tarballs, again)", runs, join, env=env))
    res.append(measure("index", "lamina build --platform a,b (one run)", runs,
                       [*LAMINA, "build", "-q", "--no-cache", "--platform", "linux/amd64,linux/arm64",
                        "--add", f"{data}:/data", "-o", str(work / "multi.tar")], env=env))
    for row in res[:2]:
        row["ratio"] = float(row["median"]) / float(res[2]["median"])  # type: ignore[arg-type]
    return res


def memory(env: dict[str, str]) -> list[Result]:
    print("memory: a 2 GB layer and 200,000 files")
    work = SCRATCH / "memory"
    work.mkdir(exist_ok=True)
    big = work / "big.bin"
    if not big.exists():
        with open(big, "wb") as f:
            for _ in range(2048):
                f.write(os.urandom(1 << 20))
    res = [measure("memory-2GB", "lamina build (gzip)", 1, [*LAMINA, "build", "-q", "--no-cache", "--add", f"{big}:/big",
                                                           "-o", str(work / "big.tar")], env=env)]
    files = SCRATCH / "files-200k"
    make_many_small(files, 200_000)
    res.append(measure("memory-200k", "lamina build (gzip)", 1, [*LAMINA, "build", "-q", "--no-cache", "--add", f"{files}:/d",
                                                                "-o", str(work / "files.tar")], env=env))
    for path in (work / "big.tar", work / "files.tar"):
        path.unlink(missing_ok=True)
    return res


def registry_workloads(runs: int, size_mb: int) -> list[Result]:
    """push and pull of one image against skopeo, and the cache repository's warm runner vs a cold one,
    all against a fresh local distribution registry (docker-registry) on 127.0.0.1."""
    from support.registry import DistributionRegistry

    binary = shutil.which("docker-registry")
    if binary is None or shutil.which("skopeo") is None:
        why = "docker-registry or skopeo not installed"
        return [skipped(w, "lamina", why) for w in ("push", "pull", "cache-repo")]
    print(f"registry: push and pull of a {size_mb} MB image; two runners sharing a cache repository")
    work = SCRATCH / "registry"
    work.mkdir(exist_ok=True)
    data = work / "tree"
    for i in range(3):  # three layers, each a tree of ten files, half random, half zeros
        for j in range(10):
            part = data / f"part{i}" / f"file{j}"
            if not part.exists() or part.stat().st_size != (size_mb // 30) << 20:
                part.parent.mkdir(parents=True, exist_ok=True)
                with open(part, "wb") as f:
                    for _ in range(size_mb // 60):
                        f.write(os.urandom(1 << 20))
                        f.write(bytes(1 << 20))
    image = work / "image.tar"
    adds = [a for i in range(3) for a in ("--add", f"{data / f'part{i}'}:/data/part{i}")]
    subprocess.run([*LAMINA, "build", "-q", "--no-cache", *adds, "-o", str(image)], check=True, stdout=subprocess.DEVNULL)
    server = DistributionRegistry(binary)
    repos = server.dir / "data" / "docker" / "registry" / "v2" / "repositories"
    env = {"XDG_CACHE_HOME": str(work / "cache"), "DOCKER_CONFIG": str(work / "docker")}

    def fresh(*names: str) -> Callable[[], None]:
        """Those repositories emptied (every blob must be sent again) and lamina's caches cold."""
        def prepare() -> None:
            for name in names:
                shutil.rmtree(repos / "bench" / name, ignore_errors=True)
            shutil.rmtree(work / "cache", ignore_errors=True)
            (work / "pulled.tar").unlink(missing_ok=True)
        return prepare

    host = server.host
    try:
        mine = {**os.environ, **env}
        res = paired("push", runs, ("lamina push", [*LAMINA, "push", "-q", str(image), f"{host}/bench/push:v1"]),
                     ("skopeo copy oci-archive: docker://",
                      ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci-archive:{image}", f"docker://{host}/bench/push:v1"]),
                     {}, envs=(env, {}), prepares=(fresh("push"), fresh("push")))
        subprocess.run([*LAMINA, "push", "-q", str(image), f"{host}/bench/pull:v1"], check=True, env=mine,
                       stdout=subprocess.DEVNULL)
        res += paired("pull", runs, ("lamina build --from REF -o",
                                     [*LAMINA, "build", "-q", "--no-lint", "--from", f"{host}/bench/pull:v1", "-o", str(work / "pulled.tar")]),
                      ("skopeo copy docker:// oci-archive:",
                       ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{host}/bench/pull:v1",
                        f"oci-archive:{work / 'pulled.tar'}"]),
                      {}, envs=(env, {}), prepares=(fresh(), fresh()))
        build = [*LAMINA, "build", "-q", *adds, "--cache-repo", f"{host}/bench/cache"]
        # Each pair: a cold runner (cache repository and local cache empty) fills the cache
        # repository, then a warm runner (local cache empty) builds the same spec from it.
        res += paired("cache-repo", runs, ("lamina cold runner: build + push", [*build, "--push", f"{host}/bench/app1:v1"]),
                      ("lamina warm runner (cache repo): build + push", [*build, "--push", f"{host}/bench/app2:v1"]),
                      env, prepares=(fresh("cache", "app1"), fresh("app2")), warm_of_cold=True)
    finally:
        server.stop()
        (work / "pulled.tar").unlink(missing_ok=True)
    return res


# ---- report


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    versions = []
    for tool in (["docker", "version", "-f", "{{.Client.Version}}"], ["umoci", "--version"], ["buildah", "--version"],
                 ["tar", "--version"], ["zstd", "--version"], ["igzip", "--version"]):
        try:
            text = subprocess.run(tool, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
            versions.append(text)
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}. Tools: {'; '.join(versions)}.")


def report(results: list[Result], header: str) -> str:
    lamina = {r["workload"]: r for r in results if str(r["tool"]).startswith("lamina") and r.get("median")}
    lines = ["# lamina benchmark results", "", f"Machine: {header}", "",
             "Reproduce: `make bench` (or `.venv/bin/python bench/run.py`). Medians of several runs in one session;",
             "the ratio is lamina's median divided by the peer's (below 1: lamina is faster; for *rebuild* and",
             "*cache-repo*, the warm run's time as a fraction of the cold one's). Peak MB is the largest resident set of the process tree.", "",
             "| workload | tool | median (s) | lamina / tool | peak MB | runs |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        tool = str(r["tool"]).replace("|", "\\|")
        if r.get("median") is None:
            lines.append(f"| {r['workload']} | {tool} | not measured: {r['why']} | | | |")
            continue
        base = lamina.get(r["workload"])
        if "ratio" in r:  # alternating pairs: the median of per-pair ratios
            ratio = f"{r['ratio']:.2f}"
        elif r["workload"] in ("rebuild", "noop", "cache-repo"):
            cold = next((x for x in results if x["workload"] == r["workload"] and "cold" in str(x["tool"])), None)
            ratio = f"{r['median'] / cold['median']:.2f}" if cold is not None and cold is not r else ""
        else:
            ratio = "" if base is None or r is base else f"{base['median'] / r['median']:.2f}"
        lines.append(f"| {r['workload']} | {tool} | {r['median']:.3f} | {ratio} | {r['peak_mb']:.0f} | {r['runs']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run each, smaller trees")
    parser.add_argument("--only", help="comma-separated workloads: hello,rootfs,many-small,rebuild,memory,"
                                       "registry,startup,noop,index")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results.md"))
    args = parser.parse_args()
    subprocess.run(["make", "-C", str(ROOT / "testdata"), "all"], check=True, stdout=subprocess.DEVNULL)
    # Byte-compile lamina first: with PYTHONDONTWRITEBYTECODE set, every run would compile it again.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    results = run(args)
    text = report(results, machine())
    text += f"\nWhole run: {time.perf_counter() - started:.0f} s.\n"
    Path(args.output).write_text(text)
    (Path(args.output).with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
