#!/usr/bin/env python3
"""The flights example's analytics step: waits until the `flights` table covers the
whole topic, then asks DuckDB (through its Iceberg extension) for the flights and the
mean departure delay per carrier, straight from the table in the object store.

    analytics.py ADMIN_HOST:PORT TABLE_DIR [--topic flights]
"""
import argparse
import glob
import importlib
import json
import os
import sys
import time
import urllib.request


def lags(admin, topic):
    with urllib.request.urlopen(f"http://{admin}/tables/lag", timeout=5) as response:
        return [lag for lag in json.load(response) if lag["topic"] == topic]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("admin")
    parser.add_argument("table_dir")
    parser.add_argument("--topic", default="flights")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout-secs", type=int, default=600)
    args = parser.parse_args()

    started = time.time()
    while True:
        current = lags(args.admin, args.topic)
        if len(current) == args.partitions and all(lag["lag_offsets"] == 0 for lag in current):
            break
        if time.time() - started > args.timeout_secs:
            sys.exit(f"the table did not catch up within {args.timeout_secs} s: {current}")
        time.sleep(1)
    exported = sum(lag["exported_offset"] for lag in current)
    print(f"analytics: the table covers all {exported} offsets "
          f"({time.time() - started:.1f} s after the replay)")

    import duckdb
    con = duckdb.connect()
    # The extensions come from PyPI (duckdb-extension-avro, -iceberg): no download.
    for name in ["avro", "iceberg"]:
        module = importlib.import_module(f"duckdb_extension_{name}")
        pattern = os.path.join(os.path.dirname(module.__file__), "extensions", "*", f"{name}.duckdb_extension")
        con.execute(f"LOAD '{glob.glob(pattern)[0]}'")
    query = (
        "SELECT carrier, count(*) AS flights, round(avg(dep_delay), 2) AS avg_dep_delay_min "
        f"FROM iceberg_scan('{args.table_dir}') GROUP BY carrier ORDER BY flights DESC"
    )
    print(f"analytics: {query}")
    con.sql(query).show(max_rows=20)


if __name__ == "__main__":
    main()
