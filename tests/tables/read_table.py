#!/usr/bin/env python3
"""Reads a Silt topic table with readers that know nothing of Silt, and prints one
JSON object of what each saw, for the Rust tests to compare with the log.

    read_table.py TABLE_URI [--s3-endpoint URL --s3-access-key-id K --s3-secret-access-key S]
                  [--carriers] [--flights-csv PATH]

TABLE_URI is the table's location (file:///dir/tables/topic or s3://bucket/.../topic).

Printed keys:
  version             N of metadata/version-hint.text
  summary             the current snapshot's summary properties
  pyiceberg           per partition: rows, distinct offsets, min and max offset, plus
                      the rows (partition, offset, key hex, value hex, headers, raw
                      value hex, error) when --rows is given
  duckdb_parquet      per partition counts from read_parquet over data/ (local tables)
  duckdb_iceberg      per partition counts from DuckDB's iceberg extension (local tables)
  polars              row count from polars.scan_iceberg
  pyiceberg_sql       per partition counts through a SQL catalog (SQLite) the table is
                      registered in
  pyarrow             row count of pyarrow.dataset over data/ (local tables)
  datafusion          per partition counts from DataFusion SQL over the current
                      snapshot's data files (local tables; the list comes from the
                      table's manifests, so files merged away are not read)
  carriers.*          with --carriers: carrier -> [count, avg(dep_delay)] from DuckDB,
                      pyiceberg+pyarrow, and from the CSV (--flights-csv)
"""
import argparse
import csv
import glob
import importlib
import io
import json
import os
import sys
import zipfile


def load_duckdb_iceberg(con):
    # The extensions come from PyPI (duckdb-extension-avro, -iceberg): no download.
    for name in ["avro", "iceberg"]:
        module = importlib.import_module(f"duckdb_extension_{name}")
        pattern = os.path.join(os.path.dirname(module.__file__), "extensions", "*", f"{name}.duckdb_extension")
        con.execute(f"LOAD '{glob.glob(pattern)[0]}'")


def datafusion_counts(table):
    """DataFusion SQL over exactly the current snapshot's data files (linked into a
    directory of their own: DataFusion reads Parquet files, not Iceberg manifests)."""
    import tempfile
    import datafusion
    files = [task.file.file_path for task in table.scan().plan_files()]
    with tempfile.TemporaryDirectory() as linked:
        for index, location in enumerate(files):
            os.symlink(location[len("file://"):], os.path.join(linked, f"{index:06}.parquet"))
        ctx = datafusion.SessionContext()
        ctx.register_parquet("t", linked, file_extension=".parquet")
        rows = ctx.sql(
            'select "partition", count(*), count(distinct "offset"), min("offset"), max("offset") '
            'from t group by 1 order by 1'
        ).to_pylist()
    return per_partition([tuple(row.values()) for row in rows])


