"""``export-model`` / ``import-model``: bioimage.io packages that validate and round-trip."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_hpa.cli import main
from napari_hpa.core.image.io import read_image
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model.bioimage_io import archive
from napari_hpa.core.model.bioimage_io.export import run_package_model
from napari_hpa.core.model.bioimage_io.processing import preprocessing_steps
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import resolve_model, sample_data_dir

spec_lib = pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")

ARCH_SOURCE = Path(__file__).parents[2] / "napari_hpa/core/model/bioimage_io/arch_source.py"
BUNDLED = "hpa28-efficientnet_lite0"
TINY = "hpa28-synthetic-tiny"


def _export(model: str, out: Path, *extra: str) -> Path:
    assert main(["export-model", model, "--format", "bioimageio", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def bundled_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(BUNDLED, tmp_path_factory.mktemp("export") / "m.zip")


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(TINY, tmp_path_factory.mktemp("export") / "tiny.zip")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list:
    folder = tmp_path_factory.mktemp("images")
    write_samples(folder, n=2, size=192, seed=7)
    sources = [folder / "synth_0000", folder / "synth_0001", sample_data_dir() / "hpa_57_F11_1"]
    return [read_image(s) for s in sources]


def _probabilities(model: str | Path, images: list) -> np.ndarray:
    predictor = Predictor(model, device="cpu", backend="torch")
    return np.stack([p.probabilities for p in predictor.predict(images)])


def _rewrite(package: Path, out: Path, change) -> Path:
    """Unpack ``package``, let ``change`` edit its rdf.yaml (a dict), zip it again."""
    folder = out.with_suffix("")
    with zipfile.ZipFile(package) as zf:
        zf.extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    change(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with zipfile.ZipFile(out, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f.name)
    return out


def test_architecture_source_needs_torch_alone() -> None:
    tree = ast.parse(ARCH_SOURCE.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would need napari-hpa"
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "math", "typing", "torch"}


def test_architecture_source_rebuilds_the_models_exactly() -> None:
    spec = importlib.util.spec_from_file_location("standalone_arch", ARCH_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in (BUNDLED, TINY):
        loaded = load_model(resolve_model(name).path)
        s = loaded.spec
        net = module.NapariHpaClassifier(
            s.arch, len(s.input.channels), s.task.num_classes, s.arch_kwargs
        )
        net.load_state_dict(loaded.net.state_dict(), strict=True)
        x = torch.rand(2, len(s.input.channels), s.input.size, s.input.size)
        with torch.no_grad():
            want, want_cam = loaded.net.forward_with_cam(x)
            got, got_cam = net.eval()(x)
        assert torch.equal(want, got) and torch.equal(want_cam, got_cam)


def test_exported_bundled_model_validates(bundled_zip: Path) -> None:
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(bundled_zip, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert descr.type == "model" and str(descr.format_version).startswith("0.5")
    assert descr.weights.pytorch_state_dict is not None and descr.weights.onnx is not None
    assert [str(p.id) for p in descr.inputs[0].preprocessing if p.id != "ensure_dtype"] == [
        "scale_range",
        "clip",
        "fixed_zero_mean_unit_variance",
    ]
    spec = resolve_model(BUNDLED).spec
    own = descr.config.model_extra["napari-hpa"]
    assert own["classes"] == list(spec.task.classes)
    assert own["thresholds"] == pytest.approx(spec.thresholds)
    assert list(descr.outputs[0].axes[1].channel_names) == list(spec.task.classes)
    assert str(descr.license) == "CC-BY-SA-3.0"  # the card's data licence, shared alike
    assert descr.authors and descr.cite and descr.covers and descr.documentation
    assert descr.training_data is not None
    names = zipfile.ZipFile(bundled_zip).namelist()
    assert {"weights.pt", "weights.onnx", "napari_hpa_arch.py", "cover.png", "README.md"} <= set(
        names
    )
    # the test output is the model's own answer on the test input
    with zipfile.ZipFile(bundled_zip) as zf:
        tile = np.load(zf.open("test_input.npy"))
        want = np.load(zf.open("test_probabilities.npy"))
    loaded = load_model(resolve_model(BUNDLED).path)
    got, _ = run_package_model(loaded, preprocessing_steps(loaded.spec.input), tile)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_bioimageio_test_passes(bundled_zip: Path) -> None:
    """`bioimageio test` (bioimage.io.core's own runner), from $BIOIMAGEIO_CMD or PATH."""
    command = os.environ.get("BIOIMAGEIO_CMD") or shutil.which("bioimageio")
    if not command:
        pytest.skip("the `bioimageio` command (pip install bioimageio.core) is not on PATH")
    done = subprocess.run(
        [command, "test", str(bundled_zip)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "passed" in done.stdout


def test_existing_file_is_kept_unless_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.zip"
    out.write_bytes(b"keep me")
    assert main(["export-model", TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(out) in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    _export(TINY, out, "--overwrite")
    assert zipfile.is_zipfile(out)
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["export-model", TINY, "--out", "{tmp}/m.txt"], "is a .zip file"),
        (["export-model", "no-such-model", "--out", "{tmp}/m.zip"], "no model named"),
        (["export-model", TINY, "--out", "{tmp}/missing/m.zip"], "no such folder"),
        (["import-model", "{tmp}/none.zip"], "no such file"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, capsys, args: list[str], says: str) -> None:
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err and "Traceback" not in err


@pytest.mark.parametrize(
    "model",
    [TINY, pytest.param(BUNDLED, marks=pytest.mark.slow)],  # the bundled: ~30 s
)
def test_import_round_trip_predicts_the_same(
    model: str, request: pytest.FixtureRequest, images: list, capsys
) -> None:
    package = request.getfixturevalue("bundled_zip" if model == BUNDLED else "tiny_zip")
    assert main(["import-model", str(package), "--name", "copy"]) == 0
    assert "imported copy@1" in capsys.readouterr().out
    copy, original = resolve_model("copy"), resolve_model(model)
    assert copy.spec.task == original.spec.task and copy.spec.input == original.spec.input
    assert copy.spec.thresholds == original.spec.thresholds
    assert copy.spec.training["bioimageio"]["exported_from"] == original.id
    assert (copy.path / "README.md").is_file()
    want, got = _probabilities(model, images), _probabilities("copy", images)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_import_foreign_classifier_from_its_description(
    tiny_zip: Path, images: list, tmp_path: Path
) -> None:
    """A package without napari-hpa's config: task, input and architecture read from it."""

    def foreign(rdf: dict) -> None:
        del rdf["config"]["napari-hpa"]
        rdf.pop("attachments", None)
        rdf["weights"].pop("onnx")

    package = _rewrite(tiny_zip, tmp_path / "foreign.zip", foreign)
    (tmp_path / "foreign" / "napari_hpa_model.json").unlink()
    assert main(["import-model", str(package), "--name", "foreign"]) == 0
    entry = resolve_model("foreign")
    original = resolve_model(TINY).spec
    assert entry.spec.arch == original.arch and entry.spec.arch_kwargs == original.arch_kwargs
    assert entry.spec.task.classes == original.task.classes
    assert entry.spec.input.normalize == "percentile"
    assert entry.spec.input.mean == pytest.approx(original.input.mean)
    want, got = _probabilities(TINY, images), _probabilities("foreign", images)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_onnx_only_package_is_refused_in_one_line(tiny_zip: Path, tmp_path: Path, capsys) -> None:
    def onnx_only(rdf: dict) -> None:
        del rdf["config"]["napari-hpa"]
        rdf["weights"].pop("pytorch_state_dict")
        rdf["weights"]["onnx"].pop("parent")

    package = _rewrite(tiny_zip, tmp_path / "onnx.zip", onnx_only)
    assert main(["import-model", str(package)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no pytorch_state_dict" in err and str(package) in err


def test_pickle_that_runs_code_is_never_loaded(tiny_zip: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "evil"
    with zipfile.ZipFile(tiny_zip) as zf:
        zf.extractall(folder)
    torch.save({"x": Evil()}, folder / "weights.pt")
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["weights"]["pytorch_state_dict"].pop("sha256", None)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    assert main(["import-model", str(folder)]) == 2
    assert "weights_only" in capsys.readouterr().err
    assert not marker.exists()


def test_zip_entries_never_leave_their_folder(tmp_path: Path, capsys) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("rdf.yaml", "type: model\n")
        zf.writestr("../outside.txt", "escaped")
    assert main(["import-model", str(evil)]) == 2
    assert "outside the package" in capsys.readouterr().err
    assert not (tmp_path.parent / "outside.txt").exists()


def test_zip_sizes_are_bounded_by_the_bytes_inflated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rdf.yaml", b"\0" * (3 * 2**20))
    monkeypatch.setattr(archive, "MAX_FILE_BYTES", 2**20)
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(archive.BioimageioError, match="inflates past"):
        archive.unpack(bomb, target)


def test_missing_extra_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['bioimageio'] = None\n"
        "from napari_hpa.cli import main\n"
        f"sys.exit(main(['export-model', '{TINY}', '--out', r'{tmp_path / 'm.zip'}']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "pip install 'napari-hpa[bioimageio]'" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_lineage_becomes_the_packages_parent(tmp_path: Path) -> None:
    from bioimageio.spec import load_description

    from napari_hpa.core.model.registry import save_new_version

    loaded = load_model(resolve_model(TINY).path)
    loaded.spec.name, loaded.spec.parent = "child", resolve_model(TINY).id
    save_new_version(loaded.net, loaded.spec)
    descr = load_description(_export("child", tmp_path / "child.zip"))
    assert str(descr.parent.id) == TINY and str(descr.parent.version) == "1"
    assert descr.config.model_extra["napari-hpa"]["parent"] == resolve_model(TINY).id
