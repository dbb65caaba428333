"""Input (and output) history kept in SQLite, one session per kernel start.

Answers the three ``history_request`` access types of the messaging spec:
``tail``, ``range`` and ``search``. The schema and the meaning of session
numbers (0 or negative: relative to the current session) follow IPython's
history manager, so users' habits carry over; sqlite3 is the standard
library's, and a write per cell is far below the cost of running it.
"""

import datetime
import os
import sqlite3

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Unicode, default
from traitlets.config import LoggingConfigurable

__all__ = ["HistoryManager"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (session INTEGER PRIMARY KEY AUTOINCREMENT, start TEXT);
CREATE TABLE IF NOT EXISTS history (session INTEGER, line INTEGER, source TEXT,
    PRIMARY KEY (session, line));
CREATE TABLE IF NOT EXISTS output_history (session INTEGER, line INTEGER, output TEXT,
    PRIMARY KEY (session, line));
"""


class HistoryManager(LoggingConfigurable):
    """The history database of one kernel."""

    enabled = Bool(True, help="Keep history in a file; when False it lives in memory only.").tag(config=True)
    hist_file = Unicode(help="Path of the SQLite history file (default: JUPYTER_DATA_DIR/gkernel/history.sqlite).").tag(config=True)

    @default("hist_file")
    def _default_hist_file(self):
        return os.path.join(jupyter_data_dir(), "gkernel", "history.sqlite")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        path = self.hist_file if self.enabled else ":memory:"
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            self.log.warning("history file %s unusable (%s); keeping history in memory", path, exc)
            self._db = self._open(":memory:")
        now = datetime.datetime.now().isoformat()
        self.session = self._db.execute("INSERT INTO sessions (start) VALUES (?)", (now,)).lastrowid

    @staticmethod
    def _open(path):
        db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        # WAL without a sync per commit: storing a cell costs microseconds, not
        # an fsync; a kernel crash loses nothing, a power loss the last cells.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db

    def store_input(self, line, source):
        self._db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?)", (self.session, line, source))

    def store_output(self, line, text):
        self._db.execute("INSERT OR REPLACE INTO output_history VALUES (?, ?, ?)", (self.session, line, text))

    def _select(self, where="", params=(), order="ASC", limit=None, output=False):
        # Entries come in the order they were stored (rowid), which is what
        # "the last n cells" means when several kernels share the file.
        sql = "SELECT h.session, h.line, h.source"
        if output:
            sql += ", o.output"
        sql += " FROM history h"
        if output:
            sql += " LEFT JOIN output_history o ON o.session = h.session AND o.line = h.line"
        sql += f" {where} ORDER BY h.rowid {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, limit)
        rows = self._db.execute(sql, params).fetchall()
        if order == "DESC":
            rows.reverse()
        if output:
            return [(s, n, (src, out)) for s, n, src, out in rows]
        return rows

    def tail(self, n=10, output=False):
        """The last *n* entries stored, over all sessions, oldest first."""
        return self._select(order="DESC", limit=max(0, int(n)), output=output)

    def range(self, session=0, start=1, stop=None, output=False):
        """Lines ``start <= line < stop`` of one session (0 or negative: relative)."""
        if session <= 0:
            session += self.session
        where, params = "WHERE h.session = ? AND h.line >= ?", (session, start)
        if stop:
            where += " AND h.line < ?"
            params = (*params, stop)
        return self._select(where, params, output=output)

    def search(self, pattern="*", n=None, unique=False, output=False):
        """Entries whose source matches the glob *pattern*; the last *n* when given."""
        where = "WHERE h.source GLOB ?"
        if unique:
            # keep only the latest occurrence of each source text
            where += (" AND NOT EXISTS (SELECT 1 FROM history l WHERE l.source = h.source"
                      " AND (l.session > h.session OR (l.session = h.session AND l.line > h.line)))")
        if n:
            return self._select(where, (pattern,), order="DESC", limit=n, output=output)
        return self._select(where, (pattern,), output=output)

    def close(self):
        self._db.close()
