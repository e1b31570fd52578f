"""A command's output on its way out: secret values masked (also when a read splits one),
everything appended to the attempt's log file, the last bytes kept as its tail and decoded
as text cut at a character. Fed by `stratoflow.runner.process`, chunk by chunk."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable

_CUT_CONTEXT_BYTES = 3
"""Bytes kept before the tail so `decode_tail` can see where a character cut in two begins."""
MASK = b"***"
MIN_MASKED_LENGTH = 4
"""Shorter values are not masked: masking "1" or "yes" would garble the output and tell
anyone who reads it what the secret is."""


def decode_tail(data: bytes, limit: int) -> str:
    """The end of `data` as text of at most `limit` bytes in UTF-8, cut at a character.

    When `data` is longer than `limit` the cut falls `limit` bytes from the end and moves
    forward past continuation bytes, so a character split by the cut is dropped rather than
    shown as U+FFFD (give a few bytes more than `limit` so the cut point can be seen).
    Invalid bytes become U+FFFD, three bytes once encoded, so the text is cut again if that
    made it longer than `limit`.
    """
    if limit <= 0:
        return ""
    if len(data) > limit:
        text = _decode_from_boundary(data, len(data) - limit)
    else:
        text = data.decode("utf-8", errors="replace")
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    # `encoded` is valid UTF-8, so the boundary found here is exact.
    return _decode_from_boundary(encoded, len(encoded) - limit)


def _decode_from_boundary(data: bytes, start: int) -> str:
    # A UTF-8 character has at most 3 continuation bytes (0b10xxxxxx) after its first byte.
    for _ in range(3):
        if start < len(data) and data[start] & 0xC0 == 0x80:
            start += 1
    return data[start:].decode("utf-8", errors="replace")


def masked_values(values: Iterable[str]) -> list[bytes]:
    """What `mask` hides, as bytes, longest first: each value of MIN_MASKED_LENGTH or more
    and, for a multi-line value (a key file), each such line of it too."""
    found: set[str] = set()
    for value in values:
        lines = [line.strip() for line in value.splitlines()] if "\n" in value else []
        found.update(text for text in (value, *lines) if len(text) >= MIN_MASKED_LENGTH)
    return sorted((text.encode("utf-8") for text in found), key=len, reverse=True)


class Masker:
    """Replaces secret values in a stream of chunks, including values cut by a chunk
    boundary: the last (longest value − 1) bytes are held back until the next chunk tells
    whether they begin a value."""

    def __init__(self, values: Iterable[str]) -> None:
        patterns = masked_values(values)
        # Longest first: where two values start at one place, the longer is hidden whole.
        self._pattern = re.compile(b"|".join(re.escape(p) for p in patterns)) if patterns else None
        self._hold = max((len(p) for p in patterns), default=1) - 1
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The masked output that is final once `chunk` is added."""
        if self._pattern is None:
            return chunk
        data = self._pending + chunk
        # A value starting before `safe` lies wholly in `data`, so its match is final; one
        # starting later may still be growing.
        safe = len(data) - self._hold
        out = bytearray()
        pos = 0
        for match in self._pattern.finditer(data):
            if match.start() >= safe:
                break
            out += data[pos : match.start()]
            out += MASK
            pos = match.end()
        end = max(pos, safe, 0)
        out += data[pos:end]
        self._pending = data[end:]
        return bytes(out)

    def finish(self) -> bytes:
        """What is held back, masked: the stream has ended."""
        data, self._pending = self._pending, b""
        return self._pattern.sub(MASK, data) if self._pattern is not None and data else data


class Output:
    """Counts every byte, masks secrets, keeps only the last few KiB, appends all to the
    log file."""

    def __init__(
        self, tail_bytes: int, log_file: io.BufferedWriter | None, masker: Masker | None = None
    ) -> None:
        self.total_bytes = 0
        self._limit = tail_bytes
        # 3 bytes more than the tail, so decode_tail can tell where a cut character begins.
        self._keep = tail_bytes + _CUT_CONTEXT_BYTES if tail_bytes else 0
        self._tail = bytearray()
        self._log = log_file
        self._masker = masker

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        self._keep_output(self._masker.feed(chunk) if self._masker is not None else chunk)

    def finish(self) -> None:
        """The output has ended: write what the masker held back."""
        if self._masker is not None:
            rest = self._masker.finish()
            if rest:
                self._keep_output(rest)

    def _keep_output(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._log is not None:
            self._log.write(chunk)
            # Flushed per chunk so a log being followed (`tail -f`, the local CLI) is live.
            self._log.flush()
        if len(chunk) >= self._keep:
            self._tail[:] = chunk[len(chunk) - self._keep :]
            return
        self._tail += chunk
        excess = len(self._tail) - self._keep
        if excess > 0:
            del self._tail[:excess]

    def tail_text(self) -> str:
        return decode_tail(bytes(self._tail), self._limit)
