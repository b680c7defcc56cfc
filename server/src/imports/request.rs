//! One typed import request for every way in. Each is parsed and validated by one function
//! here when its request arrives, so that a bad request is a 4xx before any byte moves, and
//! the import runs from what was parsed:
//!
//! | way in | source | parsed by |
//! |---|---|---|
//! | legacy `import` task (`POST /v2/tasks`) | URL (`import_from`) | [`LegacyImport::parse`] |
//! | `PUT /v2/images/{id}/file` | the request body | [`ImportRequest::for_image`] |
//! | `PUT /v2/images/{id}/stage` | the request body | [`ImportRequest::for_image`] |
//! | `POST …/import`, `web-download` | URL (`method.uri`) | [`ImportRequest::for_image`] |
//! | `POST …/import`, `glance-direct` | staged data | [`ImportRequest::for_image`] |
//!
//! A task runs later, from its stored `input`: the worker parses it again through the same
//! function, which then only confirms that the stored input still parses (the quotas may
//! have changed since).

use serde_json::Value;
use sluice_formats::{Format, Target};
use sluice_pipeline::ingest::{Admission, IngestRequest};
use sluice_pipeline::rate::MinRate;

use crate::api::error::ApiError;
use crate::api::tasks::{py_repr, UriUse};
use crate::config::{Config, Conversion};
use crate::meta::ImageRecord;
use crate::properties::{ImageProperties, PropertyError, PropertyLimits, DISK_FORMATS};
use crate::unwrapping::Unwrapping;

/// Glance `disk_format`s that carry no inspectable structure of their own: checked as raw,
/// never converted.
const OPAQUE_DISK_FORMATS: [&str; 3] = ["ami", "ari", "aki"];

/// The `input` key of Sluice's per-task conversion choice (an additive extension).
const OUTPUT_FORMAT_KEY: &str = "output_format";

/// Where an import's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportSource {
    /// Pulled from a URL: a legacy task's `import_from`, `web-download`'s `method.uri`.
    Url {
        /// The URL (checked against the import policy when the request arrived).
        url: String,
        /// How a refusal of it is worded.
        uri_use: UriUse,
    },
    /// The request's own body: `PUT …/file`, `PUT …/stage`.
    Body,
    /// Data staged earlier (`glance-direct`): inspected, hashed and converted already.
    Staged,
}

/// One import, parsed and validated: where its bytes come from, what they are checked as and
/// what they become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRequest {
    /// Where the bytes come from.
    pub source: ImportSource,
    /// The image's `disk_format`, as the client named it.
    pub disk_format: String,
    /// The format the inspector holds the bytes to.
    pub declared: Format,
    /// The conversion on the way (`None`: stored as received).
    pub target: Option<Target>,
    /// What is unwrapped in the stream (by the image's `container_format`).
    pub unwrap: Unwrapping,
}

impl ImportRequest {
    /// The import of `source` into the existing `image`, converted as `conversion` says.
    /// Opaque formats (`ami`, `ari`, `aki`) are checked as raw and never converted. A format
    /// Sluice does not know is refused for a URL or staged source; a body is checked as raw
    /// and stored as received (Glance stores an upload of any `disk_format`).
    ///
    /// # Errors
    /// A message (a 400 when the request arrives) when Sluice cannot import the image's
    /// `disk_format` from `source`.
    pub fn for_image(
        image: &ImageRecord,
        source: ImportSource,
        conversion: Conversion,
    ) -> Result<ImportRequest, String> {
        let disk_format = image
            .disk_format
            .clone()
            .unwrap_or_else(|| "raw".to_owned());
        let (declared, target) = match declared_format(&disk_format) {
            Ok(declared) if is_opaque(&disk_format) => (declared, None),
            Ok(declared) => (declared, conversion.target()),
            Err(_) if source == ImportSource::Body => (Format::Raw, None),
            Err(message) => return Err(message),
        };
        Ok(ImportRequest {
            source,
            disk_format,
            declared,
            target,
            unwrap: Unwrapping::of(image.container_format.as_deref()),
        })
    }

