"""The ONNX copy of a model that the CPU runtimes load: exported once, cached by its weights.

A model is exported on first use into the user's cache folder (``$NAPARI_HPA_HOME/cache``
when that is set), named by a hash of everything the graph depends on: the weights, the
architecture and its sizes. A retrained model has other weights, so another file; a model
folder is never written (the bundled ones are read-only). The file is written to a
temporary name and renamed, so a kill during the export leaves no half graph behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from platformdirs import user_cache_dir

from ...atomic import atomic_path
from ..checkpoint import LoadedModel

#: Changes whenever the exported graph changes (inputs, outputs, opset): old files are
#: then ignored, never loaded as if they were the new graph.
EXPORT_FORMAT = "napari-hpa-onnx-2"
OPSET = 17
INPUT = "x"
OUTPUTS = ("logits", "cam")


#: Overrides where the exported graphs go (the tests share one folder between tests).
CACHE_ENV = "NAPARI_HPA_CACHE"


def cache_dir() -> Path:
    """Return the folder of exported graphs.

    ``$NAPARI_HPA_CACHE`` when set, else ``$NAPARI_HPA_HOME/cache/onnx``, else the
    user's cache folder (platformdirs).
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = os.environ.get("NAPARI_HPA_HOME")
    root = Path(home).expanduser() / "cache" if home else Path(user_cache_dir("napari-hpa"))
    return root / "onnx"


def weights_key(model: LoadedModel) -> str:
    """Return a hash of what the graph depends on: architecture, sizes and every weight."""
    spec = model.spec
    digest = hashlib.sha256()
    about = {
        "format": EXPORT_FORMAT,
        "arch": spec.arch,
        "arch_kwargs": spec.arch_kwargs,
        "channels": len(spec.input.channels),
        "classes": spec.task.num_classes,
    }
    digest.update(json.dumps(about, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.net.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


class _LogitsAndMaps(torch.nn.Module):
    """The graph's two outputs: logits (N, K) and class-activation maps (N, K, h, w)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_cam(x)  # type: ignore[operator]


def onnx_path(model: LoadedModel, fresh: bool = False) -> Path:
    """Return the cached ONNX graph of ``model``, exporting it first if it is not there.

    ``fresh`` exports again over a cached file that would not load (a disk error, an
    older runtime's leftovers).

    Only the batch is dynamic. The height and width are the model's tile size: the
    EfficientNet-Lite backbones compute their "same" padding from the input's size, and
    a trace fixes it at the example's, so a graph run at another size would answer
    differently (whole-image map passes stay on torch).
    """
    target = cache_dir() / f"{model.spec.name}-{weights_key(model)}.onnx"
    if target.is_file() and not fresh:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    net = model.net
    was_training = net.training
    device = next(net.parameters()).device
    spec = model.spec
    example = torch.zeros(1, len(spec.input.channels), spec.input.size, spec.input.size)
    wrapper = _LogitsAndMaps(net.cpu()).eval()  # eval: export must not switch BN to train
    try:
        with atomic_path(target) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's TracerWarnings are not the user's
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_axes={
                    INPUT: {0: "n"},
                    OUTPUTS[0]: {0: "n"},
                    OUTPUTS[1]: {0: "n"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        net.to(device).train(was_training)
    return target
