"""The private key: label maps, date offsets, file map with checksums; safe writing,
optional passphrase encryption, and the path rules that keep it out of the datasets."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bidsanon._version import __version__
from bidsanon.fileio import is_inside, write_bytes_atomic
from bidsanon.errors import InputError, UsageError

FORMAT = "bidsanon-key"
VERSION = 1
ENCRYPTED_FORMAT = "bidsanon-key-encrypted"
PASSPHRASE_ENV = "BIDSANON_KEY_PASSPHRASE"


@dataclass
class SubjectEntry:
    """One subject: its new label, its date offset and its session map."""

    label: str
    offset_days: int | None
    sessions: dict[str, str] = field(default_factory=dict)
    withdrawn: str | None = None  # ISO time of withdrawal, when withdrawn


@dataclass
class KeyData:
    """Everything needed to link the output back to the input (private)."""

    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    subjects: dict[str, SubjectEntry] = field(default_factory=dict)
    emptyroom: dict[str, dict[str, str]] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    source_root: str = ""
    policy_digest: str = ""
    created: str = ""

    @property
    def secret_bytes(self) -> bytes:
        return bytes.fromhex(self.secret)

    def to_json(self) -> str:
        data = {"format": FORMAT, "version": VERSION, "tool_version": __version__}
        data.update(asdict(self))
        return json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, path: str | Path = "") -> "KeyData":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not a bidsanon key (invalid JSON at line {exc.lineno})", path) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError("not a bidsanon key file", path)
        if data.get("version", 0) > VERSION:
            raise InputError(f"key format version {data['version']} is newer than this "
                             f"bidsanon understands ({VERSION}); upgrade bidsanon", path)
        subjects = {k: SubjectEntry(**v) for k, v in data.get("subjects", {}).items()}
        fields = {k: data[k] for k in ("secret", "emptyroom", "files", "originals", "runs",
                                       "source_root", "policy_digest", "created") if k in data}
        return cls(subjects=subjects, **fields)

    def inverse_subjects(self) -> dict[str, str]:
        """New label -> original label."""
        return {e.label: orig for orig, e in self.subjects.items()}


# --- encryption -------------------------------------------------------------------

def _kdf(passphrase: str, salt: bytes, n: int = 2**15, r: int = 8, p: int = 1) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def encrypt(plaintext: bytes, passphrase: str) -> bytes:
    """Encrypt with scrypt (memory-hard KDF) + AES-256-GCM; returns a JSON envelope."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    salt, nonce = os.urandom(16), os.urandom(12)
    params = {"n": 2**15, "r": 8, "p": 1}
    header = {"format": ENCRYPTED_FORMAT, "version": VERSION, "kdf": "scrypt",
              "kdf_params": params, "cipher": "AES-256-GCM",
              "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode()}
    aad = json.dumps(header, sort_keys=True).encode()
    ct = AESGCM(_kdf(passphrase, salt, **params)).encrypt(nonce, plaintext, aad)
    header["ciphertext"] = base64.b64encode(ct).decode()
    return (json.dumps(header, indent=1) + "\n").encode()


def decrypt(envelope: bytes, passphrase: str, path: str | Path = "") -> bytes:
    """Decrypt an envelope from :func:`encrypt`; InputError on a wrong passphrase."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    header = json.loads(envelope)
    ct = base64.b64decode(header.pop("ciphertext"))
    aad = json.dumps(header, sort_keys=True).encode()
    key = _kdf(passphrase, base64.b64decode(header["salt"]), **header["kdf_params"])
    try:
        return AESGCM(key).decrypt(base64.b64decode(header["nonce"]), ct, aad)
    except InvalidTag:
        raise InputError("wrong passphrase (or the key file was altered)", path) from None


def is_encrypted(path: str | Path) -> bool:
    try:
        head = Path(path).read_bytes()[:200]
    except OSError:
        return False
    return ENCRYPTED_FORMAT.encode() in head


def get_passphrase(confirm: bool = False) -> str:
    """The passphrase from $BIDSANON_KEY_PASSPHRASE or a terminal prompt (never argv)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    import getpass
    import sys
    if not sys.stdin.isatty():
        raise UsageError(f"the key is encrypted: set {PASSPHRASE_ENV} or run in a terminal "
                         "to be asked for the passphrase")
    value = getpass.getpass("Key passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != value:
        raise UsageError("the passphrases do not match")
    if not value:
        raise UsageError("an empty passphrase is not allowed")
    return value


# --- reading and writing -----------------------------------------------------------

def read_key(path: str | Path, passphrase: str | None = None) -> KeyData:
    """Load a key (asking for the passphrase when it is encrypted).

    Parameters
    ----------
    path : path
        The key file (JSON, or the encrypted envelope).
    passphrase : str | None
        The passphrase of an encrypted key (default: ``$BIDSANON_KEY_PASSPHRASE`` or a
        prompt).

    Returns
    -------
    KeyData
        The subjects' labels and offsets, the file map, the originals and the runs.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read key ({exc.strerror})", path) from None
    if ENCRYPTED_FORMAT.encode() in raw[:200]:
        raw = decrypt(raw, passphrase if passphrase is not None else get_passphrase(), path)
    return KeyData.from_json(raw.decode("utf-8"), path)


def write_private(path: str | Path, data: bytes) -> None:
    """Create or replace ``path`` with mode 0600 from the first byte, atomically.

    The temporary file is created 0600 with O_EXCL in the same folder, so no moment
    exists at which another user can read the content; then renamed over. Writing
    through a symbolic link is refused (it could point into a dataset).
    """
    path = Path(path)
    if path.is_symlink():
        raise UsageError(f"refusing to write through a symbolic link: {path}")
    write_bytes_atomic(path, data, private=True)


def write_key(path: str | Path, key: KeyData, passphrase: str | None = None) -> None:
    """Write the key privately (encrypted when a passphrase is given)."""
    data = key.to_json().encode("utf-8")
    if passphrase is not None:
        data = encrypt(data, passphrase)
    write_private(path, data)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


# --- where the key may go ----------------------------------------------------------

def real(path: str | Path) -> Path:
    """Absolute path with every symlink resolved (also for paths that do not exist yet)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def check_paths(bids_dir: str | Path, output_dir: str | Path, key_path: str | Path,
                extra_private: list[str | Path] = ()) -> None:
    """Refuse output inside input (or the reverse) and private files inside either."""
    src, out = real(bids_dir), real(output_dir)
    if not src.is_dir():
        raise UsageError(f"input dataset not found: {bids_dir}")
    if src == out:
        raise UsageError("the output folder is the input folder; choose a new folder")
    if is_inside(out, src):
        raise UsageError(f"the output folder {output_dir} is inside the input dataset; "
                         "choose a folder outside it")
    if is_inside(src, out):
        raise UsageError(f"the input dataset is inside the output folder {output_dir}")
    for private in [key_path, *extra_private]:
        p = real(private)
        for where, root in (("input dataset", src), ("output dataset", out)):
            if is_inside(p, root):
                raise UsageError(f"{private} is inside the {where}; the key and report are "
                                 "private: put them outside both datasets")
