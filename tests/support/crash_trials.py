"""Crash trials: SIGKILL real worker processes at random points, then check what survived.

Why a library and not a test file: ``tests/test_reliability.py`` runs these trials
and counts them, and ``python -m tests.crash_trials KIND N`` runs them by hand.

Design
------
Each trial starts a real child process that does real work (SQLite edits through
:class:`~napari_hpa.core.labels.store.AnnotationStore`, ``train_model``,
``save_model``, ``run_batch``), kills it with ``SIGKILL`` at a seeded random
point, and then checks the invariants from the parent:

* **annotations**: the child announces each edit (``intent``) and reports it after
  the store's call returned (``commit``). After the kill every reported edit is in
  the database, the one edit in flight is there entirely or not at all,
  ``PRAGMA integrity_check`` says ok, and the store reopens and takes a new edit.
* **training**: a tiny ``small_cnn`` run is killed anywhere from data loading to the
  final save; the models folder then holds only complete versions that load, the
  registry lists exactly those, and ``clean_partial_versions`` removes any
  ``.tmp-*`` left behind.
* **model_write**: a loop of ``save_model`` is killed; every version it reported
  loads, every visible folder loads, none is partial.
* **batch**: ``run_batch`` over a folder of tiny HPA image sets is killed midway;
  every image it reported done has its row, and a re-run completes the table to
  exactly one row per image.

Speed: a fresh interpreter that imports torch costs seconds, so children are
forked from a ``forkserver`` that preloaded torch and napari-hpa; a child starts in
tens of milliseconds. Kill points are spread over the work: after a random number
of reported steps (annotations, model writes) or after a random delay within the
measured duration of a whole run (training, batch).
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import random
import shutil
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

KINDS = ("annotations", "training", "model_write", "batch")
TASK = "hpa28"
N_CLASSES = 6
SOURCES = tuple(f"/data/img{i}" for i in range(5))
CELLS = (0, 0, 1, 2)
#: Classes of the tiny training data (HPA ids 0, 2, 23: distinct synthetic patterns).
EASY = ["Nucleoplasm", "Nucleoli", "Mitochondria"]
#: Images of the training set and of the batch folder (each an HPA set of 4 PNGs).
N_IMAGES = 16
_PRELOAD = [
    "torch",
    "torch._dynamo",  # imported lazily by the first optimizer step: 1.5 s per child otherwise
    "matplotlib.figure",  # the training report's plots
    "matplotlib.backends.backend_agg",
    "napari_hpa.core.labels.store",
    "napari_hpa.core.model.checkpoint",
    "napari_hpa.core.train.loop",
    "napari_hpa.core.batch.run",
    "napari_hpa.core.image.synth",
    __name__,
]

UserKey = tuple[str, int, int]  # source, cell, class
ModelKey = tuple[str, int]  # source, cell


@dataclass
class TrialResult:
    """One killed run: ``survived`` when every invariant held; ``lost`` counts the
    corrections, model versions or table rows reported done before the kill and
    missing after it."""

    kind: str
    survived: bool
    lost: int
    detail: str
    seconds: float = 0.0
    kill_after_s: float = 0.0


@dataclass
class _Kind:
    """Per-kind parent state carried from one trial to the next."""

    root: Path
    rng: random.Random
    state: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- processes
def _context() -> mp.context.BaseContext:
    """A ``forkserver`` with torch and napari-hpa preloaded (children start in ms)."""
    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - not Linux
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _start(target: Callable[..., None], *args: Any) -> tuple[mp.Process, Connection]:
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send), daemon=True)
    proc.start()
    send.close()  # the child holds the only write end: EOF when it dies
    return proc, recv


def _kill(proc: mp.Process) -> None:
    """SIGKILL and reap (no handler, no ``finally`` runs in the child)."""
    if proc.is_alive():
        os.kill(proc.pid, 9)
    proc.join(10)
    if proc.is_alive():  # pragma: no cover - a process that survives SIGKILL
        raise RuntimeError(f"process {proc.pid} survived SIGKILL")


def _drain(conn: Connection) -> list[Any]:
    """Everything the child sent before it died (the pipe keeps it after the kill)."""
    out = []
    while True:
        try:
            if not conn.poll(0):
                break
            out.append(conn.recv())
        except (EOFError, OSError):
            break
    conn.close()
    return out


def _run_to_end(target: Callable[..., None], *args: Any, timeout: float = 300) -> list[Any]:
    """Run a child to completion (setup, calibration, resume) and return its messages."""
    proc, conn = _start(target, *args)
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if conn.poll(0.05):
                messages.append(conn.recv())
                continue
        except (EOFError, OSError):
            break
        if not proc.is_alive() and not conn.poll(0):
            break
    messages += _drain(conn)
    proc.join(10)
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__} failed (exit {proc.exitcode}): {messages[-3:]}")
    return messages


def _child_setup(home: str) -> None:
    """Child side: an isolated registry home (the forkserver's env may be stale) and 1 thread."""
    os.environ["NAPARI_HPA_HOME"] = home
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


# ----------------------------------------------------------------------------- annotations
def _annotations_child(db: str, home: str, seed: int, conn: Connection) -> None:
    """Edit labels forever, as the Annotate widget does; report each commit after it returns."""
    _child_setup(home)
    from napari_hpa.core.labels.store import AnnotationStore

    rng = random.Random(seed)
    store = AnnotationStore(db)
    n = 0
    while True:
        n += 1
        src, cell = rng.choice(SOURCES), rng.choice(CELLS)
        op = rng.random()
        if op < 0.75:
            k = 1 if op < 0.5 else rng.randint(2, 4)
            values = {c: rng.choice((True, False, None)) for c in rng.sample(range(N_CLASSES), k)}
            conn.send(("intent", n, {(src, cell, c): v for c, v in values.items()}, {}))
            if k == 1:
                ((cls, value),) = values.items()
                store.set_user_label(src, TASK, cls, value, cell)
            else:
                store.set_user_labels(src, TASK, values, cell)
        elif op < 0.9:
            undo = op < 0.85
            changes = _replay_changes(store, undo)
            conn.send(("intent", n, changes, {}))
            (store.undo if undo else store.redo)()
        else:
            probs = [rng.random() for _ in range(N_CLASSES)]
            predicted = frozenset(i for i, p in enumerate(probs) if p > 0.5)
            conn.send(("intent", n, {}, {(src, cell): predicted}))
            store.set_model_labels(src, TASK, probs, predicted, "tiny@1", cell)
        conn.send(("commit", n))


def _replay_changes(store: Any, undo: bool) -> dict[UserKey, bool | None]:
    """What the next undo/redo will write (read from the history before running it)."""
    pick = (
        "SELECT MAX(action) FROM history WHERE state = 'done'"
        if undo
        else "SELECT MIN(action) FROM history WHERE state = 'undone'"
    )
    action = store._q(pick)[0][0]
    if action is None:
        return {}
    rows = store._q(
        "SELECT i.source, h.cell, h.class, h.old, h.new FROM history h "
        "JOIN images i ON i.id = h.image WHERE h.action = ? ORDER BY h.id",
        (action,),
    )
    out: dict[UserKey, bool | None] = {}
    for source, cell, cls, old, new in rows if undo else reversed(rows):
        value = old if undo else new
        out.setdefault((source, cell, cls), None if value is None else bool(value))
    return out


def _read_store(db: Path) -> tuple[dict[UserKey, bool], dict[ModelKey, frozenset]]:
    """Every user and model label in the database, through the store's own API."""
    from napari_hpa.core.labels.store import AnnotationStore

    user: dict[UserKey, bool] = {}
    model: dict[ModelKey, frozenset] = {}
    with AnnotationStore(db) as store:
        if not store.integrity_ok():
            raise AssertionError("AnnotationStore.integrity_ok() is False")
        for src in store.image_ids():
            for cell in set(CELLS):
                for cls, value in store.user_labels(src, TASK, cell).items():
                    user[(src, cell, cls)] = value
                if store.model_id(src, TASK, cell) is not None:
                    model[(src, cell)] = frozenset(store.model_labels(src, TASK, cell))
    return user, model


def _check_writable(db: Path, user: dict[UserKey, bool]) -> None:
    """The reopened store takes an edit and reads it back (the edit joins ``user``)."""
    from napari_hpa.core.labels.store import AnnotationStore

    key = ("/check", 0, 0)
    value = not user.get(key, False)
    with AnnotationStore(db) as store:
        if not store.set_user_label(key[0], TASK, key[2], value, key[1]):
            raise AssertionError("a new edit after the crash changed nothing")
        if store.user_labels(key[0], TASK, key[1]).get(key[2]) is not value:
            raise AssertionError("a new edit after the crash was not read back")
    user[key] = value


def _trial_annotations(kind: _Kind, index: int) -> TrialResult:
    db = kind.root / "annotations.sqlite"
    st = kind.state
    st.setdefault("user", {})
    st.setdefault("model", {})
    rng = kind.rng
    want = rng.randint(1, 40)
    extra = rng.uniform(0.0, 0.004)
    t0 = time.monotonic()
    proc, conn = _start(_annotations_child, str(db), str(kind.root), rng.randrange(2**31))
    pending: dict[int, tuple[dict, dict]] = {}
    user, model = dict(st["user"]), dict(st["model"])
    commits = 0
    messages: list[Any] = []
    deadline = time.monotonic() + 60
    while commits < want and time.monotonic() < deadline and proc.is_alive():
        if conn.poll(0.05):
            messages.append(conn.recv())
            commits += messages[-1][0] == "commit"
    time.sleep(extra)
    kill_at = time.monotonic() - t0
    _kill(proc)
    messages += _drain(conn)
    for msg in messages:
        if msg[0] == "intent":
            pending[msg[1]] = (msg[2], msg[3])
        else:
            u, m = pending.pop(msg[1])
            _apply(user, u)
            model.update(m)
    if commits < want:
        return TrialResult("annotations", False, 0, "the child stopped early", 0.0, kill_at)
    problems: list[str] = []
    raw = sqlite3.connect(db)
    try:
        check = raw.execute("PRAGMA integrity_check").fetchall()
    finally:
        raw.close()
    if check != [("ok",)]:
        problems.append(f"integrity_check: {check[:3]}")
    try:
        got_user, got_model = _read_store(db)
    except Exception as exc:  # noqa: BLE001 - any failure to reopen is a finding
        return TrialResult("annotations", False, 0, f"store unusable: {exc!r}", 0.0, kill_at)
    in_flight_u, in_flight_m = next(iter(pending.values()), ({}, {}))
    lost = 0
    for key in set(user) | set(got_user):
        want_v, got_v = user.get(key), got_user.get(key)
        if got_v != want_v and not (key in in_flight_u and in_flight_u[key] == got_v):
            lost += 1
            problems.append(f"{key}: expected {want_v}, found {got_v}")
    for key in set(model) | set(got_model):
        if got_model.get(key) != model.get(key) and in_flight_m.get(key) != got_model.get(key):
            lost += 1
            problems.append(f"model {key}: expected {model.get(key)}, found {got_model.get(key)}")
    if _partial(in_flight_u, user, got_user):
        problems.append(f"the edit in flight was applied only in part: {in_flight_u}")
    try:
        _check_writable(db, got_user)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"store does not take edits after the crash: {exc!r}")
    st["user"], st["model"] = got_user, got_model  # carry the real state to the next trial
    detail = f"{commits} commits reported, killed {extra * 1000:.1f} ms after commit {want}"
    return TrialResult(
        "annotations", not problems, lost, "; ".join([detail, *problems[:5]]), 0.0, kill_at
    )


