//! Image properties: one validation for every way an image gets them. The task path
//! (`input.image_properties`, at `POST /v2/tasks` and again when the task runs), `PATCH
//! /v2/images/{id}` and the tag calls all go through here, with Glance's statuses and
//! messages:
//!
//! - **403** for keys no caller may set: read-only ones (`checksum`, `direct_url`, `id`,
//!   `size`, `status`, `os_hash_*`, `virtual_size`, …: "Attribute 'x' is read-only.") and
//!   reserved ones (`deleted`, `deleted_at`, `location`, `locations`, anything starting with
//!   `os_glance`: "Attribute 'x' is reserved.").
//! - **400** for values the image schema refuses (Glance's "Provided object does not match
//!   schema 'image': …"): `name`, tags, `owner` and keys longer than 255 characters, extra
//!   values that are not strings or longer than [`MAX_PROPERTY_VALUE_LEN`] bytes, a
//!   `visibility`, `disk_format` or `container_format` outside its enum, `min_disk`/`min_ram`
//!   that are not non-negative integers, `protected` that is not a boolean.
//! - **413** above `image_tag_quota` distinct tags or `image_property_quota` extra properties
//!   (Glance's "The limit has been exceeded on the number of allowed image tags. Attempted:
//!   n, Maximum: m").
//!
//! Creation ([`ImageProperties::parse`]) follows Glance's `POST /v2/images` (the images
//! `RequestDeserializer.create`, then `ImageFactory.new_image`); an update ([`classify`] and
//! [`parse_base`] per patch operation) follows Glance's `PATCH`. Who may set what
//! (`public` visibility, `community`, another owner) is [`ImageProperties::authorize`], in
//! [`policy`]'s table. A creation path parses once into an [`ImageProperties`] and builds the
//! image record from its fields.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use crate::api::auth::RequestContext;
use crate::api::error::ApiError;
use crate::api::policy::{self, Action, Target};
use crate::api::tasks::py_repr;
use crate::config::Config;

/// Longest name, tag, owner or extra property key, in characters (Glance's image schema
/// `maxLength`, the width of its columns).
pub const MAX_FIELD_LEN: usize = 255;

/// Longest extra property value, in bytes. Glance stores values in a `Text` column (64 KiB
/// in MySQL); this bounds what one image record holds.
pub const MAX_PROPERTY_VALUE_LEN: usize = 65_535;

/// Image visibilities (Glance's schema enum, in its order).
pub const VISIBILITIES: [&str; 4] = ["community", "public", "private", "shared"];

/// Disk formats (Glance's default `[image_format] disk_formats`, the served schema's enum).
pub const DISK_FORMATS: [&str; 11] = [
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];

/// Container formats (Glance's default `[image_format] container_formats`).
pub const CONTAINER_FORMATS: [&str; 8] = [
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

/// Keys a creation refuses before anything else (the images deserializer's
/// `_disallowed_properties`).
const CREATE_DISALLOWED: [&str; 5] = ["direct_url", "self", "file", "schema", "stores"];

/// Keys a creation refuses as read-only (`ImageFactory._readonly_properties`), plus `id`
/// (Sluice names the images a task makes) and `os_hidden` (not implemented, always false).
const CREATE_READ_ONLY: [&str; 10] = [
    "created_at",
    "updated_at",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "id",
    "os_hidden",
];

/// Keys `PATCH` refuses as read-only (the deserializer's `_readonly_properties`, plus
/// `os_hidden` and `stores`, which Sluice does not let anyone change).
const UPDATE_READ_ONLY: [&str; 15] = [
    "checksum",
    "created_at",
    "direct_url",
    "file",
    "id",
    "os_hash_algo",
    "os_hash_value",
    "os_hidden",
    "schema",
    "self",
    "size",
    "status",
    "stores",
    "updated_at",
    "virtual_size",
];

/// Reserved keys (the deserializer's `_reserved_properties`).
const RESERVED: [&str; 3] = ["deleted", "deleted_at", "location"];

/// Glance's reserved namespace: no key starting with it may be set.
const RESERVED_PREFIX: &str = "os_glance";

/// Whether an image is being created or changed: Glance's messages differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A creation path (`image_properties` of a task; later `POST /v2/images`).
    Create,
    /// `PATCH /v2/images/{id}`.
    Update,
}

