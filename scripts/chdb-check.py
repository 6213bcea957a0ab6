#!/usr/bin/env python3
"""Runs the collector's real SQL on chDB (a modern ClickHouse engine from PyPI).

The statements come from the Rust code (`collector/tests/chdb.rs` writes them): the schema as a
modern server gets it, sample inserts of the real row types, the finalizer's statements for one
span, and every query shape of the read API. Each must run; the queries' answers must be
non-empty where the test says so. Usage: chdb-check.py STATEMENTS.json
"""
import json
import sys
import tempfile

from chdb import session


def main(path):
    with open(path) as f:
        statements = json.load(f)
    s = session.Session(tempfile.mkdtemp(prefix="pulse-chdb-"))
    version = str(s.query("SELECT version()", "CSV")).strip().strip('"')
    s.query("CREATE DATABASE IF NOT EXISTS pulse")
    s.query("USE pulse")
    counts = {}
    for i, st in enumerate(statements):
        try:
            result = s.query(st["sql"], "JSONCompact" if st["kind"] == "query" else "CSV")
        except Exception as e:  # the engine's message names what it refused
            print(f"chdb {version}: statement {i} ({st['kind']}: {st['label']}) failed:\n{st['sql']}\n\n{e}", file=sys.stderr)
            return 1
        counts[st["kind"]] = counts.get(st["kind"], 0) + 1
        if st["kind"] == "query":
            rows = json.loads(str(result) or '{"data": []}')["data"]
            if st.get("rows") == "some" and not rows:
                print(f"chdb {version}: query {st['label']} answered no rows:\n{st['sql']}", file=sys.stderr)
                return 1
            print(f"  {st['label']}: {len(rows)} rows")
    print(f"chdb {version}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + " ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