def _apply(user: dict[UserKey, bool], changes: dict[UserKey, bool | None]) -> None:
    for key, value in changes.items():
        if value is None:
            user.pop(key, None)
        else:
            user[key] = value


def _partial(
    in_flight: dict[UserKey, bool | None], before: dict[UserKey, bool], after: dict[UserKey, bool]
) -> bool:
    """True when some, not all, of the in-flight edit's real changes are in the database."""
    real = [k for k, v in in_flight.items() if before.get(k) != v]
    done = [k for k in real if after.get(k) == in_flight[k]]
    return 0 < len(done) < len(real)


# ----------------------------------------------------------------------------- training
def _setup_child(root: str, home: str, conn: Connection) -> None:
    """Write the tiny training/batch images and a tiny model once per run of trials."""
    _child_setup(home)
    import torch

    from napari_hpa.core.image.synth import write_samples
    from napari_hpa.core.model.architectures import build_model
    from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, save_model
    from napari_hpa.core.tasks import get_task

    base = Path(root)
    write_samples(base / "images", n=N_IMAGES, size=32, seed=3, classes=[0, 2, 23], n_labels=1)
    task = get_task("hpa28")
    spec = ModelSpec(
        "crash-batch",
        1,
        "small_cnn",
        task,
        InputSpec(list(task.channels), size=32, optional_channels=["er"]),
        arch_kwargs={"width": 4, "depth": 2},
    )
    torch.manual_seed(0)
    net = build_model("small_cnn", 4, task.num_classes, width=4, depth=2)
    conn.send(str(save_model(net, spec, base / "batch-model")))