/// An image property refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertyError {
    /// 403: the key may not be set (read-only or reserved); Glance's message.
    #[error("{0}")]
    Forbidden(String),
    /// 400: the value does not fit the image schema; Glance's message.
    #[error("{0}")]
    Invalid(String),
    /// 413: more tags or extra properties than the quota.
    #[error(
        "The limit has been exceeded on the number of allowed image {what}. Attempted: \
         {attempted}, Maximum: {limit}"
    )]
    OverQuota {
        /// `tags` or `properties`.
        what: &'static str,
        /// How many there would be.
        attempted: usize,
        /// The quota.
        limit: usize,
    },
}

impl From<PropertyError> for ApiError {
    fn from(e: PropertyError) -> Self {
        match e {
            PropertyError::Forbidden(message) => ApiError::Forbidden(message),
            PropertyError::Invalid(message) => ApiError::BadRequest(message),
            PropertyError::OverQuota {
                what,
                attempted,
                limit,
            } => ApiError::QuotaExceeded {
                what,
                attempted,
                limit,
            },
        }
    }
}

/// The per-image quotas (`image_tag_quota`, `image_property_quota`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertyLimits {
    /// Most distinct tags.
    pub tags: usize,
    /// Most extra properties.
    pub properties: usize,
}

impl PropertyLimits {
    /// The configured quotas.
    pub fn of(config: &Config) -> PropertyLimits {
        PropertyLimits {
            tags: config.image_tag_quota,
            properties: config.image_property_quota,
        }
    }

    /// 413 when an image would have `count` distinct tags, more than the quota.
    ///
    /// # Errors
    /// [`PropertyError::OverQuota`].
    pub fn check_tags(&self, count: usize) -> Result<(), PropertyError> {
        over_quota("tags", count, self.tags)
    }

    /// 413 when an image would have `count` extra properties, more than the quota.
    ///
    /// # Errors
    /// [`PropertyError::OverQuota`].
    pub fn check_properties(&self, count: usize) -> Result<(), PropertyError> {
        over_quota("properties", count, self.properties)
    }
}

fn over_quota(what: &'static str, attempted: usize, limit: usize) -> Result<(), PropertyError> {
    if attempted > limit {
        return Err(PropertyError::OverQuota {
            what,
            attempted,
            limit,
        });
    }
    Ok(())
}

/// Who may see an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Everyone may see it; it is listed only when asked for (needs `communitize_image`).
    Community,
    /// Everyone sees it in lists (needs `publicize_image`: admins).
    Public,
    /// Its project only.
    Private,
    /// Its project (and, in Glance, image members): the default.
    Shared,
}

impl Visibility {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Community => "community",
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Shared => "shared",
        }
    }

    fn parse(s: &str) -> Option<Visibility> {
        match s {
            "community" => Some(Visibility::Community),
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            "shared" => Some(Visibility::Shared),
            _ => None,
        }
    }

    /// The policy that setting this visibility needs beyond creating or changing the
    /// image, if any.
    pub fn action(self) -> Option<Action> {
        match self {
            Visibility::Community => Some(Action::CommunitizeImage),
            Visibility::Public => Some(Action::PublicizeImage),
            Visibility::Private | Visibility::Shared => None,
        }
    }
}

/// The base (non-extra) attributes a caller may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// `container_format`.
    ContainerFormat,
    /// `disk_format`.
    DiskFormat,
    /// `min_disk` (GiB).
    MinDisk,
    /// `min_ram` (MiB).
    MinRam,
    /// `name`.
    Name,
    /// `owner` (admins only).
    Owner,
    /// `protected`.
    Protected,
    /// `tags`.
    Tags,
    /// `visibility`.
    Visibility,
}

impl Base {
    fn from_key(key: &str) -> Option<Base> {
        Some(match key {
            "container_format" => Base::ContainerFormat,
            "disk_format" => Base::DiskFormat,
            "min_disk" => Base::MinDisk,
            "min_ram" => Base::MinRam,
            "name" => Base::Name,
            "owner" => Base::Owner,
            "protected" => Base::Protected,
            "tags" => Base::Tags,
            "visibility" => Base::Visibility,
            _ => return None,
        })
    }

    /// The attribute's name.
    pub fn key(self) -> &'static str {
        match self {
            Base::ContainerFormat => "container_format",
            Base::DiskFormat => "disk_format",
            Base::MinDisk => "min_disk",
            Base::MinRam => "min_ram",
            Base::Name => "name",
            Base::Owner => "owner",
            Base::Protected => "protected",
            Base::Tags => "tags",
            Base::Visibility => "visibility",
        }
    }
}

