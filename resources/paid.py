"""Private computations paid for once: charge the ledger, then compute and keep the output, or re-release it.

Every fresh draw of noise on real data must be paid for by its own ledger
charge, and a retry or re-execution of the same computation must not charge
again. `charged_release` is the one sequence every DP asset follows:

1. charge the mechanism to the tenant's ledger under an idempotency key
   (tenant, asset, input data version, full configuration, seed); over budget it
   raises and nothing private runs;
2. when an output was already made under that charge, return it byte for byte
   from the paid-release store (``<root>/privacy/paid/<tenant>/<asset>/<hash>/``);
3. otherwise compute, and store the output under the charge before it leaves
   the step.

The store lives under the data root, local or on object storage
(``CREDITTWIN_DATA_URL``), so workers on several machines share it; the first
output stored under a charge wins, by an exclusive create (`store_paid_release`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from models.errors import CreditTwinError
from models.results import Parts, Result
from models.tape.tenant import validate_tenant_id
from resources.ledger import Charge, IdempotencyKey, PrivacyLedgerResource

R = TypeVar("R", bound=Result)


def charged_release(
    privacy_ledger: PrivacyLedgerResource, data_root, *, tenant: str, run_id: str, result_type: type[R], mechanism,
    input_version: str, config: object, seed, compute: Callable[[Charge], R],
) -> tuple[R, Charge, bool]:
    """Charge `mechanism`, then return (output, charge, re_released): the stored output of an earlier run under the
    same charge, or `compute(charge)`'s, stored under the charge first.

    Raises:
        BudgetExceededError: the charge does not fit the tenant's remaining budget (nothing private ran).
        CreditTwinError: a stored paid output no longer matches the hashes recorded when it was paid for.
    """
    asset = result_type.ASSET
    charge = charge_privacy(privacy_ledger, tenant=tenant, run_id=run_id, asset=asset, mechanism=mechanism,
                            input_version=input_version, config=config, seed=seed)
    stored = paid_release(data_root, asset, tenant, charge)
    if stored is not None:
        return result_type.from_parts(stored), charge, True
    kept = store_paid_release(data_root, asset, tenant, charge, compute(charge).to_parts())
    return result_type.from_parts(kept), charge, False


def charge_privacy(privacy_ledger: PrivacyLedgerResource, *, tenant: str, run_id: str, asset: str, mechanism,
                   input_version: str, config: object, seed) -> Charge:
    """Charge `mechanism` to the tenant's ledger before the private computation of `asset` runs.

    The idempotency key is (tenant, asset, input data version, SHA-256 of
    `config`, seed): a retry or re-execution of the same computation returns
    the earlier charge instead of charging again. Over budget it raises with
    spent, requested and remaining, and nothing private has run.
    """
    import hashlib

    from models.files import dumps

    key = IdempotencyKey(
        tenant=tenant,
        asset=asset,
        input_data_version=input_version,
        config_hash=hashlib.sha256(dumps(config).encode()).hexdigest(),
        seed=seed,
    )
    with privacy_ledger.ledger() as ledger:
        return ledger.charge(tenant=tenant, asset=asset, run_id=run_id, mechanism=mechanism, idempotency=key)


PAID_DIR = ("privacy", "paid")
_PAID_MANIFEST = "paid.json"
_LEGACY_FILES_DIR = "files"
"""Where releases stored before attempt folders keep their files (their manifest names no `files_dir`)."""


def _paid_folder(root, asset: str, tenant: str, idempotency_hash: str) -> str:
    """``privacy/paid/<tenant>/<asset>/<idempotency hash>`` under `root`, the tenant validated and the key kept
    under the root."""
    import re

    validate_tenant_id(tenant)
    if not re.fullmatch(r"[0-9a-f]{64}", idempotency_hash or ""):
        raise CreditTwinError(
            f"asset '{asset}': {idempotency_hash!r} is not a ledger idempotency hash.",
            tenant=tenant,
            fix="pass the idempotency_hash of the ledger charge the release was made under.",
        )
    return root.key(*PAID_DIR, tenant, asset, idempotency_hash)


def paid_release(data_root, asset: str, tenant: str, charge) -> Parts | None:
    """The output already made and paid for under ledger `charge`, byte for byte, or None.

    Every fresh draw of noise on real data must be paid for by its own charge.
    A re-run whose idempotency key (tenant, asset, input data version, full
    mechanism configuration, seed) matches an earlier charge is not charged
    again, so it may only re-release what was made under that charge: the
    bytes kept in the paid-release store (`store_paid_release`), whatever
    other configurations ran in between. None means nothing was stored under
    the charge: the run that made it died between the charge and the store
    write, before any noisy output left the process, so computing afresh
    under the same charge releases one output for one charge.

    Args:
        data_root: the data root: a local folder, or a root from `resources.objectstore.open_root` (object storage).

    Raises:
        CreditTwinError: a stored file no longer matches the SHA-256 recorded when it was paid for.
    """
    import hashlib
    import json

    from resources.objectstore import open_root

    root = open_root(data_root)
    folder = _paid_folder(root, asset, tenant, charge.idempotency_hash)
    try:
        manifest = json.loads(root.get(root.key(folder, _PAID_MANIFEST)))
    except FileNotFoundError:
        return None
    files_dir = manifest.get("files_dir", _LEGACY_FILES_DIR)
    files: dict[str, bytes] = {}
    for rel, digest in manifest["files"].items():
        key = root.key(folder, files_dir, rel)
        try:
            data = root.get(key)
        except OSError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise CreditTwinError(
                f"the paid release of asset '{asset}' under ledger charge {manifest['charge_id']} "
                f"has a missing or altered file '{rel}' in {root.uri(folder)}.",
                tenant=tenant,
                file=root.uri(key),
                fix="restore the data root from backup; do not delete the folder to force a refit, which would "
                "release fresh noise under a charge already used (change the configuration to pay for a new fit).",
            )
        files[rel] = data
    return Parts(documents=manifest["documents"], files=files)


def store_paid_release(data_root, asset: str, tenant: str, charge, artifact: Parts) -> Parts:
    """Keep `artifact`, just made under ledger `charge`, as the one output paid for by it, and return what is kept.

    Called after the private computation and before its output is returned,
    so nothing made under a charge leaves the process before it is stored.
    The same protocol runs on local disk and on object storage, where there is
    no rename: the files go under an attempt folder of this writer's own, then
    the manifest ``paid.json``, naming that folder, is created only if it does
    not exist yet (a hard link on disk, a conditional PUT, ``If-None-Match: *``,
    on S3). When another run stored an output under the same charge first, its
    manifest wins: that output is kept and returned, and this one is deleted
    unreleased. One charge therefore never releases two outputs, however many
    workers on however many machines race for it.
    """
    import hashlib
    import uuid

    from models.files import dumps
    from resources.objectstore import open_root

    if artifact.tables:
        raise CreditTwinError(
            f"asset '{asset}' returned tables {sorted(artifact.tables)}; the paid-release store "
            "keeps JSON documents and files only.",
            tenant=tenant,
            fix="return the model as documents and files (models are saved as JSON, NumPy and torch state dicts).",
        )
    root = open_root(data_root)
    folder = _paid_folder(root, asset, tenant, charge.idempotency_hash)
    manifest_key = root.key(folder, _PAID_MANIFEST)
    if root.exists(manifest_key):
        return paid_release(root, asset, tenant, charge)
    attempt = f"attempt-{uuid.uuid4().hex}"
    attempt_key = root.key(folder, attempt)
    try:
        digests = {}
        for rel, payload in artifact.files.items():
            root.put(root.key(attempt_key, rel), payload)
            digests[rel] = hashlib.sha256(payload).hexdigest()
        manifest = {
            "tenant": tenant,
            "asset": asset,
            "charge_id": charge.id,
            "idempotency": charge.idempotency.to_dict(),
            "documents": artifact.documents,
            "files": digests,
            "files_dir": attempt,
        }
        kept = root.create(manifest_key, dumps(manifest).encode("utf-8"))
    except BaseException:
        root.remove(attempt_key)
        raise
    if not kept:
        root.remove(attempt_key)  # another run's output was stored first under this charge; this one is never released
    return paid_release(root, asset, tenant, charge)
