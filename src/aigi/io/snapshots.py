"""Files of a pinned source: a bare git snapshot at its commit, or a zip.

Snapshots are bare git repositories: ``<mirror>/<owner>+<name>/repo`` (the layout of the
project's fetch tool), ``<mirror>/<owner>/<name>.git`` (``git clone --bare``) or a clone's
``.git``. Files of 4 MiB or more may be missing from a snapshot: they are listed with no size,
reported, never guessed. Blobs are streamed through one ``git cat-file --batch``.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path
from typing import Iterator

from .sources import Source


def clone_command(mirror: str | os.PathLike, repo: str) -> list[str]:
    """The command that fetches ``repo``'s snapshot into ``mirror`` (where the network allows)."""
    owner, name = repo.split("/", 1)
    return ["git", "clone", "--bare", f"https://github.com/{repo}", str(Path(mirror) / owner / f"{name}.git")]


def clone(mirror: str | os.PathLike, repo: str) -> Path:
    """``git clone --bare`` of ``repo`` into ``mirror``; RuntimeError with git's own words when it fails."""
    done = subprocess.run([*clone_command(mirror, repo), "--quiet"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"could not clone {repo}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return find_snapshot(mirror, repo)


def find_snapshot(mirror: str | os.PathLike, repo: str) -> Path:
    """The git directory of ``repo``'s snapshot under ``mirror``; FileNotFoundError saying how to get it."""
    owner, name = repo.split("/", 1)
    for candidate in (Path(mirror) / f"{owner}+{name}" / "repo", Path(mirror) / f"{owner}+{name}" / "repo" / ".git",
                      Path(mirror) / owner / f"{name}.git", Path(mirror) / owner / name / ".git"):
        if (candidate / "objects").is_dir():
            return candidate
    raise FileNotFoundError(f"no snapshot of {repo} under {mirror}: get one with {' '.join(clone_command(mirror, repo))} "
                            "(or aigi data build --clone)")


def _git(git_dir: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], input=data, capture_output=True,
                          check=True).stdout


def list_files(git_dir: Path, commit: str) -> list[tuple[str, str, int | None]]:
    """(path, blob sha, size or None when the blob is absent from the snapshot) at ``commit``."""
    try:
        _git(git_dir, "cat-file", "-e", f"{commit}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"{git_dir}: commit {commit} is not in this snapshot (fetch a newer one?)") from None
    out = []
    for line in _git(git_dir, "ls-tree", "-r", "-z", "-l", commit).split(b"\0"):
        if not line:
            continue
        meta, path = line.split(b"\t", 1)
        _mode, kind, sha, size = meta.split()
        if kind == b"blob":
            out.append((path.decode("utf-8", "surrogateescape"), sha.decode(), int(size) if size.isdigit() else None))
    checked = [sha for _, sha, size in out if size is not None]
    lines = _git(git_dir, "cat-file", "--batch-check", data="\n".join(checked).encode() + b"\n").decode().splitlines()
    present = {line.split()[0] for line in lines if not line.endswith("missing")}
    return [(p, sha, size if sha in present else None) for p, sha, size in out]


def read_blobs(git_dir: Path, shas: list[str]) -> Iterator[tuple[str, bytes]]:
    """(sha, bytes) of each blob, streamed through one ``git cat-file --batch``."""
    proc = subprocess.Popen(["git", f"--git-dir={git_dir}", "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        for sha in shas:
            proc.stdin.write(sha.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) < 3 or header[1] == b"missing":
                continue
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after each object
            yield sha, data
    finally:
        proc.stdin.close()
        proc.wait()


class Snapshot:
    """The files of one source: a bare git snapshot at the pinned commit, or a zip."""

    def __init__(self, source: Source, mirror: str | os.PathLike, fetch: bool = False) -> None:
        self.source = source
        self.git_dir: Path | None = None
        if source.archive:
            if not os.path.isfile(source.archive):
                raise FileNotFoundError(f"archive not found: {source.archive}")
            return
        try:
            self.git_dir = find_snapshot(mirror, source.repo)
        except FileNotFoundError:
            if not fetch:
                raise
            self.git_dir = clone(mirror, source.repo)

    def files(self) -> list[tuple[str, str, int | None]]:
        """(path, key to read it by, size or None when absent)."""
        if self.git_dir is not None:
            return list_files(self.git_dir, self.source.commit)
        with zipfile.ZipFile(self.source.archive) as zf:
            return [(i.filename, i.filename, i.file_size) for i in zf.infolist() if not i.is_dir()]

    def read(self, keys: list[str]) -> Iterator[tuple[str, bytes]]:
        if self.git_dir is not None:
            yield from read_blobs(self.git_dir, keys)
            return
        with zipfile.ZipFile(self.source.archive) as zf:
            for key in keys:
                yield key, zf.read(key)


__all__ = ["Snapshot", "clone", "clone_command", "find_snapshot", "list_files", "read_blobs"]
