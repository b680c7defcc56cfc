//! `glance-direct` across nodes (issue #13): a stage lives in the data directory of the node
//! that received it, and the image record names that node, so the import may reach any node
//! (behind a load balancer, without affinity) and runs on the stage's node; when that node
//! dies and does not come back, the live nodes' sweeps return its staged images to `queued`
//! and fail the imports waiting for them.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_server::meta::{ImageStatus, LOCK_PROPERTY};

use super::cluster::{assert_served, Cluster, NODE_IDS, SETTLE_DEADLINE};
use super::cluster_takeover::wait_status;
use super::harness::{raw_disk, Server};
use crate::common::{read, scratch};

/// A small image to stage.
const STAGE_SIZE: u64 = 4 << 20;

/// Stages `data` into image `id` through `node`.
fn stage(node: &Server, id: &str, data: &[u8]) {
    let resp = node.req(
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
}

/// Asks `node` for the `glance-direct` import of image `id`; returns the task id.
fn import(cluster: &Cluster, node: usize, id: &str) -> String {
    cluster.import(node, id, json!({"name": "glance-direct"}))
}

/// Staged through node B, imported through node A: the task is pinned to B, B's claim loop
/// runs it from B's data directory, and node C serves the result.
#[test]
fn test_cluster_stage_through_one_node_import_through_another() {
    let dir = scratch();
    let cluster = Cluster::start(dir.path());
    let source = raw_disk(dir.path(), "st.raw", STAGE_SIZE, 4);
    let id = cluster.nodes[0].create_image("staged-on-b", "raw");
    stage(&cluster.nodes[1], &id, &read(&source));
    let staged = cluster.image(&id);
    assert_eq!(
        (staged.status, staged.staged_on.as_deref()),
        (ImageStatus::Uploading, Some(NODE_IDS[1]))
    );

    let task_id = import(&cluster, 0, &id);
    assert_eq!(
        cluster.task(&task_id).pinned_node.as_deref(),
        Some(NODE_IDS[1])
    );
    wait_status(&cluster, 2, &id, "active");
    assert_served(&cluster.nodes[2], &id, &source);
    let task = cluster.nodes[0].wait_task(&task_id);
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(cluster.image(&id).staged_on, None, "no stage once imported");
    let ran_on = |n: usize| {
        cluster.nodes[n]
            .log_text()
            .lines()
            .any(|l| l.contains("import started") && l.contains(&task_id))
    };
    assert!(ran_on(1) && !ran_on(0) && !ran_on(2), "{}", cluster.logs());
}

/// The node holding a complete stage dies and never comes back, and the stage's import is
/// asked of another node meanwhile: once the dead node's heartbeat ends, a live node's sweep
/// fails the waiting import (`interrupted`) and returns the image to `queued`, where it takes a
/// new stage and import through the live nodes. Should the node come back, it drops the
/// stage no image waits for.
#[test]
fn test_cluster_kill_9_of_the_node_holding_a_stage_image_back_to_queued_import_failed() {
    let dir = scratch();
    let mut cluster = Cluster::start(dir.path());
    let source = raw_disk(dir.path(), "st.raw", STAGE_SIZE, 4);
    let data = read(&source);
    let id = cluster.nodes[0].create_image("stage-lost", "raw");
    stage(&cluster.nodes[1], &id, &data);
    cluster.nodes[1].kill9();

    let task_id = import(&cluster, 0, &id);
    let task = cluster.nodes[2].wait_task(&task_id);
    assert_eq!(
        (&task["status"], &task["reason"]),
        (&json!("failure"), &json!("interrupted")),
        "{task}"
    );
    assert!(
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains(NODE_IDS[1])),
        "{task}"
    );
    wait_status(&cluster, 0, &id, "queued");
    let image = cluster.nodes[2].get(&format!("/v2/images/{id}")).json();
    assert!(image.get(LOCK_PROPERTY).is_none(), "{image}");

    // The node comes back after all: its first sweep drops the stage no image waits for.
    assert!(!cluster.nodes[1].files_under("staging").is_empty());
    cluster.nodes[1].restart();
    let deadline = Instant::now() + SETTLE_DEADLINE;
    while !cluster.nodes[1].files_under("staging").is_empty() {
        assert!(Instant::now() < deadline, "stage kept\n{}", cluster.logs());
        thread::sleep(Duration::from_millis(100));
    }

    stage(&cluster.nodes[2], &id, &data);
    let again = import(&cluster, 0, &id);
    wait_status(&cluster, 0, &id, "active");
    assert_eq!(cluster.nodes[0].wait_task(&again)["status"], "success");
    assert_served(&cluster.nodes[0], &id, &source);
}
