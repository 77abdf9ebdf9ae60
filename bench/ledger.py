"""Benchmark: idempotent deductions per second through the ledger, 50 concurrent callers
on PostgreSQL, every 10th call a replay; against a bare-SQL baseline in the same run.

    .venv/bin/python bench/ledger.py [--calls 10000] [--callers 50] [--accounts 50]

Prints deductions/s for the ledger and the baseline, their ratio, the replays and the
double charges (must be 0), and writes JSON to bench/results/ledger.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from domain.accounts import create_account  # noqa: E402
from domain.ledger import Ledger, Usage  # noqa: E402
from domain.reconcile import reconcile  # noqa: E402
from models.db import make_engine  # noqa: E402
from tests.dbs import LOCAL_PG, create_pg_database, drop_pg_database  # noqa: E402

USAGE = Usage(operation_type="image_generation", model_name="bench-model")


def run_ledger(engine: sa.Engine, accounts: list[int], callers: int, calls: int) -> dict:
    ledger = Ledger(engine)
    per_caller = calls // callers
    replays = 0
    lock = threading.Lock()

    def caller(c: int) -> None:
        nonlocal replays
        account = accounts[c % len(accounts)]
        mine = 0
        for i in range(per_caller):
            if i % 10 == 9:  # every 10th call replays the previous one
                ledger.deduct(account, 1, f"bench:{c}:{i - 1}", USAGE)
                mine += 1
            else:
                ledger.deduct(account, 1, f"bench:{c}:{i}", USAGE)
        with lock:
            replays += mine

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        list(pool.map(caller, range(callers)))
    elapsed = time.perf_counter() - start
    total = per_caller * callers
    with engine.connect() as conn:
        charged = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM igny8_billing_credittransaction WHERE transaction_type='deduction'"
            )
        ).scalar_one()
    unique = total - replays
    return {
        "calls": total,
        "seconds": round(elapsed, 3),
        "calls_per_s": round(total / elapsed, 1),
        "replays": replays,
        "deductions": charged,
        "double_charges": charged - unique,
        "reconcile_breaches": len(reconcile(engine)),
    }


def run_baseline(url: str, accounts: list[int], callers: int, calls: int) -> dict:
    """The same number of deductions as bare SQL: one UPDATE and two INSERTs, no checks."""
    engine = sa.create_engine(url, pool_size=callers, max_overflow=0)
    per_caller = calls // callers
    update = sa.text(
        "UPDATE igny8_accounts SET credits = credits - 1 WHERE id = :a RETURNING credits"
    )
    insert_tx = sa.text(
        "INSERT INTO igny8_billing_credittransaction (account_id, amount, balance_after, "
        "transaction_type, operation_type, description, idempotency_key, details, created_at) "
        "VALUES (:a, -1, :b, 'deduction', 'image_generation', '', :k, '{}', now()) RETURNING id"
    )
    insert_usage = sa.text(
        "INSERT INTO igny8_billing_creditusagelog (account_id, transaction_id, operation_type, "
        "credits_used, cost_usd, billed_usd, tokens_input, tokens_output, details, created_at) "
        "VALUES (:a, :t, 'image_generation', 1, 0, 0, 0, 0, '{}', now())"
    )

    def caller(c: int) -> None:
        account = accounts[c % len(accounts)]
        for i in range(per_caller):
            with engine.begin() as conn:
                bal = conn.execute(update, {"a": account}).scalar_one()
                tx = conn.execute(
                    insert_tx, {"a": account, "b": bal, "k": f"base:{c}:{i}"}
                ).scalar_one()
                conn.execute(insert_usage, {"a": account, "t": tx})

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        list(pool.map(caller, range(callers)))
    elapsed = time.perf_counter() - start
    engine.dispose()
    total = per_caller * callers
    return {"calls": total, "seconds": round(elapsed, 3), "calls_per_s": round(total / elapsed, 1)}


def scenario(admin_url: str, callers: int, calls: int, n_accounts: int) -> dict:
    url = create_pg_database(admin_url)
    try:
        engine = make_engine(url, pool_size=callers)
        accounts = [create_account(engine, f"bench-{i}", calls).id for i in range(n_accounts)]
        ledger = run_ledger(engine, accounts, callers, calls)
        engine.dispose()
    finally:
        drop_pg_database(admin_url, url)
    url = create_pg_database(admin_url)
    try:
        engine = make_engine(url, pool_size=4)
        accounts = [create_account(engine, f"base-{i}", calls).id for i in range(n_accounts)]
        engine.dispose()
        baseline = run_baseline(url, accounts, callers, calls)
    finally:
        drop_pg_database(admin_url, url)
    return {
        "accounts": n_accounts,
        "ledger": ledger,
        "baseline": baseline,
        "ratio_to_baseline": round(ledger["calls_per_s"] / baseline["calls_per_s"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10000, help="deduction calls in all")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers (threads)")
    parser.add_argument("--accounts", type=int, default=50, help="accounts the callers spread over")
    parser.add_argument("--pg", default=LOCAL_PG, help="PostgreSQL admin URL")
    args = parser.parse_args()

    results = {"workload": vars(args), "scenarios": []}
    for n_accounts in sorted({args.accounts, 1}, reverse=True):
        res = scenario(args.pg, args.callers, args.calls, n_accounts)
        results["scenarios"].append(res)
        led, base = res["ledger"], res["baseline"]
        print(
            f"{n_accounts:>3} account(s): ledger {led['calls_per_s']:>8.1f} deductions/s "
            f"(incl. {led['replays']} replays) | bare SQL {base['calls_per_s']:>8.1f}/s | "
            f"ratio {res['ratio_to_baseline']:.2f} | double charges {led['double_charges']} | "
            f"reconcile breaches {led['reconcile_breaches']}"
        )
    out = ROOT / "bench" / "results" / "ledger.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"goal: >= 1000 deductions/s; written {out.relative_to(ROOT)}")
    if any(
        s["ledger"]["double_charges"] or s["ledger"]["reconcile_breaches"]
        for s in results["scenarios"]
    ):
        sys.exit(1)


if __name__ == "__main__":
    main()
