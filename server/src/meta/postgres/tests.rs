use super::*;
use crate::meta::testing_pg::PgCluster;
use crate::meta::{conformance_suite, sample_image, sample_task};

/// The conformance suite (lists, paging, transitions, two OS threads racing one image's
/// and one task's compare-and-swap) against a real PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pg_meta_conformance_suite_passes() {
    let cluster = PgCluster::start();
    let meta = PgMeta::open(&cluster.database("conformance"), 4)
        .await
        .unwrap();
    conformance_suite(&meta).await;
}

/// Nodes starting together: concurrent opens of a new database migrate it once (the
/// advisory lock: one deployment id, the same for all), and a later open finds the schema
/// current and the data intact; another database is another deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pg_meta_concurrent_opens_migrate_once_share_one_deployment_and_reopen_keeps_data() {
    let cluster = PgCluster::start();
    let url = cluster.database("nodes");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgMeta::open(&url, 2).await })
        })
        .collect();
    let mut metas = Vec::new();
    for open in opens {
        metas.push(open.await.unwrap().unwrap());
    }
    let deployment = metas[0].deployment().expect("a deployment id").to_owned();
    assert_eq!(deployment.len(), 36, "{deployment}");
    assert!(metas.iter().all(|m| m.deployment() == Some(&deployment)));
    let other = PgMeta::open(&cluster.database("other"), 1).await.unwrap();
    assert_ne!(other.deployment(), Some(&*deployment));
    let task = sample_task("00000000-0000-4000-8000-0000000000a1");
    let image = sample_image("00000000-0000-4000-8000-0000000000b1");
    metas[0].put_task(&task).await.unwrap();
    metas[1].put_image(&image).await.unwrap();
    drop(metas);
    let again = PgMeta::open(&url, 2).await.unwrap();
    assert_eq!(again.get_task(&task.id).await.unwrap(), Some(task));
    assert_eq!(again.get_image(&image.id).await.unwrap(), Some(image));
    assert_eq!(again.deployment(), Some(&*deployment));
    let client = again.client().await.unwrap();
    let version: i32 = client
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(usize::try_from(version).unwrap(), schema::MIGRATIONS.len());
    let rows = client
        .query("SELECT count(*) FROM schema_version", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    let rows = client
        .query("SELECT count(*) FROM deployment", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

/// A URL that does not parse, and a server that is not there, are errors, not panics.
#[tokio::test]
async fn test_pg_meta_bad_url_or_no_server_backend_error() {
    assert!(matches!(
        PgMeta::open("postgres://x:y@[bad", 1).await,
        Err(MetaError::Backend(_))
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(matches!(
        PgMeta::open(&format!("postgres://sluice@127.0.0.1:{port}/none"), 1).await,
        Err(MetaError::Backend(_))
    ));
}
