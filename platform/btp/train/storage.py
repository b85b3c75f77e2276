"""Where a run's files live when `train.storage` is remote (`s3://bucket/prefix`, `gs://...`, any URI pyarrow's
filesystems take): Ray Train writes the checkpoints there itself; the run's own files (config.yaml,
metrics.jsonl, summary.json, model/, test predictions, the offline wandb run) are written to a local staging
folder and copied up by rank 0 at every checkpoint and at the end, so the remote folder has the local layout:

    s3://bucket/prefix/NAME/config.yaml, metrics.jsonl, summary.json, model/, checkpoint_*/ (Ray's)

A restarted or resumed run first copies the run's files back down (a new node has an empty staging folder).
Credentials and endpoints come from the usual environment (AWS_* variables, AWS_ENDPOINT_URL, GCS defaults).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

# what Ray Train keeps in the run folder itself: never copied down into the staging folder
RAY_OWNED = re.compile(r"^(checkpoint_|\.|checkpoint_manager_snapshot|validate_|tmp)")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader, or a run resumed after a kill, sees the old file or the new one
    whole, never a half-written one: a file beside it, then a rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_remote(storage: str) -> bool:
    """True for a URI such as s3://bucket/prefix (a local path or file:// is not remote)."""
    return "://" in storage and not storage.startswith("file://")


def staging_dir(storage: str, name: str) -> Path:
    """The local folder a remote run's files are written to before they are copied up (same on every call)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", storage.rstrip("/"))
    return Path(tempfile.gettempdir()) / "btp-runs" / safe / name


class RunStorage:
    """One run folder on a remote filesystem: existence checks and copies to and from the staging folder."""

    def __init__(self, storage: str, name: str) -> None:
        import pyarrow.fs as pafs

        self.uri = f"{storage.rstrip('/')}/{name}"
        try:
            self.fs, root = pafs.FileSystem.from_uri(storage.rstrip("/"))
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"train.storage: cannot open {storage} ({err})") from err
        self.root = root.rstrip("/")  # what Ray Train's storage_path is on self.fs
        self.path = f"{self.root}/{name}"

    def exists(self, relative: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(f"{self.path}/{relative}").type != pafs.FileType.NotFound

    def read_text(self, relative: str) -> str:
        with self.fs.open_input_stream(f"{self.path}/{relative}") as f:
            return f.read().decode()

    def push(self, local: Path) -> int:
        """Copy every file of the staging folder up (overwriting); returns how many."""
        count = 0
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            parent = f"{self.path}/{relative}".rsplit("/", 1)[0]
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(f"{self.path}/{relative}") as out:
                out.write(path.read_bytes())
            count += 1
        return count

    def pull(self, local: Path) -> int:
        """Copy the run's own files down into the staging folder (Ray's checkpoints stay up); returns how many."""
        import pyarrow.fs as pafs

        if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
            return 0
        count = 0
        for info in self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)):
            relative = info.path[len(self.path) + 1 :]
            if info.type != pafs.FileType.File or RAY_OWNED.match(relative):
                continue
            target = Path(local) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(info.path) as f:
                target.write_bytes(f.read())
            count += 1
        return count
