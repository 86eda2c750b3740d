"""Forged certificates and doctored release bundles against `credittwin verify` (and `credittwin keys`).

A deployment's stored certificate (a real audit of a real anonymized release,
signed by the deployment's own development key) is exported with the real
`credittwin export`; each test then doctors the bundle the way a forger would
and runs the real `credittwin verify`, which must exit 1 and say what is wrong.
Only the deployment's own keys and the keys its trust store holds are accepted;
a valid Ed25519 signature by any other key proves nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from models.reports.certificate import (
    build_certificate,
    certificate_json_bytes,
    generate_key_file,
    load_signing_key,
    render_certificate_pdf,
    sign_certificate,
)
from pipelines.cli import main
from models.results import Parts
from resources.storage import VersionedStore
from tests.models.reports.test_certificate import certificate_args, release  # noqa: F401 - `release`: a real audited release

TENANT = "acme"
# what build_validation_report writes when the utility ratio is inconclusive and a pair fails (its verdict lines)
VALIDATION = {
    "passed": False, "verdict": "fail", "score": 0.9723,
    "failures": ["annual_income x credit_limit: correlation 0.820 real vs 0.599 synthetic (gap 0.220 > 0.200)"],
    "warnings": ["TSTR / TRTR AUC on the real holdout: 95% interval 0.934 to 1.011 on 86 defaults in 1005 holdout "
                 "loans: inconclusive, the holdout cannot tell the ratio from the threshold"],
}


@pytest.fixture(scope="module")
def deployment(release, tmp_path_factory):  # noqa: F811 - the imported fixture
    """A data root holding a certificate its development key signed today, and a validation report."""
    root = tmp_path_factory.mktemp("deployment") / "data"
    key = load_signing_key(None, environment="development", dev_key_dir=root / "keys")
    signed = sign_certificate(build_certificate(**certificate_args(release, issued_at=datetime.now(timezone.utc))), key)
    files = {f"release/{entry['name']}": (release["folder"] / entry["name"]).read_bytes() for entry in release["files"]}
    files["certificate.json"] = certificate_json_bytes(signed)
    files["certificate.pdf"] = render_certificate_pdf(signed)
    VersionedStore(root, ["privacy_certificate"], TENANT).write(Parts(files=files), run_id="r1", kind="artifact")
    report = {"validation_report.json": json.dumps(VALIDATION).encode(), "validation_report.pdf": b"%PDF-1.4"}
    VersionedStore(root, ["validation_report"], TENANT).write(Parts(files=report), run_id="r1", kind="artifact")
    return root, key


def _as(monkeypatch, root: Path, **env: str) -> None:
    """Run the next commands as the deployment whose data root is `root`."""
    for name in ("CREDITTWIN_ENV", "CREDITTWIN_SIGNING_KEY_FILE", "CREDITTWIN_TRUSTED_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDITTWIN_DATA_DIR", str(root))
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def bundle(deployment, tmp_path, monkeypatch, capsys):
    root, _ = deployment
    _as(monkeypatch, root)
    folder = tmp_path / "bundle"
    assert main(["export", TENANT, str(folder)]) == 0
    capsys.readouterr()
    return folder


def _verify(capsys, folder: Path, *extra: str) -> tuple[int, str]:
    code = main(["verify", str(folder / "certificate.json"), "--data", str(folder), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def _forge(folder: Path, tmp_path: Path):
    """Edit the certificate, extend it to 2099 and re-sign it with a key of the forger's own; a new PDF to match."""
    document = json.loads((folder / "certificate.json").read_text())
    document["display_name"] = "Someone Else Lending"
    document["valid_until"] = "2099-12-31T00:00:00+00:00"
    forger = load_signing_key(generate_key_file(tmp_path / "forger.pem").source, environment="development",
                              dev_key_dir=tmp_path / "unused")
    forged = sign_certificate(document, forger)
    (folder / "certificate.json").write_bytes(certificate_json_bytes(forged))
    (folder / "certificate.pdf").write_bytes(render_certificate_pdf(forged))
    # the forger drops the manifest, which the deployment signed for the genuine certificate
    (folder / "manifest.json").unlink()
    return forger


def test_the_exporting_deployment_verifies_its_own_bundle_and_flags_its_development_key(bundle, capsys):
    # run
    code, out = _verify(capsys, bundle)
    # assert
    assert code == 0, out
    assert "VALID" in out and "note: signed with a development key" in out
    assert "validation_report.json (manifest.json)" in out


