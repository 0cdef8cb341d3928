"""The map between our contiguous class indices and a dataset's own category ids and names.

Models predict contiguous indices 0..K-1 (detection adds a background column in front, inside the
head). Evaluation against official annotation files and exported models speak the dataset's ids
(COCO category ids 1..90 with gaps; Cityscapes labelIds), so every data source returns a LabelMap.
"""

from __future__ import annotations

import dataclasses
import json

from ondevice_vision import files

# The mask value of unlabelled pixels, everywhere: data sources, losses, metrics, pictures.
IGNORE_LABEL = 255


# The name of a class slot the data never uses (COCO's 90 category-id slots hold 80 categories).
UNUSED_PREFIX = "unused_"


def unused_name(dataset_id: int) -> str:
    return f"{UNUSED_PREFIX}{dataset_id}"


@dataclasses.dataclass(frozen=True)
class LabelMap:
    names: tuple[str, ...]
    dataset_ids: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.dataset_ids):
            raise ValueError(
                f"LabelMap: {len(self.names)} names but {len(self.dataset_ids)} dataset ids"
            )
        if len(set(self.dataset_ids)) != len(self.dataset_ids):
            raise ValueError(f"LabelMap: duplicate dataset ids in {self.dataset_ids}")

    @classmethod
    def contiguous(cls, names) -> LabelMap:
        names = tuple(names)
        return cls(names=names, dataset_ids=tuple(range(len(names))))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def items(self) -> tuple[tuple[int, str], ...]:
        """(dataset id, name) per class index."""
        return tuple(zip(self.dataset_ids, self.names, strict=True))

    @property
    def unique_names(self) -> tuple[str, ...]:
        """The names, with " (id N)" after each one that several classes share (labelling tools
        export a placeholder category beside a real one of the same name)."""
        repeated = {n for n in self.names if self.names.count(n) > 1}
        return tuple(
            f"{n} (id {i})" if n in repeated else n
            for n, i in zip(self.names, self.dataset_ids, strict=True)
        )

    def index_of_dataset_id(self) -> dict[int, int]:
        return {d: i for i, d in enumerate(self.dataset_ids)}

    def to_json(self) -> str:
        items = [
            {"index": i, "id": d, "name": n}
            for i, (n, d) in enumerate(zip(self.names, self.dataset_ids, strict=True))
        ]
        return json.dumps({"classes": items}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabelMap:
        items = sorted(json.loads(text)["classes"], key=lambda c: c["index"])
        return cls(
            names=tuple(c["name"] for c in items), dataset_ids=tuple(int(c["id"]) for c in items)
        )

    def save(self, path: str) -> None:
        with files.atomic_write(path) as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str) -> LabelMap:
        """A labels.json; ValueError naming the file when it is not one."""
        data = files.read_json(path)
        try:
            return cls.from_json(json.dumps(data))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            detail = f"missing key {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            raise ValueError(
                f'{path}: not a label map ({{"classes": [{{"index", "id", "name"}}, ...]}}): '
                f"{detail}"
            ) from e
