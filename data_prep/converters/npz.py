"""MedMNIST-style NumPy archives: ``{split}_images`` (N x H x W [x 3]) and ``{split}_labels``.

BloodMNIST is PBC resized to 28-224 px, distributed as one .npz. Each array row becomes a
lossless PNG record; labels are indices into ``class_names`` (then through the label map).
Units are ranges of rows, and each worker loads the archive once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from data_prep.classmap import Ignored
from data_prep.context import Context
from data_prep.converters.base import Converter, Plan
from data_prep.images import from_array
from data_prep.problems import ANNOTATION_IGNORED, Outcome, SourceProblem, rejection
from data_prep.splits import split_name

_CHUNK = 256


@lru_cache(maxsize=2)
def _arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class NpzConverter(Converter):
    name = "npz_arrays"
    space = "cell"
    primary = "classification"
    OPTIONS = {"file": "data.npz", "class_names": []}

    def plan(self, ctx: Context) -> Plan:
        path = ctx.path("file")
        if not path.is_file():
            raise FileNotFoundError(f"archive {path} is missing")
        try:
            arrays = _arrays(str(path))
        except (OSError, ValueError) as err:
            return Plan([], [rejection(ctx.record_id(path.name), path.name, f"malformed_annotation: {err}")])
        units = []
        for name in sorted(arrays):
            if not name.endswith("_images"):
                continue
            split = name[: -len("_images")]
            n = len(arrays[name])
            units += [(split, start, min(start + _CHUNK, n)) for start in range(0, n, _CHUNK)]
        return Plan(units)

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        split, start, stop = unit
        arrays = _arrays(str(ctx.path("file")))
        images, labels = arrays[f"{split}_images"], arrays.get(f"{split}_labels")
        names = ctx.options["class_names"]
        results = []
        for i in range(start, stop):
            key, out = f"{split}/{i:06d}", Outcome()
            rid, origin = ctx.record_id(key), f"{ctx.options['file']}:{split}_images[{i}]"
            try:
                if labels is None or i >= len(labels):
                    raise SourceProblem("missing_annotation", f"no {split}_labels entry")
                index = int(np.asarray(labels[i]).ravel()[0])
                raw = names[index] if 0 <= index < len(names) else f"label index {index}"
                cell_class = ctx.labels(raw)
            except Ignored:
                out.note(rid, origin, f"ignored_class: label {raw!r} is left out by the registry", ANNOTATION_IGNORED)
                results.append(out)
                continue
            except SourceProblem as problem:
                results.append(out.reject(rid, origin, [problem.reason]))
                continue
            results.append(
                ctx.finish(
                    out,
                    key=key,
                    origin=origin,
                    image=from_array(images[i]),
                    primary="classification",
                    upstream_split=split_name(split) and split,
                    cell_class=cell_class,
                )
            )
        return results


__all__ = ["NpzConverter"]