def per_partition(rows):
    out = {}
    for partition, count, distinct, low, high in rows:
        out[str(partition)] = {"rows": count, "distinct_offsets": distinct, "min": low, "max": high}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("table")
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--s3-access-key-id")
    parser.add_argument("--s3-secret-access-key")
    parser.add_argument("--rows", action="store_true")
    parser.add_argument("--carriers", action="store_true")
    parser.add_argument("--flights-csv")
    args = parser.parse_args()

    import duckdb
    import polars
    import pyarrow.compute as pc
    from pyiceberg.table import StaticTable

    properties = {}
    if args.s3_endpoint:
        properties = {
            "s3.endpoint": args.s3_endpoint,
            "s3.access-key-id": args.s3_access_key_id,
            "s3.secret-access-key": args.s3_secret_access_key,
            "s3.region": "us-east-1",
            "s3.force-virtual-addressing": "false",
        }
    table_uri = args.table.rstrip("/")
    # Old metadata files are deleted by maintenance: only the hint names a file that exists.
    from pyiceberg.io import load_file_io
    file_io = load_file_io(properties, f"{table_uri}/metadata/version-hint.text")
    hint = file_io.new_input(f"{table_uri}/metadata/version-hint.text").open().read().decode().strip()
    table = StaticTable.from_metadata(f"{table_uri}/metadata/v{hint}.metadata.json", properties=properties)
    result = {"version": int(hint), "summary": {}}
    snapshot = table.current_snapshot()
    if snapshot is not None:
        result["summary"] = {k: v for k, v in snapshot.summary.additional_properties.items()}
    arrow = table.scan().to_arrow()
    con = duckdb.connect()
    con.register("scanned", arrow)
    result["pyiceberg"] = per_partition(
        con.execute(
            'select partition, count(*), count(distinct "offset"), min("offset"), max("offset") '
            "from scanned group by 1 order by 1"
        ).fetchall()
    )
    if args.rows:
        names = arrow.schema.names
        rows = []
        for row in arrow.sort_by([("partition", "ascending"), ("offset", "ascending")]).to_pylist():
            rows.append({
                "partition": row["partition"],
                "offset": row["offset"],
                "timestamp_ms": int(row["timestamp"].timestamp() * 1000 + 0.5),
                "key": None if row["key"] is None else row["key"].hex(),
                "value": None if row.get("value") is None else row["value"].hex(),
                "headers": [[h["key"], None if h["value"] is None else h["value"].hex()] for h in (row["headers"] or [])],
                "raw_value": None if row.get("_raw_value") is None else row["_raw_value"].hex(),
                "error": row.get("_error"),
                "columns": {n: row[n] for n in names if n not in (
                    "partition", "offset", "timestamp", "timestamp_type", "key", "headers", "value", "_raw_value", "_error")},
            })
        result["rows"] = rows
    result["polars"] = polars.scan_iceberg(table).select(polars.len()).collect().item()
    # A SQL catalog (SQLite here) with the table registered by its metadata file.
    import tempfile
    from pyiceberg.catalog.sql import SqlCatalog
    with tempfile.TemporaryDirectory() as catalog_dir:
        catalog = SqlCatalog(
            "silt",
            uri=f"sqlite:///{catalog_dir}/catalog.db",
            warehouse=f"file://{catalog_dir}",
            **properties,
        )
        catalog.create_namespace("silt")
        registered = catalog.register_table(("silt", "topic"), table.metadata_location)
        con.register("registered", registered.scan().to_arrow())
        result["pyiceberg_sql"] = per_partition(
            con.execute(
                'select partition, count(*), count(distinct "offset"), min("offset"), max("offset") '
                "from registered group by 1 order by 1"
            ).fetchall()
        )
    if table_uri.startswith("file://"):
        path = table_uri[len("file://"):]
        # The directory readers see every file under data/, also one a maintenance run
        # is writing or deleting right now: what fails is reported, not raised, and
        # only the tests that check these readers (no maintenance running) mind.
        try:
            result["duckdb_parquet"] = per_partition(
                con.execute(
                    'select partition, count(*), count(distinct "offset"), min("offset"), max("offset") '
                    f"from read_parquet('{path}/data/**/*.parquet') group by 1 order by 1"
                ).fetchall()
            )
        except Exception as error:
            result["duckdb_parquet"] = {"error": str(error)}
        import pyarrow.dataset
        try:
            files = sorted(glob.glob(f"{path}/data/**/*.parquet", recursive=True))
            result["pyarrow"] = pyarrow.dataset.dataset(files, format="parquet").count_rows()
        except Exception as error:
            result["pyarrow"] = {"error": str(error)}
        result["datafusion"] = datafusion_counts(table)
        load_duckdb_iceberg(con)
        result["duckdb_iceberg"] = per_partition(
            con.execute(
                'select partition, count(*), count(distinct "offset"), min("offset"), max("offset") '
                f"from iceberg_scan('{path}') group by 1 order by 1"
            ).fetchall()
        )
        if args.carriers:
            result["carriers_duckdb"] = {
                carrier: [count, avg]
                for carrier, count, avg in con.execute(
                    "select carrier, count(*), avg(dep_delay) "
                    f"from iceberg_scan('{path}') group by carrier order by carrier"
                ).fetchall()
            }
    if args.carriers:
        grouped = arrow.group_by("carrier").aggregate([("carrier", "count"), ("dep_delay", "mean")])
        result["carriers_pyiceberg"] = {
            row["carrier"]: [row["carrier_count"], row["dep_delay_mean"]] for row in grouped.to_pylist()
        }
    if args.flights_csv:
        sums = {}
        with zipfile.ZipFile(args.flights_csv) as archive:
            name = [n for n in archive.namelist() if n.endswith(".csv")][0]
            with archive.open(name) as raw:
                for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
                    entry = sums.setdefault(row["carrier"], [0, 0.0, 0])
                    entry[0] += 1
                    if row["dep_delay"] not in ("", "NA"):
                        entry[1] += float(row["dep_delay"])
                        entry[2] += 1
        result["carriers_csv"] = {
            carrier: [count, (total / known) if known else None] for carrier, (count, total, known) in sums.items()
        }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
