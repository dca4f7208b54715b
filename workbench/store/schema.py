"""The store's schema as numbered migrations. Append a migration; never edit one that has shipped.

No PRIMARY KEY / UNIQUE constraints: the same statements must also run on DuckLake, which has none;
uniqueness (one run per key, one blob per hash) is kept by the writers inside their transaction.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        """CREATE TABLE runs (
            run_id VARCHAR NOT NULL,        -- unique per execution
            key VARCHAR NOT NULL,           -- sha256 of canonical spec + identities (the cache key)
            kind VARCHAR NOT NULL,          -- prune | train | bench
            name VARCHAR,                   -- user label
            model VARCHAR, data VARCHAR, method VARCHAR, pattern VARCHAR, allocation VARCHAR,
            target_sparsity DOUBLE,
            spec VARCHAR NOT NULL,          -- canonical JSON, defaults filled in
            identity VARCHAR,               -- JSON: model/data/method identities that entered the key
            status VARCHAR NOT NULL,        -- running | finished | failed
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            wall_s DOUBLE,
            code_version VARCHAR, host VARCHAR, pid INTEGER
        )""",
        "CREATE TABLE metrics (run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE, step INTEGER)",
        """CREATE TABLE layer_stats (
            run_id VARCHAR NOT NULL, layer VARCHAR NOT NULL, block INTEGER, shape VARCHAR, numel BIGINT,
            target_sparsity DOUBLE, achieved_sparsity DOUBLE, pattern VARCHAR, nm_valid BOOLEAN,
            recon_error DOUBLE, extra VARCHAR
        )""",
        """CREATE TABLE masks (
            run_id VARCHAR NOT NULL, layer VARCHAR NOT NULL, step INTEGER NOT NULL,
            hash VARCHAR NOT NULL, rows INTEGER, cols INTEGER, kept BIGINT
        )""",
        "CREATE TABLE mask_blobs (hash VARCHAR NOT NULL, encoding VARCHAR NOT NULL, data BLOB NOT NULL)",
        """CREATE TABLE divergence (
            run_a VARCHAR NOT NULL, run_b VARCHAR NOT NULL, step_a INTEGER, step_b INTEGER,
            layer VARCHAR NOT NULL, sad BIGINT, numel BIGINT, sad_fraction DOUBLE, iou DOUBLE
        )""",
        """CREATE TABLE kernel_results (
            run_id VARCHAR NOT NULL, case_id VARCHAR, backend VARCHAR, dtype VARCHAR,
            out_features INTEGER, in_features INTEGER, tokens INTEGER, pattern VARCHAR, sparsity DOUBLE,
            timing VARCHAR, median_us DOUBLE, q1_us DOUBLE, q3_us DOUBLE, min_us DOUBLE, reps INTEGER,
            tflops DOUBLE, gbps DOUBLE, bytes_moved BIGINT, roofline_us DOUBLE, roofline_fraction DOUBLE,
            speedup DOUBLE, rel_error DOUBLE, status VARCHAR, error VARCHAR, device VARCHAR,
            versions VARCHAR, extra VARCHAR
        )""",
    ]),
    (2, "kernel_results: phase, model latency and the pruning run whose masks were used", [
        # phase: kernel | prefill | decode | ceiling | setup (one-time costs: first call, conversion, search)
        "ALTER TABLE kernel_results ADD COLUMN phase VARCHAR",
        "ALTER TABLE kernel_results ADD COLUMN model VARCHAR",
        "ALTER TABLE kernel_results ADD COLUMN batch INTEGER",
        "ALTER TABLE kernel_results ADD COLUMN tokens_per_s DOUBLE",
        "ALTER TABLE kernel_results ADD COLUMN source_run VARCHAR",  # run_id of the pruning run (masks)
        "ALTER TABLE kernel_results ADD COLUMN best BOOLEAN",  # fastest backend of its case
    ]),
    (3, "claims: which worker runs a key, under a lease (workbench/store/claims.py)", [
        # one row per live claim; a worker renews expires_at while it runs and deletes the row when done
        """CREATE TABLE claims (
            key VARCHAR NOT NULL, claim_id VARCHAR NOT NULL,
            owner VARCHAR,                  -- the sweep (and job) that claimed it, to release on Ctrl-C
            host VARCHAR, machine VARCHAR,  -- machine: kernel boot + pid namespace (whose pids are comparable)
            pid INTEGER,
            claimed_at TIMESTAMP NOT NULL, renewed_at TIMESTAMP NOT NULL, expires_at TIMESTAMP NOT NULL
        )""",
        # one row, written by every claim transaction: concurrent claimers conflict on it (see claims.py)
        "CREATE TABLE claim_guard (epoch BIGINT NOT NULL)",
        "INSERT INTO claim_guard VALUES (0)",
    ]),
    (4, "runs.tags: the spec's tags; run_notes: the tags and note a user gives a run (workbench/store/notes.py)", [
        "ALTER TABLE runs ADD COLUMN tags VARCHAR",  # JSON list of the spec's tags, as the spec gave them
        # at most one row per run; the user's tags sit beside the spec's, which never change
        """CREATE TABLE run_notes (
            run_id VARCHAR NOT NULL,
            tags VARCHAR NOT NULL,          -- JSON list of the user's tags, in the order added
            note VARCHAR,
            updated_at TIMESTAMP NOT NULL
        )""",
    ]),
]

LATEST_VERSION = MIGRATIONS[-1][0]

# Tables that hang off a run, and the column that names it (deleted with the run it belongs to).
RUN_CHILD_TABLES = {"metrics": "run_id", "layer_stats": "run_id", "masks": "run_id", "kernel_results": "run_id",
                    "run_notes": "run_id"}
