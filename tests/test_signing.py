"""Bundle signatures (regimetry/signing.py): with a public key, only bundles signed by its private key load."""

from __future__ import annotations

import json
import shutil

import pytest

from regimetry.bundle import BundleError, load_bundle, verify_bundle
from regimetry.signing import SIGNATURE, generate_keypair, sign_bundle


def test_signed_bundles_load_and_unsigned_or_altered_ones_are_refused(tiny_bundle, tmp_path):
    private, public = generate_keypair(tmp_path / "keys")
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "keys")  # never overwrite a signing key
    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    verify_bundle(b)  # no key configured: signatures are not asked for
    with pytest.raises(BundleError, match="manifest.sig is missing"):
        verify_bundle(b, public)
    sign_bundle(b, private)
    assert verify_bundle(b, public)["model_version"] == load_bundle(b, public).version

    # another key's signature is refused
    other_private, _ = generate_keypair(tmp_path / "other")
    sign_bundle(b, other_private)
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(b, public)

    # a manifest rewritten together with its content hash passes the hash check but not the signature
    sign_bundle(b, private)
    from regimetry.bundle import manifest_digest

    m = json.loads((b / "manifest.json").read_text())
    m["baseline"]["centroid_distance_quantiles"]["q99"] *= 2
    m["hashes"]["manifest"] = manifest_digest(m)
    (b / "manifest.json").write_text(json.dumps(m, indent=2))
    verify_bundle(b)  # consistent on its own
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(b, public)
    (b / SIGNATURE).write_text("not base64 !!\n")
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(b, public)


def test_sign_and_keygen_commands(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from regimetry import cli

    cli._register()
    runner = CliRunner()
    r = runner.invoke(cli.app, ["keygen", "--out", str(tmp_path / "k")])
    assert r.exit_code == 0, r.output
    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    key, pub = tmp_path / "k" / "bundle-signing.key.pem", tmp_path / "k" / "bundle-signing.pub.pem"
    r = runner.invoke(cli.app, ["sign", "--bundle", str(b), "--key", str(key), "--check", str(pub)])
    assert r.exit_code == 0, r.output
    assert (b / SIGNATURE).exists() and "verified" in r.output


def test_the_worker_serves_only_signed_bundles_when_a_key_is_set(tiny_bundle, tmp_path):
    """Start-up and hot reload both go through load_serving: with REGIMETRY_BUNDLE_PUBLIC_KEY set, an unsigned
    bundle is refused (the worker exits 2 at start, keeps the old model on reload)."""
    from worker.serving import load_serving
    from worker.settings import load_settings

    private, public = generate_keypair(tmp_path / "keys")
    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    settings = load_settings({"REGIMETRY_BUNDLE_PUBLIC_KEY": str(public)})
    with pytest.raises(BundleError, match="manifest.sig is missing"):
        load_serving(b, settings)
    sign_bundle(b, private)
    assert load_serving(b, settings).version == load_bundle(b).version
    assert load_serving(b, load_settings({})).version  # no key: unsigned or signed alike
