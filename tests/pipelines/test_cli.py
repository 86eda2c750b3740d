from tests.conftest import run_cli


def test_demo_then_tenants_end_to_end_on_the_embedded_default(tmp_path):
    # run: the README's first command at its default size (smaller books cannot meet the default audit policy)
    demo = run_cli(tmp_path, "demo", "--tenant", "demo-bank", "--months", "12")
    # assert
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "succeeded" in demo.stdout
    assert "materialized raw_loan_tape" in demo.stdout
    # a warning prints its reason: the demo's ltv is empty for unsecured loans, by design
    lines = demo.stdout.splitlines()
    warning = next(i for i, line in enumerate(lines) if "raw_loan_tape.null_rates" in line)
    assert "warning" in lines[warning] and lines[warning + 1].strip().startswith("ltv: ")
    assert "expect_column_values_to_not_be_null" in lines[warning + 1] and "at most 20% null" in lines[warning + 1]
    assert f"cd {tmp_path / 'data' / 'dagster_home'} && DAGSTER_HOME=" in demo.stdout and "dg dev -w" in demo.stdout
    home = tmp_path / "data" / "dagster_home"
    assert (home / "dagster.yaml").exists() and (tmp_path / "data" / "landing" / "demo-bank" / "loans.csv").exists()
    tenants = run_cli(tmp_path, "tenants")
    assert tenants.returncode == 0, tenants.stderr
    line = next(row for row in tenants.stdout.splitlines() if row.startswith("demo-bank"))
    assert "never" not in line


def test_materialize_refuses_an_invalid_tenant_id(tmp_path):
    result = run_cli(tmp_path, "materialize", "../etc")
    assert result.returncode == 2
    assert "invalid tenant id '../etc'" in result.stderr
    assert not (tmp_path / "etc").exists()


def test_materialize_names_a_missing_upload(tmp_path):
    result = run_cli(tmp_path, "materialize", "nobody")
    assert result.returncode == 2
    assert "tenant 'nobody'" in result.stderr and "loans.csv" in result.stderr


def test_budget_is_shown_and_raised_only_with_a_reason(tmp_path):
    missing = run_cli(tmp_path, "budget", "acme")
    assert missing.returncode == 2 and "has no privacy budget" in missing.stderr
    no_reason = run_cli(tmp_path, "budget", "acme", "--raise-epsilon", "2", "--raise-delta", "1e-7")
    assert no_reason.returncode == 2 and "needs a reason" in no_reason.stderr
    raised = run_cli(tmp_path, "budget", "acme", "--raise-epsilon", "2", "--raise-delta", "1e-7", "--reason", "DPO ticket 7")
    assert raised.returncode == 0, raised.stderr
    assert "epsilon=2" in raised.stdout and "remaining" in raised.stdout
    shown = run_cli(tmp_path, "budget", "acme", "--json")
    assert shown.returncode == 0 and '"epsilon": 2.0' in shown.stdout
    for bad in ("0", "-1", "nan", "inf"):
        refused = run_cli(tmp_path, "budget", "acme", "--raise-epsilon", bad, "--reason", "x")
        assert refused.returncode == 2, bad


def test_materialize_a_tape_without_a_default_flag_exits_0_and_says_why_risk_is_skipped(tmp_path):
    # setup: a book with no target in tenant.yaml and no performance history, so no default can be defined
    import yaml

    from models.tape.demo import generate_portfolio, write_landing
    from tests.conftest import relax_audit

    folder = tmp_path / "data" / "landing" / "notarget"
    write_landing(generate_portfolio(500, months=12, seed=11), folder, fmt="csv")
    relax_audit(folder)
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    for key in ("target", "performance"):
        config.pop(key, None)
    config.update({"sensitive_columns": [], "privacy": {"k": 5, "l": 1}})  # l-diversity needs a sensitive column
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    (folder / "performance.csv").unlink()

    # run
    result = run_cli(tmp_path, "materialize", "notarget")

    # assert
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    risk = next(line for line in lines if line.strip().startswith("skipped risk_model"))
    assert "no target" in risk and "tenant.yaml" in risk
    assert any(line.strip().startswith("skipped portfolio_scores") for line in lines)
    assert any(line.strip().startswith("skipped stress_test") for line in lines)
    assert "materialized privacy_certificate" in result.stdout
    # a tape rule with nothing to look at is a warning that says so, not a pass
    gaps = next(i for i, line in enumerate(lines) if "raw_loan_tape.performance_period_gaps" in line)
    assert "warning" in lines[gaps] and lines[gaps + 1].strip() == "not applicable: no performance history supplied"


