//! The SQLite schema and connection settings.
//!
//! Runs and cells are keyed by their content ids and shared between sweeps (`sweep_runs`,
//! `sweep_cells`), so two sweeps that contain the same experiment train it once. Every state
//! transition is atomic (a savepoint of a group commit, see `writer`) and acknowledged only once
//! committed: nothing the coordinator acknowledged lives only in memory.

use rusqlite::Connection;

/// Bumped whenever the schema changes; an older state directory is refused with a clear error.
pub const SCHEMA_VERSION: i64 = 6;

/// Statements that bring a state directory of version N−1 to version N.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (2, "ALTER TABLE runs ADD COLUMN warnings TEXT"),
    (3, "ALTER TABLE workers ADD COLUMN cert_sha256 TEXT"),
    (
        4,
        "ALTER TABLE runs ADD COLUMN expiries INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE runs ADD COLUMN budget_since INTEGER NOT NULL DEFAULT 0;",
    ),
    (
        5,
        "CREATE TABLE IF NOT EXISTS cell_chunks (
             cell_id TEXT NOT NULL, start INTEGER NOT NULL, images INTEGER NOT NULL,
             attempt INTEGER NOT NULL, chunk_json TEXT NOT NULL, PRIMARY KEY (cell_id, start));",
    ),
    // Cells carry their own defense name and inference defense (noise, denoiser), which runs
    // held before: copy each run's onto its cells, so a pending cell of an old noise or
    // denoiser run is still evaluated with it.
    (
        6,
        "UPDATE cells SET spec_json = json_set(spec_json, '$.defense_name',
             (SELECT r.defense_name FROM runs r WHERE r.run_id = cells.run_id))
         WHERE json_extract(spec_json, '$.defense_name') IS NULL;
         UPDATE cells SET spec_json = json_set(spec_json, '$.inference', json_object(
             'inference_noise', (SELECT json_extract(r.spec_json, '$.defense.inference_noise')
                                 FROM runs r WHERE r.run_id = cells.run_id),
             'denoiser', (SELECT json(json_extract(r.spec_json, '$.defense.denoiser'))
                          FROM runs r WHERE r.run_id = cells.run_id)))
         WHERE EXISTS (SELECT 1 FROM runs r WHERE r.run_id = cells.run_id
             AND (json_extract(r.spec_json, '$.defense.inference_noise') IS NOT NULL
                  OR json_extract(r.spec_json, '$.defense.denoiser') IS NOT NULL));",
    ),
];

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    sweep_toml   TEXT NOT NULL,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL
);

-- state: pending | leased | done | failed | cancelled
CREATE TABLE IF NOT EXISTS runs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           TEXT NOT NULL UNIQUE,
    spec_json        TEXT NOT NULL,
    model            TEXT NOT NULL,
    defense_name     TEXT NOT NULL,
    defense_epsilon  REAL,
    seed             INTEGER NOT NULL,
    state            TEXT NOT NULL,
    -- Monotonic lease counter used for fencing; never reset.
    attempt          INTEGER NOT NULL DEFAULT 0,
    -- Failed attempts (reported errors) since the last submit/retry, counted against
    -- max_attempts.
    failures         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_id         TEXT,
    worker_id        TEXT,
    lease_expires_ms INTEGER,
    not_before_ms    INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    updated_ms       INTEGER NOT NULL,
    -- JSON list of sanity warnings computed from the run's results when it completes.
    warnings         TEXT,
    -- Expired leases (lost workers) since the last submit/retry: a budget of their own.
    expiries         INTEGER NOT NULL DEFAULT 0,
    -- The attempt counter when the budgets were last reset (submit/retry): attempts after it
    -- count towards them.
    budget_since     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, seq);
-- Lease expiry is checked on every lease and heartbeat: a seek on (state, expiry), not a scan
-- of the leased runs (the planner prefers runs_by_state over a partial index here, which an
-- earlier build created: dropped).
DROP INDEX IF EXISTS runs_lease_expiry;
CREATE INDEX IF NOT EXISTS runs_by_lease_expiry ON runs (state, lease_expires_ms);

-- state: pending | done | failed | cancelled ("running" = pending cell of a leased run)
CREATE TABLE IF NOT EXISTS cells (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_id      TEXT NOT NULL UNIQUE,
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    attack_name  TEXT NOT NULL,
    spec_json    TEXT NOT NULL,
    epsilon      REAL NOT NULL,
    state        TEXT NOT NULL,
    result_json  TEXT,
    attempt      INTEGER,
    error        TEXT,
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_by_run ON cells (run_id, state);

CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep_id TEXT NOT NULL REFERENCES sweeps (sweep_id),
    run_id   TEXT NOT NULL REFERENCES runs (run_id),
    PRIMARY KEY (sweep_id, run_id)
);
CREATE INDEX IF NOT EXISTS sweep_runs_by_run ON sweep_runs (run_id);

CREATE TABLE IF NOT EXISTS sweep_cells (
    sweep_id TEXT NOT NULL REFERENCES sweeps (sweep_id),
    cell_id  TEXT NOT NULL REFERENCES cells (cell_id),
    ord      INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, cell_id)
);
CREATE INDEX IF NOT EXISTS sweep_cells_by_cell ON sweep_cells (cell_id);

-- The latest attempt's metrics for each epoch of a run. SQLite stores NaN as NULL, so metric
-- columns are nullable and NULL reads back as NaN (a diverged loss is data, not an error).
CREATE TABLE IF NOT EXISTS epochs (
    run_id            TEXT NOT NULL REFERENCES runs (run_id),
    epoch             INTEGER NOT NULL,
    attempt           INTEGER NOT NULL,
    train_loss        REAL,
    train_accuracy    REAL,
    test_accuracy     REAL,
    seconds           REAL,
    images_per_second REAL,
    PRIMARY KEY (run_id, epoch)
);

CREATE TABLE IF NOT EXISTS workers (
    worker_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    device        TEXT NOT NULL,
    slots         INTEGER NOT NULL,
    version       TEXT NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    -- SHA-256 (hex) of the client certificate the worker registered with (mutual TLS); its
    -- lease-quoting calls must present the same one.
    cert_sha256   TEXT
);

-- Checkpoints stored through the coordinator (files under <state>/artifacts/<run_id>/).
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_id TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs (run_id),
    attempt       INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    path          TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_by_run ON checkpoints (run_id, epoch);

-- The finished parts of unfinished cells (long evaluations resume after the last one);
-- removed when the cell's result is stored.
CREATE TABLE IF NOT EXISTS cell_chunks (
    cell_id    TEXT NOT NULL,
    start      INTEGER NOT NULL,
    images     INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    chunk_json TEXT NOT NULL,
    PRIMARY KEY (cell_id, start)
);

-- Every attempt's end, for `status` and post-mortems.
CREATE TABLE IF NOT EXISTS attempts (
    run_id     TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    worker_id  TEXT,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    ended_ms   INTEGER NOT NULL,
    PRIMARY KEY (run_id, attempt)
);
"#;

/// WAL for concurrent readers; `synchronous = FULL` so an acknowledged result survives even a
/// power cut, not only a killed process.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// The single writing connection: every hot statement stays prepared, and a page cache large
/// enough for the indices of a 100k-cell sweep.
pub fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(128);
    conn.pragma_update(None, "cache_size", -32_768)?; // KiB
    Ok(())
}

/// A read connection of the pool: WAL readers never block the writer (nor it them).
pub fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    configure(conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "query_only", true)?;
    Ok(())
}
