"""How many storage requests a read of the plan costs: each ranged read is one S3 GET.

The capacity plan (docs/SCALING.md) sizes S3 request rates by this count: a piece is one
open and a few ranged reads (the footer, then the row group's column chunks coalesced by
pyarrow's pre-buffering), not one read per column. A counting filesystem over local shards
stands in for S3 here because pyarrow's S3 files issue one GET per ranged read the same way.
"""

import io

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from unihema.config import load_config
from unihema.data.pipeline import PlanReader
from unihema.data.plan import RankPlan, build_shard_index
from unihema.data.shards import list_shards
from unihema.data.synthetic import generate_dataset


class _Requests:
    def __init__(self):
        self.opens = 0
        self.reads = 0


class _CountingFile(io.RawIOBase):
    def __init__(self, path: str, requests: _Requests):
        self._file, self._requests = open(path, "rb"), requests

    def seekable(self):
        return True

    def readable(self):
        return True

    def seek(self, *args):
        return self._file.seek(*args)

    def tell(self):
        return self._file.tell()

    def read(self, size=-1):
        self._requests.reads += 1
        return self._file.read(size)

    def readinto(self, buffer):
        self._requests.reads += 1
        return self._file.readinto(buffer)

    def close(self):
        self._file.close()
        super().close()


class _CountingHandler(pafs.FileSystemHandler):
    """Local files, read only, with every open and every read counted."""

    def __init__(self, requests: _Requests):
        self.local, self.requests = pafs.LocalFileSystem(), requests

    def __eq__(self, other):
        return isinstance(other, _CountingHandler)

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def open_input_file(self, path):
        self.requests.opens += 1
        return pa.PythonFile(_CountingFile(path, self.requests), mode="r")

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def _read_only(self, *args, **kwargs):
        raise NotImplementedError("read only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


def test_a_piece_costs_one_open_and_at_most_three_ranged_reads(tmp_path):
    """A rank's pieces (segmentation's too, with its mask columns) each cost one open and <= 3 ranged reads."""
    generate_dataset(400, str(tmp_path / "ds"), image_size=48, workers=1, progress=False)
    paths = list_shards(str(tmp_path / "ds"), "train")
    index = build_shard_index(paths, pafs.LocalFileSystem())
    assert index.row_group_rows <= 64 and max(row_group for _, row_group, _ in index.pieces["segmentation"]) > 0
    plan = RankPlan(index, ["classification", "segmentation"], batch_size=8, window=32)
    for _ in range(12):
        plan.next_batch("classification")
        plan.next_batch("segmentation")
    units = plan.take_pending()
    pieces = len(units)
    assert {u.task for u in units} == {"classification", "segmentation"}
    requests = _Requests()
    cfg = load_config("tiny")
    reader = PlanReader(index.paths, pafs.PyFileSystem(_CountingHandler(requests)), cfg.data, cfg.model, seed=0)
    items = [u.to_item() for u in units]
    decoded = list(reader({key: np.array([item[key] for item in items], dtype=object) for key in items[0]}))
    assert sum(len(out["plan_key"]) for out in decoded) == sum(len(u.rows) for u in units)
    assert requests.opens <= pieces
    assert requests.reads <= 3 * pieces, (requests.reads, pieces)  # one read per column chunk would be ~20 per piece