/// A base attribute's parsed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseValue {
    /// `container_format` (null: unset).
    ContainerFormat(Option<String>),
    /// `disk_format` (null: unset).
    DiskFormat(Option<String>),
    /// `min_disk`.
    MinDisk(u64),
    /// `min_ram`.
    MinRam(u64),
    /// `name` (null: no name).
    Name(Option<String>),
    /// `owner`.
    Owner(String),
    /// `protected`.
    Protected(bool),
    /// `tags`: distinct, in order, within the quota.
    Tags(Vec<String>),
    /// `visibility`.
    Visibility(Visibility),
}

/// What a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// A base attribute.
    Base(Base),
    /// An extra property (string-valued).
    Extra,
}

/// What `key` names, or the 403/400 Glance gives for setting it.
///
/// # Errors
/// [`PropertyError::Forbidden`] for read-only and reserved keys, [`PropertyError::Invalid`]
/// for an extra key longer than [`MAX_FIELD_LEN`].
pub fn classify(key: &str, change: Change) -> Result<Attribute, PropertyError> {
    let read_only = || PropertyError::Forbidden(format!("Attribute '{key}' is read-only."));
    let reserved = || PropertyError::Forbidden(format!("Attribute '{key}' is reserved."));
    let is_reserved = RESERVED.contains(&key) || key.starts_with(RESERVED_PREFIX);
    match change {
        Change::Create => {
            if CREATE_DISALLOWED.contains(&key) {
                return Err(read_only());
            }
            if let Some(base) = Base::from_key(key) {
                return Ok(Attribute::Base(base));
            }
            if key.chars().count() > MAX_FIELD_LEN {
                return Err(PropertyError::Invalid(
                    "Custom property should not be greater than 255 characters.".into(),
                ));
            }
            if is_reserved || key == "locations" {
                return Err(reserved());
            }
            if CREATE_READ_ONLY.contains(&key) {
                return Err(read_only());
            }
        }
        Change::Update => {
            if UPDATE_READ_ONLY.contains(&key) {
                return Err(read_only());
            }
            if is_reserved {
                return Err(reserved());
            }
            if key == "locations" {
                return Err(PropertyError::Forbidden(
                    "It's not allowed to update locations if locations are invisible.".into(),
                ));
            }
            if let Some(base) = Base::from_key(key) {
                return Ok(Attribute::Base(base));
            }
            check_len("property name", key)?;
        }
    }
    Ok(Attribute::Extra)
}

/// Parses a base attribute's value against the image schema (and the tag quota).
///
/// # Errors
/// [`PropertyError::Invalid`] with the schema's message, [`PropertyError::OverQuota`] for
/// too many tags.
pub fn parse_base(
    base: Base,
    value: &Value,
    limits: &PropertyLimits,
) -> Result<BaseValue, PropertyError> {
    let key = base.key();
    Ok(match base {
        Base::Name => BaseValue::Name(nullable_text(key, value)?),
        Base::Owner => {
            let owner = want_string(key, value)?;
            check_len(key, owner)?;
            BaseValue::Owner(owner.to_owned())
        }
        Base::Visibility => BaseValue::Visibility(
            value
                .as_str()
                .and_then(Visibility::parse)
                .ok_or_else(|| enum_error(key, value, &VISIBILITIES))?,
        ),
        Base::Protected => BaseValue::Protected(value.as_bool().ok_or_else(|| {
            schema_error(format!(
                "{} is not of type 'boolean' (in {key})",
                py_repr(value)
            ))
        })?),
        Base::MinDisk => BaseValue::MinDisk(want_count(key, value)?),
        Base::MinRam => BaseValue::MinRam(want_count(key, value)?),
        Base::Tags => BaseValue::Tags(parse_tags(value, limits)?),
        Base::DiskFormat => BaseValue::DiskFormat(nullable_enum(key, value, &DISK_FORMATS)?),
        Base::ContainerFormat => {
            BaseValue::ContainerFormat(nullable_enum(key, value, &CONTAINER_FORMATS)?)
        }
    })
}

