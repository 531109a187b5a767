"""A call's answer handed on as the model produces it, and never anything that is not the answer.

`TextStream` sits between a provider's token stream and whoever reads it (`baton serve`'s
SSE response). Three rules hold whatever the provider sends:

- **secrets:** every pool secret is scrubbed before text leaves, although a key may arrive
  split across chunks: the last `len(longest secret) - 1` characters are held back until
  more text shows they are not the start of a key;
- **the streamed text is the answer:** when the call ends, the final (scrubbed) answer must
  extend what was already sent; the rest of it is sent then. A reply that does not arrive
  token by token (a cache hit, a provider that cannot stream) is sent whole at that point;
- **a failed reply is never an answer:** once text has been sent, the call is not retried
  (the reader already has part of one reply); `started` tells the caller so.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.run.secrets import Secrets

TextSink = Callable[[str], None]


class StreamMismatch(Exception):
    """The final answer does not extend the text already sent (a provider whose stream and reply disagree)."""


class TextStream:
    """Text for one reader; `feed` takes a provider's chunks, `finish` the call's final answer."""

    def __init__(self, write: TextSink, secrets: Secrets | None = None) -> None:
        self._write = write
        self._secrets = secrets if secrets is not None else Secrets(())
        self._pending = ""  # received, not yet sent: may hold the start of a secret
        self.sent = ""  # everything given to the reader so far
        self.finished = False

    @property
    def started(self) -> bool:
        return bool(self.sent)

    def _hold(self) -> int:
        return max((len(v) for v in self._secrets.values), default=1) - 1

    def feed(self, chunk: str) -> None:
        """A piece of the reply as the provider produced it."""
        if self.finished or not chunk:
            return
        self._pending = self._secrets.scrub(self._pending + chunk, open_end=True)
        keep = self._hold()
        ready = self._pending[: max(0, len(self._pending) - keep)]
        if ready:
            self._pending = self._pending[len(ready):]
            self._send(ready)

    def restart(self) -> None:
        """Forget text held back from an attempt that failed before any of it was sent."""
        self._pending = ""

    def finish(self, answer: str) -> None:
        """The call's final answer (already scrubbed): send what the reader does not have yet."""
        if self.finished:
            return
        self._pending = ""
        if not answer.startswith(self.sent):
            raise StreamMismatch(f"the streamed text ({len(self.sent)} characters) is not the start of the final answer")
        self.finished = True
        if len(answer) > len(self.sent):
            self._send(answer[len(self.sent):])

    def _send(self, text: str) -> None:
        self.sent += text
        self._write(text)
