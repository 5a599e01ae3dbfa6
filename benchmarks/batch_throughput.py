"""Batch throughput against the machine's limit and a naive loop, and memory vs. image count.

Same model and same images for all three measurements:

(a) model only: ``Predictor.predict_prepared`` on tiles already in memory, best
    over torch thread counts (1 and all cores): what this machine can do at all;
(b) naive: ``read_image`` then ``Predictor.predict_one``, one image at a time,
    best over the same thread counts;
(c) ``run_batch`` (what ``napari-hpa batch`` runs), in this process, default
    settings. Its steady rate excludes the worker start-up (a fixed cost of a few
    seconds, paid once per run); the end-to-end rate includes it.

The three are measured in ``--rounds`` interleaved rounds and the best of each is
kept, because on a shared machine other users' load comes and goes; the medians
are printed too.

Then the peak RSS of the whole process tree of ``napari-hpa batch`` (a
subprocess, so the numbers are not mixed with this script's own arrays) over
2,000 vs. 200 small images: it must be flat.

Usage::

    python benchmarks/batch_throughput.py            # 200 x 512 px, RSS 200 vs 2000 x 128 px
    python benchmarks/batch_throughput.py --n 40 --rss-large 400   # quick look
    python benchmarks/batch_throughput.py --model hpa28-synthetic-tiny  # another model

The last line is ``batch_vs_limit=<c/a> batch_vs_naive=<c/b>`` (steady rates).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_hpa.core.batch.run import BatchProgress, BatchSummary, default_batch_size, run_batch
from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.sources import find_images
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, load_model, save_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import DEFAULT_MODEL_NAMES, default_model, resolve_model
from napari_hpa.core.tasks import get_task


def bench_model(root: Path, ref: str | None) -> Path:
    """A copy of the model to measure (a copy, so a model folder that changes while the
    benchmark runs cannot change the numbers): ``ref`` if given, else the bundled HPA
    model, else a default-size small_cnn (random weights: speed does not depend on what
    the weights learned)."""
    entry = None
    if ref:
        entry = resolve_model(ref)
    else:
        with contextlib.suppress(LookupError):
            found = default_model()
            if found.source == "bundled" and found.name in DEFAULT_MODEL_NAMES:
                entry = found
    if entry is not None:
        spec = entry.spec
        n_params = sum(p.numel() for p in load_model(entry.path).net.parameters())
        print(
            f"model: {entry.source} {entry.id}: {spec.arch}, input {spec.input.size} px tiles, "
            f"fit {spec.input.fit}, {n_params / 1e6:.2f} M parameters"
        )
        target = root / entry.path.name
        shutil.copytree(entry.path, target, dirs_exist_ok=True)
        return target
    task = get_task("hpa28")
    spec = ModelSpec(
        name="bench-small_cnn",
        version=1,
        arch="small_cnn",
        arch_kwargs={"width": 16, "depth": 4},
        task=task,
        input=InputSpec(channels=list(task.channels), size=224, fit=None, optional_channels=["er"]),
    )
    torch.manual_seed(0)
    net = build_model(spec.arch, 4, task.num_classes, **spec.arch_kwargs)
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"model: small_cnn width=16 depth=4, input 4x224x224 (whole image resized), "
        f"{n_params / 1e3:.0f} k parameters (no bundled HPA model found)"
    )
    return save_model(net, spec, root)


def rss_model(root: Path, ref: str | None) -> Path:
    """A light model for the memory part (its cost is not the point there): ``ref``, the
    bundled ``hpa28-synthetic-tiny`` if present, else a small_cnn of width 8."""
    with contextlib.suppress(LookupError):
        return resolve_model(ref or "hpa28-synthetic-tiny").path
    task = get_task("hpa28")
    spec = ModelSpec(
        name="bench-rss-small_cnn",
        version=1,
        arch="small_cnn",
        arch_kwargs={"width": 8, "depth": 3},
        task=task,
        input=InputSpec(channels=list(task.channels), size=128, fit=None, optional_channels=["er"]),
    )
    net = build_model(spec.arch, 4, task.num_classes, **spec.arch_kwargs)
    return save_model(net, spec, root)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def thread_counts() -> list[int]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return sorted({1, cpus or 1})


def with_threads(threads: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def timed_cpu(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()`` in this process, all threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def model_only(
    predictor: Predictor, tiles: np.ndarray, per_image: int
) -> dict[str, tuple[float, float]]:
    """(images/s, CPU ms/image) of the forward pass alone, per thread count and batch size."""
    rates = {}
    keep = predictor.batch_size
    n = len(tiles) / per_image
    for bs in (4, 16):
        predictor.batch_size = bs
        predictor.run_tiles(tiles[:bs])  # warm-up

        def run() -> tuple[float, float]:
            wall, cpu = timed_cpu(lambda: predictor.run_tiles(tiles))
            return n / wall, 1000 * cpu / n

        for t in thread_counts():
            rates[f"{t}t/b{bs}"] = with_threads(t, run)
    predictor.batch_size = keep
    return rates


def naive(predictor: Predictor, sources: list[str]) -> dict[str, tuple[float, float]]:
    """(images/s, CPU ms/image) of read-then-predict one at a time, per thread count."""

    def run() -> tuple[float, float]:
        wall, cpu = timed_cpu(lambda: [predictor.predict_one(read_image(s)) for s in sources])
        return len(sources) / wall, 1000 * cpu / len(sources)

    return {f"{t}t": with_threads(t, run) for t in thread_counts()}


def tree_cpu(proc) -> float:
    """CPU seconds of a process and its live descendants (psutil), 0 without psutil."""
    if proc is None:
        return 0.0
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def batch(
    predictor: Predictor, folder: Path, out: Path, workers: int | None
) -> tuple[float, float, float, BatchSummary]:
    """(steady images/s, end-to-end images/s, steady CPU ms/image of the process tree,
    summary) of run_batch; steady = after the first 10 % of the images (the workers
    have started and the model is warm)."""
    try:
        import psutil

        me = psutil.Process()
    except ImportError:
        me = None
    out.unlink(missing_ok=True)
    marks: list[tuple[float, int, float]] = []

    def progress(p: BatchProgress) -> None:
        # sample the tree's CPU at most once a second: scanning /proc costs CPU too
        now = time.perf_counter()
        if not marks or now - marks[-1][0] >= 1.0 or p.done == p.total:
            marks.append((now, p.done, tree_cpu(me)))

    start = time.perf_counter()
    summary = run_batch(folder, out, predictor, workers=workers, progress=progress)
    end = time.perf_counter()
    assert summary.errors == 0, summary.error_messages
    first = next(m for m in marks if m[1] >= max(1, summary.done // 10))
    steady = (summary.done - first[1]) / (end - first[0])
    last = max(marks, key=lambda m: m[2])  # the workers' CPU vanishes when they exit
    cpu = 1000 * (last[2] - first[2]) / max(1, last[1] - first[1])
    return steady, summary.done / (end - start), cpu, summary


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        with contextlib.suppress(OSError):
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
            total += pages * os.sysconf("SC_PAGE_SIZE")
    return total


def peak_rss_of_cli(folder: Path, out: Path, model: Path, workers: int | None) -> tuple[int, float]:
    """Peak RSS of ``napari-hpa batch`` (process tree, sampled every 20 ms) and its wall time."""
    cmd = [
        sys.executable,
        "-m",
        "napari_hpa",
        "batch",
        str(folder),
        "--out",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
        "--quiet",
    ]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"batch failed: {proc.stderr.read().decode()}")
    return peak, time.perf_counter() - start


def copies(src: Path, dst: Path, n: int) -> Path:
    """``n`` HPA sets in ``dst`` made of hard links to the sets in ``src`` (fast, no disk)."""
    dst.mkdir(parents=True, exist_ok=True)
    base = sorted({p.name.rsplit("_", 1)[0] for p in src.glob("*_red.png")})
    for i in range(n):
        for c in ("red", "green", "blue", "yellow"):
            target = dst / f"img_{i:05d}_{c}.png"
            if target.exists():
                continue
            try:
                os.link(src / f"{base[i % len(base)]}_{c}.png", target)
            except OSError:
                shutil.copy(src / f"{base[i % len(base)]}_{c}.png", target)
    return dst


def best_and_median(values: list[float]) -> tuple[float, float]:
    return max(values), float(np.median(values))


def goal_window(
    cores: int, s: float, limit: float = 0.9, naive: float = 1.5
) -> tuple[float, float]:
    """The decode/model cost ratios x for which each goal is reachable at all.

    With m = CPU time of the model per image at 1 thread, d = decode CPU time per image
    and x = d/m: the best model-only rate is a = s/m (s = the model's speed-up on all
    cores), the naive loop decodes then predicts, b = 1/(d + m/s), and no pipeline can
    beat the CPU budget, c <= cores/(d + m). Hence c/a >= ``limit`` needs
    x <= cores/(s*limit) - 1, and c/b >= ``naive`` needs
    x >= (naive - cores/s)/(cores - naive). Returns (lowest x for the naive goal,
    highest x for the limit goal): both goals can hold only if the first <= the second.
    """
    x_max = cores / (s * limit) - 1
    x_min = (naive - cores / s) / (cores - naive) if cores > naive else float("inf")
    return x_min, x_max


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model to measure (default: bundled HPA)")
    parser.add_argument("--n", type=int, default=200, help="images for the throughput part")
    parser.add_argument("--size", type=int, default=512, help="their size in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument("--rss-small", type=int, default=200)
    parser.add_argument("--rss-large", type=int, default=2000)
    parser.add_argument("--rss-size", type=int, default=128)
    parser.add_argument(
        "--rss-model", default=None, help="model of the memory part (default: a light one)"
    )
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: run_batch's")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="napari-hpa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cpus} CPU core(s) usable, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) by default, load average "
        f"{os.getloadavg()[0]:.1f}; device cpu"
    )
    model = bench_model(work / "models", args.model)
    predictor = Predictor(model, device="cpu", batch_size=args.batch_size or default_batch_size())
    images = work / f"images{args.size}"
    if len(list(images.glob("*_red.png"))) < args.n:
        t = timed(lambda: write_samples(images, n=args.n, size=args.size, seed=0, overwrite=True))
        print(f"generated {args.n} HPA sets of {args.size} px in {t:.0f} s")
    sources = find_images(images)[: args.n]
    print(f"images: {len(sources)} HPA sets (4 PNG each) of {args.size}x{args.size} px")

    prepared = [predictor.prepare(read_image(s))[0] for s in sources[:32]]
    per_image = len(prepared[0])
    tiles = np.concatenate(prepared)
    del prepared
    a_runs: list[float] = []
    b_runs: list[float] = []
    c_runs: list[float] = []
    c_total_runs: list[float] = []
    cpu: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    speedups: list[float] = []
    fmt = ", ".join
    for r in range(args.rounds):
        a_per = model_only(predictor, tiles, per_image)
        b_per = naive(predictor, sources[:40])
        c, c_total, c_cpu, summary = batch(predictor, images, work / "batch.csv", args.workers)
        a_runs.append(max(v[0] for v in a_per.values()))
        one = max(v[0] for k, v in a_per.items() if k.startswith("1t"))
        speedups.append(max(v[0] for v in a_per.values()) / one)
        b_runs.append(max(v[0] for v in b_per.values()))
        c_runs.append(c)
        c_total_runs.append(c_total)
        cpu["a"].append(min(v[1] for k, v in a_per.items() if k.startswith("1t")))
        cpu["b"].append(b_per["1t"][1])
        cpu["c"].append(c_cpu)
        print(
            f"round {r + 1}: (a) "
            + fmt(f"{v[0]:.1f}@{k}" for k, v in a_per.items())
            + " | (b) "
            + fmt(f"{v[0]:.1f}@{k}" for k, v in b_per.items())
            + f" | (c) {c:.1f} steady, {c_total:.1f} end to end, {summary.workers} worker(s) x "
            f"{summary.threads} thread(s)"
            + (
                f" (tuner: {fmt(f'{t}t {v:.1f}' for t, v in summary.tuning)})"
                if summary.tuning
                else ""
            )
            + f" | load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    del tiles
    a, a_med = best_and_median(a_runs)
    b, b_med = best_and_median(b_runs)
    c, c_med = best_and_median(c_runs)
    c_total, _ = best_and_median(c_total_runs)
    print(f"(a) model only, preloaded tensors: {a:.1f} img/s (median {a_med:.1f})")
    print(f"(b) naive loop, read then predict one at a time: {b:.1f} img/s (median {b_med:.1f})")
    print(
        f"(c) run_batch: {c:.1f} img/s steady (median {c_med:.1f}), "
        f"{c_total:.1f} img/s end to end incl. worker start-up"
    )
    print(f"    end to end: batch_vs_limit={c_total / a:.2f} batch_vs_naive={c_total / b:.2f}")
    ca, cb, cc = (min(cpu[k]) for k in "abc")
    print(
        f"CPU per image (does not depend on other users' load): model alone {ca:.0f} ms, "
        f"read + model {cb:.0f} ms, run_batch {cc:.0f} ms (whole process tree): on {cpus} "
        f"dedicated core(s) run_batch could reach {cpus * 1000 / cc:.1f} img/s"
        if cc > 0
        else "CPU per image: psutil not installed"
    )
    s_med = float(np.median(speedups))
    lo, hi = goal_window(cpus or 1, s_med)
    x = (cb - ca) / ca if ca > 0 and cb > 0 else float("nan")
    print(
        f"model speed-up from 1 to {cpus} threads s={s_med:.2f} (median of rounds), decode/model "
        f"CPU x={x:.2f}. Upper bounds on {cpus} core(s): c/a >= 0.9 needs x <= {hi:.2f}, "
        f"c/b >= 1.5 needs x >= {lo:.2f}: "
        + ("both reachable at once" if lo <= hi else "no pipeline can meet both at once here")
    )

    small = work / f"rss{args.rss_size}"
    if not any(small.glob("*_red.png")):
        write_samples(small, n=min(50, args.rss_small), size=args.rss_size, seed=1, overwrite=True)
    light = rss_model(work / "rss-models", args.rss_model)
    print(f"memory part: model {light.name}, {args.rss_size} px images")
    rss = {}
    for n in (args.rss_small, args.rss_large):
        folder = copies(small, work / f"rss_{n}", n)
        target = work / f"rss_{n}.csv"
        target.unlink(missing_ok=True)
        rss[n], seconds = peak_rss_of_cli(folder, target, light, args.workers)
        print(
            f"peak RSS of the process tree, {n} images of {args.rss_size} px: "
            f"{rss[n] / 2**20:.0f} MiB ({n / seconds:.1f} img/s incl. start-up)",
            flush=True,
        )
    growth = rss[args.rss_large] / rss[args.rss_small]
    verdict = "flat" if growth < 1.15 else "NOT flat"
    print(f"rss_{args.rss_large}_vs_{args.rss_small}={growth:.2f} ({verdict})")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"batch_vs_limit={c / a:.2f} batch_vs_naive={c / b:.2f}")


if __name__ == "__main__":
    main()
