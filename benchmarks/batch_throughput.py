"""Batch throughput on real images: the CPU runtime vs torch, the batch vs a naive loop
and vs the machine's bound, and memory vs. image count.

Same model and the same real images (default: the HPA class-example composites in
``../shared/data``, repeated by hard links up to ``--n``) for every measurement:

(a)  model only, torch eager, on tiles already in memory, best over torch threads
     (1 and all cores);
(a') the same with the backend ``--backend auto`` picks here:
     ``runtime_vs_torch = a'/a``;
(b)  the naive loop a user would write: ``read_image`` then a torch
     ``Predictor.predict_one``, one image at a time, torch's default threads;
(c)  ``run_batch`` (what ``napari-hpa batch`` runs) with its defaults, in this process,
     steady rate (after the first 10 % of the images; the end-to-end rate with the
     worker start-up is printed too): ``batch_vs_naive = c/b``;
     the pipeline's bound is ``cores / (decode CPU + model CPU)`` per image, both
     measured at one thread in this run: ``batch_vs_bound = c/bound``.

The rounds are interleaved and the best of each kept, because other users' load on
a shared machine comes and goes; medians are printed too.

Then the peak RSS of the whole process tree of ``napari-hpa batch`` (a subprocess)
over 2,000 vs. 200 small images: it must be flat (``--no-rss`` skips it).

Usage::

    python benchmarks/batch_throughput.py                       # composites, 400 images
    python benchmarks/batch_throughput.py --images ../shared/data/hpa_duloc_single_cells/images

The last three lines are ``runtime_vs_torch=``, ``batch_vs_naive=`` and ``batch_vs_bound=``.
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
from napari_hpa.core.model.views import with_views
from napari_hpa.core.tasks import get_task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data"
REAL_IMAGES = SHARED_DATA / "hpa_class_examples_composite/images"


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
) -> dict[int, tuple[float, float]]:
    """{threads: (images/s, CPU ms/image)} of the forward pass alone, at the default batch."""
    n = len(tiles) / per_image
    predictor.run_tiles(tiles[: predictor.batch_size])  # warm-up (and the runtime's compile)

    def run() -> tuple[float, float]:
        predictor.run_tiles(tiles[: predictor.batch_size])  # this thread count's compile
        wall, cpu = timed_cpu(lambda: predictor.run_tiles(tiles))
        return n / wall, 1000 * cpu / n

    return {t: with_threads(t, run) for t in thread_counts()}


def decode_cpu(predictor: Predictor, sources: list[str]) -> float:
    """CPU ms per image of reading and preparing (everything but the network), 1 thread."""

    def run() -> tuple[float, float]:
        return timed_cpu(lambda: [predictor.prepare(read_image(s)) for s in sources])

    return 1000 * with_threads(1, run)[1] / len(sources)


def naive(predictor: Predictor, sources: list[str]) -> float:
    """Images/s of read-then-predict one at a time, torch's default threads."""
    return len(sources) / timed(lambda: [predictor.predict_one(read_image(s)) for s in sources])


