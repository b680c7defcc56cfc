//! The PostgreSQL schema and its migrations, applied in order at start under an advisory lock.
//!
//! What lists filter or sort by, and what the compare-and-swaps lock, are columns with the
//! indexes of `query.rs`'s partitions (a project's, a visibility's, everything, each in
//! `(created_at, id)` order); the rest of a record is its serde JSON in a `json` column
//! (the exact text, so a task's `input` comes back as the client sent it). Text columns use
//! the `C` collation: byte order, as RocksDB's keys and Rust's `str::cmp`.

use tokio_postgres::Client;

use super::{pg_error, MetaError};

/// `pg_advisory_xact_lock` key serialising migrations across nodes starting together
/// (`b"sluicemg"` as a big-endian integer: unlikely to meet another application's key).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_6d67;

/// The migrations; `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`. Never edit
/// one that has shipped: append. 2: leases (`lease_until`, set only while a task is
/// `processing` with a lease; the pending tasks' index the claim reads). 3: claims across
/// nodes (`pinned_node`; per project, the pending tasks by age and the processing ones, the
/// two indexes the claim's choice reads). 4: writer leases of images (`writer_until`, set
/// only while an image is `saving` or `uploading` under a writer lease, and its index: the
/// sweep's read of the expired ones). 5: a project's images being written (the count of
/// `image_count_uploading` across nodes). 6: where complete stages are (`staged_on`, set only
/// while an image is `uploading` with its stage done, and its indexes: by node for the
/// sweep's read of the stages of dead nodes, by owner for `image_stage_total` across nodes)
/// and the nodes' heartbeats (`nodes`).
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    id text COLLATE "C" PRIMARY KEY,
    owner text COLLATE "C" NOT NULL,
    status text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    image_id text COLLATE "C",
    summary jsonb NOT NULL,
    record json NOT NULL
);
CREATE INDEX tasks_by_creation ON tasks (created_at, id);
CREATE INDEX tasks_by_owner ON tasks (owner, created_at, id);
CREATE INDEX tasks_by_expiry ON tasks (expires_at, id) WHERE expires_at IS NOT NULL;
CREATE INDEX tasks_unfinished ON tasks (created_at, id)
    WHERE status IN ('pending', 'processing');
CREATE INDEX tasks_by_image ON tasks (image_id, created_at, id) WHERE image_id IS NOT NULL;
CREATE TABLE images (
    id text COLLATE "C" PRIMARY KEY,
    owner text COLLATE "C" NOT NULL,
    visibility text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    record json NOT NULL
);
CREATE INDEX images_by_creation ON images (created_at, id);
CREATE INDEX images_by_owner ON images (owner, created_at, id);
CREATE INDEX images_by_visibility ON images (visibility, created_at, id);
CREATE TABLE members (
    image_id text COLLATE "C" NOT NULL,
    member_id text COLLATE "C" NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (image_id, member_id)
);
CREATE INDEX members_by_member ON members (member_id, image_id);
"#,
    r#"
ALTER TABLE tasks ADD COLUMN lease_until bigint;
CREATE INDEX tasks_by_lease ON tasks (lease_until, id)
    WHERE status = 'processing' AND lease_until IS NOT NULL;
CREATE INDEX tasks_pending ON tasks (created_at, id) WHERE status = 'pending';
"#,
    r#"
ALTER TABLE tasks ADD COLUMN pinned_node text COLLATE "C";
CREATE INDEX tasks_pending_by_owner ON tasks (owner, created_at, id) WHERE status = 'pending';
CREATE INDEX tasks_processing_by_owner ON tasks (owner) WHERE status = 'processing';
"#,
    r#"
ALTER TABLE images ADD COLUMN writer_until bigint;
CREATE INDEX images_by_writer ON images (writer_until, id) WHERE writer_until IS NOT NULL;
"#,
    r#"
CREATE INDEX images_writing_by_owner ON images (owner) WHERE writer_until IS NOT NULL;
"#,
    r#"
ALTER TABLE images ADD COLUMN staged_on text COLLATE "C";
CREATE INDEX images_by_stage_node ON images (staged_on, id) WHERE staged_on IS NOT NULL;
CREATE INDEX images_staged_by_owner ON images (owner) WHERE staged_on IS NOT NULL;
CREATE TABLE nodes (
    id text COLLATE "C" PRIMARY KEY,
    alive_until bigint NOT NULL
);
"#,
    r#"
CREATE TABLE deployment (id text COLLATE "C" NOT NULL);
INSERT INTO deployment SELECT gen_random_uuid()::text;
"#,
];

/// Brings the database's schema to the latest version: in one transaction holding
/// [`MIGRATION_LOCK`], so that of several nodes starting together one migrates and the others
/// then find the schema current. Idempotent.
///
/// # Errors
/// [`MetaError::Backend`] when the database refuses, or holds a schema newer than this build.
pub(super) async fn migrate(client: &mut Client) -> Result<(), MetaError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("starting the migration", &e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg_error("taking the migration lock", &e))?;
    // `IF NOT EXISTS` on an existing table is a NOTICE every start would log.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
         INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
    )
    .await
    .map_err(|e| pg_error("creating schema_version", &e))?;
    let row = tx
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .map_err(|e| pg_error("reading schema_version", &e))?;
    let current: i32 = row.get(0);
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(MetaError::Backend(format!(
            "the database's schema is version {current}, newer than this Sluice's ({}): \
             upgrade Sluice",
            MIGRATIONS.len()
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg_error(&format!("applying migration {}", n.saturating_add(1)), &e))?;
        tracing::info!(version = n.saturating_add(1), "metadata schema migrated");
    }
    let latest = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    tx.execute("UPDATE schema_version SET version = $1", &[&latest])
        .await
        .map_err(|e| pg_error("writing schema_version", &e))?;
    tx.commit()
        .await
        .map_err(|e| pg_error("committing the migration", &e))
}

/// The database's deployment id: a random UUID the migration to version 7 drew once, the
/// same for every node of the database and different for every other database.
///
/// # Errors
/// [`MetaError::Backend`] when it cannot be read.
pub(super) async fn deployment(client: &Client) -> Result<String, MetaError> {
    let row = client
        .query_one("SELECT id FROM deployment", &[])
        .await
        .map_err(|e| pg_error("reading the deployment id", &e))?;
    Ok(row.get(0))
}