    /// The pipeline's request for image `image_id`: this import under the server's limits,
    /// charged to `admission`.
    pub fn ingest_request<'a>(
        &self,
        image_id: &'a str,
        config: &Config,
        admission: &'a dyn Admission,
    ) -> IngestRequest<'a> {
        let limits = config.limits.format_limits(config.max_virtual_size);
        IngestRequest::new(image_id, self.declared, limits)
            .converting(self.target)
            .spilling(config.limits.max_spill_bytes)
            .admitted_by(admission)
    }
}

/// The minimum transfer rate every source of an import must keep (`min_rate_*`).
pub fn min_rate(config: &Config) -> MinRate {
    MinRate {
        bytes_per_sec: config.min_rate_bytes_per_sec,
        window: std::time::Duration::from_secs(config.min_rate_window_secs),
    }
}

/// Whether `disk_format` carries no structure of its own (kernels, ramdisks, AMIs).
fn is_opaque(disk_format: &str) -> bool {
    OPAQUE_DISK_FORMATS.contains(&disk_format)
}

/// The format an image of `disk_format` is inspected as: its own, or raw for the opaque
/// formats (kernels, ramdisks, AMIs).
///
/// # Errors
/// A message when Sluice cannot import that format.
fn declared_format(disk_format: &str) -> Result<Format, String> {
    if is_opaque(disk_format) {
        return Ok(Format::Raw);
    }
    let unknown = || format!("disk_format '{disk_format}' is not a disk format Sluice can import");
    // Glance's names only: the inspector also knows qemu's (`vpc`) and formats that are no
    // disk format (wrappers, partition tables), which no image record may carry.
    if !DISK_FORMATS.contains(&disk_format) {
        return Err(unknown());
    }
    disk_format.parse::<Format>().map_err(|_| unknown())
}

/// Parses a task's `input.output_format`: absent or null means the server's setting.
///
/// # Errors
/// A message for the task (or a 400) when it is not one of `raw`, `qcow2`, `none`.
fn parse_output_format(input: &Value) -> Result<Option<Conversion>, String> {
    match input.get(OUTPUT_FORMAT_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Conversion::parse(s)
            .map(Some)
            .ok_or_else(|| format!("output_format '{s}' is not one of 'raw', 'qcow2', 'none'")),
        Some(_) => Err("output_format must be a string: 'raw', 'qcow2' or 'none'".to_owned()),
    }
}

/// A legacy `import` task's `input`, parsed: the import and the properties of the image it
/// creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyImport {
    /// The import (its source a [`ImportSource::Url`]).
    pub request: ImportRequest,
    /// The new image's properties.
    pub properties: ImageProperties,
}

/// Why a legacy task's `input` cannot be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// Refused when the task is created (400): the input contradicts itself.
    BadRequest(String),
    /// Accepted when the task is created, as Glance accepts it (a missing field, a format
    /// Sluice does not import): the task fails when it runs. `properties` are the ones given,
    /// parsed, for the create-time authorisation.
    Deferred {
        /// The task's failure message (Glance's where Glance has one).
        message: String,
        /// The `image_properties`, when given and valid.
        properties: Option<Box<ImageProperties>>,
    },
    /// Refused when the task is created (400, 403 or 413): an image property.
    Property(PropertyError),
}

impl InputError {
    /// The task's failure message.
    pub fn message(&self) -> String {
        match self {
            InputError::BadRequest(message) | InputError::Deferred { message, .. } => {
                message.clone()
            }
            InputError::Property(e) => e.to_string(),
        }
    }
}

