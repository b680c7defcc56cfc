//! [`MetaStore`] in PostgreSQL, shared by any number of Sluice nodes: `tokio-postgres`
//! through a `deadpool-postgres` pool. The schema (`postgres/schema.rs`) is migrated at open.
//!
//! - Every write is one statement or one transaction, so a crash after `Ok` never loses it
//!   and never leaves half of [`MetaStore::commit_import`].
//! - The compare-and-swaps ([`MetaStore::transition_image`], [`MetaStore::transition_task`],
//!   [`MetaStore::commit_import`], [`MetaStore::transition_image_with_task`]) read with
//!   `SELECT … FOR UPDATE` in a transaction, run the check (and the caller's synchronous
//!   change) between the read and the write, and write in the same transaction: two nodes
//!   racing one id are serialised by the row lock, and the second sees the first's result.
//!   Locks are taken task first, then image, everywhere, so two such transactions cannot
//!   deadlock.
//! - Lists (`postgres/lists.rs`) read the partitions `query.rs` names, through the indexes,
//!   with a cursor: index order reads from the marker and stops at the page's end; other
//!   sorts read the partitions once, keeping the best `limit` rows. Filters are the caller's
//!   closures, applied as rows arrive.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{NoTls, Row};

use super::members::{AddMember, MemberRecord};
use super::writer;
use super::{
    check_task_move, index, lease, plan_transition, Decision, ImageQuery, ImageRecord, ImageStatus,
    MetaError, MetaStore, QueuedTasks, Step, TaskLease, TaskQuery, TaskRecord, TaskSummary,
    Timestamp, Transition,
};

mod leases;
mod lists;
mod schema;

/// Connections a node keeps to PostgreSQL when the configuration names no other number.
/// A metadata call holds a connection for one or two round trips (well under a millisecond
/// on a LAN), so 16 serve thousands of calls per second per node, while 16 × nodes stays
/// under PostgreSQL's default `max_connections` (100) for up to five nodes plus tools.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Metadata in a PostgreSQL database.
#[derive(Clone)]
pub struct PgMeta {
    pool: Pool,
    /// The database's deployment id ([`schema::deployment`]).
    deployment: String,
}

impl std::fmt::Debug for PgMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMeta")
            .field("pool", &self.pool.status())
            .field("deployment", &self.deployment)
            .finish()
    }
}

impl PgMeta {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with a pool of at most
    /// `pool_size` connections, and migrates the schema.
    ///
    /// # Errors
    /// [`MetaError::Backend`] for a URL that does not parse, a database that cannot be reached
    /// or refuses the migration.
    pub async fn open(url: &str, pool_size: usize) -> Result<Self, MetaError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| MetaError::Backend(format!("PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| MetaError::Backend(format!("PostgreSQL pool: {e}")))?;
        let mut client = connect(&pool).await?;
        schema::migrate(&mut client).await?;
        let deployment = schema::deployment(&client).await?;
        Ok(PgMeta { pool, deployment })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, MetaError> {
        connect(&self.pool).await
    }
}

/// One connection of `pool`.
async fn connect(pool: &Pool) -> Result<deadpool_postgres::Object, MetaError> {
    pool.get()
        .await
        .map_err(|e| MetaError::Backend(format!("connecting to PostgreSQL: {e}")))
}

/// Starts a transaction on `client`.
async fn begin<'c>(
    client: &'c mut deadpool_postgres::Object,
    what: &str,
) -> Result<Transaction<'c>, MetaError> {
    client
        .transaction()
        .await
        .map_err(|e| pg_error(&format!("starting {what}"), &e))
}

/// Commits `tx` once `out` is `Ok` (dropping it otherwise rolls back), and returns `out`.
async fn commit<T>(
    tx: Transaction<'_>,
    what: &str,
    out: Result<T, MetaError>,
) -> Result<T, MetaError> {
    let out = out?;
    tx.commit()
        .await
        .map_err(|e| pg_error(&format!("committing {what}"), &e))?;
    Ok(out)
}