def _training_child(images: str, root: str, home: str, seed: int, conn: Connection) -> None:
    """Train and save one tiny model version (what ``napari-hpa train`` does in a job)."""
    _child_setup(home)
    from napari_hpa.core.train.data import load_csv
    from napari_hpa.core.train.loop import TrainConfig, train_model

    conn.send("start")
    data = load_csv(images, Path(images) / "labels.csv", EASY)
    config = TrainConfig(
        name="crash",
        size=32,
        epochs=2,
        batch_size=4,
        lr=5e-3,
        arch_kwargs={"width": 4},
        out_root=root,
        patience=0,
        workers=0,
        device="cpu",
        seed=seed,
        cache_mb=16,
    )
    result = train_model(config, data, lambda e: conn.send(e.get("event")))
    conn.send(("saved", str(result.path)))


def _model_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_models(root: Path, known: dict[str, str]) -> tuple[list[str], int, int]:
    """Every visible folder loads and is listed; ``known`` (name -> path) must survive.

    Returns problems, versions lost and partial folders cleaned.
    """
    from napari_hpa.core.model.checkpoint import clean_partial_versions, load_model
    from napari_hpa.core.model.registry import list_models

    problems: list[str] = []
    folders = _model_folders(root) if root.is_dir() else []
    for folder in folders:
        try:
            load_model(folder)
        except Exception as exc:  # noqa: BLE001 - a folder that does not load is the finding
            problems.append(f"{folder.name} does not load: {exc}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = {e.path.resolve() for e in list_models((root,)) if e.path.parent == root}
    problems += [f"registry warning: {w.message}" for w in caught]
    if listed != {f.resolve() for f in folders}:
        problems.append(f"registry lists {sorted(p.name for p in listed)}")
    names = {f.name for f in folders}
    lost = [name for name in known if name not in names]
    problems += [f"reported version {name} is gone" for name in lost]
    cleaned = len(clean_partial_versions(root))
    if any(p.name.startswith(".tmp-") for p in root.iterdir()):
        problems.append("clean_partial_versions left a .tmp-* folder")
    for folder in folders:
        known.setdefault(folder.name, str(folder))
    return problems, len(lost), cleaned


def _trial_training(kind: _Kind, index: int) -> TrialResult:
    st, rng = kind.state, kind.rng
    images, models = kind.root / "images", kind.root / "models"
    if "duration" not in st:
        if not images.is_dir():
            _run_to_end(_setup_child, str(kind.root), str(kind.root / "home"))
        t0 = time.monotonic()
        msgs = _run_to_end(_training_child, str(images), str(models), str(kind.root / "home"), 0)
        st["duration"] = time.monotonic() - t0
        st["known"] = {}
        saved = [m for m in msgs if isinstance(m, tuple)]
        problems, _, _ = _check_models(models, st["known"])
        if problems or len(saved) != 1 or len(st["known"]) != 1:
            raise RuntimeError(f"calibration run failed: {problems} {msgs[-3:]}")
    before = set(st["known"])
    delay = rng.uniform(0.0, 1.1 * st["duration"])
    t0 = time.monotonic()
    proc, conn = _start(
        _training_child, str(images), str(models), str(kind.root / "home"), index + 1
    )
    time.sleep(delay)
    _kill(proc)
    events = _drain(conn)
    saved = [m[1] for m in events if isinstance(m, tuple)]
    for path in saved:  # a version reported as saved must survive
        st["known"].setdefault(Path(path).name, path)
    problems, lost, cleaned = _check_models(models, st["known"])
    new = set(st["known"]) - before - {Path(p).name for p in saved}
    if len(new) + len(saved) > 1:
        problems.append(f"more than one new version: {sorted(new)}")
    for name in new | {Path(p).name for p in saved}:
        if not (models / name / "README.md").is_file():
            problems.append(f"{name} has no model card: not a complete version")
    stage = [e for e in events if isinstance(e, str)][-1:] or ["(not started)"]
    detail = (
        f"killed at {delay:.2f}s of {st['duration']:.2f}s (last event {stage[0]}); "
        f"{len(new) + len(saved)} new version(s), {cleaned} partial folder(s) cleaned"
    )
    return TrialResult(
        "training",
        not problems,
        lost,
        "; ".join([detail, *problems[:5]]),
        0.0,
        time.monotonic() - t0,
    )


# ----------------------------------------------------------------------------- model writes
def _model_write_child(root: str, home: str, seed: int, conn: Connection) -> None:
    """Save new versions in a loop (with a report folder, as training writes them)."""
    _child_setup(home)
    import torch

    from napari_hpa.core.model.architectures import build_model
    from napari_hpa.core.model.checkpoint import InputSpec, ModelSpec, save_model
    from napari_hpa.core.tasks import get_task

    task = get_task("hpa28")
    torch.manual_seed(seed)
    net = build_model("small_cnn", 4, task.num_classes, width=16, depth=3)
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)

    def extra(tmp: Path) -> None:
        (tmp / "report").mkdir()
        (tmp / "report" / "history.csv").write_text("epoch,loss\n1,0.5\n", encoding="utf-8")
        (tmp / "README.md").write_text("# crash\n", encoding="utf-8")

    taken = [int(p.name.rsplit("-v", 1)[1]) for p in base.glob("crash-v*")]
    version = max(taken, default=0)
    while True:
        version += 1
        spec = ModelSpec(
            "crash",
            version,
            "small_cnn",
            task,
            InputSpec(list(task.channels), size=32),
            arch_kwargs={"width": 16, "depth": 3},
        )
        conn.send(("saving", version))
        path = save_model(net, spec, base, write_extra=extra)
        conn.send(("saved", str(path)))


