//! Images API tests on records and files inserted directly, one module per endpoint; the
//! helpers they share.

use std::collections::BTreeSet;

use http::Method;
use serde_json::{json, Value};

use crate::api::testing::{image_record, task_record, uuid_n, Harness};
use crate::meta::TaskStatus;

mod delete;
mod download;
mod image_tasks;
mod list;
mod patch;
mod show;
mod tags;

const V21: &str = "application/openstack-images-v2.1-json-patch";
const V20: &str = "application/openstack-images-v2.0-json-patch";

async fn patch(
    h: &Harness,
    id: &str,
    media: &str,
    who: &[(&str, &str)],
    ops: &Value,
) -> crate::api::testing::Reply {
    let mut headers = who.to_vec();
    headers.push(("content-type", media));
    h.call_as(
        Method::PATCH,
        &format!("/v2/images/{id}"),
        &headers,
        &serde_json::to_vec(ops).unwrap(),
    )
    .await
}

fn ids(page: &Value) -> Vec<String> {
    page["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The keys of a JSON object.
fn key_set(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// An image of `owner` (visibility `visibility`) imported by a successful task that expires at
/// `expires_at`; returns (image id, task id).
async fn imported(
    h: &Harness,
    n: u32,
    owner: &str,
    visibility: &str,
    expires_at: i64,
) -> (String, String) {
    let (image_id, task_id) = (uuid_n(n), uuid_n(n + 100));
    let mut task = task_record(&task_id, owner, TaskStatus::Success, 1_795_541_301);
    task.updated_at = 1_795_541_305;
    task.expires_at = Some(expires_at);
    task.result = Some(json!({ "image_id": image_id }));
    h.meta().put_task(&task).await.unwrap();
    let mut image = image_record(&image_id, owner, "imported", 1, 1_795_541_305);
    image.visibility = visibility.into();
    image.task_id = Some(task_id.clone());
    h.insert_image(&image, None).await;
    (image_id, task_id)
}
