"""What comes in: jupyter_client's Session with a replay history of verified messages only, and a
rate-limited record of what is dropped.

jupyter_client's ``Session.deserialize`` records a message's digest in its
replay history *before* it checks the signature, and culls a random 10% of
that history once it passes 65,536 entries: a peer without the key can send
garbage until genuine digests are culled, then replay captured requests.
:class:`VerifyingSession` checks the signature first, so only digests of
authentic messages ever enter the history (and a replay of one is refused as
before). Everything else is jupyter_client's, which checks the signature
again: about 10 us per message (of an execute round trip's 3 ms), the price
of not copying its parsing.

:class:`DropLog` logs dropped input at most ``burst`` times per ``period``,
then once per period with the count of what it did not log: a flood of
garbage must not become a flood of log lines (about 170 bytes each).
"""

import hmac
import json
import time

from jupyter_client.session import Session

__all__ = ["VerifyingSession", "DropLog"]


class VerifyingSession(Session):
    """A Session whose replay history holds only messages whose signature verified."""

    def deserialize(self, msg_list, content=True, copy=True):
        if self.auth is not None and content:
            parts = [bytes(part) if copy else bytes(part.bytes) for part in msg_list[:5]]
            if len(parts) < 5:
                raise ValueError(f"malformed message: {len(parts)} frames, 5 at least expected")
            if not parts[0]:
                raise ValueError("Unsigned Message")
            if not hmac.compare_digest(parts[0], self.sign(parts[1:5])):
                raise ValueError("Invalid Signature")
        return super().deserialize(msg_list, content=content, copy=copy)

    def parse_request(self, frames):
        """(routing identities, message, what could not be parsed or None) of a ROUTER socket's *frames*.

        An authentic request whose content does not parse comes with an empty
        content and the reason: it deserves an error reply. Raises ValueError,
        with the reason, for what must not be answered: no ``<IDS|MSG>``
        delimiter, an unauthenticated or replayed message, a header that does
        not parse, a msg_type that is not a string.
        """
        try:
            idents, msg_list = self.feed_identities(frames)
        except ValueError:
            raise ValueError("no <IDS|MSG> delimiter") from None
        unparseable = None
        try:
            msg = self.deserialize(msg_list)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # Authentic (parsing comes after the signature check) but unparseable.
            try:
                header = self.unpack(msg_list[1])
                header["msg_type"]
            except Exception:
                raise ValueError(f"a message whose header cannot be parsed: {exc}") from None
            msg = {"header": header, "msg_id": header.get("msg_id"), "msg_type": header["msg_type"],
                   "parent_header": {}, "metadata": {}, "content": {}, "buffers": []}
            unparseable = f"content is not valid JSON: {exc}"
        msg_type = msg["header"]["msg_type"]
        if not isinstance(msg_type, str):
            raise ValueError(f"msg_type is a {type(msg_type).__name__}, not a string")
        return idents, msg, unparseable


class DropLog:
    """Warn about dropped input, at most *burst* lines per *period* seconds (hub thread)."""

    def __init__(self, log, burst=10, period=60.0):
        self.log = log
        self.burst = burst
        self.period = period
        self._window_start = 0.0
        self._logged = 0
        self._unlogged = 0

    def warning(self, fmt, *args):
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self._unlogged:
                self.log.warning("... and %d more dropped messages in the last %g s", self._unlogged, self.period)
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            self.log.warning(fmt, *args)
        else:
            self._unlogged += 1