/// A driver error as a [`MetaError`] naming what was being done; a full disk on the server
/// (SQLSTATE 53100) is [`MetaError::StorageFull`].
pub(crate) fn pg_error(doing: &str, e: &tokio_postgres::Error) -> MetaError {
    if e.code() == Some(&SqlState::DISK_FULL) {
        MetaError::StorageFull(format!(
            "Image storage media is full: PostgreSQL: {doing}: {e}; retry when space has been freed"
        ))
    } else {
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_owned());
        MetaError::Backend(format!("PostgreSQL: {doing}: {detail}"))
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    row: &Row,
    column: &str,
) -> Result<T, MetaError> {
    let Json(value) = row
        .try_get::<_, Json<T>>(column)
        .map_err(|e| MetaError::Decoding {
            what,
            key: row.try_get::<_, String>(0).unwrap_or_default(),
            detail: e.to_string(),
        })?;
    Ok(value)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const UPSERT_TASK: &str = "INSERT INTO tasks
     (id, owner, status, created_at, expires_at, image_id, summary, record, lease_until,
      pinned_node)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (id) DO UPDATE SET owner = $2, status = $3, created_at = $4, expires_at = $5,
         image_id = $6, summary = $7, record = $8, lease_until = $9, pinned_node = $10";
const UPSERT_IMAGE: &str = "INSERT INTO images
     (id, owner, visibility, created_at, record, writer_until, staged_on)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET owner = $2, visibility = $3, created_at = $4, record = $5,
         writer_until = $6, staged_on = $7";

async fn write_task(
    tx: &impl deadpool_postgres::GenericClient,
    task: &TaskRecord,
) -> Result<(), MetaError> {
    let summary = TaskSummary::from(task);
    tx.execute(
        UPSERT_TASK,
        &[
            &task.id,
            &task.owner,
            &task.status.as_str(),
            &task.created_at,
            &task.expires_at,
            &index::task_image_id(task),
            &Json(&summary),
            &Json(task),
            &lease::indexed_until(task),
            &task.pinned_node,
        ],
    )
    .await
    .map_err(|e| pg_error(&format!("writing task {}", task.id), &e))?;
    Ok(())
}

async fn write_image(
    tx: &impl deadpool_postgres::GenericClient,
    image: &ImageRecord,
) -> Result<(), MetaError> {
    tx.execute(
        UPSERT_IMAGE,
        &[
            &image.id,
            &image.owner,
            &image.visibility,
            &image.created_at,
            &Json(image),
            &writer::indexed_until(image),
            &staged_on(image),
        ],
    )
    .await
    .map_err(|e| pg_error(&format!("writing image {}", image.id), &e))?;
    Ok(())
}

/// The `staged_on` column of `image`: its stage's node while it is `uploading`.
fn staged_on(image: &ImageRecord) -> Option<&str> {
    image
        .staged_on
        .as_deref()
        .filter(|_| image.status == ImageStatus::Uploading)
}

async fn remove_image(tx: &Transaction<'_>, id: &str) -> Result<(), MetaError> {
    tx.execute("DELETE FROM members WHERE image_id = $1", &[&id])
        .await
        .map_err(|e| pg_error(&format!("deleting the members of image {id}"), &e))?;
    tx.execute("DELETE FROM images WHERE id = $1", &[&id])
        .await
        .map_err(|e| pg_error(&format!("deleting image {id}"), &e))?;
    Ok(())
}

/// The stored task `id`, locked until the transaction ends.
async fn locked_task(tx: &Transaction<'_>, id: &str) -> Result<Option<TaskRecord>, MetaError> {
    let row = tx
        .query_opt(
            "SELECT id, record FROM tasks WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(|e| pg_error(&format!("locking task {id}"), &e))?;
    row.map(|r| decode("task", &r, "record")).transpose()
}

/// [`MetaStore::transition_task`]'s check and write, in `tx`.
async fn move_task(tx: &Transaction<'_>, task: &TaskRecord) -> Result<(), MetaError> {
    let current = locked_task(tx, &task.id).await?;
    check_task_move(current.as_ref(), task)?;
    write_task(tx, task).await
}

/// [`MetaStore::transition_image`] in `tx`, with `task`'s move when the image's change
/// writes.
async fn transition(
    tx: &Transaction<'_>,
    id: &str,
    expected: &[ImageStatus],
    change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
    task: Option<&TaskRecord>,
) -> Result<Transition, MetaError> {
    if let Some(task) = task {
        let current = locked_task(tx, &task.id).await?;
        check_task_move(current.as_ref(), task)?;
    }
    let row = tx
        .query_opt(
            "SELECT id, record FROM images WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(|e| pg_error(&format!("locking image {id}"), &e))?;
    let current: Option<ImageRecord> = row.map(|r| decode("image", &r, "record")).transpose()?;
    let done = match plan_transition(current, expected, change)? {
        Step::Answer(answer) => return Ok(answer),
        Step::Put { new, .. } => {
            write_image(tx, &new).await?;
            Transition::Done(*new)
        }
        Step::Remove(old) => {
            remove_image(tx, id).await?;
            Transition::Done(old)
        }
    };
    if let Some(task) = task {
        write_task(tx, task).await?;
    }
    Ok(done)
}

/// [`MetaStore::add_member`] in `tx`: the member writes of one image are serialised by an
/// advisory lock on it, so the count and the insert cannot interleave with another's.
async fn add_member(
    tx: &Transaction<'_>,
    member: &MemberRecord,
    max: usize,
) -> Result<AddMember, MetaError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('members/' || $1, 0))",
        &[&member.image_id],
    )
    .await
    .map_err(|e| pg_error("locking an image's members", &e))?;
    let row = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE member_id = $2), count(*)
             FROM members WHERE image_id = $1",
            &[&member.image_id, &member.member_id],
        )
        .await
        .map_err(|e| pg_error("counting members", &e))?;
    let (same, all): (i64, i64) = (row.get(0), row.get(1));
    if same > 0 {
        return Ok(AddMember::Duplicate);
    }
    if all >= to_i64(max) {
        return Ok(AddMember::Full(max));
    }
    tx.execute(
        "INSERT INTO members (image_id, member_id, record) VALUES ($1, $2, $3)",
        &[&member.image_id, &member.member_id, &Json(member)],
    )
    .await
    .map_err(|e| pg_error("adding a member", &e))?;
    Ok(AddMember::Added)
}