impl LegacyImport {
    /// Parses a task's `input` (Sluice's checks; the `import_from` URL itself is checked,
    /// with Glance's messages, by [`crate::api::tasks`] before this): the image properties as
    /// an image creation takes them, `output_format` over the server's `conversion`, and the
    /// fields Glance requires (missing ones fail the task with Glance's messages). Called
    /// when the task is created and again when it runs.
    ///
    /// # Errors
    /// See [`InputError`].
    pub fn parse(
        input: &Value,
        limits: &PropertyLimits,
        conversion: Conversion,
    ) -> Result<LegacyImport, InputError> {
        let deferred = |message: &str| InputError::Deferred {
            message: message.to_owned(),
            properties: None,
        };
        let obj = input
            .as_object()
            .ok_or_else(|| deferred("Task input must be an object"))?;
        let url = obj
            .get("import_from")
            .and_then(Value::as_str)
            .ok_or_else(|| deferred("Input does not contain 'import_from' field"))?
            .to_owned();
        let from_format = obj
            .get("import_from_format")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let given_disk_format = obj
            .get("image_properties")
            .and_then(|p| p.get("disk_format"))
            .and_then(Value::as_str);
        if let (Some(source), Some(disk)) = (&from_format, given_disk_format) {
            if source != disk {
                return Err(InputError::BadRequest(format!(
                    "import_from_format '{source}' does not match image_properties disk_format \
                     '{disk}'; Sluice stores images in the format they arrive in."
                )));
            }
        }
        let output_format = parse_output_format(input).map_err(InputError::BadRequest)?;
        let properties = match obj.get("image_properties") {
            None => None,
            Some(Value::Null) => {
                return Err(deferred("'image_properties' must be an object"));
            }
            Some(Value::Object(props)) => {
                Some(ImageProperties::parse(props, limits).map_err(InputError::Property)?)
            }
            Some(other) => {
                return Err(InputError::BadRequest(format!(
                    "image_properties must be an object, not {}",
                    py_repr(other)
                )))
            }
        };
        let deferred_with =
            |message: String, properties: Option<ImageProperties>| InputError::Deferred {
                message,
                properties: properties.map(Box::new),
            };
        let Some(from_format) = from_format else {
            return Err(deferred_with(
                "Input does not contain 'import_from_format' field".to_owned(),
                properties,
            ));
        };
        let Some(properties) = properties else {
            return Err(deferred("Input does not contain 'image_properties' field"));
        };
        let declared = match declared_format(&from_format) {
            Ok(format) => format,
            Err(_) => {
                return Err(deferred_with(
                    format!(
                        "import_from_format '{from_format}' is not a disk format Sluice can \
                         import"
                    ),
                    Some(properties),
                ))
            }
        };
        let target = if is_opaque(&from_format) {
            None
        } else {
            output_format.unwrap_or(conversion).target()
        };
        Ok(LegacyImport {
            request: ImportRequest {
                source: ImportSource::Url {
                    url,
                    uri_use: UriUse::LegacyTask,
                },
                disk_format: from_format,
                declared,
                target,
                unwrap: Unwrapping::of(properties.container_format.as_deref()),
            },
            properties,
        })
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::BadRequest(message) | InputError::Deferred { message, .. } => {
                ApiError::BadRequest(message)
            }
            InputError::Property(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Result<LegacyImport, String> {
        LegacyImport::parse(
            &v,
            &PropertyLimits::of(&Config::default()),
            Conversion::None,
        )
        .map_err(|e| e.message())
    }

    fn image(disk_format: &str) -> ImageRecord {
        let mut image = crate::api::testing::image_record("i", "p", "n", 0, 0);
        image.disk_format = Some(disk_format.to_owned());
        image
    }

    #[test]
    fn test_parse_input_missing_fields_name_them_like_glance() {
        let e =
            input(serde_json::json!({"import_from": "http://x/y", "import_from_format": "qcow2"}))
                .unwrap_err();
        assert_eq!(e, "Input does not contain 'image_properties' field");
        let e = input(serde_json::json!({"import_from": "http://x/y", "image_properties": {}}))
            .unwrap_err();
        assert_eq!(e, "Input does not contain 'import_from_format' field");
    }

    #[test]
    fn test_parse_input_format_disagreement_is_refused() {
        let e = LegacyImport::parse(
            &serde_json::json!({
                "import_from": "http://x/y", "import_from_format": "qcow2",
                "image_properties": {"disk_format": "raw"}
            }),
            &PropertyLimits::of(&Config::default()),
            Conversion::None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, InputError::BadRequest(m) if m.contains("does not match")),
            "{e:?}"
        );
    }

    #[test]
    fn test_parse_input_opaque_formats_are_checked_as_raw() {
        let i = input(serde_json::json!({
            "import_from": "http://x/y", "import_from_format": "ami",
            "image_properties": {"disk_format": "ami"}
        }))
        .unwrap();
        assert_eq!(i.request.declared, Format::Raw);
        assert_eq!(i.request.disk_format, "ami");
        assert_eq!(i.request.target, None);
    }

    #[test]
    fn test_parse_input_output_format_is_validated() {
        let base = |v: Value| {
            serde_json::json!({
                "import_from": "http://x/y", "import_from_format": "qcow2",
                "image_properties": {}, "output_format": v
            })
        };
        let i = input(base(Value::from("RAW"))).unwrap();
        assert_eq!(i.request.target, Some(Target::Raw));
        let i = input(base(Value::Null)).unwrap();
        assert_eq!(i.request.target, None);
        let e = input(base(Value::from("vmdk"))).unwrap_err();
        assert!(e.contains("output_format 'vmdk'"), "{e}");
        assert!(input(base(Value::from(3))).is_err());
    }

    /// Found while writing the `api_task_create` fuzz target's invariants:
    /// `import_from_format` names the stored image's `disk_format`, so a name the inspector knows but Glance's schema does not (qemu's
    /// `vpc`, `qcow`, a wrapper, a partition table) would make an image no Glance client
    /// expects. Such a task fails when it runs, as one of a format Sluice does not import.
    #[test]
    fn test_parse_input_non_glance_format_name_is_deferred() {
        for name in [
            "vpc", "VPC", "qcow", "gzip", "tar", "gpt", "mbr", "luks", "qed",
        ] {
            let e = input(serde_json::json!({
                "import_from": "http://x/y", "import_from_format": name,
                "image_properties": {}
            }))
            .unwrap_err();
            assert!(
                e.contains("not a disk format Sluice can import"),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn test_parse_input_bad_property_is_refused_not_deferred() {
        let e = LegacyImport::parse(
            &serde_json::json!({
                "import_from": "http://x/y",
                "image_properties": {"min_disk": -1}
            }),
            &PropertyLimits::of(&Config::default()),
            Conversion::None,
        )
        .unwrap_err();
        assert!(matches!(e, InputError::Property(_)), "{e:?}");
    }

    #[test]
    fn test_for_image_unknown_format_is_raw_for_a_body_refused_for_a_url() {
        let body =
            ImportRequest::for_image(&image("ploop"), ImportSource::Body, Conversion::Raw).unwrap();
        assert_eq!((body.declared, body.target), (Format::Raw, None));
        let url = ImportSource::Url {
            url: "http://x/y".into(),
            uri_use: UriUse::WebDownload,
        };
        let e = ImportRequest::for_image(&image("ploop"), url, Conversion::Raw).unwrap_err();
        assert!(e.contains("not a disk format Sluice can import"), "{e}");
    }

    #[test]
    fn test_for_image_converts_known_formats_only() {
        let qcow2 =
            ImportRequest::for_image(&image("qcow2"), ImportSource::Body, Conversion::Raw).unwrap();
        assert_eq!(
            (qcow2.declared, qcow2.target),
            (Format::Qcow2, Some(Target::Raw))
        );
        let aki =
            ImportRequest::for_image(&image("aki"), ImportSource::Staged, Conversion::Raw).unwrap();
        assert_eq!((aki.declared, aki.target), (Format::Raw, None));
    }
}
