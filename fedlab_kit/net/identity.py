"""Party identities, public party cards and room invitations.

A party's identity is two key pairs: Ed25519 (proves to the relay who joins) and X25519
(agrees end-to-end keys with each peer). Its *card* is the public half, a short string the
analyst sends to peers. An *invitation* names the relay, the room and every member's card:
whoever holds it knows whom to talk to, and the keys it carries are pinned for the session.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import InvitationError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
CARD_PREFIX = "fedlab-card1"
INVITE_PREFIX = "fedlab-invite1"  # HOST|PORT (plain TCP); still read
INVITE_PREFIX2 = "fedlab-invite2"  # the relay as a URL, and the pin of its certificate
PIN_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")  # a relay certificate's pin
_RAW = serialization.Encoding.Raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise InvitationError(f"{what} is not valid base64") from exc


def check_name(name: str, what: str = "party name") -> str:
    """Return ``name`` if it is a valid party or room name, else raise with the rule."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvitationError(
            f"invalid {what} {name!r}: use 1-63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class PartyCard:
    """The public identity of a party: its name and two public keys."""

    name: str
    sign_key: bytes  # Ed25519 public key, 32 bytes
    box_key: bytes  # X25519 public key, 32 bytes

    def __post_init__(self) -> None:
        check_name(self.name)
        if len(self.sign_key) != 32 or len(self.box_key) != 32:
            raise InvitationError(f"card of {self.name!r}: keys must be 32 bytes each")

    def to_string(self) -> str:
        return f"{CARD_PREFIX}:{self.name}:{_b64(self.sign_key)}:{_b64(self.box_key)}"

    @classmethod
    def from_string(cls, text: str) -> PartyCard:
        parts = text.strip().split(":")
        if len(parts) != 4 or parts[0] != CARD_PREFIX:
            raise InvitationError(
                f"not a party card: expected '{CARD_PREFIX}:NAME:KEY:KEY', got {text[:40]!r}"
            )
        return cls(parts[1], _unb64(parts[2], "card sign key"), _unb64(parts[3], "card box key"))

    def verify_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.sign_key)

    def x25519_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.box_key)


