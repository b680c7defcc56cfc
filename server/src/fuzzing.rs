//! Harness bodies of the fuzz targets that cover the API's JSON request bodies
//! (`fuzz/fuzz_targets/api_*.rs`), so each target is a one-liner. They run the request's
//! synchronous checks exactly as the handlers do (no store, no network, no runtime) and
//! check invariants beyond "no panic". Not a stable API.
//!
//! Every input starts with one control byte that chooses the caller, the configuration and
//! (for a patch) the image and media type; the rest is the request body.

use serde_json::{Map, Value};

use crate::api::auth::RequestContext;
use crate::api::body::parse_json;
use crate::api::error::ApiError;
use crate::api::images::patch::{apply_operations, parse_patch, Operation, PatchOp, PatchVersion};
use crate::api::images::{create, image_json};
use crate::api::policy::{self, Action, Target};
use crate::api::tasks::{check_input, import_from_uri, new_task, validate_task_body};
use crate::config::{Config, Conversion};
use crate::imports::{InputError, LegacyImport};
use crate::meta::{codec, ImageRecord, ImageStatus, TaskRecord, LOCK_PROPERTY};
use crate::properties::{
    self, Attribute, Change, ImageProperties, PropertyLimits, Visibility, CONTAINER_FORMATS,
    DISK_FORMATS, MAX_FIELD_LEN, MAX_PROPERTY_VALUE_LEN, VISIBILITIES,
};

/// The project owning the patched image, and the caller's project unless the control byte
/// says otherwise.
const OWNER: &str = "0123456789abcdef0123456789abcdef";

/// Another project.
const STRANGER: &str = "fedcba9876543210fedcba9876543210";

/// The id of the image a patch is applied to, and of a created image that names none.
const IMAGE_ID: &str = "5d1c4fd6-3f0e-4c39-9f3e-1c0b0b3d8b4a";

/// The creation time of every record here.
const CREATED_AT: i64 = 1_795_541_301;

/// What `image_json` shows that the server sets: a create body may not carry these.
const SERVER_SET: [&str; 12] = [
    "status",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
];

/// Quotas small enough that a fuzzer reaches them (chosen by one bit of the control byte).
const TIGHT_LIMITS: PropertyLimits = PropertyLimits {
    tags: 3,
    properties: 4,
};

/// `POST /v2/tasks`: `data[0]` chooses the caller, the server's conversion and the quotas;
/// the rest is the body. A refusal is a 4xx; an accepted body is stored as the task's input,
/// and the input read back from the stored record parses to the same import when the task
/// runs; its `image_properties`, re-serialised, parse to the same properties.
pub fn task_create(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let ctx = caller(control);
    let conversion = match (control >> 3) % 3 {
        0 => Conversion::None,
        1 => Conversion::Raw,
        _ => Conversion::Qcow2,
    };
    let limits = limits(control >> 5);
    let input = match create_checks(&ctx, body, &limits, conversion) {
        Ok(input) => input,
        Err(e) => return assert_client_error(&e),
    };
    let parsed = LegacyImport::parse(&input, &limits, conversion);
    // The worker parses the input stored with the task.
    let task = new_task(&ctx, "import", input);
    let stored: TaskRecord = round_trip(&task);
    assert_eq!(
        LegacyImport::parse(&stored.input, &limits, conversion),
        parsed,
        "the stored input parses differently when the task runs"
    );
    let properties = match &parsed {
        Ok(legacy) => {
            // The image record the task makes stores this `disk_format` (unless converted).
            let disk_format = legacy.request.disk_format.as_str();
            assert!(
                DISK_FORMATS.contains(&disk_format),
                "an import task would make an image of disk_format {disk_format:?}"
            );
            Some(&legacy.properties)
        }
        Err(InputError::Deferred { properties, .. }) => properties.as_deref(),
        Err(e) => panic!("accepted at create time, refused by the worker: {e:?}"),
    };
    if let Some(properties) = properties {
        let again = ImageProperties::parse(&properties_json(properties), &limits);
        assert_eq!(again.as_ref(), Ok(properties), "image_properties re-parse");
    }
}

