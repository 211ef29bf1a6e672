"""Bounded decoding of a backend's ``Content-Encoding``.

The proxy asks every backend for ``identity``; a server that compresses anyway
with ``gzip`` or ``deflate`` is decoded here, piece by piece, with the standard
library's ``zlib``: each step produces at most :data:`PIECE` bytes, so a small
compressed body that expands to gigabytes (a "gzip bomb") is stopped by the
reader's byte cap after at most one piece more than the cap, never decoded in
full first.  Any other encoding (``br``, ``zstd``, a list of encodings) is not
decoded: the caller answers 502.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterator, Optional

#: Largest piece of decoded output produced per step.
PIECE = 64 * 1024


class UnsupportedEncoding(ValueError):
    """A ``Content-Encoding`` this proxy does not decode."""


class BodyDecoder:
    """Decodes one response body's ``Content-Encoding``; :meth:`feed` yields decoded pieces."""

    def __init__(self, content_encoding: Optional[str]):
        encoding = (content_encoding or "").strip().lower()
        if encoding in ("", "identity"):
            self._zlib: Any = None  # a zlib decompress object, or None for identity
            self._raw_fallback = False
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._raw_fallback = False
        elif encoding == "deflate":
            # RFC 9110 deflate is zlib-wrapped; some servers send raw deflate: tried if the first bytes fail.
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
            self._raw_fallback = True
        else:
            raise UnsupportedEncoding(f"content-encoding {encoding!r} is not supported (only gzip and deflate)")
        self.encoding = encoding or "identity"

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most :data:`PIECE` bytes.

        Raises :class:`zlib.error` for a corrupt body.
        """
        d = self._zlib
        if d is None:
            if data:
                yield data
            return
        pending = data
        while True:
            try:
                out = d.decompress(pending, PIECE)
            except zlib.error:
                if not self._raw_fallback:
                    raise
                self._raw_fallback = False
                d = self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                out = d.decompress(pending, PIECE)
            self._raw_fallback = False
            if out:
                yield out
            pending = d.unconsumed_tail
            # A full piece may leave output inside zlib even with no input left: ask again.
            if not pending and len(out) < PIECE:
                return
