"""Tap proofs on the host: is an arrive/depart really the enrolled badge or phone at the door?

    keys = TapKeys.from_pki(Path("pki"))          # optional: the organisation's NTAG 424 keys
    proofs = check_taps(registry, [(device_id, event, time), ...], keys)
    proofs[("tag-0042", 17)].status               # verified | weak | unchecked | refused

DESIGN "Taps and credentials": a plain badge is only its UID (accepted, but weak); an NTAG 424
DNA badge proves a fresh read with its SUN (x.sun = PICC data ‖ SDMMAC, kvitto.evidence.ntag424), whose
read counter must go up from one accepted tap of that badge to the next, wherever it was read;
a provider phone proves itself with an Ed25519 answer over the device's challenge
(x.nonce ‖ device id, x.sig; kvitto.evidence.phone, docs/nfc.md). A proof that fails is no evidence: the
tap is `refused` with a reason naming the event. Where the registry has no key material for
the credential the tap is `unchecked` (reported as not checked, never passed silently).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kvitto.evidence.events import Event
from kvitto.evidence.ntag424 import SunError, SunResult, verify_sun, verify_sun_event
from kvitto.evidence.phone import PhoneError, challenge_message, phone_key_id
from kvitto.verify.case import Credential, Registry
from kvitto.verify.reasons import Reason, because

# How far two doors' clocks may disagree when ordering one badge's reads (synchronised
# devices are within seconds; rule I5 reports larger differences on its own).
COUNTER_CLOCK_SLACK = timedelta(minutes=2)

VERIFIED, WEAK, UNCHECKED, REFUSED = "verified", "weak", "unchecked", "refused"
_STRENGTH = {REFUSED: 0, UNCHECKED: 1, WEAK: 2, VERIFIED: 3, "": 4}
TAP_TYPES = frozenset({"arrive", "depart", "unlock", "lock"})


@dataclass(frozen=True)
class Proof:
    status: str  # verified | weak | unchecked | refused ("" for no credential)
    reason: Reason | None = None  # for unchecked and refused: why, naming the event


_WEAK_PROOF = Proof(WEAK)  # one object for the many plain badge taps


def weakest(*proofs: Proof | None) -> Proof:
    """The proof of a visit is the weaker of its two ends (a refused end refuses the visit)."""
    found = [p for p in proofs if p is not None]
    return min(found, key=lambda p: _STRENGTH[p.status]) if found else Proof("")


@dataclass(frozen=True)
class TapKeys:
    """The organisation's NTAG 424 keys (`kvitto pki` folder): the shared SDM meta read key,
    the file read master (diversified per badge, AN10922) and the credential salt that binds a
    SUN's UID to the event's credential id. Per-badge keys in registry.toml take precedence."""

    meta_key: bytes
    file_master: bytes
    salt: bytes

    @classmethod
    def from_pki(cls, pki_dir: Path | str) -> TapKeys:
        from kvitto.store.keys import NTAG424_FILE_MASTER, NTAG424_META, load_org, read_ntag424_key

        folder = Path(pki_dir)
        return cls(
            read_ntag424_key(folder / NTAG424_META),
            read_ntag424_key(folder / NTAG424_FILE_MASTER),
            load_org(folder).credential_salt,
        )


def _where(device: str, event: Event) -> str:
    return f"{device} #{event.seq}"


class _Checker:
    def __init__(self, registry: Registry, device_roles: dict[str, str], keys: TapKeys | None):
        self.registry = registry
        self.device_roles = device_roles
        self.keys = keys
        self.phone_keys: dict[str, Ed25519PublicKey] = {}
        # credential -> the accepted reads: (counter, device time, where)
        self.counters: dict[str, list[tuple[int, datetime, str]]] = {}

    def check(self, device: str, event: Event, when: datetime) -> Proof | None:
        if event.type not in TAP_TYPES or not event.cred:
            return None
        credential = self.registry.credentials.get(event.cred.hex())
        if credential is None:
            return None  # unknown credential: E7 refuses it as unregistered
        if credential.kind == "ntag424":
            return self._ntag424(device, event, credential, when)
        if credential.kind == "phone":
            return self._phone(device, event, credential)
        return _WEAK_PROOF  # a badge UID can be cloned (DESIGN "Taps and credentials")

    def _no_proof(self, device: str, event: Event, credential: Credential, what: str) -> Proof:
        where = _where(device, event)
        # A lock journals each tap's proof as a tag does (firmware device/roles/lock.py), so a
        # missing one is refused at either door.
        return Proof(
            REFUSED,
            because(f"tap.without_{what}", where=where, via=str(event.x.get("via"))),
        )

    def _ntag424(self, device: str, event: Event, credential: Credential, when: datetime) -> Proof:
        where = _where(device, event)
        sun = event.x.get("sun")
        if not isinstance(sun, bytes):
            return self._no_proof(device, event, credential, "sun")
        try:
            result = self._verify_sun(sun, event.cred or b"", credential)
        except _NoKeys:
            return Proof(UNCHECKED, because("tap.no_keys", where=where, credential=credential.id))
        except SunError as error:
            return Proof(REFUSED, because("tap.sun_invalid", where=where, error=str(error)))
        reads = self.counters.setdefault(credential.id, [])
        # The same counter twice is a replayed read. A lower counter than a read made clearly
        # earlier is an old read played back; within the clocks' slack two doors may disagree
        # on which tap came first, so their order is not held against them.
        conflicts = [
            (counter, there)
            for counter, then, there in reads
            if counter == result.counter
            or (counter > result.counter and then < when - COUNTER_CLOCK_SLACK)
        ]
        if conflicts:
            counter, there = max(conflicts)
            return Proof(
                REFUSED,
                because(
                    "tap.sun_replayed",
                    where=where,
                    counter=result.counter,
                    seen=counter,
                    there=there,
                ),
            )
        reads.append((result.counter, when, f"{device} #{event.seq}"))
        return Proof(VERIFIED)

    def _verify_sun(self, sun: bytes, cred: bytes, credential: Credential) -> SunResult:
        if credential.sdm_meta_key and credential.sdm_file_key:
            # the badge's own file key: a SUN of any other badge does not verify under it
            return verify_sun(sun, credential.sdm_meta_key, file_key=credential.sdm_file_key)
        if self.keys is None:
            raise _NoKeys
        return verify_sun_event(
            {"sun": sun}, cred, self.keys.meta_key, self.keys.file_master, salt=self.keys.salt
        )

    def _phone(self, device: str, event: Event, credential: Credential) -> Proof:
        where = _where(device, event)
        if len(credential.public_key) != 32:
            # RULES.md E7/I6: a registered phone without an enrolled key is weak evidence, like
            # a badge UID; its answer (if any) cannot be checked, so it is not asked for.
            return Proof(
                UNCHECKED, because("tap.phone_no_key", where=where, credential=credential.id)
            )
        nonce, signature = event.x.get("nonce"), event.x.get("sig")
        if not isinstance(nonce, bytes) or not isinstance(signature, bytes):
            return self._no_proof(device, event, credential, "phone_answer")
        public = self.phone_keys.get(credential.id)
        if public is None:
            public = Ed25519PublicKey.from_public_bytes(credential.public_key)
            self.phone_keys[credential.id] = public
        try:
            # the exact bytes the device sent (firmware/device/roles/reader.py Reader._phone)
            message = challenge_message(nonce, device)
            public.verify(signature, message)
        except PhoneError as error:
            return Proof(REFUSED, because("tap.phone_invalid", where=where, error=str(error)))
        except Exception:  # InvalidSignature, or a signature of the wrong length
            key_id = phone_key_id(credential.public_key).hex()
            return Proof(REFUSED, because("tap.phone_wrong_key", where=where, key=key_id))
        return Proof(VERIFIED)


class _NoKeys(Exception):
    pass


def check_taps(
    registry: Registry,
    taps: Iterable[tuple[str, Event, datetime]],
    keys: TapKeys | None = None,
) -> dict[tuple[str, int], Proof]:
    """Proofs of the credential taps among (device, event, device time), keyed (device, seq).

    NTAG 424 read counters are compared in time order over all devices: a badge is one object,
    so its counter goes up from door to door. A counter seen before is refused; so is one
    below a read more than COUNTER_CLOCK_SLACK earlier (two doors' clocks may differ by less)."""
    roles = {device.id: device.role for device in registry.devices.values()}
    checker = _Checker(registry, roles, keys)
    proofs: dict[tuple[str, int], Proof] = {}
    ordered = sorted(taps, key=lambda tap: (tap[2], tap[0], tap[1].seq))
    for device, event, when in ordered:
        proof = checker.check(device, event, when)
        if proof is not None:
            proofs[(device, event.seq)] = proof
    return proofs