def test_a_data_error_prints_its_clear_line_without_a_stack_trace(tmp_path):
    # setup: a Yes/No flag whose declared positive the file never writes
    folder = tmp_path / "data" / "landing" / "acme"
    folder.mkdir(parents=True)
    rows = ["loan_id,amount,default"] + [f"L{i},{100 + i},{'Yes' if i % 5 == 0 else 'No'}" for i in range(300)]
    (folder / "loans.csv").write_text("\n".join(rows) + "\n")
    (folder / "tenant.yaml").write_text("target: {column: default, positive: Bad}\nquasi_identifiers: [amount]\n")
    # run
    quiet = run_cli(tmp_path, "materialize", "acme")
    verbose = run_cli(tmp_path, "materialize", "acme", "--verbose")
    # assert: one actionable line (tenant, file, column, fix), and Dagster's traces only when asked for
    assert quiet.returncode == 1
    output = quiet.stdout + quiet.stderr
    assert "tenant 'acme'" in output and "loans.csv" in output and "column 'default'" in output and "Fix:" in output
    assert "'Yes'" in output and "'No'" in output
    assert "Stack Trace" not in output and "Traceback" not in output
    assert "Stack Trace" in verbose.stdout + verbose.stderr


def test_the_command_opens_the_instance_in_the_settings_home_and_leaves_the_environment_alone(
    tmp_path, monkeypatch, capsys
):
    # setup
    import os

    import dagster as dg

    from pipelines.cli import main

    monkeypatch.setenv("CREDITTWIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    ours = ("DAGSTER", "CREDITTWIN", "MLFLOW", "GX_")

    def environment():  # libraries may set their own (polars sets its allocator's); these are the ones at stake
        return {key: value for key, value in os.environ.items() if key.startswith(ours)}

    before = environment()
    # run
    assert main(["tenants"]) == 0
    home = tmp_path / "data" / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("tenants", ["acme"])
    assert main(["tenants"]) == 0
    # assert: the instance is the one under the data dir, found without DAGSTER_HOME being set
    assert environment() == before and "DAGSTER_HOME" not in before
    assert (home / "dagster.yaml").is_file()
    assert any(line.startswith("acme") for line in capsys.readouterr().out.splitlines())


def test_the_console_script_tunes_the_collector_for_one_command_and_freezes_its_heap_at_the_end(tmp_path):
    """The installed `credittwin` runs `pipelines.cli:run`: young collections every 20,000 allocations, and every
    object frozen before the exit, whose full collection would otherwise walk the whole heap again (about 4 s of the
    demo). The exit code is main's."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "credittwin"]
    assert script.value == "pipelines.cli:run"
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('collector', gc.get_threshold()[0], gc.get_freeze_count() > 0))\n"
        f"sys.argv = ['credittwin', 'verify', {str(tmp_path / 'missing.pdf')!r}]\n"
        "from importlib.metadata import entry_points\n"
        "[ep] = [e for e in entry_points(group='console_scripts') if e.name == 'credittwin']\n"
        "ep.load()()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CREDITTWIN_DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 1, done.stderr  # an invalid certificate, as `main` returns it
    assert "INVALID" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "collector 20000 True"
