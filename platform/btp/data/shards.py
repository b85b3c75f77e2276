"""Shards -> Ray Dataset: ViLT-style Arrow IPC files (file or stream format) and parquet, read as a stream."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import ray.data
from ray.data.datasource import FileBasedDatasource

IPC_EXTENSIONS = ("arrow", "ipc", "feather")


class ShardError(ValueError):
    """A shard that cannot be read, named with what to do about it."""


class ArrowIPCDatasource(FileBasedDatasource):
    """Reads Arrow IPC shards record batch by record batch, sliced into blocks of `rows_per_block` rows.

    ViLT-style files often hold one huge record batch; slicing keeps blocks (and worker memory) small while the
    images stay encoded bytes until the map stage.
    """

    _FILE_EXTENSIONS = list(IPC_EXTENSIONS)

    def __init__(
        self,
        paths: list[str],
        rows_per_block: int = 64,
        columns: list[str] | None = None,
        optional_columns: Sequence[str] = (),
        **kwargs,
    ):
        super().__init__(paths, **kwargs)
        self.rows_per_block = rows_per_block
        self.columns = columns
        self.optional_columns = list(optional_columns)

    def _open_input_source(self, filesystem, path: str, **open_args) -> pa.NativeFile:
        return filesystem.open_input_file(path)  # random access: the IPC file footer is at the end

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        start = 0
        for batch in _record_batches(f, path):
            table = pa.Table.from_batches([batch])
            # where each row came from, so a bad row can be named by file and row
            table = table.append_column("_file", pa.array([path] * table.num_rows, pa.string()))
            table = table.append_column("_row", pa.array(range(start, start + table.num_rows), pa.int64()))
            start += table.num_rows
            if self.columns:
                missing = [c for c in self.columns if c not in table.column_names]
                if missing:
                    raise ShardError(
                        f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(table.column_names)}"
                    )
                present = [c for c in self.optional_columns if c in table.column_names]
                table = table.select([*self.columns, *present, "_file", "_row"])
            for offset in range(0, table.num_rows, self.rows_per_block):
                yield table.slice(offset, self.rows_per_block)


def _record_batches(f: pa.NativeFile, path: str) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa.ipc.open_file(f)
        batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        f.seek(0)  # the IPC stream format (e.g. Hugging Face datasets caches) has no footer
        try:
            batches = iter(pa.ipc.open_stream(f))
        except pa.ArrowInvalid as err:
            raise ShardError(
                f"{path}: not an Arrow IPC file or stream ({err}); it may be truncated or another format. "
                "Re-create it, or check it with `btp data validate`."
            ) from None
    yield from batches


def expand(paths: str | Sequence[str]) -> list[str]:
    """Local globs expanded and sorted; URIs (s3://, gs://, ...) and directories passed through to Ray."""
    out: list[str] = []
    for pattern in [paths] if isinstance(paths, str) else paths:
        pattern = str(pattern)
        if "://" in pattern:
            out.append(pattern)
            continue
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).exists()]
        if not matches:
            raise FileNotFoundError(
                f"no shard matches {pattern!r}; check the path (data.root) or create the data"
            )
        out.extend(matches)
    return out


def _parquet_has(paths: list[str], columns: Sequence[str]) -> list[str]:
    """Those of `columns` that the parquet files hold (read from the schema only, no rows)."""
    if not columns:
        return []
    import pyarrow.dataset

    names = set(pyarrow.dataset.dataset(paths, format="parquet").schema.names)
    return [c for c in columns if c in names]


def read_shards(
    paths: str | Sequence[str],
    columns: list[str] | None = None,
    rows_per_block: int = 64,
    shuffle_seed: int | None = None,
    num_cpus: float | None = None,
    optional_columns: Sequence[str] = (),
    concurrency: int | None = None,
) -> ray.data.Dataset:
    """A streaming Ray Dataset over Arrow IPC and/or parquet shards (local paths, globs or URIs).

    `columns` are required (a file without one is an error naming it); `optional_columns` are read where present.
    """
    files = expand(paths)
    ipc = [p for p in files if p.rsplit(".", 1)[-1] in IPC_EXTENSIONS]
    parquet = [p for p in files if p.endswith(".parquet") or p.endswith("/")]
    other = [p for p in files if p not in ipc and p not in parquet]
    if other:
        raise ShardError(
            f"unknown shard type: {', '.join(other[:5])}; expected .arrow/.ipc/.feather or .parquet"
        )
    shuffle = ray.data.FileShuffleConfig(seed=shuffle_seed) if shuffle_seed is not None else None
    # An explicit (empty) label selector: Ray Data otherwise adds SPREAD scheduling to reads, and a map can match
    # that only through the deprecated ray_remote_args; with equal remote arguments a map with the same
    # resources and concurrency fuses with the read (see btp.data.pipeline.build_dataset).
    placement = {"num_cpus": num_cpus, "concurrency": concurrency, "label_selector": {}}
    parts = []
    if ipc:
        source = ArrowIPCDatasource(
            ipc,
            rows_per_block=rows_per_block,
            columns=columns,
            optional_columns=optional_columns,
            shuffle=shuffle,
        )
        parts.append(ray.data.read_datasource(source, **placement))
    if parquet:
        table = ray.data.read_parquet(parquet, shuffle=shuffle, include_paths=True, **placement)
        table = table.rename_columns({"path": "_file"})
        if columns:
            table = table.select_columns([*columns, *_parquet_has(parquet, optional_columns), "_file"])
        parts.append(table)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
