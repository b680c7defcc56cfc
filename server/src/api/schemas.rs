//! Served JSON schemas, version discovery and `/v2/info/import`.
//!
//! The schemas are Glance 33.0.0's, as recorded (`schemas/*.json`, from
//! `reference/glance-wire/legacy-noconv/46..48`), plus Sluice's additive task properties
//! `progress` and `reason` and `input.output_format`, so that clients validating responses against the served schema
//! (python-glanceclient's warlock models) accept them.

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::body::{json_response, ApiBody};
use crate::api::endpoint::Endpoint;
use crate::api::error::ApiError;
use crate::api::{ok_json, Api};
use crate::config::Config;

/// `GET /v2/schemas/task` as Glance 33.0.0 serves it.
const GLANCE_TASK_SCHEMA: &str = include_str!("schemas/task.json");
/// `GET /v2/schemas/tasks` as Glance 33.0.0 serves it.
const GLANCE_TASKS_SCHEMA: &str = include_str!("schemas/tasks.json");
/// `GET /v2/schemas/image` as Glance 33.0.0 serves it (default formats, no custom
/// properties).
const GLANCE_IMAGE_SCHEMA: &str = include_str!("schemas/image.json");

/// The Images API versions Sluice implements, newest first. Clients gate features on exact
/// entries (python-glanceclient's `has_version`): `v2.12` enables `glance image-tasks`
/// (`GET /v2/images/{id}/tasks`, which Sluice serves); `v2.14`–`v2.16` would enable the
/// cache API and `v2.17` the locations API, which Sluice does not have, so they are not
/// listed (the clients then say "not supported" instead of failing on a 404). Glance 33.0.0
/// with a single store lists `v2.18`…`v2.14`, `v2.9`, `v2.7`…`v2.0` and so hides `v2.12`
/// (it lists it only with multiple stores); `v2.8`, `v2.10`, `v2.11` and `v2.13` are
/// multi-store calls (`/v2/info/stores`, per-store deletion) Sluice does not have either.
const VERSIONS: [(&str, &str); 10] = [
    ("v2.12", "CURRENT"),
    ("v2.9", "SUPPORTED"),
    ("v2.7", "SUPPORTED"),
    ("v2.6", "SUPPORTED"),
    ("v2.5", "SUPPORTED"),
    ("v2.4", "SUPPORTED"),
    ("v2.3", "SUPPORTED"),
    ("v2.2", "SUPPORTED"),
    ("v2.1", "SUPPORTED"),
    ("v2.0", "SUPPORTED"),
];

fn parse(text: &str) -> Value {
    // The embedded files are checked by `test_schemas_embedded_files_parse`.
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Sluice's additive task properties.
fn sluice_task_properties() -> [(&'static str, Value); 2] {
    [
        (
            "progress",
            json!({
                "description": "Sluice: while processing, bytes received from the source, \
                                its announced length, bytes stored, the rate over the last \
                                seconds and the ETA (null when unknown); while pending, the \
                                task's place in the queue (1: next) and the tasks waiting; \
                                absent otherwise (GET /v2/tasks/{id} only)",
                "type": ["null", "object"],
                "properties": {
                    "bytes_received": {"type": "integer", "minimum": 0},
                    "bytes_total": {"type": ["null", "integer"], "minimum": 0},
                    "bytes_stored": {"type": "integer", "minimum": 0},
                    "rate_bytes_per_sec": {"type": ["null", "integer"], "minimum": 0},
                    "eta_secs": {"type": ["null", "integer"], "minimum": 0},
                    "queue_position": {"type": ["null", "integer"], "minimum": 1},
                    "queue_waiting": {"type": ["null", "integer"], "minimum": 0}
                }
            }),
        ),
        (
            "reason",
            json!({
                "description": "Sluice: stable machine-readable failure reason code (for example \
                                backing_file, format_mismatch, source_error); present only on \
                                failure",
                "type": ["null", "string"]
            }),
        ),
    ]
}

/// Sluice's additive `input` key: the per-task conversion choice.
fn sluice_input_properties() -> Value {
    json!({
        "output_format": {
            "description": "Sluice: the format to store the image in, converting it while it \
                            streams in (Glance's output_format setting, per task): raw, qcow2, \
                            or none to store it as received. Absent or null: the server's \
                            `conversion` setting. ISO is never converted; a converted image has \
                            disk_format = this value and container_format = bare",
            "type": ["null", "string"],
            "enum": [null, "raw", "qcow2", "none"]
        }
    })
}

fn with_sluice_properties(mut schema: Value, pointer: &str) -> Value {
    if let Some(Value::Object(props)) = schema.pointer_mut(pointer) {
        for (k, v) in sluice_task_properties() {
            props.insert(k.to_owned(), v);
        }
        if let Some(Value::Object(input)) = props.get_mut("input") {
            input.insert("properties".to_owned(), sluice_input_properties());
        }
    }
    schema
}

/// The task schema: Glance's plus `progress` and `reason`.
pub fn task_schema_value() -> Value {
    with_sluice_properties(parse(GLANCE_TASK_SCHEMA), "/properties")
}

/// `GET /v2/schemas/task`.
pub fn task_schema() -> Response<ApiBody> {
    ok_json(&task_schema_value())
}

/// `GET /v2/schemas/tasks`.
pub fn tasks_schema() -> Response<ApiBody> {
    ok_json(&with_sluice_properties(
        parse(GLANCE_TASKS_SCHEMA),
        "/properties/tasks/items/properties",
    ))
}

/// `GET /v2/schemas/image`.
pub fn image_schema() -> Response<ApiBody> {
    ok_json(&parse(GLANCE_IMAGE_SCHEMA))
}

/// `GET /v2/schemas/images`: Glance's collection schema around the image schema.
pub fn images_schema() -> Response<ApiBody> {
    ok_json(&json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": parse(GLANCE_IMAGE_SCHEMA)},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    }))
}

/// Glance's member schema (`glance/api/v2/image_members.py` `get_schema`).
fn member_schema_value() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {
                "type": "string",
                "description": "An identifier for the image",
                "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
            },
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "schema": {"type": "string", "readOnly": true},
            "status": {
                "type": "string",
                "description": "The status of this image member",
                "enum": ["pending", "accepted", "rejected"]
            },
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"}
        },
        "additionalProperties": false
    })
}