def test_a_certificate_re_signed_with_another_key_and_valid_to_2099_is_invalid(bundle, tmp_path, capsys):
    # setup
    forger = _forge(bundle, tmp_path)
    # run
    code, out = _verify(capsys, bundle)
    # assert: the signature is intact, the signer is not trusted, and the message says how to trust it
    assert code == 1, out
    assert "INVALID" in out
    assert f"signed by key {forger.key_id}, which is not among the trusted keys" in out
    assert "credittwin keys trust" in out and f"--trust {forger.key_id}" in out


def test_trusting_the_forgers_key_takes_an_explicit_reason_and_is_listed(bundle, tmp_path, capsys):
    # setup
    forger = _forge(bundle, tmp_path)
    # run
    with pytest.raises(SystemExit):
        main(["keys", "trust", "--certificate", str(bundle / "certificate.json")])  # no --reason
    capsys.readouterr()
    trusted = main(["keys", "trust", "--certificate", str(bundle / "certificate.json"), "--reason", "test partner"])
    listed = main(["keys", "list"])
    listing = capsys.readouterr().out
    code, out = _verify(capsys, bundle)
    # assert
    assert trusted == 0 and listed == 0
    assert forger.key_id in listing and forger.public_key_b64 in listing and "reason: test partner" in listing
    assert code == 0, out


def test_another_deployment_refuses_a_development_key_it_does_not_trust(bundle, deployment, tmp_path, monkeypatch,
                                                                         capsys):
    # setup: a second deployment with its own data root (and its own development key)
    _, key = deployment
    _as(monkeypatch, tmp_path / "elsewhere")
    # run
    code, out = _verify(capsys, bundle)
    explicit, out_explicit = _verify(capsys, bundle, "--trust", key.key_id)
    # assert
    assert code == 1 and f"signed by key {key.key_id}, which is not among the trusted keys" in out
    assert "note: signed with a development key" in out
    assert explicit == 0, out_explicit


def test_a_development_key_is_invalid_in_production_even_when_trusted(bundle, deployment, tmp_path, monkeypatch,
                                                                      capsys):
    # setup: the same data root, now run in production with its production key
    root, key = deployment
    production_key = generate_key_file(tmp_path / "prod" / "signing.pem")
    _as(monkeypatch, root, CREDITTWIN_ENV="production", CREDITTWIN_SIGNING_KEY_FILE=str(production_key.source))
    # run
    code, out = _verify(capsys, bundle, "--trust", key.key_id)
    # assert
    assert code == 1, out
    assert f"signed with a development key ({key.key_id}), which production" in out


def test_a_missing_pdf_is_invalid(bundle, capsys):
    # setup: the PDF removed, and the manifest with it so that only the PDF rule can catch it
    (bundle / "certificate.pdf").unlink()
    (bundle / "manifest.json").unlink()
    # run
    code, out = _verify(capsys, bundle)
    # assert
    assert code == 1 and "certificate.pdf" in out and "is missing" in out


def test_bytes_appended_to_the_validation_report_are_invalid(bundle, capsys):
    # setup
    with open(bundle / "validation_report.json", "ab") as handle:
        handle.write(b'\n{"quality_score": 99.9}')
    # run
    code, out = _verify(capsys, bundle)
    # assert
    assert code == 1, out
    assert "bundle file 'validation_report.json' was changed after export" in out
    assert "CHANGED validation_report.json" in out


def test_a_manifest_rewritten_to_match_an_edited_report_is_invalid(bundle, capsys):
    # setup: the report edited and its hash rewritten in the manifest
    import hashlib

    data = json.dumps({"quality_score": 99.9}).encode()
    (bundle / "validation_report.json").write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == "validation_report.json":
            entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    # run
    code, out = _verify(capsys, bundle)
    # assert
    assert code == 1, out
    assert "manifest.json has no valid signature" in out


def test_a_file_added_to_the_bundle_is_reported(bundle, capsys):
    # setup
    (bundle / "loans_corrected.csv").write_text("loan_id,default_flag\nL1,0\n")
    # run
    code, out = _verify(capsys, bundle)
    # assert
    assert code == 1, out
    assert "'loans_corrected.csv' is in the bundle but not in its manifest.json" in out


