"""Classification tasks: what a model predicts and which channels it reads.

A task is data, not code, so any task can come from a model's ``model.json``;
the built-in ones are only shortcuts for training new models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["multilabel", "multiclass"]

#: HPA channel names, in the order a 4-channel HPA input uses them.
HPA_CHANNELS: tuple[str, ...] = ("microtubules", "protein", "nucleus", "er")
#: Colour suffix of HPA channel files -> channel name.
HPA_COLOR_TO_CHANNEL: dict[str, str] = {
    "red": "microtubules",
    "green": "protein",
    "blue": "nucleus",
    "yellow": "er",
}

#: The 28 HPA Kaggle 2018 classes, in Kaggle order (index = Kaggle class id).
HPA28_CLASSES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)

#: Murphy lab 2D HeLa dataset classes.
HELA10_CLASSES: tuple[str, ...] = (
    "ActinFilaments",
    "Endosome",
    "ER",
    "Golgi_gia",
    "Golgi_gpp",
    "Lysosome",
    "Microtubules",
    "Mitochondria",
    "Nucleolus",
    "Nucleus",
)

#: BACH 2018 breast histology classes.
BACH4_CLASSES: tuple[str, ...] = ("Normal", "Benign", "InSitu", "Invasive")


@dataclass(frozen=True)
class Task:
    """What a classifier predicts.

    Parameters
    ----------
    name
        Short identifier, e.g. ``"hpa28"``.
    kind
        ``"multilabel"`` (independent sigmoid per class) or ``"multiclass"``
        (one softmax over classes).
    classes
        Class names; the index in this tuple is the class id.
    channels
        Input channel names the task expects, e.g. HPA's four channels, or
        ``("red", "green", "blue")`` or ``("gray",)``.
    description
        One line for humans.
    """

    name: str
    kind: TaskKind
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in ("multilabel", "multiclass"):
            raise ValueError(f"task {self.name!r}: kind must be multilabel or multiclass")
        if not self.classes:
            raise ValueError(f"task {self.name!r}: needs at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r}: class names must be unique")
        if not self.channels:
            raise ValueError(f"task {self.name!r}: needs at least one input channel")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "channels", tuple(self.channels))

    @property
    def num_classes(self) -> int:
        """Number of classes (the network's outputs)."""
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        """True when an image may have several classes (thresholds, not an argmax)."""
        return self.kind == "multilabel"

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class name (case-insensitive) or an index to an index."""
        text = str(name_or_index).strip()
        if isinstance(name_or_index, int) or (text.isascii() and text.isdigit()):
            if not isinstance(name_or_index, int) and len(text) > 9:
                raise ValueError(f"class index {text[:12]}... out of range for task {self.name!r}")
            idx = int(name_or_index)
            if not 0 <= idx < self.num_classes:
                raise ValueError(f"class index {idx} out of range for task {self.name!r}")
            return idx
        lowered = [c.lower() for c in self.classes]
        try:
            return lowered.index(str(name_or_index).strip().lower())
        except ValueError:
            raise ValueError(f"unknown class {name_or_index!r} for task {self.name!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form kept in ``model.json`` (``extra`` only when set)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "channels": list(self.channels),
            "description": self.description,
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Read a task from its JSON form; raise ValueError if a required field is missing."""
        missing = [k for k in ("name", "kind", "classes", "channels") if k not in data]
        if missing:
            raise ValueError(f"task definition lacks {', '.join(missing)}")
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            classes=tuple(str(c) for c in data["classes"]),
            channels=tuple(str(c) for c in data["channels"]),
            description=str(data.get("description", "")),
            extra=dict(data.get("extra", {})),
        )


BUILTIN_TASKS: dict[str, Task] = {
    "hpa28": Task(
        "hpa28",
        "multilabel",
        HPA28_CLASSES,
        HPA_CHANNELS,
        "Human Protein Atlas 2018: 28 subcellular locations of the green-channel protein",
    ),
    "hela10": Task(
        "hela10",
        "multiclass",
        HELA10_CLASSES,
        ("gray",),
        "Murphy 2D HeLa: 10 organelle classes, one per image",
    ),
    "bach4": Task(
        "bach4", "multiclass", BACH4_CLASSES, ("red", "green", "blue"), "BACH 2018 H&E histology"
    ),
}


def get_task(name: str) -> Task:
    """Return a built-in task by name."""
    try:
        return BUILTIN_TASKS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_TASKS))
        raise ValueError(f"unknown task {name!r}; built-in tasks are {known}") from None


def make_task(
    classes: list[str] | tuple[str, ...],
    kind: TaskKind = "multiclass",
    channels: tuple[str, ...] = HPA_CHANNELS,
    name: str = "custom",
) -> Task:
    """Build an ad-hoc task, e.g. from a folder-per-class layout or a label file."""
    return Task(name=name, kind=kind, classes=tuple(classes), channels=tuple(channels))
