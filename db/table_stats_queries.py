"""The hot tables' statistics and their upkeep, as SQL (outbox/maintenance/analyzer.py,
`outbox status`).

The claim's plan depends on the planner's statistics of the queue tables,
and its cost on their dead rows. Autovacuum keeps both, when it runs: some
servers run with `autovacuum = off` (these machines do, and so do some
managed and hand-tuned ones), and then nobody does unless we do.
"""

from __future__ import annotations

# The tables every send writes (claim, completion): the ones whose
# statistics go stale and whose dead rows pile up under load.
HOT_TABLES = ("outbox_messages", "messages", "chats")

# Each hot table's change counts since its last ANALYZE and VACUUM, and
# whether autovacuum looks after it (the server's setting, its counters and
# the table's own reloption). `owned`: only a table's owner (or a superuser)
# may VACUUM or ANALYZE it; others get a WARNING and nothing done.
TABLE_HEALTH = """
SELECT c.relname AS table_name,
       coalesce(s.n_live_tup, 0) AS live_rows,
       coalesce(s.n_dead_tup, 0) AS dead_rows,
       coalesce(s.n_mod_since_analyze, 0) AS changes_since_analyze,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyzed,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuumed,
       current_setting('autovacuum')::bool
           AND current_setting('track_counts')::bool
           AND NOT EXISTS (
               SELECT 1 FROM unnest(c.reloptions) AS opt
               WHERE lower(opt) IN ('autovacuum_enabled=false', 'autovacuum_enabled=off',
                                    'autovacuum_enabled=0', 'autovacuum_enabled=no',
                                    'autovacuum_enabled=f')
           ) AS autovacuum,
       current_setting('track_counts')::bool AS counted,
       pg_has_role(c.relowner, 'USAGE') AS owned,
       now() AS checked_at
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = :schema
  AND c.relname = ANY(CAST(:tables AS text[]))
  AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""

# SKIP_LOCKED: a table another process is vacuuming or analysing right now
# is skipped, not waited for (two daemons, or autovacuum, got there first).
ANALYZE = {t: f"ANALYZE (SKIP_LOCKED) outbox.{t}" for t in HOT_TABLES}

# VACUUM can't run in a transaction: these run on an autocommit connection.
VACUUM_ANALYZE = {t: f"VACUUM (ANALYZE, SKIP_LOCKED) outbox.{t}" for t in HOT_TABLES}
