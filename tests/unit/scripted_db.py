"""A scripted PostgreSQL connection for unit tests of code that runs SQL through ``postgres.query_*``.

``ScriptedConnection([(needle, rows_or_exception), ...])``: the first needle found in a statement answers it with
``rows`` (a list of dicts, columns sorted by name) or raises the exception; any other statement fails the test.
Executed statements are kept in ``queries``.
"""


class PermissionDenied(Exception):
    sqlstate = "42501"


class ScriptedCursor:
    def __init__(self, conn):
        self.conn = conn
        self.description = None
        self.rows = []
        self.rowcount = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.conn.queries.append(sql)
        for needle, answer in self.conn.script:
            if needle in sql:
                if isinstance(answer, Exception):
                    raise answer
                rows = answer
                break
        else:
            raise AssertionError("unexpected query: %s" % sql)
        columns = sorted({key for row in rows for key in row}) or ["x"]
        self.description = [(c,) for c in columns]
        self.rows = [tuple(row.get(c) for c in columns) for row in rows]

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


class ScriptedConnection:
    def __init__(self, script):
        self.script = script
        self.queries = []
        self.closed = False

    def cursor(self):
        return ScriptedCursor(self)

    def close(self):
        self.closed = True
