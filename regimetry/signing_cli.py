"""`regimetry keygen` and `regimetry sign`: make a bundle-signing key pair, sign a bundle (regimetry/signing.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from regimetry.console import console, fail


def keygen_cmd(
    out: Path = typer.Option(Path("keys"), "--out", help="Folder for <name>.key.pem (0600) and <name>.pub.pem."),
    name: str = typer.Option("bundle-signing", help="File name stem."),
) -> None:
    """Create an ed25519 key pair for bundle signatures: the private key signs (keep it with the publisher),
    the public key goes to the workers (REGIMETRY_BUNDLE_PUBLIC_KEY)."""
    from regimetry.signing import generate_keypair

    try:
        private, public = generate_keypair(out, name)
    except FileExistsError as exc:
        fail(str(exc))
    console.print(f"private key {private} (keep it secret), public key {public}")


def sign_cmd(
    bundle: Path = typer.Option(..., help="Bundle folder (or models root with CURRENT) to sign."),
    key: Path = typer.Option(..., help="ed25519 private key (PEM), from `regimetry keygen`."),
    check: Path | None = typer.Option(None, help="Verify the signed bundle with this public key afterwards."),
) -> None:
    """Sign a bundle's manifest (writes manifest.sig); workers with a public key serve only signed bundles."""
    from regimetry.bundle import BundleError, resolve_bundle_dir, verify_bundle
    from regimetry.signing import sign_bundle

    try:
        d = resolve_bundle_dir(bundle)
        verify_bundle(d)  # never sign a bundle that would be refused anyway
        sig = sign_bundle(d, key)
        if check is not None:
            verify_bundle(d, check)
    except (BundleError, OSError, ValueError) as exc:
        fail(str(exc))
    console.print(f"signed {d.name}: {sig}" + (f" (verified with {check})" if check else ""))


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen_cmd)
    app.command("sign")(sign_cmd)