/// Parses an extra property's value: a string of at most [`MAX_PROPERTY_VALUE_LEN`] bytes.
///
/// # Errors
/// [`PropertyError::Invalid`].
pub fn parse_extra(key: &str, value: &Value) -> Result<String, PropertyError> {
    let text = want_string(key, value)?;
    if text.len() > MAX_PROPERTY_VALUE_LEN {
        return Err(schema_error(format!(
            "the value of {key} is longer than {MAX_PROPERTY_VALUE_LEN} bytes"
        )));
    }
    Ok(text.to_owned())
}

/// Checks one tag (`PUT /v2/images/{id}/tags/{tag}`): at most [`MAX_FIELD_LEN`] characters.
///
/// # Errors
/// [`PropertyError::Invalid`].
pub fn check_tag(tag: &str) -> Result<(), PropertyError> {
    check_len("tags", tag)
}

/// The properties a creation path asks for, parsed and checked (everything but who may set
/// them: [`ImageProperties::authorize`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageProperties {
    /// `name` (absent or null: none).
    pub name: Option<String>,
    /// `visibility` (absent: `shared`).
    pub visibility: Option<Visibility>,
    /// `protected` (absent: false).
    pub protected: Option<bool>,
    /// `min_disk` (absent: 0).
    pub min_disk: Option<u64>,
    /// `min_ram` (absent: 0).
    pub min_ram: Option<u64>,
    /// `disk_format`.
    pub disk_format: Option<String>,
    /// `container_format`.
    pub container_format: Option<String>,
    /// `owner` (absent: the caller's project).
    pub owner: Option<String>,
    /// Distinct tags, in order.
    pub tags: Vec<String>,
    /// Extra properties.
    pub extra: BTreeMap<String, String>,
}

impl ImageProperties {
    /// Parses the properties of a new image (a task's `image_properties`), with Glance's
    /// create-time checks in its order: keys that are never accepted, the schema, key
    /// lengths, reserved and read-only keys, then the quotas.
    ///
    /// # Errors
    /// The first [`PropertyError`].
    pub fn parse(
        props: &Map<String, Value>,
        limits: &PropertyLimits,
    ) -> Result<ImageProperties, PropertyError> {
        if let Some(key) = props
            .keys()
            .find(|k| CREATE_DISALLOWED.contains(&k.as_str()))
        {
            return Err(PropertyError::Forbidden(format!(
                "Attribute '{key}' is read-only."
            )));
        }
        // The base attributes' schema first, as Glance validates the body before looking at
        // keys; then each other key, before its value: the read-only and reserved ones have
        // non-string types in Glance's schema (`size`, `locations`), so Glance refuses them
        // with 403 whatever their value.
        let mut parsed = ImageProperties::default();
        for (key, value) in props {
            if let Some(base) = Base::from_key(key) {
                parsed.set(parse_base(base, value, limits)?);
            }
        }
        for (key, value) in props {
            if classify(key, Change::Create)? == Attribute::Extra {
                parsed.extra.insert(key.clone(), parse_extra(key, value)?);
            }
        }
        limits.check_properties(parsed.extra.len())?;
        Ok(parsed)
    }

    /// Parses the body of `POST /v2/images`: [`ImageProperties::parse`], plus `id`, which
    /// only this path accepts (a UUID, Glance's schema pattern).
    ///
    /// # Errors
    /// The first [`PropertyError`]; a malformed `id` is [`PropertyError::Invalid`].
    pub fn parse_create(
        props: &Map<String, Value>,
        limits: &PropertyLimits,
    ) -> Result<(Option<String>, ImageProperties), PropertyError> {
        let mut rest = props.clone();
        let id = rest.remove("id");
        let parsed = ImageProperties::parse(&rest, limits)?;
        let id = match id {
            None => None,
            Some(Value::String(id)) if is_uuid(&id) => Some(id),
            Some(Value::String(id)) => {
                return Err(schema_error(format!(
                    "{} does not match '{UUID_PATTERN}' (in id)",
                    py_repr(&Value::String(id))
                )))
            }
            Some(other) => {
                return Err(schema_error(format!(
                    "{} is not of type 'string' (in id)",
                    py_repr(&other)
                )))
            }
        };
        Ok((id, parsed))
    }

    fn set(&mut self, value: BaseValue) {
        match value {
            BaseValue::ContainerFormat(v) => self.container_format = v,
            BaseValue::DiskFormat(v) => self.disk_format = v,
            BaseValue::MinDisk(v) => self.min_disk = Some(v),
            BaseValue::MinRam(v) => self.min_ram = Some(v),
            BaseValue::Name(v) => self.name = v,
            BaseValue::Owner(v) => self.owner = Some(v),
            BaseValue::Protected(v) => self.protected = Some(v),
            BaseValue::Tags(v) => self.tags = v,
            BaseValue::Visibility(v) => self.visibility = Some(v),
        }
    }

