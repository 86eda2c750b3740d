from models.tape.loan_tape import find_upload, fingerprint, read_tape
from tests.conftest import write_small_tape


def test_the_tape_fingerprint_is_the_sensors_fingerprint_of_the_same_files(tmp_path):
    # setup: the landing sensor keys runs by fingerprint(upload); the asset records the tape's own
    folder = write_small_tape(tmp_path / "acme")
    upload = find_upload(folder, "acme")
    # run
    tape = read_tape(upload)
    # assert: one identity for one upload, taken from the hashes of what was read
    assert tape.upload_sha256 == fingerprint(upload)
    (folder / "tenant.yaml").write_text((folder / "tenant.yaml").read_text() + "synthetic_rows: 10\n")
    assert read_tape(upload).upload_sha256 != tape.upload_sha256