/// `PATCH /v2/images/{id}`: `data[0]` chooses the media type, the caller, the image's status
/// and the quotas; the rest is the body, applied to a fixed image record. A refusal is a 4xx;
/// a patch applies the same way twice, re-serialises to a document that parses to the same
/// operations, never changes what no patch may change, and leaves a valid record that the
/// store encodes and decodes unchanged and the API shows with every extra property.
pub fn image_patch(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let version = if control & 1 == 0 {
        PatchVersion::V21
    } else {
        PatchVersion::V20
    };
    let ctx = caller(control >> 1);
    let status = ImageStatus::ALL
        .get(usize::from((control >> 3) % 6))
        .copied()
        .unwrap_or(ImageStatus::Active);
    let limits = limits(control >> 6);
    let base = patched_image(status);
    let refused = (|| -> Result<(Vec<Operation>, ImageRecord), ApiError> {
        policy::check_role(&ctx, Action::ModifyImage)?;
        let ops = parse_patch(&parse_json(body)?, version)?;
        policy::authorize(&ctx, Action::ModifyImage, Target::Image(&base))?;
        let mut image = base.clone();
        let first = apply_operations(&mut image, &ctx, version, &ops, &limits);
        let mut twice = base.clone();
        let second = apply_operations(&mut twice, &ctx, version, &ops, &limits);
        assert_eq!(first, second, "the same patch gave two verdicts");
        assert_eq!(image, twice, "the same patch gave two records");
        first.map(|()| (ops, image))
    })();
    let (ops, image) = match refused {
        Ok(done) => done,
        Err(e) => return assert_client_error(&e),
    };
    let document = patch_document(&ops, version);
    assert_eq!(
        parse_patch(&document, version).as_ref(),
        Ok(&ops),
        "re-serialised patch {document}"
    );
    check_patched(&base, &image, &ctx, &limits);
}

/// `POST /v2/images`: `data[0]` chooses the caller and the quotas; the rest is the body. A
/// refusal is a 4xx; an accepted body gives a valid queued record, its properties written
/// back parse to the same ones, and the image as the API shows it, less what the server sets,
/// is a body that creates the same record.
pub fn image_create(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let ctx = caller(control);
    let limits = limits(control >> 2);
    let created = (|| -> Result<(Option<String>, ImageProperties), ApiError> {
        policy::check_role(&ctx, Action::AddImage)?;
        let (id, props) = create::parse_body(&parse_json(body)?, &limits)?;
        props.authorize(&ctx)?;
        Ok((id, props))
    })();
    let (id, props) = match created {
        Ok(created) => created,
        Err(e) => return assert_client_error(&e),
    };
    let mut written = properties_json(&props);
    if let Some(id) = &id {
        written.insert("id".into(), id.clone().into());
    }
    assert_eq!(
        create::parse_body(&Value::Object(written), &limits),
        Ok((id.clone(), props.clone())),
        "properties re-parse"
    );
    let id = id.unwrap_or_else(|| IMAGE_ID.to_owned());
    let image = create::queued_image(&id, &ctx, props, CREATED_AT);
    check_record(&image, limits.tags, limits.properties);
    let Value::Object(mut shown) = image_json(&image) else {
        panic!("an image shows as an object");
    };
    for key in SERVER_SET {
        shown.remove(key);
    }
    let (again_id, again) = create::parse_body(&Value::Object(shown), &limits)
        .unwrap_or_else(|e| panic!("the image as shown is refused: {e:?}"));
    let again = create::queued_image(&again_id.unwrap_or_default(), &ctx, again, CREATED_AT);
    assert_eq!(again, image, "the image as shown creates another record");
}

/// The synchronous part of `tasks::create`: the body, its shape, `import_from` (without the
/// import policy's DNS lookup), then the input and its properties.
fn create_checks(
    ctx: &RequestContext,
    body: &[u8],
    limits: &PropertyLimits,
    conversion: Conversion,
) -> Result<Value, ApiError> {
    policy::check_role(ctx, Action::AddTask)?;
    let body = parse_json(body)?;
    let input = validate_task_body(&body)?;
    import_from_uri(input)?;
    check_input(ctx, input, limits, conversion)?;
    Ok(input.clone())
}

/// Bits 0–1: a member of the image's project, an admin of another, a member of another, a
/// reader of the image's project.
fn caller(bits: u8) -> RequestContext {
    let (project, role) = match bits & 3 {
        0 => (OWNER, "member"),
        1 => (STRANGER, "admin"),
        2 => (STRANGER, "member"),
        _ => (OWNER, "reader"),
    };
    RequestContext::new(project, "fuzz-user", vec![role.to_owned()], "req-fuzz")
}

/// Bit 0: the default quotas or [`TIGHT_LIMITS`].
fn limits(bits: u8) -> PropertyLimits {
    if bits & 1 == 0 {
        PropertyLimits::of(&Config::default())
    } else {
        TIGHT_LIMITS
    }
}

