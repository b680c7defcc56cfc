use serde_json::json;

use super::*;

const LIMITS: PropertyLimits = PropertyLimits {
    tags: 3,
    properties: 2,
};

fn parse(v: Value) -> Result<ImageProperties, PropertyError> {
    ImageProperties::parse(v.as_object().unwrap(), &LIMITS)
}

#[test]
fn test_parse_properties_typed_fields() {
    let p = parse(json!({
        "name": "n", "visibility": "community", "protected": true, "min_disk": 2,
        "min_ram": 512, "disk_format": "qcow2", "container_format": "bare",
        "owner": "p1", "tags": ["a", "b", "a"], "os_distro": "debian"
    }))
    .unwrap();
    assert_eq!(p.name.as_deref(), Some("n"));
    assert_eq!(p.visibility, Some(Visibility::Community));
    assert_eq!(p.protected, Some(true));
    assert_eq!((p.min_disk, p.min_ram), (Some(2), Some(512)));
    assert_eq!(p.disk_format.as_deref(), Some("qcow2"));
    assert_eq!(p.owner.as_deref(), Some("p1"));
    assert_eq!(p.tags, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(p.extra.get("os_distro").map(String::as_str), Some("debian"));
    assert_eq!(parse(json!({})).unwrap(), ImageProperties::default());
}

#[test]
fn test_parse_create_accepts_uuid_id_only_there() {
    let id = "8F3C0D2E-5B6A-4E7F-8A9B-0C1D2E3F4A5B";
    let body = json!({"id": id, "name": "n"});
    let (got, props) = ImageProperties::parse_create(body.as_object().unwrap(), &LIMITS).unwrap();
    assert_eq!(got.as_deref(), Some(id));
    assert_eq!(props.name.as_deref(), Some("n"));
    assert!(matches!(
        parse(body),
        Err(PropertyError::Forbidden(m)) if m == "Attribute 'id' is read-only."
    ));
    for bad in [
        json!("abc"),
        json!("8f3c0d2e5b6a4e7f8a9b0c1d2e3f4a5b"),
        json!(7),
    ] {
        let body = json!({ "id": bad });
        assert!(matches!(
            ImageProperties::parse_create(body.as_object().unwrap(), &LIMITS),
            Err(PropertyError::Invalid(m)) if m.ends_with("(in id)")
        ));
    }
}

#[test]
fn test_parse_properties_disallowed_keys_come_before_schema_errors() {
    // Glance's `_check_allowed` runs before the schema: 403 wins over a bad name.
    let e = parse(json!({"name": 5, "direct_url": "x"})).unwrap_err();
    assert_eq!(
        e,
        PropertyError::Forbidden("Attribute 'direct_url' is read-only.".into())
    );
}

#[test]
fn test_parse_properties_quotas_count_distinct_tags_and_extras() {
    assert!(parse(json!({"tags": ["a", "b", "c", "a"]})).is_ok());
    assert_eq!(
        parse(json!({"tags": ["a", "b", "c", "d"]})).unwrap_err(),
        PropertyError::OverQuota {
            what: "tags",
            attempted: 4,
            limit: 3
        }
    );
    assert_eq!(
        parse(json!({"a": "1", "b": "2", "c": "3", "name": "n"})).unwrap_err(),
        PropertyError::OverQuota {
            what: "properties",
            attempted: 3,
            limit: 2
        }
    );
}

#[test]
fn test_classify_update_and_create_messages_differ_like_glance() {
    assert_eq!(
        classify("locations", Change::Create).unwrap_err(),
        PropertyError::Forbidden("Attribute 'locations' is reserved.".into())
    );
    assert!(matches!(
        classify("locations", Change::Update),
        Err(PropertyError::Forbidden(m)) if m.starts_with("It's not allowed")
    ));
    assert_eq!(
        classify("tags", Change::Update).unwrap(),
        Attribute::Base(Base::Tags)
    );
    assert_eq!(
        classify("os_distro", Change::Create).unwrap(),
        Attribute::Extra
    );
}

#[test]
fn test_error_maps_to_api_statuses() {
    use http::StatusCode;
    for (e, status) in [
        (PropertyError::Forbidden("x".into()), StatusCode::FORBIDDEN),
        (PropertyError::Invalid("x".into()), StatusCode::BAD_REQUEST),
        (
            PropertyError::OverQuota {
                what: "tags",
                attempted: 2,
                limit: 1,
            },
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let message = e.to_string();
        let api = ApiError::from(e);
        assert_eq!(api.status_code(), status);
        assert_eq!(api.describe().explanation, message);
    }
}