def _trial_model_write(kind: _Kind, index: int) -> TrialResult:
    st, rng = kind.state, kind.rng
    st.setdefault("known", {})
    models = kind.root / "models"
    want = rng.randint(1, 3)
    extra = rng.uniform(0.0, 1.2 * st.get("per_save", 0.05))
    t0 = time.monotonic()
    proc, conn = _start(_model_write_child, str(models), str(kind.root / "home"), index)
    messages: list[Any] = []
    started: dict[int, float] = {}
    took: list[float] = []
    deadline = time.monotonic() + 60
    while len(started) < want and time.monotonic() < deadline and proc.is_alive():
        if conn.poll(0.02):
            messages.append(conn.recv())
            if messages[-1][0] == "saving":
                started[len(started) + 1] = time.monotonic()
            elif started:
                took.append(time.monotonic() - started[len(started)])
    if took:  # the measured time of one save: the window the kill point is drawn from
        st["per_save"] = sum(took) / len(took)
    time.sleep(extra)
    kill_at = time.monotonic() - t0
    _kill(proc)
    messages += _drain(conn)
    reported = [m[1] for m in messages if m[0] == "saved"]
    for path in reported:
        st["known"].setdefault(Path(path).name, path)
    problems, lost, cleaned = _check_models(models, st["known"])
    detail = (
        f"killed {extra * 1000:.0f} ms into save {want} ({len(reported)} reported), "
        f"{cleaned} partial folder(s) cleaned"
    )
    return TrialResult(
        "model_write", not problems, lost, "; ".join([detail, *problems[:5]]), 0.0, kill_at
    )