def test_the_trust_store_named_by_the_setting_is_the_one_used(bundle, deployment, tmp_path, monkeypatch, capsys):
    # setup: another deployment whose trust store lives outside its data root
    _, key = deployment
    store = tmp_path / "shared" / "trusted.json"
    _as(monkeypatch, tmp_path / "elsewhere", CREDITTWIN_TRUSTED_KEYS_FILE=str(store))
    # run
    trusted = main(["keys", "trust", "--certificate", str(bundle / "certificate.json"), "--reason", "Acme's dev key"])
    code, out = _verify(capsys, bundle)
    # assert: trusted, yet still flagged as a development key
    assert trusted == 0 and key.key_id in store.read_text()
    assert not (tmp_path / "elsewhere" / "keys" / "trusted.json").exists()
    assert code == 0, out
    assert "note: signed with a development key" in out


def test_export_prints_and_signs_every_verdict_that_is_not_a_pass(deployment, tmp_path, monkeypatch, capsys):
    # setup
    root, _ = deployment
    _as(monkeypatch, root)
    folder = tmp_path / "bundle"
    # run
    code = main(["export", TENANT, str(folder)])
    out = capsys.readouterr().out
    manifest = json.loads((folder / "manifest.json").read_text())
    certificate = json.loads((folder / "certificate.json").read_text())
    # assert: the validation report's failure and warning, and the audit's warning rules and caveats, are printed ...
    warned = [r for r in certificate["rules"] if r["verdict"] == "warn"]
    assert code == 0 and warned
    assert f"validation report verdict FAIL: {VALIDATION['failures'][0]}; warning: {VALIDATION['warnings'][0]}" in out
    assert "privacy audit verdict WARN: " in out
    for rule in warned:
        assert f"{rule['rule']} (warn): {rule['message']}" in out
    for caveat in certificate["audit"]["warnings"]:
        assert f"privacy audit caveat: {caveat}" in out
    # ... and recorded in the signed manifest
    assert manifest["verdicts"]["validation report"] == {
        "verdict": "fail", "findings": [VALIDATION["failures"][0], f"warning: {VALIDATION['warnings'][0]}"]}
    assert manifest["verdicts"]["privacy audit"]["verdict"] == "warn"
    assert len(manifest["verdicts"]["privacy audit"]["findings"]) == len(warned)


def test_verify_prints_one_ok_line_per_file_the_pdf_included(bundle, capsys):
    # setup
    names = sorted(p.name for p in bundle.iterdir() if p.name != "manifest.json")
    # run: the bundle with its manifest, then the same files without it
    code, out = _verify(capsys, bundle)
    (bundle / "manifest.json").unlink()
    bare_code, bare = _verify(capsys, bundle)
    # assert: every file once, saying what it was checked against
    lines = [line.split() for line in out.splitlines() if line.startswith("  ok")]
    assert code == 0 and sorted(line[1] for line in lines) == names, out
    assert "  ok       certificate.pdf (payload sha256 and text, manifest.json)" in out
    assert "  ok       loans.parquet (certified sha256, manifest.json)" in out
    assert "  ok       validation_report.json (manifest.json)" in out
    assert "note: manifest.json records: validation report verdict FAIL" in out
    assert bare_code == 0 and "  ok       certificate.pdf (payload sha256 and text)" in bare
    assert "  ok       loans.parquet (certified sha256)" in bare


def test_naming_the_pdf_verifies_the_signed_json_beside_it_and_a_lone_pdf_gets_the_fix(bundle, tmp_path, capsys):
    # run: the person passes the PDF they were sent, as most would (before: a raw 'utf-8 codec can't decode')
    code = main(["verify", str(bundle / "certificate.pdf"), "--data", str(bundle)])
    out = capsys.readouterr().out
    # assert: the JSON beside it verified, and said so
    assert code == 0, out
    assert "VALID" in out and "certificate.pdf is the certificate's PDF: verified certificate.json beside it" in out
    # a tampered PDF named this way is still caught
    (bundle / "certificate.pdf").write_bytes((bundle / "certificate.pdf").read_bytes() + b"%%tampered")
    assert main(["verify", str(bundle / "certificate.pdf"), "--data", str(bundle)]) == 1
    capsys.readouterr()
    # a PDF alone: the fix, no decoding error
    lone = tmp_path / "alone"
    lone.mkdir()
    (lone / "certificate.pdf").write_bytes((bundle / "certificate.pdf").read_bytes())
    assert main(["verify", str(lone / "certificate.pdf")]) == 2
    err = capsys.readouterr().err
    assert "is the certificate's PDF" in err and "Fix: verify the certificate JSON" in err and "codec" not in err