    /// Whether `ctx` may create an image with these properties: owned by another project
    /// (`add_image`: admins), `public` (`publicize_image`: admins), `community`
    /// (`communitize_image`: members of the owning project).
    ///
    /// # Errors
    /// 403 naming the policy.
    pub fn authorize(&self, ctx: &RequestContext) -> Result<(), ApiError> {
        let owner = self.owner.as_deref().unwrap_or(&ctx.project_id);
        let target = Target::NewImage { owner };
        policy::authorize(ctx, Action::AddImage, target)?;
        if let Some(action) = self.visibility.and_then(Visibility::action) {
            policy::authorize(ctx, action, target)?;
        }
        Ok(())
    }
}

/// The image schema's pattern for `id`.
const UUID_PATTERN: &str =
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

/// Whether `id` matches [`UUID_PATTERN`]: hex groups of 8, 4, 4, 4 and 12, hyphenated.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `tags`: an array of strings of at most [`MAX_FIELD_LEN`] characters; duplicates count
/// once (Glance's tags are a set).
fn parse_tags(value: &Value, limits: &PropertyLimits) -> Result<Vec<String>, PropertyError> {
    let Value::Array(items) = value else {
        return Err(schema_error(format!(
            "{} is not of type 'array' (in tags)",
            py_repr(value)
        )));
    };
    let mut seen = HashSet::new();
    let mut tags: Vec<String> = Vec::new();
    for item in items {
        let tag = want_string("tags", item)?;
        check_len("tags", tag)?;
        if seen.insert(tag) {
            tags.push(tag.to_owned());
        }
    }
    limits.check_tags(tags.len())?;
    Ok(tags)
}

fn schema_error(detail: String) -> PropertyError {
    PropertyError::Invalid(format!(
        "Provided object does not match schema 'image': {detail}"
    ))
}

/// A string field's length check (Glance's `maxLength: 255`).
fn check_len(field: &str, value: &str) -> Result<(), PropertyError> {
    if value.chars().count() > MAX_FIELD_LEN {
        return Err(schema_error(format!(
            "{} is too long (in {field})",
            py_repr(&Value::String(value.to_owned()))
        )));
    }
    Ok(())
}

fn want_string<'v>(key: &str, value: &'v Value) -> Result<&'v str, PropertyError> {
    value.as_str().ok_or_else(|| {
        schema_error(format!(
            "{} is not of type 'string' (in {key})",
            py_repr(value)
        ))
    })
}

/// Null, or a string of at most [`MAX_FIELD_LEN`] characters.
fn nullable_text(key: &str, value: &Value) -> Result<Option<String>, PropertyError> {
    match value {
        Value::Null => Ok(None),
        other => {
            let text = want_string(key, other)?;
            check_len(key, text)?;
            Ok(Some(text.to_owned()))
        }
    }
}

fn enum_error(key: &str, value: &Value, allowed: &[&str]) -> PropertyError {
    let list: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    schema_error(format!(
        "{} is not one of [{}] (in {key})",
        py_repr(value),
        list.join(", ")
    ))
}

fn want_enum<'v>(key: &str, value: &'v Value, allowed: &[&str]) -> Result<&'v str, PropertyError> {
    match value.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s),
        _ => Err(enum_error(key, value, allowed)),
    }
}

/// Null, or one of `allowed`.
fn nullable_enum(
    key: &str,
    value: &Value,
    allowed: &[&str],
) -> Result<Option<String>, PropertyError> {
    match value {
        Value::Null => Ok(None),
        other => want_enum(key, other, allowed).map(|s| Some(s.to_owned())),
    }
}

fn want_count(key: &str, value: &Value) -> Result<u64, PropertyError> {
    match value {
        Value::Number(n) if n.is_u64() => n
            .as_u64()
            .ok_or_else(|| schema_error(format!("{n} is not of type 'integer' (in {key})"))),
        Value::Number(n) if n.is_i64() => Err(schema_error(format!(
            "{n} is less than the minimum of 0 (in {key})"
        ))),
        other => Err(schema_error(format!(
            "{} is not of type 'integer' (in {key})",
            py_repr(other)
        ))),
    }
}

#[cfg(test)]
mod tests;