/// The `record` of the `kind` row `id` read by `sql`, a statement prepared once per
/// connection, so that a status poll is one round trip.
async fn read_record<T: serde::de::DeserializeOwned>(
    client: &deadpool_postgres::Client,
    sql: &str,
    kind: &'static str,
    id: &str,
) -> Result<Option<T>, MetaError> {
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| pg_error(&format!("preparing a {kind} read"), &e))?;
    let row = client
        .query_opt(&statement, &[&id])
        .await
        .map_err(|e| pg_error(&format!("reading {kind} {id}"), &e))?;
    row.map(|r| decode(kind, &r, "record")).transpose()
}

#[async_trait::async_trait]
impl MetaStore for PgMeta {
    async fn put_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        write_task(&self.client().await?, task).await
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, MetaError> {
        let client = self.client().await?;
        read_record(
            &client,
            "SELECT id, record FROM tasks WHERE id = $1",
            "task",
            id,
        )
        .await
    }

    async fn delete_task(&self, id: &str) -> Result<(), MetaError> {
        self.client()
            .await?
            .execute("DELETE FROM tasks WHERE id = $1", &[&id])
            .await
            .map_err(|e| pg_error(&format!("deleting task {id}"), &e))?;
        Ok(())
    }

    async fn transition_task(&self, task: &TaskRecord) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "a task's move").await?;
        let out = move_task(&tx, task).await;
        commit(tx, "a task's move", out).await
    }

    async fn commit_import(&self, task: &TaskRecord, image: &ImageRecord) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "an import's commit").await?;
        let mut out = move_task(&tx, task).await;
        if out.is_ok() {
            out = write_image(&tx, image).await;
        }
        commit(tx, "an import's commit", out).await
    }

    async fn transition_image_with_task(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
        task: &TaskRecord,
    ) -> Result<Transition, MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "an image transition with its task").await?;
        let out = transition(&tx, id, expected, change, Some(task)).await;
        commit(tx, "an image transition with its task", out).await
    }

    async fn put_image(&self, image: &ImageRecord) -> Result<(), MetaError> {
        write_image(&self.client().await?, image).await
    }

    async fn insert_image(&self, image: &ImageRecord) -> Result<bool, MetaError> {
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO images
                 (id, owner, visibility, created_at, record, writer_until, staged_on)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                &[
                    &image.id,
                    &image.owner,
                    &image.visibility,
                    &image.created_at,
                    &Json(image),
                    &writer::indexed_until(image),
                    &staged_on(image),
                ],
            )
            .await
            .map_err(|e| pg_error(&format!("inserting image {}", image.id), &e))?;
        Ok(inserted == 1)
    }

    async fn transition_image(
        &self,
        id: &str,
        expected: &[ImageStatus],
        change: &mut (dyn for<'r> FnMut(&'r mut ImageRecord) -> Decision + Send),
    ) -> Result<Transition, MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "an image transition").await?;
        let out = transition(&tx, id, expected, change, None).await;
        commit(tx, "an image transition", out).await
    }

    async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, MetaError> {
        let client = self.client().await?;
        read_record(
            &client,
            "SELECT id, record FROM images WHERE id = $1",
            "image",
            id,
        )
        .await
    }

    async fn delete_image(&self, id: &str) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "an image's deletion").await?;
        let out = remove_image(&tx, id).await;
        commit(tx, "an image's deletion", out).await
    }

    async fn list_task_page(&self, query: &TaskQuery<'_>) -> Result<Vec<TaskSummary>, MetaError> {
        lists::task_page(&mut *self.client().await?, query).await
    }

    async fn list_image_page(&self, query: &ImageQuery<'_>) -> Result<Vec<ImageRecord>, MetaError> {
        lists::image_page(&mut *self.client().await?, query).await
    }

    async fn expired_tasks(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= $1
                 ORDER BY expires_at, id LIMIT $2",
                &[&now, &to_i64(max)],
            )
            .await
            .map_err(|e| pg_error("reading expired tasks", &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn claim_task(
        &self,
        lease: &TaskLease,
        per_project: u64,
        now: Timestamp,
    ) -> Result<Option<TaskRecord>, MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "a claim").await?;
        let out = leases::claim(&tx, lease, per_project, now).await;
        commit(tx, "a claim", out).await
    }

    async fn renew_lease(
        &self,
        id: &str,
        node: &str,
        until: Timestamp,
        charged: u64,
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "a lease renewal").await?;
        let out = leases::renew(&tx, id, node, until, charged).await;
        commit(tx, "a lease renewal", out).await
    }

    async fn take_back(
        &self,
        task: &TaskRecord,
        expired: Option<&TaskLease>,
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "a take-back").await?;
        let out = leases::take_back(&tx, task, expired).await;
        commit(tx, "a take-back", out).await
    }

    fn deployment(&self) -> Option<&str> {
        Some(&self.deployment)
    }

    async fn expired_leases(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        leases::expired(&self.client().await?, now, max).await
    }

    async fn writing_images(&self, owner: &str, max: u64) -> Result<u64, MetaError> {
        leases::writing_images(&self.client().await?, owner, max).await
    }

    async fn expired_writers(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        leases::expired_writers(&self.client().await?, now, max).await
    }

    async fn queued_tasks(&self, owner: &str, max: u64) -> Result<QueuedTasks, MetaError> {
        leases::queued(&self.client().await?, owner, max).await
    }

    async fn beat(&self, node: &str, until: Timestamp) -> Result<(), MetaError> {
        leases::beat(&self.client().await?, node, until).await
    }

    async fn dead_stages(&self, now: Timestamp, max: usize) -> Result<Vec<String>, MetaError> {
        leases::dead_stages(&self.client().await?, now, max).await
    }

    async fn staged_elsewhere(&self, owner: &str, node: &str) -> Result<u64, MetaError> {
        leases::staged_elsewhere(&self.client().await?, owner, node).await
    }

    async fn charged_elsewhere(&self, owner: &str, node: &str) -> Result<u64, MetaError> {
        leases::charged_elsewhere(&self.client().await?, owner, node).await
    }

    async fn unfinished_tasks(&self) -> Result<Vec<String>, MetaError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id FROM tasks WHERE status IN ('pending', 'processing')
                 ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(|e| pg_error("reading unfinished tasks", &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn image_tasks(&self, image_id: &str) -> Result<Vec<TaskRecord>, MetaError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, record FROM tasks WHERE image_id = $1 ORDER BY created_at, id",
                &[&image_id],
            )
            .await
            .map_err(|e| pg_error(&format!("reading the tasks of image {image_id}"), &e))?;
        rows.iter().map(|r| decode("task", r, "record")).collect()
    }

    async fn scan_images(
        &self,
        owner: Option<&str>,
        visit: &mut (dyn FnMut(ImageRecord) -> Result<(), MetaError> + Send),
    ) -> Result<(), MetaError> {
        lists::scan_images(&mut *self.client().await?, owner, visit).await
    }

    async fn add_member(&self, member: &MemberRecord, max: usize) -> Result<AddMember, MetaError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, "a member's addition").await?;
        let out = add_member(&tx, member, max).await;
        commit(tx, "a member's addition", out).await
    }

    async fn update_member(&self, member: &MemberRecord) -> Result<bool, MetaError> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE members SET record = $3 WHERE image_id = $1 AND member_id = $2",
                &[&member.image_id, &member.member_id, &Json(member)],
            )
            .await
            .map_err(|e| pg_error("updating a member", &e))?;
        Ok(updated > 0)
    }

    async fn get_member(
        &self,
        image: &str,
        member: &str,
    ) -> Result<Option<MemberRecord>, MetaError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT image_id, record FROM members WHERE image_id = $1 AND member_id = $2",
                &[&image, &member],
            )
            .await
            .map_err(|e| pg_error("reading a member", &e))?;
        row.map(|r| decode("member", &r, "record")).transpose()
    }

    async fn image_members(&self, image: &str) -> Result<Vec<MemberRecord>, MetaError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT image_id, record FROM members WHERE image_id = $1 ORDER BY member_id",
                &[&image],
            )
            .await
            .map_err(|e| pg_error("reading an image's members", &e))?;
        rows.iter().map(|r| decode("member", r, "record")).collect()
    }

    async fn member_images(&self, member: &str) -> Result<Vec<MemberRecord>, MetaError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT image_id, record FROM members WHERE member_id = $1 ORDER BY image_id",
                &[&member],
            )
            .await
            .map_err(|e| pg_error("reading a project's memberships", &e))?;
        rows.iter().map(|r| decode("member", r, "record")).collect()
    }

    async fn delete_member(&self, image: &str, member: &str) -> Result<bool, MetaError> {
        let deleted = self
            .client()
            .await?
            .execute(
                "DELETE FROM members WHERE image_id = $1 AND member_id = $2",
                &[&image, &member],
            )
            .await
            .map_err(|e| pg_error("deleting a member", &e))?;
        Ok(deleted > 0)
    }
}

#[cfg(test)]
mod tests;