/// A 4xx, never a 5xx: a request body is the client's doing.
fn assert_client_error(e: &ApiError) {
    let status = e.describe().status;
    assert!(
        status.is_client_error(),
        "{status} for a request body: {e:?}"
    );
}

/// `record` encoded and decoded by the metadata store's codec.
fn round_trip<T: codec::Record>(record: &T) -> T {
    let bytes = codec::encode(record).expect("encoding a record");
    codec::decode(record.id(), &bytes).expect("decoding a record")
}

/// The image every patch is applied to: committed data (unless `queued`), three extra
/// properties (one with a pointer escape in its name), two tags, the import lock of an
/// `importing` image, and the writer lease of a `saving` or `uploading` one.
fn patched_image(status: ImageStatus) -> ImageRecord {
    let committed = status != ImageStatus::Queued;
    let text = |s: &str| committed.then(|| s.to_owned());
    let mut properties: std::collections::BTreeMap<String, String> = [
        ("os_distro", "debian"),
        ("hw_disk_bus", "virtio"),
        ("a/b~c", "escaped"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if status == ImageStatus::Importing {
        properties.insert(LOCK_PROPERTY.to_owned(), "task-id".to_owned());
    }
    ImageRecord {
        id: IMAGE_ID.to_owned(),
        name: Some("fuzz".to_owned()),
        status,
        owner: OWNER.to_owned(),
        visibility: "shared".to_owned(),
        protected: false,
        disk_format: Some("qcow2".to_owned()),
        container_format: Some("bare".to_owned()),
        size: committed.then_some(4096),
        virtual_size: committed.then_some(1 << 20),
        checksum: text("2b22e47a1241758b66841255ee675057"),
        os_hash_algo: text("sha512"),
        os_hash_value: text(&"ab".repeat(64)),
        min_disk: 1,
        min_ram: 0,
        tags: vec!["one".to_owned(), "two".to_owned()],
        properties,
        created_at: CREATED_AT,
        updated_at: CREATED_AT,
        task_id: None,
        writer: crate::meta::writer::is_written(status).then(|| crate::meta::WriterLease {
            node: "node-a".to_owned(),
            upload: "upload".to_owned(),
            until: CREATED_AT,
            charged: 0,
        }),
        staged_on: None,
        staged_bytes: 0,
    }
}

/// What a successful patch may and may not have done to `base`.
fn check_patched(
    base: &ImageRecord,
    image: &ImageRecord,
    ctx: &RequestContext,
    limits: &PropertyLimits,
) {
    // Read-only: nothing in a patch reaches these.
    assert_eq!(image.id, base.id);
    assert_eq!(image.status, base.status);
    assert_eq!(image.size, base.size);
    assert_eq!(image.virtual_size, base.virtual_size);
    assert_eq!(image.checksum, base.checksum);
    assert_eq!(image.os_hash_algo, base.os_hash_algo);
    assert_eq!(image.os_hash_value, base.os_hash_value);
    assert_eq!(image.created_at, base.created_at);
    assert_eq!(image.task_id, base.task_id);
    assert_eq!(image.writer, base.writer);
    // Changed only by whom the policy allows.
    if image.owner != base.owner {
        assert!(policy::authorize(ctx, Action::ChangeImageOwner, Target::Image(base)).is_ok());
    }
    if image.visibility != base.visibility {
        let visibility = [
            Visibility::Community,
            Visibility::Public,
            Visibility::Private,
            Visibility::Shared,
        ]
        .into_iter()
        .find(|v| v.as_str() == image.visibility)
        .unwrap_or_else(|| panic!("visibility {:?}", image.visibility));
        if let Some(action) = visibility.action() {
            assert!(policy::authorize(ctx, action, Target::Image(base)).is_ok());
        }
    }
    if (&image.disk_format, &image.container_format) != (&base.disk_format, &base.container_format)
    {
        assert!(matches!(
            base.status,
            ImageStatus::Queued | ImageStatus::Importing
        ));
    }
    // Reserved and read-only keys are never extra properties.
    for (key, value) in &image.properties {
        if base.properties.get(key) == Some(value) {
            continue;
        }
        assert_eq!(
            properties::classify(key, Change::Update),
            Ok(Attribute::Extra),
            "patched property {key:?}"
        );
        assert!(value.len() <= MAX_PROPERTY_VALUE_LEN);
    }
    assert_eq!(
        base.properties.get(LOCK_PROPERTY),
        image.properties.get(LOCK_PROPERTY)
    );
    let max_properties = if image.properties.len() > base.properties.len() {
        limits.properties
    } else {
        base.properties.len()
    };
    check_record(image, limits.tags.max(base.tags.len()), max_properties);
}

/// A record the image schema and the quotas allow (at most `max_tags` tags and
/// `max_properties` extra properties), that the store encodes and decodes unchanged and that
/// the API shows with every extra property under its own name.
fn check_record(image: &ImageRecord, max_tags: usize, max_properties: usize) {
    let short = |s: &str| s.chars().count() <= MAX_FIELD_LEN;
    assert!(image.name.as_deref().is_none_or(short));
    assert!(short(&image.owner));
    assert!(VISIBILITIES.contains(&image.visibility.as_str()));
    assert!(image
        .disk_format
        .as_deref()
        .is_none_or(|f| DISK_FORMATS.contains(&f)));
    assert!(image
        .container_format
        .as_deref()
        .is_none_or(|f| CONTAINER_FORMATS.contains(&f)));
    assert!(image.tags.len() <= max_tags);
    assert!(image.tags.iter().all(|t| short(t)));
    let distinct: std::collections::BTreeSet<&String> = image.tags.iter().collect();
    assert_eq!(distinct.len(), image.tags.len(), "duplicate tags");
    assert!(image.properties.len() <= max_properties);
    assert!(image
        .properties
        .iter()
        .all(|(k, v)| short(k) && v.len() <= MAX_PROPERTY_VALUE_LEN));
    assert_eq!(&round_trip(image), image, "the store changes the record");
    let shown = image_json(image);
    for (key, value) in &image.properties {
        if key != LOCK_PROPERTY {
            assert_eq!(
                shown.get(key),
                Some(&Value::String(value.clone())),
                "{key:?}"
            );
        }
    }
}

/// `properties` as a task's `image_properties` object.
fn properties_json(properties: &ImageProperties) -> Map<String, Value> {
    let mut obj: Map<String, Value> = properties
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    obj.insert("name".into(), text(&properties.name));
    if let Some(visibility) = properties.visibility {
        obj.insert("visibility".into(), visibility.as_str().into());
    }
    if let Some(protected) = properties.protected {
        obj.insert("protected".into(), protected.into());
    }
    if let Some(min_disk) = properties.min_disk {
        obj.insert("min_disk".into(), min_disk.into());
    }
    if let Some(min_ram) = properties.min_ram {
        obj.insert("min_ram".into(), min_ram.into());
    }
    obj.insert("disk_format".into(), text(&properties.disk_format));
    obj.insert(
        "container_format".into(),
        text(&properties.container_format),
    );
    if let Some(owner) = &properties.owner {
        obj.insert("owner".into(), owner.clone().into());
    }
    let tags = properties.tags.iter().cloned().map(Value::String).collect();
    obj.insert("tags".into(), Value::Array(tags));
    obj
}

/// `ops` written back as a patch document of `version`.
fn patch_document(ops: &[Operation], version: PatchVersion) -> Value {
    let items = ops
        .iter()
        .map(|(op, name, value)| {
            let op = match op {
                PatchOp::Add => "add",
                PatchOp::Remove => "remove",
                PatchOp::Replace => "replace",
            };
            let path = format!("/{}", name.replace('~', "~0").replace('/', "~1"));
            let mut obj = Map::new();
            match version {
                PatchVersion::V21 => {
                    obj.insert("op".into(), op.into());
                    obj.insert("path".into(), path.into());
                }
                PatchVersion::V20 => {
                    obj.insert(op.into(), path.into());
                }
            }
            if let Some(value) = value {
                obj.insert("value".into(), value.clone());
            }
            Value::Object(obj)
        })
        .collect();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every checked-in seed and reproducer under `fuzz/corpus/api_*/` replays through its
    /// harness: a fixed crash stays fixed without cargo-fuzz.
    #[test]
    fn test_fuzzing_api_corpus_replays_without_panic() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0usize;
        type Harness = fn(&[u8]);
        let targets: [(&str, Harness); 3] = [
            ("api_task_create", task_create),
            ("api_image_patch", image_patch),
            ("api_image_create", image_create),
        ];
        for (target, harness) in targets {
            let dir = corpus.join(target);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("reading seed corpus {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                harness(&std::fs::read(&path).expect("reading seed"));
                replayed += 1;
            }
        }
        assert!(
            replayed >= 10,
            "only {replayed} seeds under {}",
            corpus.display()
        );
    }
}