/// `GET /v2/schemas/member`.
pub fn member_schema() -> Response<ApiBody> {
    ok_json(&member_schema_value())
}

/// `GET /v2/schemas/members`: Glance's collection schema around the member schema.
pub fn members_schema() -> Response<ApiBody> {
    ok_json(&json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema_value()},
            "schema": {"type": "string"}
        },
        "links": [{"rel": "describedby", "href": "{schema}"}]
    }))
}

/// The interoperable import methods offered (Glance's `enabled_import_methods`), the one list
/// behind `GET /v2/info/import` and the `OpenStack-image-import-methods` header of
/// `POST /v2/images`, in the configured order without repeats.
pub fn enabled_import_methods(config: &Config) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for method in &config.enabled_import_methods {
        if !names.contains(&method.as_str()) {
            names.push(method.as_str());
        }
    }
    names
}

/// `GET /v2/info/import`.
pub fn import_info(config: &Config) -> Response<ApiBody> {
    ok_json(&json!({
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": enabled_import_methods(config)
        }
    }))
}

/// `GET /` (300, as Glance) and `GET /versions` (200).
///
/// # Errors
/// Never in practice; the signature matches the other handlers.
pub fn versions<B>(
    api: &Api,
    request: &Request<B>,
    endpoint: &Endpoint,
) -> Result<Response<ApiBody>, ApiError> {
    let href = format!("{}/v2/", api.base_url(request));
    let versions: Vec<Value> = VERSIONS
        .iter()
        .map(|(id, status)| {
            json!({"id": id, "status": status, "links": [{"rel": "self", "href": href}]})
        })
        .collect();
    let status = match endpoint {
        Endpoint::Root => StatusCode::MULTIPLE_CHOICES,
        _ => StatusCode::OK,
    };
    Ok(json_response(status, &json!({ "versions": versions })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_schemas_embedded_files_parse() {
        for text in [GLANCE_TASK_SCHEMA, GLANCE_TASKS_SCHEMA, GLANCE_IMAGE_SCHEMA] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert!(value.get("properties").is_some());
        }
    }

    #[test]
    fn test_versions_list_image_tasks_version_not_cache_or_locations() {
        let ids: Vec<&str> = VERSIONS.iter().map(|(id, _)| *id).collect();
        assert!(
            ids.contains(&"v2.12"),
            "glance image-tasks needs v2.12: {ids:?}"
        );
        for missing in ["v2.14", "v2.15", "v2.16", "v2.17", "v2.18"] {
            assert!(
                !ids.contains(&missing),
                "{missing} is not implemented: {ids:?}"
            );
        }
        let current: Vec<&str> = VERSIONS
            .iter()
            .filter(|(_, status)| *status == "CURRENT")
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(current, ["v2.12"]);
    }

    #[test]
    fn test_schemas_task_has_sluice_and_glance_properties() {
        let schema = task_schema_value();
        let props = schema["properties"].as_object().unwrap();
        for key in [
            "id", "type", "status", "input", "result", "message", "progress", "reason",
        ] {
            assert!(props.contains_key(key), "{key}");
        }
        assert_eq!(schema["name"], "task");
        assert!(schema["properties"]["input"]["properties"]["output_format"].is_object());
    }
}
