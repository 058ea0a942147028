"""Bundle signatures (optional): an ed25519 signature over manifest.json, checked against a public key.

The manifest's content hash (regimetry/bundle.py) catches a bundle edited by accident or in part; it cannot
stop someone who rewrites the manifest and its hash together, for instance in a shared bundle store. With a
public key configured (worker setting REGIMETRY_BUNDLE_PUBLIC_KEY), a bundle is served only if manifest.sig
holds a valid signature of its manifest.json by the matching private key; since the manifest lists the sha256
of every other file and its own content hash, the signature covers the whole bundle. The private key stays
with whoever publishes bundles (`regimetry sign`); the worker holds the public key only.
"""

from __future__ import annotations

import base64
from pathlib import Path

SIGNATURE = "manifest.sig"
MANIFEST = "manifest.json"


def generate_keypair(folder: str | Path, name: str = "bundle-signing") -> tuple[Path, Path]:
    """A new ed25519 key pair as PEM files: (private key, mode 0600; public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.key.pem", folder / f"{name}.pub.pem"
    if private.exists():
        raise FileExistsError(f"{private} exists: not overwriting a signing key")
    private.touch(mode=0o600)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def sign_bundle(bundle_dir: str | Path, private_key: str | Path) -> Path:
    """Write manifest.sig (base64 ed25519 signature of manifest.json's bytes) into the bundle folder."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key} is not an ed25519 private key")
    d = Path(bundle_dir)
    sig = d / SIGNATURE
    sig.write_text(base64.b64encode(key.sign((d / MANIFEST).read_bytes())).decode() + "\n")
    return sig


def signature_problem(bundle_dir: str | Path, public_key: str | Path, manifest: bytes | None = None) -> str | None:
    """Why the bundle's signature does not verify against ``public_key`` (None when it does); ``manifest``:
    the manifest.json bytes the caller will parse (read here if not given)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    d = Path(bundle_dir)
    try:
        key = serialization.load_pem_public_key(Path(public_key).read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot read the public key {public_key}: {exc}"
    if not isinstance(key, Ed25519PublicKey):
        return f"{public_key} is not an ed25519 public key"
    sig = d / SIGNATURE
    if not sig.exists():
        return f"{SIGNATURE} is missing, and a public key is configured: only signed bundles are served"
    try:
        body = (d / MANIFEST).read_bytes() if manifest is None else manifest
        key.verify(base64.b64decode(sig.read_text().strip(), validate=True), body)
    except (InvalidSignature, ValueError):
        return f"{SIGNATURE} does not verify with {Path(public_key).name}: not signed by the expected key, or altered"
    return None