class Identity:
    """A party's private keys. Keep the key file private; share only :meth:`card`."""

    def __init__(self, name: str, sign: Ed25519PrivateKey, box: X25519PrivateKey) -> None:
        self.name = check_name(name)
        self._sign = sign
        self._box = box

    @classmethod
    def generate(cls, name: str) -> Identity:
        return cls(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def card(self) -> PartyCard:
        return PartyCard(
            self.name,
            self._sign.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
            self._box.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
        )

    def sign(self, data: bytes) -> bytes:
        return self._sign.sign(data)

    def agree(self, peer: PartyCard) -> bytes:
        """X25519 shared secret with ``peer`` (static-static)."""
        return self._box.exchange(peer.x25519_key())

    def _private_bytes(self) -> tuple[bytes, bytes]:
        fmt = (_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return self._sign.private_bytes(*fmt), self._box.private_bytes(*fmt)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the key file with owner-only permissions."""
        sign, box = self._private_bytes()
        doc = {"format": "fedlab-identity1", "name": self.name}
        doc |= {"sign": _b64(sign), "box": _b64(box)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when overwriting a file that had wider permissions
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        try:
            doc = json.loads(Path(path).read_text())
            if not isinstance(doc, dict) or doc.get("format") != "fedlab-identity1":
                raise InvitationError(f"{path}: not a fedlab identity file")
            sign = Ed25519PrivateKey.from_private_bytes(_unb64(doc["sign"], "sign key"))
            box = X25519PrivateKey.from_private_bytes(_unb64(doc["box"], "box key"))
            return cls(doc["name"], sign, box)
        except FileNotFoundError as exc:
            raise InvitationError(f"identity file {path} does not exist") from exc
        except InvitationError as exc:
            if str(path) in str(exc):
                raise
            raise InvitationError(f"identity file {path} is malformed: {exc}") from exc
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InvitationError(f"identity file {path} is malformed: {exc}") from exc


@dataclass(frozen=True)
class Invitation:
    """Where to meet (relay address, room) and who the members are (pinned cards).

    ``tls``: the relay speaks TLS; ``pin``: the SHA-256 of its certificate
    (``sha256:<hex>``), checked before anything is sent (no public CA needed);
    ``websocket``: over a WebSocket at ``path`` (through HTTP proxies and reverse proxies);
    ``grant``: the organiser's signed permission for the relay to open the room
    (:class:`~fedlab_kit.net.relay.grants.RoomGrant`, as text), for relays that take rooms
    from organisers (``fedlab relay --organisers``).
    The relay is named as a URL in the invitation text: ``tcp://host:port``,
    ``tls://host:port``, ``ws://host:port/path`` or ``wss://host:port/path``."""

    host: str
    port: int
    room: str
    members: tuple[PartyCard, ...]
    tls: bool = False
    pin: str = ""
    websocket: bool = False
    path: str = ""
    grant: str = ""

    def __post_init__(self) -> None:
        check_name(self.room, "room name")
        if self.grant:
            from .relay.grants import RoomGrant

            RoomGrant.from_string(self.grant)  # well formed (the relay checks the signature)
        if self.pin:
            if not self.tls:
                raise InvitationError("a relay pin needs a TLS relay (tls:// or wss://)")
            if not PIN_PATTERN.match(self.pin):
                raise InvitationError(f"a relay pin is 'sha256:' and 64 hex digits, got "
                                      f"{self.pin[:20]!r}")
        names = [c.name for c in self.members]
        if len(set(names)) != len(names):
            raise InvitationError(f"invitation lists a party name twice: {sorted(names)}")
        if not 2 <= len(names) <= 16:
            raise InvitationError(f"a room needs 2 to 16 members, got {len(names)}")

    def card(self, name: str) -> PartyCard:
        for c in self.members:
            if c.name == name:
                return c
        raise InvitationError(
            f"party {name!r} is not a member of room {self.room!r}; members: {self.names}"
        )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.members]

    def roster(self) -> dict[str, bytes]:
        """Member name -> Ed25519 public key, what the relay needs to authenticate joins."""
        return {c.name: c.sign_key for c in self.members}

    def granted_by(self, organiser: Identity, *, days: float = 30.0) -> Invitation:
        """This invitation with ``organiser``'s grant for the relay to open the room for
        ``days`` (relays run with ``--organisers`` open rooms only from grants)."""
        from .relay.grants import RoomGrant

        grant = RoomGrant.sign(organiser, self.room, self.roster(), days=days)
        return dataclasses.replace(self, grant=grant.to_string())

    @property
    def url(self) -> str:
        """The relay as a URL: ``tcp://``, ``tls://``, ``ws://`` or ``wss://``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = {(False, False): "tcp", (True, False): "tls", (False, True): "ws",
                  (True, True): "wss"}[(self.tls, self.websocket)]
        return f"{scheme}://{host}:{self.port}{self.path if self.websocket else ''}"

    def to_string(self) -> str:
        cards = ",".join(c.to_string() for c in self.members)
        if not (self.tls or self.websocket or self.grant):  # plain TCP: the first format,
            return f"{INVITE_PREFIX}|{self.host}|{self.port}|{self.room}|{cards}"  # still read
        grant = f"|{self.grant}" if self.grant else ""
        return f"{INVITE_PREFIX2}|{self.url}|{self.pin}|{self.room}|{cards}{grant}"

    @classmethod
    def from_string(cls, text: str) -> Invitation:
        parts = text.strip().split("|")
        if len(parts) in (5, 6) and parts[0] == INVITE_PREFIX2:  # URL, pin (and grant)
            where = parse_relay_url(parts[1])
            cards = tuple(PartyCard.from_string(c) for c in parts[4].split(",") if c)
            return cls(where.host, where.port, parts[3], cards, tls=where.tls, pin=parts[2],
                       websocket=where.websocket, path=where.path,
                       grant=parts[5] if len(parts) == 6 else "")
        if len(parts) != 5 or parts[0] != INVITE_PREFIX:
            raise InvitationError(
                f"not an invitation: expected '{INVITE_PREFIX2}|tcp://HOST:PORT|PIN|ROOM|"
                f"CARDS', got {text[:40]!r}"
            )
        try:  # the first format: plain TCP, HOST|PORT
            port = int(parts[2])
        except ValueError as exc:
            raise InvitationError(f"invitation port {parts[2]!r} is not a number") from exc
        cards = tuple(PartyCard.from_string(c) for c in parts[4].split(",") if c)
        return cls(parts[1], port, parts[3], cards)

    @classmethod
    def parse(cls, text: str) -> Invitation:
        """An invitation given as its text, or as ``@path`` of a file holding it."""
        text = text.strip()
        if text.startswith("@"):
            path = Path(text[1:].strip()).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise InvitationError(f"cannot read the invitation file {str(path)!r}: "
                                      f"{exc.strerror or exc}") from None
        return cls.from_string(text)

    @classmethod
    def create(
        cls, host: str, port: int, room: str | None, cards: list[PartyCard], *,
        tls: bool = False, pin: str = "", websocket: bool = False, path: str = "",
    ) -> Invitation:
        return cls(host, port, room or f"room-{secrets.token_hex(4)}", tuple(cards),
                   tls=tls or bool(pin), pin=pin, websocket=websocket,
                   path=(path or "/") if websocket else "")

    @classmethod
    def to_relay(cls, url: str, room: str | None, cards: list[PartyCard], *,
                 pin: str = "") -> Invitation:
        """An invitation to the relay at ``url`` (any of the four schemes, or HOST:PORT)."""
        where = parse_relay_address(url)
        return cls.create(where.host, where.port, room, cards, tls=where.tls, pin=pin,
                          websocket=where.websocket, path=where.path)


@dataclass(frozen=True)
class RelayAddress:
    """Where the relay is, parsed from its URL."""

    tls: bool
    host: str
    port: int
    websocket: bool = False
    path: str = ""


RELAY_SCHEMES = ("tcp", "tls", "ws", "wss")


def parse_relay_address(text: str) -> RelayAddress:
    """``tcp://host:port``, ``tls://host:port``, ``ws[s]://host[:port]/path`` or
    ``host:port`` (TCP)."""
    try:
        return parse_relay_url(text if "://" in text else f"tcp://{text}")
    except InvitationError:
        raise InvitationError(f"the relay must be tcp://HOST:PORT, tls://HOST:PORT, "
                              f"wss://HOST[:PORT]/PATH or HOST:PORT, got {text[:40]!r}") from None


def parse_relay_url(url: str) -> RelayAddress:
    """The relay's URL in an invitation (see :class:`Invitation`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in RELAY_SCHEMES:
        raise InvitationError(f"the relay must be tcp://HOST:PORT or tls://HOST:PORT (or "
                              f"ws://, wss://), got {url[:40]!r}")
    websocket = scheme in ("ws", "wss")
    netloc, slash, path = rest.partition("/")
    if slash and not websocket:
        raise InvitationError(f"a {scheme}:// relay URL has no path, got {url[:40]!r}")
    if netloc.startswith("["):
        host, _, port = netloc[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    if websocket and not port:
        port = "443" if scheme == "wss" else "80"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvitationError(f"the relay URL {url[:40]!r} needs a host and a port")
    return RelayAddress(scheme in ("tls", "wss"), host, int(port), websocket,
                        "/" + path if websocket else "")
