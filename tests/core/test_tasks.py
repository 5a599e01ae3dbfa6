from __future__ import annotations

import pytest

from napari_hpa.core.tasks import BUILTIN_TASKS, HPA28_CLASSES, Task, get_task, make_task


def test_hpa28_is_kaggle_order() -> None:
    task = get_task("hpa28")
    assert task.num_classes == 28 and task.multilabel
    assert task.classes[0] == "Nucleoplasm" and task.classes[27] == "Rods & rings"
    assert task.classes[23] == "Mitochondria" and task.classes[25] == "Cytosol"
    assert task.channels == ("microtubules", "protein", "nucleus", "er")
    assert len(HPA28_CLASSES) == 28


def test_builtin_tasks() -> None:
    assert get_task("hela10").kind == "multiclass" and get_task("hela10").num_classes == 10
    assert get_task("bach4").classes == ("Normal", "Benign", "InSitu", "Invasive")
    assert set(BUILTIN_TASKS) >= {"hpa28", "hela10", "bach4"}
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


def test_round_trip_and_validation() -> None:
    task = make_task(["stained"], kind="multilabel", channels=("gray",), name="binary")
    again = Task.from_dict(task.to_dict())
    assert again == task and again.num_classes == 1
    with pytest.raises(ValueError, match="unique"):
        make_task(["a", "a"])
    with pytest.raises(ValueError, match="kind"):
        Task("x", "regression", ("a",), ("gray",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lacks"):
        Task.from_dict({"name": "x"})


def test_class_index() -> None:
    task = get_task("hpa28")
    assert task.class_index("mitochondria") == 23
    assert task.class_index("7") == 7 and task.class_index(0) == 0
    with pytest.raises(ValueError):
        task.class_index(28)
    with pytest.raises(ValueError):
        task.class_index("Chloroplast")
