"""The environment is read in one place, resources.settings, and nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import pytest

from assets.policies import external_service_retry
from resources.settings import Settings, code_version

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "resources", "assets", "pipelines")
SETTINGS_MODULE = REPO / "resources" / "settings.py"
_ENV_FUNCTIONS = {"getenv", "getenvb", "putenv", "unsetenv"}
_ENV_MAPPINGS = {"environ", "environb"}


def _environment_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module reads or changes the process environment: any use of ``os.environ``, ``os.getenv``,
    ``os.putenv`` or ``os.unsetenv``, however imported (``from os import environ``, ``import os as o``)."""
    os_names = {"os"}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {alias.asname or alias.name for alias in node.names if alias.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names
                      if a.name in _ENV_MAPPINGS | _ENV_FUNCTIONS]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in os_names
                and node.attr in _ENV_MAPPINGS | _ENV_FUNCTIONS):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_only_the_settings_module_reads_or_changes_the_environment():
    # setup
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == SETTINGS_MODULE:
                continue
            # run
            uses = _environment_uses(ast.parse(path.read_text(encoding="utf-8")))
            offenders += [f"{path.relative_to(REPO)}:{line} {what}" for line, what in uses]
    # assert
    assert offenders == [], "read the environment in resources/settings.py (Settings.from_env) instead"


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('A')",
        "import os\nos.environ['A'] = '1'",
        "import os\nos.environ.setdefault('A', '1')",
        "import os as system\nx = system.getenv('A')",
        "from os import environ\nx = environ['A']",
        "import os\ndef f():\n    return {**os.environ}",
    ],
)
def test_the_environment_check_sees_every_spelling(source):
    # run / assert
    assert _environment_uses(ast.parse(source))


def test_settings_has_every_variable_with_its_default(tmp_path):
    # run
    defaults = Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path)})
    configured = Settings.from_env({
        "CREDITTWIN_DATA_DIR": str(tmp_path),
        "CREDITTWIN_STEP_RETRIES": "1",
        "CREDITTWIN_RETRY_DELAY_SECONDS": "0.25",
        "CREDITTWIN_ALERT_WEBHOOK_URL": "https://hooks.example/t0ken",
        "DAGSTER_HOME": str(tmp_path / "home"),
    })
    # assert
    assert (defaults.step_retries, defaults.retry_delay_seconds) == (3, 5.0)
    assert defaults.alert_webhook_url is None and defaults.alert_webhook_url_var is None
    assert defaults.dagster_home == tmp_path.resolve() / "dagster_home"
    assert (configured.step_retries, configured.retry_delay_seconds) == (1, 0.25)
    assert configured.alert_webhook_url_var == "CREDITTWIN_ALERT_WEBHOOK_URL"
    assert configured.dagster_home == (tmp_path / "home").resolve()
    # a padded URL is trimmed, so it cannot be handed on by its variable's name
    padded = Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), "CREDITTWIN_ALERT_WEBHOOK_URL": " https://h/x "})
    assert (padded.alert_webhook_url, padded.alert_webhook_url_var) == ("https://h/x", None)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CREDITTWIN_STEP_RETRIES", "many", "CREDITTWIN_STEP_RETRIES='many' is not a number; set it to e.g. 3."),
        ("CREDITTWIN_RETRY_DELAY_SECONDS", "-1", "CREDITTWIN_RETRY_DELAY_SECONDS='-1' is negative; set it to 0 or more."),
    ],
)
def test_a_bad_retry_setting_names_the_variable(tmp_path, name, value, message):
    # run / assert
    with pytest.raises(ValueError) as caught:
        Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), name: value})
    assert str(caught.value) == message


def test_the_retry_policy_comes_from_the_settings(tmp_path):
    # run
    policy = external_service_retry(Settings(data_dir=tmp_path, step_retries=0, retry_delay_seconds=0.5))
    # assert
    assert (policy.max_retries, policy.delay, policy.backoff) == (0, 0.5, dg.Backoff.EXPONENTIAL)


def test_code_version_is_the_configured_one_else_the_checkout(monkeypatch):
    # setup
    code_version.cache_clear()
    monkeypatch.setenv("CREDITTWIN_CODE_VERSION", " release-7 ")
    try:
        # run / assert
        assert code_version() == "release-7"
        code_version.cache_clear()
        monkeypatch.delenv("CREDITTWIN_CODE_VERSION")
        assert code_version().startswith(("git:", "credittwin==", "unknown"))
    finally:
        code_version.cache_clear()