def batch(model: Path, folder: Path, out: Path) -> tuple[float, float, BatchSummary]:
    """(steady images/s, end-to-end images/s, summary) of run_batch with its defaults.

    Steady = after the first 10 % of the images (the workers have started and the
    model is warm).
    """
    out.unlink(missing_ok=True)
    marks: list[tuple[float, int]] = []

    def progress(p: BatchProgress) -> None:
        marks.append((time.perf_counter(), p.done))

    start = time.perf_counter()
    summary = run_batch(folder, out, str(model), progress=progress)
    end = time.perf_counter()
    assert summary.errors == 0, summary.error_messages
    first = next(m for m in marks if m[1] >= max(1, summary.done // 10))
    steady = (summary.done - first[1]) / (end - first[0])
    return steady, summary.done / (end - start), summary


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


def replicate(src: Path, dst: Path, n: int) -> list[str]:
    """At least ``n`` images in ``dst``: hard links to the image files of ``src``, repeated.

    Every file of one pass gets the same prefix, so an HPA channel set stays a set.
    """
    kinds = (".png", ".jpg", ".jpeg", ".tif")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in kinds)
    per_pass = len(find_images(src))
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(-(-n // per_pass)):
        for f in files:
            target = dst / f"r{i:03d}_{f.name}"
            if not target.exists():
                try:
                    os.link(f, target)
                except OSError:
                    shutil.copy(f, target)
    return find_images(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model to measure (default: bundled HPA)")
    parser.add_argument("--images", type=Path, default=REAL_IMAGES, help="a folder of real images")
    parser.add_argument("--n", type=int, default=400, help="images for the batch (repeated)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory part")
    parser.add_argument("--rss-small", type=int, default=200)
    parser.add_argument("--rss-large", type=int, default=2000)
    parser.add_argument("--rss-size", type=int, default=128)
    parser.add_argument(
        "--rss-model", default=None, help="model of the memory part (default: a light one)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = parser.parse_args()
    if not args.images.is_dir():
        raise SystemExit(f"{args.images}: no such folder (the real images are in ../shared/data)")

    work = args.keep or Path(tempfile.mkdtemp(prefix="napari-hpa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    print(
        f"machine: {cpus} CPU core(s) usable, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) by default, load average "
        f"{os.getloadavg()[0]:.1f}; device cpu"
    )
    model = bench_model(work / "models", args.model)
    batch_size = default_batch_size()
    eager = Predictor(model, device="cpu", batch_size=batch_size, backend="torch")
    fast = Predictor(model, device="cpu", batch_size=batch_size, backend="auto")
    fast.ensure_backend()
    folder = work / "images"
    sources = replicate(args.images, folder, args.n)
    originals = find_images(args.images)
    views = eager.spec.input.views  # the network runs each tile's test-time views
    print(
        f"images: {len(sources)} ({len(originals)} real images of {args.images}, repeated); "
        f"auto backend here: {fast.backend}; test-time views: {views}"
    )
    sample = originals[:40]
    prepared = [with_views(eager.prepare(read_image(s))[0], views) for s in sample[:32]]
    per_image = len(prepared[0])
    tiles = np.concatenate(prepared)
    del prepared
    runs: dict[str, list[float]] = {k: [] for k in ("a", "a2", "b", "c", "c_total")}
    cpu: dict[str, list[float]] = {"decode": [], "model": []}
    summary = None
    for r in range(args.rounds):
        a_per = model_only(eager, tiles, per_image)
        f_per = model_only(fast, tiles, per_image)
        cpu["model"].append(f_per[1][1])
        cpu["decode"].append(decode_cpu(eager, sample))
        b = naive(eager, sample)
        c, c_total, summary = batch(model, folder, work / "batch.csv")
        runs["a"].append(max(v[0] for v in a_per.values()))
        runs["a2"].append(max(v[0] for v in f_per.values()))
        runs["b"].append(b)
        runs["c"].append(c)
        runs["c_total"].append(c_total)
        print(
            f"round {r + 1}: (a) torch "
            + ", ".join(f"{v[0]:.1f}@{t}t" for t, v in a_per.items())
            + f" | (a') {fast.backend} "
            + ", ".join(f"{v[0]:.1f}@{t}t" for t, v in f_per.items())
            + f" | (b) {b:.1f} | (c) {c:.1f} steady, {c_total:.1f} end to end, "
            f"{summary.workers} worker(s) x {summary.threads} thread(s) on {summary.backend}"
            f" | CPU/image: decode {cpu['decode'][-1]:.0f} ms, model {cpu['model'][-1]:.0f} ms"
            f" | load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    del tiles
    best = {k: best_and_median(v) for k, v in runs.items()}
    a, a_fast, b, c = (best[k][0] for k in ("a", "a2", "b", "c"))
    d_ms, m_ms = min(cpu["decode"]), min(cpu["model"])
    bound = cpus * 1000 / (d_ms + m_ms)
    print(f"(a) model only, torch eager: {a:.1f} img/s (median {best['a'][1]:.1f})")
    print(f"(a') model only, {fast.backend}: {a_fast:.1f} img/s (median {best['a2'][1]:.1f})")
    print(f"(b) naive loop, read then torch predict: {b:.1f} img/s (median {best['b'][1]:.1f})")
    print(
        f"(c) run_batch defaults: {c:.1f} img/s steady (median {best['c'][1]:.1f}), "
        f"{best['c_total'][0]:.1f} img/s end to end incl. worker start-up"
    )
    print(
        f"bound: {cpus} core(s) / (decode {d_ms:.1f} ms + model {m_ms:.1f} ms CPU per image) "
        f"= {bound:.1f} img/s"
    )

    if not args.no_rss:
        small = work / f"rss{args.rss_size}"
        if not any(small.glob("*_red.png")):
            n_small = min(50, args.rss_small)
            write_samples(small, n=n_small, size=args.rss_size, seed=1, overwrite=True)
        light = rss_model(work / "rss-models", args.rss_model)
        print(f"memory part: model {light.name}, {args.rss_size} px images")
        rss = {}
        for n in (args.rss_small, args.rss_large):
            target_folder = copies(small, work / f"rss_{n}", n)
            target = work / f"rss_{n}.csv"
            target.unlink(missing_ok=True)
            rss[n], seconds = peak_rss_of_cli(target_folder, target, light, None)
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
    print(f"runtime_vs_torch={a_fast / a:.2f}")
    print(f"batch_vs_naive={c / b:.2f}")
    print(f"batch_vs_bound={c / bound:.2f}")


if __name__ == "__main__":
    main()
