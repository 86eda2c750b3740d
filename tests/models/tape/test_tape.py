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


def _refusal(folder, tenant="acme"):
    import pytest

    from models.errors import InvalidDataError

    with pytest.raises(InvalidDataError) as caught:
        find_upload(folder, tenant)
    return caught.value


def test_a_loans_file_under_another_spelling_is_named_with_what_to_do_about_it(tmp_path):
    # setup: the same real-shaped tape as a Windows user (LOANS.CSV), a gzip habit and a spreadsheet send it
    for name, fix in [("LOANS.CSV", "rename 'LOANS.CSV' to 'loans.csv'"),
                      ("Loans.parquet", "rename 'Loans.parquet' to 'loans.parquet'"),
                      ("loans.csv.gz", "'loans.csv.gz' is compressed: unpack it to 'loans.csv'"),
                      ("loans.xlsx", "'loans.xlsx' is a spreadsheet: save it as CSV named 'loans.csv'"),
                      ("loans.txt", "'loans.txt' is a text table: rename it to 'loans.csv'")]:
        folder = write_small_tape(tmp_path / name.replace(".", "-"), performance=False)
        (folder / "loans.csv").rename(folder / name)
        # run
        error = _refusal(folder)
        # assert: the refusal names the tenant and the file it found, with the fix
        assert "tenant 'acme'" in str(error) and fix in error.fix, (name, error.fix)


def test_a_history_under_another_spelling_is_refused_instead_of_skipped_without_a_word(tmp_path):
    # setup: loans.csv is right, the history is Performance.csv (before, the tape ran as if it had no history)
    folder = write_small_tape(tmp_path / "acme")
    (folder / "performance.csv").rename(folder / "Performance.csv")
    # run
    error = _refusal(folder)
    # assert
    assert "rename 'Performance.csv' to 'performance.csv'" in error.fix
    # a folder with no history at all is still fine
    (folder / "Performance.csv").unlink()
    assert find_upload(folder, "acme").performance is None


def test_an_untrusted_file_name_is_never_shown_back(tmp_path):
    folder = write_small_tape(tmp_path / "acme", performance=False)
    (folder / "loans.csv").rename(folder / "loans.<script>.xlsx")
    error = _refusal(folder)
    assert "<script>" not in str(error) and "upload the file as loans.csv or loans.parquet" in error.fix
