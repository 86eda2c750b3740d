import pytest

from models.errors import InvalidTenantError, TenantConfigError
from models.tape.tenant import TenantConfig, load_tenant_config, parse_tenant_config, validate_tenant_id


@pytest.mark.parametrize("tenant", ["acme", "acme-bank", "bank_2", "0day", "a" * 63])
def test_valid_tenant_ids_pass(tenant):
    assert validate_tenant_id(tenant) == tenant


@pytest.mark.parametrize(
    ("tenant", "why"),
    [
        ("../x", "path separator"),
        ("ACME", "upper-case"),
        ("acme bank", "white space"),
        ("\u0430cme", "U\\+0430 \\(CYRILLIC SMALL LETTER A\\)"),  # Cyrillic look-alike of 'a'
        ("x" * 1000, "1000 characters long"),
        ("", "empty"),
        ("-acme", "must start"),
        ("acme.bank", "'\\.'"),
        ("acme\n", "white space"),
        ("a" * 64, "64 characters"),
    ],
)
def test_invalid_tenant_ids_are_refused_with_the_reason(tenant, why):
    # run / assert
    with pytest.raises(InvalidTenantError, match=why):
        validate_tenant_id(tenant)


def test_non_string_tenant_is_refused():
    with pytest.raises(InvalidTenantError, match="must be a string"):
        validate_tenant_id(42)


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    # setup
    path = tmp_path / "tenant.yaml"
    path.write_text("target: {column: bad, positive: 1}\nsynthetic_row: 10\n")
    # run / assert
    with pytest.raises(TenantConfigError, match="file 'tenant.yaml'.*unknown key 'synthetic_row'"):
        load_tenant_config(path, tenant="acme")


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "tenant.yaml"
    path.write_text("privacy: {k: many}\n")
    with pytest.raises(TenantConfigError, match="key 'privacy.k'"):
        load_tenant_config(path, tenant="acme")


@pytest.mark.parametrize("bad", ["0", "-1", ".nan", ".inf"])
def test_budget_must_be_positive_and_finite(bad):
    with pytest.raises(TenantConfigError, match="privacy.epsilon_budget"):
        parse_tenant_config({"privacy": {"epsilon_budget": float(bad.replace(".nan", "nan").replace(".inf", "inf"))}})


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "tenant.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(TenantConfigError, match="must be a mapping"):
        load_tenant_config(path, tenant="acme")


def test_column_that_does_not_exist_names_key_file_and_column():
    config = parse_tenant_config({"target": {"column": "defaulted"}, "quasi_identifiers": ["age", "zip"]})
    with pytest.raises(TenantConfigError, match="key 'quasi_identifiers' names column\\(s\\) \\['zip'\\]") as info:
        config.check_columns(["defaulted", "age"], tenant="acme", file="tenant.yaml")
    assert info.value.column == "zip"
    assert "tenant 'acme'" in str(info.value)


def test_missing_file_gives_defaults(tmp_path):
    config = load_tenant_config(tmp_path / "tenant.yaml")
    assert config == TenantConfig()
    assert config.privacy.k == 5 and config.holdout_share == 0.2


def test_target_positive_values_accept_scalar_or_list():
    assert parse_tenant_config({"target": {"column": "s", "positive": "Charged Off"}}).target.positive_values == ["Charged Off"]
    assert parse_tenant_config({"target": {"column": "s", "positive": [1, "Y"]}}).target.positive_values == [1, "Y"]


def test_the_documented_tenant_yaml_example_is_a_valid_contract():
    from pathlib import Path

    import yaml

    from models.tape.tenant import TenantConfig

    readme = (Path(__file__).resolve().parents[3] / "docs" / "tenant-contract.md").read_text()
    start = readme.index("target: {column: default_flag, positive: 1}   # the default flag")
    example = yaml.safe_load(readme[start:readme.index("```", start)])
    config = TenantConfig.model_validate(example)
    assert config.audit.max_inference_risk == 0.25 and config.stress.scenarios[0].name == "card_crunch"
    assert config.risk.auc_floor == 0.65 and config.certificate.validity_days == 90


def test_csv_header_and_columns_reach_the_loans_reader_only():
    # setup
    config = parse_tenant_config({"csv": {"delimiter": "|", "header": False, "columns": ["loan_id", "Amount"]}})
    # run
    loans, history = config.csv.read_options(), config.csv.read_options(loans=False)
    # assert: the history file has its own fields, so it keeps the header setting but not the loans' names
    assert (loans.delimiter, loans.header, loans.columns) == ("|", False, ("loan_id", "Amount"))
    assert (history.delimiter, history.header, history.columns) == ("|", False, None)


@pytest.mark.parametrize("columns", [[], ["loan_id", ""], "loan_id"])
def test_csv_columns_must_be_a_list_of_names(columns):
    with pytest.raises(TenantConfigError, match="csv.columns"):
        parse_tenant_config({"csv": {"columns": columns}})


def test_a_value_out_of_range_gets_a_fix_about_the_value_not_the_keys():
    # setup: a 50-loan book's owner tried holdout_share 0; the fix said "use only the documented keys"
    # run / assert
    with pytest.raises(TenantConfigError, match="key 'holdout_share': Input should be greater than 0") as raised:
        parse_tenant_config({"holdout_share": 0.0})
    assert "Fix: give each key named above a value of its documented type and range" in str(raised.value)
    assert "documented keys" not in str(raised.value)
