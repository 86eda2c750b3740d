"""Payloads of the attacks in this package, kept in one place so the list can grow.

Each is what a hostile or careless uploader can put into a landing folder; the
tests beside this module drive them through the real entry points (the landing
sensor, `credittwin materialize`, the `raw_loan_tape` asset, the release).
"""

from __future__ import annotations

# A file outside the landing zone that a link in a tenant folder points at: none of it may be echoed.
OUTSIDE_SECRET_YAML = "db_password: hunter2-not-for-you\napi_token: tok-9f8e7d6c\n"
OUTSIDE_SECRET_WORDS = ("db_password", "api_token", "hunter2-not-for-you", "tok-9f8e7d6c")

# Cells a spreadsheet would run: DDE command execution and a function call (OWASP CSV injection).
FORMULA_CELLS = ("=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0")


def billion_laughs(depth: int, *, under: str = "") -> str:
    """A tenant.yaml whose aliases expand to 9**depth strings, nested under the dotted key path `under`.

    Under ``privacy.domains.region`` it is a valid contract (domains take any mapping), so only a
    bound on the expansion stops it; at the top level its keys are unknown.
    """
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    keys = under.split(".") if under else []
    head = [("  " * i) + f"{key}:" for i, key in enumerate(keys)]
    return "\n".join(head + [("  " * len(keys)) + line for line in lines]) + "\n"