# ----------------------------------------------------------------------------- batch
def _batch_child(images: str, out: str, model: str, home: str, conn: Connection) -> None:
    """``run_batch`` in this process (decode inline); progress reports rows written."""
    _child_setup(home)
    from napari_hpa.core.batch import pipeline as batch_pipeline
    from napari_hpa.core.batch.run import run_batch

    batch_pipeline.PROGRESS_INTERVAL = 0.0  # report every write, so each reported row counts
    conn.send(("start", 0))
    summary = run_batch(
        images,
        out,
        model,
        device="cpu",
        batch_size=2,
        workers=0,
        progress=lambda p: conn.send(("done", p.done)),
    )
    conn.send(("finished", summary.done))


def _read_table(out: Path) -> list[dict[str, str]]:
    """Rows of a CSV table that may end in a torn line (the writer repairs it on reopen)."""
    if not out.is_file():
        return []
    text = out.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def _trial_batch(kind: _Kind, index: int) -> TrialResult:
    st, rng = kind.state, kind.rng
    images, home = kind.root / "images", str(kind.root / "home")
    if "duration" not in st:
        if not images.is_dir():
            st["model"] = _run_to_end(_setup_child, str(kind.root), home)[-1]
        else:
            st["model"] = str(kind.root / "batch-model" / "crash-batch-v1")
        from napari_hpa.core.image.sources import find_images

        st["sources"] = find_images([str(images.resolve())])
        t0 = time.monotonic()
        _run_to_end(_batch_child, str(images), str(kind.root / "calibrate.csv"), st["model"], home)
        st["duration"] = time.monotonic() - t0
    sources: list[str] = st["sources"]
    out = kind.root / f"trial-{index:03d}.csv"
    delay = rng.uniform(0.0, 1.1 * st["duration"])
    t0 = time.monotonic()
    proc, conn = _start(_batch_child, str(images), str(out), st["model"], home)
    time.sleep(delay)
    _kill(proc)
    messages = _drain(conn)
    reported = max([m[1] for m in messages if m[0] in ("done", "finished")], default=0)
    problems: list[str] = []
    before = {r["image"] for r in _read_table(out)}
    # Inline decoding writes the images in order: the first `reported` ones are in the table.
    lost = sum(1 for s in sources[:reported] if s not in before)
    if lost:
        problems.append(f"{lost} of {reported} reported rows missing after the kill")
    try:
        _run_to_end(_batch_child, str(images), str(out), st["model"], home, timeout=120)
    except RuntimeError as exc:
        problems.append(f"resume failed: {exc}")
    rows = _read_table(out)
    names = [r["image"] for r in rows]
    if sorted(names) != sorted(sources):
        dup = len(names) - len(set(names))
        miss = len(set(sources) - set(names))
        problems.append(f"after resume: {len(rows)} rows, {dup} duplicate(s), {miss} missing")
    if any(r["status"] != "ok" for r in rows):
        problems.append("error rows after resume")
    out.unlink(missing_ok=True)
    detail = (
        f"killed at {delay:.2f}s of {st['duration']:.2f}s with {len(before)}/{len(sources)} "
        f"rows ({reported} reported); resumed to {len(rows)} rows"
    )
    return TrialResult(
        "batch", not problems, lost, "; ".join([detail, *problems[:5]]), 0.0, time.monotonic() - t0
    )


