#!/usr/bin/env python3
"""Replays on a current ClickHouse (chdb-core, in-process) every statement that statscache sent
to a ClickHouse 18.16 server, on the same data, and compares the answers.

statscache must run on Debian's ClickHouse 18.16 and on current releases. Rather than keeping a
list of queries, the statements are taken from the old server's system.query_log after a real
run (its server logs queries: `clickhouse-config.sh --log-queries`), so whatever SQL the
services send today is what gets checked:

1. capture: every statement that finished on 18.16 and came from statscache (its User-Agent
   starts with `--product`), with the settings it was sent with;
2. schema: the DDL statements, in the order they ran, executed on 26.x;
3. data: each table exported from 18.16 in RowBinary and loaded on 26.x through the INSERT
   statement the services sent for that table, its rows read from a file
   (`INSERT INTO t(cols) FROM INFILE … FORMAT RowBinary`). 18.16 logs an INSERT without the
   rows of its body, VALUES included, so every such INSERT is replayed this way; a second
   INSERT shape into the same table runs with no rows (its names are still checked);
4. reads: the first three statements of each shape (string and array literals and numbers of
   9 digits or more, i.e. times, are values; other numbers are part of the shape) run on both
   servers; the rows are compared as text, in order when the statement has a top-level ORDER
   BY and as a multiset otherwise, floats numerically. Statements whose answer depends on the
   server (system tables, the clock) run on 26.x too but are not compared; each is listed with
   the reason;
5. writes that read the data (INSERT … SELECT, OPTIMIZE, mutations) run last on 26.x, after the
   comparisons; the SELECT of an INSERT … SELECT is also compared as a read.

Exit status 1 names every statement that fails on 26.x or answers differently.

    clickhouse_compat.py --url http://127.0.0.1:8123 --database statscache --product statscache
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

# Settings a statement may carry that say nothing about its meaning: the server's profile, and
# the response format (each side here asks for TabSeparated).
PRESENTATION_SETTINGS = {"default_format", "readonly", "log_queries"}

DDL_KEYWORDS = {"CREATE", "DROP", "ALTER", "RENAME", "TRUNCATE", "ATTACH", "DETACH", "EXCHANGE"}
READ_KEYWORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}
# Statements about the server, not the data: listed, not replayed.
SERVER_KEYWORDS = {"SYSTEM", "SET", "USE", "KILL"}

# Statements of one shape that are run, with the values of their first instances.
INSTANCES_PER_SHAPE = 3

# Answers that legitimately differ between two servers holding the same rows.
SERVER_DEPENDENT = [
    (re.compile(r"\bsystem\s*\.", re.I), "reads system tables (parts, merges and settings are per server)"),
    (re.compile(r"\b(now|today|yesterday|rand\w*|generateUUIDv4|uptime|version)\s*\(", re.I),
     "depends on the clock or the server"),
]


class ServerError(Exception):
    pass


class OldServer:
    """ClickHouse 18.16 over HTTP."""

    def __init__(self, url, database):
        self.url = url.rstrip("/") + "/"
        self.database = database

    def request(self, sql, settings=None, database=True):
        params = dict(settings or {})
        if database:
            params["database"] = self.database
        url = self.url + "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=sql.encode()), timeout=120) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise ServerError(error.read().decode(errors="replace").strip()) from None

    def text(self, sql, settings=None, database=True):
        params = {"default_format": "TabSeparated", **(settings or {})}
        return self.request(sql, settings=params, database=database).decode()


STATE_FUNCTIONS = re.compile(r"\b(uniqExact)(Merge)?State\(")


def finalized_states(sql):
    """`sql` with each aggregate-state function replaced by the function giving its value."""
    return STATE_FUNCTIONS.sub(lambda match: match.group(1) + (match.group(2) or "") + "(", sql)


class NewServer:
    """The current ClickHouse, embedded (chdb-core)."""

    def __init__(self, path, timezone):
        # chdb, like clickhouse-local, reads a config.xml from the working directory (a
        # ClickHouse server's data directory has one): start it where there is none.
        os.chdir(path)
        import chdb.session

        self.session = chdb.session.Session(os.path.join(path, "data"))
        # DateTime text must read and print as on the old server.
        self.session.query(f"SET session_timezone = '{timezone}'")
        # Rows load as stored: current releases fold a Replacing/Aggregating table's duplicate
        # keys within an inserted block (18.16 never does), which would lose unmerged rollup rows.
        self.session.query("SET optimize_on_insert = 0")

    def execute(self, sql):
        try:
            return str(self.session.query(sql, "TabSeparated"))
        except Exception as error:  # chdb raises its own error types, all with the server's text
            raise ServerError(str(error).strip()) from None

    def version(self):
        return self.execute("SELECT version()").strip()


def first_keyword(sql):
    match = re.match(r"\s*(\w+)", strip_comments(sql))
    return match.group(1).upper() if match else ""


def strip_comments(sql):
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)


def top_level(sql):
    """The statement without its quoted text and without what is inside parentheses."""
    out = []
    depth = 0
    quote = None
    index = 0
    while index < len(sql):
        character = sql[index]
        if quote:
            if character == "\\":
                index += 2
                continue
            if character == quote:
                quote = None
            index += 1
            continue
        if character in "'`\"":
            quote = character
        elif character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif depth == 0:
            out.append(character)
            index += 1
            continue
        out.append(" ")
        index += 1
    return "".join(out)


def is_ordered(sql):
    return re.search(r"\bORDER\s+BY\b", top_level(sql), re.I) is not None


def shape(sql, settings):
    """What two statements share when they differ only in the values bound into them."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "?", sql)
    text = re.sub(r"\b\d{9,}(?:\.\d+)?\b", "?", text)
    text = re.sub(r"\[\s*(?:\?(?:\s*,\s*\?)*)?\s*\]", "[?]", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text, tuple(sorted(settings.items()))


def insert_parts(sql):
    """(table, column list, rest) of an INSERT statement, or None."""
    match = re.match(r"\s*INSERT\s+INTO\s+([\w.`\"]+)\s*(\(([^)]*)\))?\s*(.*)$", sql, re.I | re.S)
    if not match:
        return None
    table = match.group(1).replace("`", "").replace('"', "")
    return table, match.group(3), match.group(4).strip()


# The end of an INSERT whose rows came in the request body: `FORMAT RowBinary`, or `VALUES`
# (18.16 logs an INSERT without its rows, VALUES included).
BODY_ROWS = re.compile(r"\s*(FORMAT\s+\w+|VALUES)\s*$", re.I)


def rows_in_body(rest):
    return BODY_ROWS.fullmatch(rest) is not None


def server_dependence(sql):
    for pattern, reason in SERVER_DEPENDENT:
        if pattern.search(sql):
            return reason
    return None


def with_settings(sql, settings):
    if not settings:
        return sql
    listed = ", ".join(f"{name} = '{value}'" for name, value in settings.items())
    joiner = ", " if re.search(r"\bSETTINGS\b", top_level(sql), re.I) else " SETTINGS "
    return sql.rstrip().rstrip(";") + joiner + listed


def same_field(old, new):
    if old == new:
        return True
    try:
        old_number, new_number = float(old), float(new)
    except ValueError:
        return False
    if math.isnan(old_number) and math.isnan(new_number):
        return True
    return math.isclose(old_number, new_number, rel_tol=1e-9, abs_tol=1e-12)


def same_rows(old_text, new_text, ordered):
    old_rows = [line.split("\t") for line in old_text.splitlines()]
    new_rows = [line.split("\t") for line in new_text.splitlines()]
    if len(old_rows) != len(new_rows):
        return False
    if not ordered:
        old_rows.sort()
        new_rows.sort()
    for old_row, new_row in zip(old_rows, new_rows):
        if len(old_row) != len(new_row):
            return False
        if not all(same_field(a, b) for a, b in zip(old_row, new_row)):
            return False
    return True


def one_line(sql, limit=400):
    text = re.sub(r"\s+", " ", sql).strip()
    return text if len(text) <= limit else text[:limit] + "…"


def captured(old, product):
    """Every statement statscache ran to completion on the old server, in order, with the
    settings it was sent with."""
    old.request("SYSTEM FLUSH LOGS", database=False)
    profile = set(old.text("SELECT name FROM system.settings WHERE changed", database=False).split())
    ignored = profile | PRESENTATION_SETTINGS
    product_pattern = product.replace("\\", "\\\\").replace("'", "\\'").replace("%", "\\%") + "/%"
    # type 2: QueryFinish. Within one second the log does not keep the order: ddl_rank orders
    # the schema statements of a second (a database before its tables, a table before its ALTERs).
    rows = old.text(
        "SELECT toUInt32(event_time) AS second, query, Settings.Names AS names, "
        "Settings.Values AS values FROM system.query_log "
        f"WHERE type = 2 AND http_user_agent LIKE '{product_pattern}' ORDER BY event_time "
        "FORMAT JSONEachRow",
        database=False,
    )
    statements = []
    for line in rows.splitlines():
        row = json.loads(line)
        settings = {n: v for n, v in zip(row["names"], row["values"]) if n not in ignored}
        statements.append((int(row["second"]), row["query"], settings))
    return statements


def add_read(reads, sql, settings, origin):
    """Keeps the first few distinct instances of each shape (`/id` of a message found and of
    one not found are one shape)."""
    instances = reads.setdefault(shape(sql, settings), [])
    if len(instances) < INSTANCES_PER_SHAPE and all(sql != known for known, _, _ in instances):
        instances.append((sql, settings, origin))


def ddl_rank(sql):
    if re.match(r"\s*CREATE\s+DATABASE\b", sql, re.I):
        return 0
    if first_keyword(sql) == "DROP":
        return 1
    # A table is altered after it is created (a migration adding a column).
    if first_keyword(sql) == "ALTER":
        return 3
    return 2


def changes_data(sql):
    """An ALTER that changes rows (a mutation, a partition operation), not the schema."""
    return re.search(r"\b(DELETE|UPDATE|PARTITION)\b", top_level(sql), re.I) is not None


class Report:
    def __init__(self):
        self.failures = []

    def line(self, text=""):
        print(text, flush=True)

    def fail(self, what, sql, detail):
        self.failures.append(f"{what}: {one_line(sql)}\n    {one_line(detail, 1200)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the ClickHouse 18.16 HTTP address")
    parser.add_argument("--database", required=True)
    parser.add_argument("--product", required=True, help="User-Agent product of the services")
    args = parser.parse_args()
    started = time.time()
    old = OldServer(args.url, args.database)
    report = Report()

    statements = captured(old, args.product)
    if not statements:
        print("no statement from the services in system.query_log: is --log-queries on?")
        return 1
    ddl, data_inserts, reads, writes, server_statements = [], [], {}, [], []
    for event_time, sql, settings in statements:
        keyword = first_keyword(sql)
        if keyword in DDL_KEYWORDS and not (keyword == "ALTER" and changes_data(sql)):
            ddl.append((event_time, ddl_rank(sql), len(ddl), sql))
        elif keyword == "INSERT":
            parts = insert_parts(sql)
            if parts and rows_in_body(parts[2]):
                data_inserts.append(sql)
            else:
                writes.append(sql)
                select = parts and re.match(r"(SELECT|WITH)\b.*", parts[2], re.I | re.S)
                if select:
                    add_read(reads, select.group(0), settings, "INSERT … SELECT")
        elif keyword in READ_KEYWORDS:
            add_read(reads, sql, settings, None)
        elif keyword in SERVER_KEYWORDS:
            server_statements.append(sql)
        else:
            writes.append(sql)
    ddl.sort()

    timezone = old.text("SELECT timezone()").strip()
    old_version = old.text("SELECT version()").strip()
    with tempfile.TemporaryDirectory(prefix="clickhouse-compat-") as work:
        new = NewServer(work, timezone)
        report.line(f"ClickHouse {old_version} (server) against {new.version()} (chdb-core), "
                    f"{len(statements)} statements captured from {args.product}")

        # 2. The schema, as the services created it.
        report.line(f"\nschema: {len(ddl)} DDL statements")
        for _, _, _, sql in ddl:
            try:
                new.execute(sql)
            except ServerError as error:
                report.fail("DDL fails on the new server", sql, str(error))
            if re.match(r"\s*CREATE\s+DATABASE\b", sql, re.I):
                new.execute(f"USE {args.database}")
        for sql in dict.fromkeys(one_line(sql, 160) for _, _, _, sql in ddl):
            report.line(f"  {sql}")

        # 3. The data, through the services' own INSERT statements.
        tables = old.text(
            f"SELECT name, engine FROM system.tables WHERE database = '{args.database}' ORDER BY name",
            database=False,
        )
        shapes_by_table = {}
        for sql in dict.fromkeys(data_inserts):
            table, columns, _ = insert_parts(sql)
            shapes_by_table.setdefault(table, []).append((columns, sql))
        report.line(f"\ndata: {len(tables.splitlines())} tables")
        for line in tables.splitlines():
            table, engine = line.split("\t")
            if engine in ("View", "MaterializedView") or table.startswith(".inner."):
                report.line(f"  {table}: not loaded ({engine}: filled through its source)")
                continue
            inserts = shapes_by_table.get(table, [(None, f"INSERT INTO {table} FORMAT RowBinary")])
            for number, (columns, sql) in enumerate(inserts):
                selected = columns if columns else "*"
                rows = b""
                if number == 0:
                    rows = old.request(f"SELECT {selected} FROM {table} FORMAT RowBinary",
                                       settings={"max_threads": 1})
                path = os.path.join(work, f"{table}.{number}.bin")
                with open(path, "wb") as out:
                    out.write(rows)
                prefix = BODY_ROWS.sub("", sql)
                statement = f"{prefix} FROM INFILE '{path}' FORMAT RowBinary"
                try:
                    new.execute(statement)
                except ServerError as error:
                    report.fail("INSERT fails on the new server", sql, str(error))
            old_count = old.text(f"SELECT count() FROM {table}").strip()
            new_count = new.execute(f"SELECT count() FROM {table}").strip()
            origin = "the services' INSERT" if table in shapes_by_table else "all columns"
            report.line(f"  {table}: {old_count} rows on the old server, {new_count} loaded ({origin}, "
                        f"{len(inserts)} INSERT shape{'s' if len(inserts) > 1 else ''})")
            if old_count != new_count:
                report.fail("data did not load whole", f"SELECT count() FROM {table}",
                            f"{old_count} rows on the old server, {new_count} on the new")

        # 4. Every read, once per shape.
        instances = [instance for shaped in reads.values() for instance in shaped]
        report.line(f"\nreads: {len(reads)} shapes, {len(instances)} statements")
        compared = 0
        not_compared = []
        for sql, settings, origin in instances:
            label = f" (the SELECT of an {origin})" if origin else ""
            if origin:
                # The SELECT of a rollup's INSERT … SELECT may yield aggregate states: binary
                # whose bytes depend on hash-table order. Compare the values they hold; the
                # states themselves were loaded into the new server above and are merged by
                # the api's reads compared here.
                sql = finalized_states(sql)
            try:
                old_answer = old.text(sql, settings=settings)
            except ServerError as error:
                report.fail("fails on the old server when run again" + label, sql, str(error))
                continue
            try:
                new_answer = new.execute(with_settings(sql, settings))
            except ServerError as error:
                report.fail("fails on the new server" + label, sql, str(error))
                continue
            reason = server_dependence(sql)
            if reason:
                not_compared.append((sql, reason))
                continue
            compared += 1
            rows = len(old_answer.splitlines())
            report.line(f"  {rows:>4} rows{label}: {one_line(sql, 160)}")
            if not same_rows(old_answer, new_answer, is_ordered(sql)):
                report.fail("answers differently" + label, sql,
                            f"old server: {old_answer[:600]!r}\n    new server: {new_answer[:600]!r}")
        report.line(f"{compared} compared; {len(not_compared)} run on both but not compared:")
        for sql, reason in not_compared:
            report.line(f"  {reason}: {one_line(sql, 200)}")

        # 5. Writes carrying their own rows, after the comparisons.
        report.line(f"\nwrites run last: {len(dict.fromkeys(writes))}")
        for sql in dict.fromkeys(writes):
            report.line(f"  {one_line(sql, 200)}")
            try:
                new.execute(sql)
            except ServerError as error:
                report.fail("write fails on the new server", sql, str(error))
        for sql in dict.fromkeys(server_statements):
            report.line(f"  not replayed (about the server, not the data): {one_line(sql, 200)}")

    report.line(f"\n{len(report.failures)} incompatibilities ({time.time() - started:.1f} s)")
    for failure in report.failures:
        report.line(f"- {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
