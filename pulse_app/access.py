"""What a served ECGBench Studio lets its visitors reach: folders, image files, the model's time.

Plain functions and small classes (no Gradio), tested on their own:

* ``FolderPolicy``: the Explore tab's folder box opens any folder (a Studio on loopback, as
  before) or only folders under the ``--results`` roots, resolved (symlinks and ``..``) before
  they are compared; a refused path and a missing one get the same message.
* ``resolve_media`` / ``open_media_image``: an image a run's samples name (lmms-eval 0.7's
  ``input_media``: a path or a ``data:`` URI) is read only when it lies under the allowed roots
  (the data copy, the results folders); anything else is a missing image, never fetched or read.
* ``TurnQueue``: Ask's turns wait for the one model in arrival order, at most
  ``per_visitor`` of them per visitor (one open page) and ``max_waiting`` in all.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MAX_MEDIA_BYTES = 50 * 1024 * 1024  # a results-named image larger than this is "missing": no 12-lead scan is near it
MAX_MEDIA_PIXELS = 100_000_000  # decompression-bomb guard for results-named images (PIL's default is 89 M)
URL_SCHEMES = ("http://", "https://", "file:", "ftp://")  # never fetched: Studio is offline and serves no URL


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0 / :: (every interface): served beyond this machine


def is_inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether the resolved ``path`` is one of the resolved ``roots`` or lies under one."""
    for root in roots:
        try:
            path.relative_to(root)
            return True
        except ValueError:
            continue
    return False


def _resolved(path: Path) -> Path | None:
    """The real path (symlinks and ``..`` resolved) of an existing path; None when missing or unreadable."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, permission denied, symlink loop
        return None


@dataclass(frozen=True)
class FolderPolicy:
    """Which folders the folder box opens: any (``roots`` None) or those under ``roots``."""

    roots: tuple[Path, ...] | None = None  # resolved --results paths; None: any folder (a loopback Studio)

    @classmethod
    def under(cls, paths: Iterable[str | Path]) -> FolderPolicy:
        """Restricted to the existing ``paths`` (resolved); unreadable ones open nothing."""
        return cls(tuple(r for p in paths if (r := _resolved(Path(p))) is not None))

    @property
    def restricted(self) -> bool:
        return self.roots is not None

    def resolve(self, typed: str) -> Path | None:
        """The path to read for a typed folder; None when refused (outside the roots, or missing:
        the two are not told apart). Relative paths are taken under each root in turn."""
        if self.roots is None:
            return Path(typed)
        path = Path(typed)
        candidates = [path] if path.is_absolute() else [root / path for root in self.roots]
        for candidate in candidates:
            real = _resolved(candidate)
            if real is not None and is_inside(real, self.roots):
                return real
        return None

    def allows(self, path: Path) -> bool:
        """Whether a file a run was read from (results, samples) lies under the roots."""
        if self.roots is None:
            return True
        real = _resolved(path)
        return real is not None and is_inside(real, self.roots)

    def refusal(self, typed: str) -> str:
        """The one message for a refused or missing folder (it does not say which)."""
        shown = typed.replace("`", "'")
        if self.roots is not None and not self.roots:
            return f"`{shown}`: this Studio opens no folders (it was started without readable --results folders)"
        return f"`{shown}`: no such results folder under the folders this Studio serves"


def resolve_media(ref: str, bases: Sequence[Path], roots: Sequence[Path]) -> Path | None:
    """The file an image reference of a run names, when it exists and lies under ``roots``.

    Relative references are tried against each of ``bases`` (the samples file's folder, the data
    copy and its images/ folder). URLs and ``data:`` URIs are no files: None."""
    ref = ref.strip()
    if not ref or ref.lower().startswith(URL_SCHEMES + ("data:",)):
        return None
    path = Path(ref)
    candidates = [path] if path.is_absolute() else [base / path for base in bases]
    for candidate in candidates:
        real = _resolved(candidate)
        if real is not None and real.is_file() and is_inside(real, roots):
            return real
    return None


def _decode_image(data: bytes) -> Any | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_MEDIA_PIXELS:
                return None
            img.load()
            return img.convert("RGB")
    except Exception:  # noqa: BLE001 - not an image, truncated, a bomb: a missing image all the same
        return None


def open_media_image(ref: str, bases: Sequence[Path], roots: Sequence[Path]) -> Any | None:
    """A run-named image as PIL RGB (a ``data:image/...;base64`` URI, or a file under ``roots``),
    or None: missing, refused, too large or not an image are one and the same to the caller."""
    ref = ref.strip()
    if ref.lower().startswith("data:image/"):
        head, _, payload = ref.partition(",")
        if ";base64" not in head or len(payload) > MAX_MEDIA_BYTES * 4 // 3 + 4:
            return None
        try:
            return _decode_image(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            return None
    path = resolve_media(ref, bases, roots)
    if path is None:
        return None
    try:
        if path.stat().st_size > MAX_MEDIA_BYTES:
            return None
        return _decode_image(path.read_bytes())
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# Ask: turns waiting for the one model


class Busy(Exception):
    """A turn refused at the door: the visitor has one waiting already, or the queue is full."""


class TurnQueue:
    """Turns wait for the model in arrival order (one runs at a time); a visitor has at most
    ``per_visitor`` turns waiting or running, and at most ``max_waiting`` wait in all."""

    def __init__(self, per_visitor: int = 1, max_waiting: int = 16) -> None:
        if per_visitor < 1 or max_waiting < 1:
            raise ValueError("per_visitor and max_waiting must be at least 1")
        self.per_visitor, self.max_waiting = per_visitor, max_waiting
        self._cond = threading.Condition()
        self._line: deque[tuple[object, str]] = deque()  # (ticket, visitor); the head holds the model

    def enter(self, visitor: str) -> object:
        """A ticket for ``visitor``'s turn, or Busy with the reason."""
        with self._cond:
            mine = sum(1 for _, v in self._line if v == visitor)
            if mine >= self.per_visitor:
                raise Busy(f"you have {mine} question(s) waiting or being answered (at most {self.per_visitor} "
                           "per visitor): wait for the answer")
            if len(self._line) >= self.max_waiting:
                raise Busy(f"Studio is busy ({len(self._line)} questions waiting, at most {self.max_waiting}): "
                           "try again in a moment")
            ticket = object()
            self._line.append((ticket, visitor))
            return ticket

    def ahead(self, ticket: object) -> int:
        """Turns before ``ticket`` (0: it holds the model)."""
        with self._cond:
            for n, (t, _) in enumerate(self._line):
                if t is ticket:
                    return n
        raise KeyError("ticket not in line")

    def wait(self, ticket: object, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for ``ticket`` to reach the head; the turns still ahead."""
        with self._cond:
            self._cond.wait_for(lambda: self._line and self._line[0][0] is ticket, timeout=timeout)
        return self.ahead(ticket)

    def leave(self, ticket: object) -> None:
        """Done (answered, failed or given up): the next turn may run."""
        with self._cond:
            for entry in list(self._line):
                if entry[0] is ticket:
                    self._line.remove(entry)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._line)