# ----------------------------------------------------------------------------- entry points
_TRIALS: dict[str, Callable[[_Kind, int], TrialResult]] = {
    "annotations": _trial_annotations,
    "training": _trial_training,
    "model_write": _trial_model_write,
    "batch": _trial_batch,
}


def run_trials(kind: str, n: int, workdir: Path, seed: int = 0) -> list[TrialResult]:
    """Run ``n`` kill trials of ``kind`` in ``workdir/kind`` (created); seeded kill points.

    Parameters
    ----------
    kind
        ``"annotations"``, ``"training"``, ``"model_write"`` or ``"batch"``.
    n
        Number of trials (each one real child process killed with SIGKILL).
    workdir
        Scratch folder; the same database/models folder/images serve every trial
        of a call, so damage accumulates if any is done.
    seed
        Seed of the kill points and of the children's work.

    Returns
    -------
    list[TrialResult]
        One per trial; ``seconds`` is the trial's wall time.
    """
    if kind not in _TRIALS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    root = Path(workdir) / kind
    root.mkdir(parents=True, exist_ok=True)
    state = _Kind(root, random.Random(f"{kind}:{seed}"))
    results = []
    for i in range(n):
        t0 = time.monotonic()
        result = _TRIALS[kind](state, i)
        result.seconds = time.monotonic() - t0
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.crash_trials KIND|all [N] [--seed S] [--keep DIR]``."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.crash_trials", description=__doc__)
    parser.add_argument("kind", choices=[*KINDS, "all"])
    parser.add_argument("n", type=int, nargs="?", default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per trial")
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="napari-hpa-crash-") as tmp:
        for kind in KINDS if args.kind == "all" else (args.kind,):
            t0 = time.monotonic()
            results = run_trials(kind, args.n, Path(tmp), args.seed)
            took = time.monotonic() - t0
            bad = [r for r in results if not r.survived]
            failed += len(bad)
            for r in results if args.verbose else bad:
                print(f"  {'ok ' if r.survived else 'BAD'} {r.kind}: {r.detail}")
            lost = sum(r.lost for r in results)
            print(
                f"{kind}: {len(results)} kills, {len(results) - len(bad)} survived, "
                f"{lost} lost, {took:.1f} s ({took / max(1, len(results)):.2f} s/trial)",
                flush=True,
            )
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    # Children unpickle their targets by module name: run the functions as `crash_trials`
    # (the name pytest gives this file), not `__main__`.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import crash_trials

    sys.exit(crash_trials.main())
