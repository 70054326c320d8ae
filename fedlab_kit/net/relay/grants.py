"""Room grants: an organiser's signed permission for a relay to open one room.

A relay reachable from other machines must not let whoever knows a room name open it (and
fix its roster, shutting the real parties out). It opens rooms only from invitations it was
given (``fedlab relay --rooms``) or from a *grant*: the organiser's Ed25519 signature over
the room name, its roster and an expiry, carried in the invitation and shown by every
member when it joins. The relay trusts the organisers listed with ``--organisers`` (their
party cards); it checks the signature, the roster and the expiry, and it closes the room
once the grant has expired and no member is connected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...errors import InvitationError
from ..identity import PartyCard, _b64, _unb64

if TYPE_CHECKING:
    from ..identity import Identity

GRANT_TAG = b"fedlab-room-grant1|"
MAX_GRANT_DAYS = 366


def grant_message(room: str, roster: dict[str, bytes], expires: int) -> bytes:
    """The bytes an organiser signs to let a relay open ``room`` with this ``roster``."""
    members = ";".join(f"{k}={v.hex()}" for k, v in sorted(roster.items()))
    return GRANT_TAG + f"{room}|{members}|{int(expires)}".encode()


@dataclass(frozen=True)
class RoomGrant:
    """``organiser`` (Ed25519 public key) lets a relay open a room until ``expires``
    (Unix seconds); ``signature`` is over :func:`grant_message`."""

    organiser: bytes
    expires: int
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.organiser) != 32 or len(self.signature) != 64:
            raise InvitationError("a room grant holds a 32-byte key and a 64-byte signature")

    @classmethod
    def sign(cls, identity: Identity, room: str, roster: dict[str, bytes], *,
             days: float = 30.0, now: float | None = None) -> RoomGrant:
        """A grant by the organiser ``identity``, valid for ``days``."""
        if not 0 < days <= MAX_GRANT_DAYS:
            raise InvitationError(f"a room grant lasts 0-{MAX_GRANT_DAYS} days, got {days}")
        expires = int((time.time() if now is None else now) + days * 86400)
        return cls(identity.card.sign_key, expires,
                   identity.sign(grant_message(room, roster, expires)))

    def to_string(self) -> str:
        return f"{_b64(self.organiser)}.{self.expires}.{_b64(self.signature)}"

    @classmethod
    def from_string(cls, text: str) -> RoomGrant:
        parts = text.strip().split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise InvitationError(f"not a room grant: expected KEY.EXPIRES.SIGNATURE, got "
                                  f"{text[:30]!r}")
        return cls(_unb64(parts[0], "the grant's key"), int(parts[1]),
                   _unb64(parts[2], "the grant's signature"))

    def check(self, room: str, roster: dict[str, bytes], organisers: set[bytes], *,
              now: float | None = None) -> None:
        """Raise :class:`InvitationError` unless a trusted organiser granted exactly this
        room and roster, and the grant has not expired."""
        if self.organiser not in organisers:
            raise InvitationError(f"room {room!r} is granted by a key this relay does not "
                                  "trust (its operator lists organisers with --organisers)")
        try:
            Ed25519PublicKey.from_public_bytes(self.organiser).verify(
                self.signature, grant_message(room, roster, self.expires))
        except InvalidSignature:
            raise InvitationError(f"the grant of room {room!r} does not match the room's name "
                                  "and members (a changed invitation?)") from None
        if self.expires <= (time.time() if now is None else now):
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.expires))
            raise InvitationError(f"the grant of room {room!r} expired at {when}; ask the "
                                  "organiser for a new invitation")


def load_organisers(path: Path | str) -> set[bytes]:
    """The organisers' Ed25519 keys from a file of party cards (``fedlab keygen`` prints
    them), one per line; ``#`` starts a comment."""
    keys: set[bytes] = set()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InvitationError(f"cannot read the organisers file {str(path)!r}: "
                              f"{exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                keys.add(PartyCard.from_string(line).sign_key)
            except InvitationError as exc:
                raise InvitationError(f"{path}, line {number}: {exc}") from None
    if not keys:
        raise InvitationError(f"the organisers file {str(path)!r} lists no party card")
    return keys
