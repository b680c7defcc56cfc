//! OVA: a tar whose first member is an OVF descriptor, read in the stream. The one disk the
//! descriptor references is passed on (gunzipped when the descriptor says
//! `ovf:compression="gzip"`) as the image; a manifest (`.mf`) is checked against the disk
//! member's SHA-1 or SHA-256: as the disk streams when it comes before it, and at the end of
//! the archive, before the import commits, when it comes after (the disk member is then
//! hashed with both); every other member is read past without being stored.
//!
//! Refused (nothing stored): a first member that is not a `.ovf` descriptor, a descriptor
//! above [`MAX_DESCRIPTOR`] bytes, with a DTD (entity bombs: `roxmltree` is asked to refuse
//! any DTD, so no entity is ever expanded) or not well-formed; more or fewer than one disk;
//! the disk member missing or present twice; member names with `..` or an absolute path; a
//! descriptor whose disk format disagrees with the declared one; a manifest digest that does
//! not match.
//!
//! OVF facts become image properties (see [`Ovf::properties`]).

use std::io::{BufRead, Read};

use bytes::{Bytes, BytesMut};
use openssl::sha::{Sha1, Sha256};
use sluice_formats::{Format, ReasonCode};

use super::tar::{corrupt, TarReader};
use super::{Decompressor, UnwrapError, UnwrapLimits, Wrapper, OUTPUT_CHUNK};

/// Bytes accepted after the tar end-of-archive marker: tar pads its output to a record
/// (GNU tar's default: 10 KiB); 1 MiB covers any record size in use.
const MAX_TRAILER: u64 = 1 << 20;

/// Most XML nodes parsed in a descriptor (roxmltree's `nodes_limit`).
const MAX_DESCRIPTOR_NODES: u32 = 100_000;

/// Longest property value recorded (Glance's limit for property values).
const MAX_PROPERTY_VALUE: usize = 255;

/// What the OVA reader hands on, in order: the descriptor's facts, then data.
pub(crate) enum OvaEvent {
    /// Image properties from the descriptor.
    Facts(Vec<(String, String)>),
    /// A piece of the disk image.
    Data(Bytes),
}

/// The descriptor's one disk and facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ovf {
    /// The disk's member name (`ovf:href` of its `File`).
    pub(crate) href: String,
    /// `ovf:compression="gzip"`.
    pub(crate) gzip: bool,
    /// The format the descriptor claims (`ovf:format` URI), when it names a known one.
    pub(crate) format: Option<Format>,
    /// The facts recorded as image properties.
    pub(crate) properties: Vec<(String, String)>,
}

fn refuse(code: ReasonCode, message: impl Into<String>) -> UnwrapError {
    UnwrapError::Ova {
        code,
        message: message.into(),
    }
}

/// Parses an OVF descriptor (bounded, no DTD).
pub(crate) fn parse_descriptor(xml: &[u8]) -> Result<Ovf, UnwrapError> {
    let text = std::str::from_utf8(xml).map_err(|_| corrupt("OVF descriptor is not UTF-8 text"))?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_DESCRIPTOR_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| corrupt(format!("OVF descriptor is not accepted XML: {e}")))?;
    let attr = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.value().to_owned())
    };
    let named = |name: &'static str| {
        doc.descendants()
            .filter(move |n| n.tag_name().name() == name)
    };
    let disks: Vec<_> = named("Disk").collect();
    let disk = match disks.as_slice() {
        [disk] => *disk,
        [] => {
            return Err(refuse(
                ReasonCode::UnsupportedFormat,
                "OVF descriptor describes no disk",
            ))
        }
        more => {
            return Err(refuse(
                ReasonCode::UnsupportedFormat,
                format!(
                    "OVF descriptor describes {} disks; Sluice imports OVAs with one disk",
                    more.len()
                ),
            ))
        }
    };
    let file_ref = attr(disk, "fileRef").ok_or_else(|| corrupt("OVF disk has no ovf:fileRef"))?;
    let file = named("File")
        .find(|f| attr(*f, "id").as_deref() == Some(file_ref.as_str()))
        .ok_or_else(|| {
            corrupt(format!(
                "OVF disk references file {file_ref:?}, which References does not list"
            ))
        })?;
    let href = attr(file, "href").ok_or_else(|| corrupt("OVF file has no ovf:href"))?;
    check_name(&href)?;
    let gzip = match attr(file, "compression").as_deref() {
        None | Some("" | "identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(refuse(
                ReasonCode::UnsupportedFormat,
                format!("OVF disk file compression {other:?} is not supported (gzip is)"),
            ))
        }
    };
    let format = attr(disk, "format").and_then(|uri| format_of(&uri));
    Ok(Ovf {
        href,
        gzip,
        format,
        properties: facts(&doc),
    })
}

/// The format an `ovf:format` URI names (VMware's vmdk URIs, qcow, vhd, vhdx), if known.
fn format_of(uri: &str) -> Option<Format> {
    let uri = uri.to_ascii_lowercase();
    if uri.contains("vmdk") {
        Some(Format::Vmdk)
    } else if uri.contains("qcow") {
        Some(Format::Qcow2)
    } else if uri.contains("vhdx") {
        Some(Format::Vhdx)
    } else if uri.contains("vhd") {
        Some(Format::Vhd)
    } else {
        None
    }
}

/// OS type, CPU count and memory of the first virtual system, as image properties
/// `ovf_os_id`, `ovf_os_type`, `ovf_os_description`, `ovf_cpus`, `ovf_memory_mib`.
fn facts(doc: &roxmltree::Document<'_>) -> Vec<(String, String)> {
    let mut props = Vec::new();
    let mut put = |key: &str, value: &str| {
        let value = value.trim();
        if !value.is_empty()
            && value.len() <= MAX_PROPERTY_VALUE
            && !props.iter().any(|(k, _): &(String, String)| k == key)
        {
            props.push((key.to_owned(), value.to_owned()));
        }
    };
    if let Some(os) = doc
        .descendants()
        .find(|n| n.tag_name().name() == "OperatingSystemSection")
    {
        for a in os.attributes() {
            match a.name() {
                "id" => put("ovf_os_id", a.value()),
                "osType" => put("ovf_os_type", a.value()),
                _ => {}
            }
        }
        if let Some(d) = os.children().find(|n| n.tag_name().name() == "Description") {
            put("ovf_os_description", d.text().unwrap_or_default());
        }
    }
    let child_text = |item: roxmltree::Node<'_, '_>, name: &str| {
        item.children()
            .find(|n| n.tag_name().name() == name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_owned())
    };
    for item in doc.descendants().filter(|n| n.tag_name().name() == "Item") {
        let quantity = child_text(item, "VirtualQuantity").and_then(|q| q.parse::<u64>().ok());
        match (child_text(item, "ResourceType").as_deref(), quantity) {
            (Some("3"), Some(cpus)) => put("ovf_cpus", &cpus.to_string()),
            (Some("4"), Some(amount)) => {
                let units = child_text(item, "AllocationUnits")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let mib = if units.contains("2^30") || units.contains("giga") {
                    amount.checked_mul(1024)
                } else if units.contains("2^20") || units.contains("mega") {
                    Some(amount)
                } else if units.contains("2^10") || units.contains("kilo") {
                    Some(amount / 1024)
                } else {
                    Some(amount >> 20)
                };
                if let Some(mib) = mib {
                    put("ovf_memory_mib", &mib.to_string());
                }
            }
            _ => {}
        }
    }
    props
}

/// Refuses member names that could escape a directory: absolute, `..`, empty, NUL.
pub(crate) fn check_name(name: &str) -> Result<(), UnwrapError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name.contains('\\')
        || name.split('/').any(|c| c == "..");
    if bad {
        return Err(corrupt(format!(
            "OVA member name {name:?} is absolute or leaves its directory"
        )));
    }
    Ok(())
}

/// `name` without a leading `./`.
fn plain(name: &str) -> &str {
    name.strip_prefix("./").unwrap_or(name)
}

/// A digest expected by the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    Sha1(String),
    Sha256(String),
}

/// The manifest's digest of `href` (`SHA256(name)= hex` or `SHA1(name)= hex` lines).
fn manifest_digest(text: &str, href: &str) -> Option<Expected> {
    text.lines().find_map(|line| {
        let (algo, rest) = line.split_once('(')?;
        let (name, rest) = rest.split_once(')')?;
        let hex = rest
            .trim_start()
            .strip_prefix('=')?
            .trim()
            .to_ascii_lowercase();
        if plain(name) != plain(href) {
            return None;
        }
        match algo.trim() {
            "SHA1" => Some(Expected::Sha1(hex)),
            "SHA256" => Some(Expected::Sha256(hex)),
            _ => None,
        }
    })
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Option<Hasher>,
}

enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    /// No manifest yet: one that comes after the disk may name either.
    Both(Sha1, Sha256),
}

/// The disk member's digests, hex: what a manifest is compared with.
#[derive(Default)]
struct DiskDigests {
    sha1: Option<String>,
    sha256: Option<String>,
}

impl DiskDigests {
    fn of(hasher: Option<Hasher>) -> Self {
        match hasher {
            Some(Hasher::Sha1(h)) => DiskDigests {
                sha1: Some(hex(&h.finish())),
                sha256: None,
            },
            Some(Hasher::Sha256(h)) => DiskDigests {
                sha1: None,
                sha256: Some(hex(&h.finish())),
            },
            Some(Hasher::Both(a, b)) => DiskDigests {
                sha1: Some(hex(&a.finish())),
                sha256: Some(hex(&b.finish())),
            },
            None => DiskDigests::default(),
        }
    }

    /// Compares the manifest's digest of the disk member `name` with the member's.
    fn check(&self, expected: &Expected, name: &str) -> Result<(), UnwrapError> {
        let (want, got) = match expected {
            Expected::Sha1(want) => (want, &self.sha1),
            Expected::Sha256(want) => (want, &self.sha256),
        };
        match got {
            Some(got) if got != want => Err(corrupt(format!(
                "OVA manifest digest of {name:?} is {want}, the member's is {got}"
            ))),
            _ => Ok(()),
        }
    }
}

impl<R: BufRead> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let taken = buf.get(..amt.min(buf.len())).unwrap_or_default();
            match &mut self.hasher {
                Some(Hasher::Sha1(h)) => h.update(taken),
                Some(Hasher::Sha256(h)) => h.update(taken),
                Some(Hasher::Both(a, b)) => {
                    a.update(taken);
                    b.update(taken);
                }
                None => {}
            }
        }
        self.inner.consume(amt);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the OVA on `input`, sending the facts and then the disk's data through `emit`
/// (which returns `false` when the receiver is gone: reading stops), failing once the data
/// passes `limit` bytes. `declared` is the image's declared format, which the descriptor
/// must not contradict.
///
/// # Errors
/// See the module documentation; [`UnwrapError::TooLarge`] past `limit`.
pub(crate) fn read_ova(
    input: impl BufRead,
    declared: Option<Format>,
    limits: &UnwrapLimits,
    emit: &mut dyn FnMut(OvaEvent) -> bool,
) -> Result<(), UnwrapError> {
    let limit = limits.max_output;
    let mut tar = TarReader::new(input, limits.tar_max_extension);
    let first = tar
        .next_member()?
        .ok_or_else(|| corrupt("OVA is an empty tar archive"))?;
    check_name(&first.name)?;
    if !first.is_file() || !first.name.to_ascii_lowercase().ends_with(".ovf") {
        return Err(corrupt(format!(
            "OVA's first member {:?} is not an OVF descriptor (*.ovf)",
            first.name
        )));
    }
    if first.size > limits.ova_max_descriptor {
        return Err(refuse(
            ReasonCode::LimitExceeded,
            format!(
                "OVF descriptor of {} bytes is above the limit of {} (limits.ova_max_descriptor)",
                first.size, limits.ova_max_descriptor
            ),
        ));
    }
    let mut xml = Vec::new();
    let mut data = tar.data(first.size);
    data.read_to_end(&mut xml)
        .map_err(|e| corrupt(format!("reading the OVF descriptor: {e}")))?;
    data.finish()?;
    let ovf = parse_descriptor(&xml)?;
    if let (Some(declared), Some(said)) = (declared, ovf.format) {
        if declared != said {
            return Err(refuse(
                ReasonCode::FormatMismatch,
                format!(
                    "OVF descriptor says the disk is {said}, but the image is declared {declared}"
                ),
            ));
        }
    }
    if !emit(OvaEvent::Facts(ovf.properties.clone())) {
        return Ok(());
    }
    let mut expected: Option<Expected> = None;
    // The disk's digests once it is read (`Some`: the disk member is done).
    let mut disk: Option<DiskDigests> = None;
    let mut checked_after = false;
    let mut members = 1u64;
    while let Some(member) = tar.next_member()? {
        members = members.saturating_add(1);
        if members > limits.ova_max_members {
            return Err(refuse(
                ReasonCode::LimitExceeded,
                format!(
                    "OVA holds more than {} members (limits.ova_max_members)",
                    limits.ova_max_members
                ),
            ));
        }
        check_name(&member.name)?;
        let name = plain(&member.name);
        if name == plain(&ovf.href) {
            if disk.is_some() {
                return Err(corrupt(format!("OVA holds the disk member {name:?} twice")));
            }
            if !member.is_file() {
                return Err(corrupt(format!(
                    "OVA disk member {name:?} is not a regular file"
                )));
            }
            let hasher = match &expected {
                Some(Expected::Sha1(_)) => Some(Hasher::Sha1(Sha1::new())),
                Some(Expected::Sha256(_)) => Some(Hasher::Sha256(Sha256::new())),
                None => Some(Hasher::Both(Sha1::new(), Sha256::new())),
            };
            let mut member_data = Hashing {
                inner: tar.data(member.size),
                hasher,
            };
            let stopped = if ovf.gzip {
                let mut dec = Decompressor::new(Wrapper::Gzip, &mut member_data, limits)?;
                pump(|| dec.next_piece(), emit)?
            } else {
                let mut produced = 0u64;
                pump(
                    || {
                        let piece = read_piece(&mut member_data)?;
                        if let Some(p) = &piece {
                            produced =
                                produced.saturating_add(u64::try_from(p.len()).unwrap_or(u64::MAX));
                            if produced > limit {
                                return Err(UnwrapError::Ova {
                                    code: ReasonCode::SizeCap,
                                    message: format!("OVA disk is larger than {limit} bytes, the image size limit"),
                                });
                            }
                        }
                        Ok(piece)
                    },
                    emit,
                )?
            };
            if stopped {
                return Ok(());
            }
            let Hashing { inner, hasher } = member_data;
            inner.finish()?;
            let digests = DiskDigests::of(hasher);
            if let Some(expected) = &expected {
                digests.check(expected, name)?;
            }
            disk = Some(digests);
        } else if name.to_ascii_lowercase().ends_with(".mf")
            && member.is_file()
            && (disk.is_none() || !checked_after)
        {
            if member.size > limits.ova_max_manifest {
                return Err(refuse(
                    ReasonCode::LimitExceeded,
                    format!(
                        "OVA manifest of {} bytes is above the limit of {} \
                         (limits.ova_max_manifest)",
                        member.size, limits.ova_max_manifest
                    ),
                ));
            }
            let mut text = Vec::new();
            let mut data = tar.data(member.size);
            data.read_to_end(&mut text)
                .map_err(|e| corrupt(format!("reading the OVA manifest: {e}")))?;
            data.finish()?;
            expected = manifest_digest(&String::from_utf8_lossy(&text), &ovf.href);
            // A manifest after the disk: checked now, before the stream ends and the import
            // commits (a failure here fails the stream).
            if let (Some(digests), Some(expected)) = (&disk, &expected) {
                digests.check(expected, plain(&ovf.href))?;
                checked_after = true;
            }
        } else {
            // Certificates, other files: read past, never stored.
            tar.data(member.size).finish()?;
        }
    }
    tar.drain(MAX_TRAILER)?;
    if disk.is_none() {
        return Err(refuse(
            ReasonCode::Truncated,
            format!(
                "OVA has no member {:?}, the disk its descriptor references",
                ovf.href
            ),
        ));
    }
    Ok(())
}

/// Sends pieces from `next` until it ends; `true` if the receiver went away.
fn pump(
    mut next: impl FnMut() -> Result<Option<Bytes>, UnwrapError>,
    emit: &mut dyn FnMut(OvaEvent) -> bool,
) -> Result<bool, UnwrapError> {
    while let Some(piece) = next()? {
        if !emit(OvaEvent::Data(piece)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Up to [`OUTPUT_CHUNK`] bytes of an uncompressed disk member.
fn read_piece(r: &mut impl Read) -> Result<Option<Bytes>, UnwrapError> {
    let mut buf = BytesMut::zeroed(OUTPUT_CHUNK);
    let mut filled = 0usize;
    while let Some(space) = buf.get_mut(filled..).filter(|s| !s.is_empty()) {
        match r.read(space) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(corrupt(
                    "tar stream is truncated: it ends inside the disk member",
                ))
            }
            Err(e) => return Err(corrupt(format!("reading the OVA disk member: {e}"))),
        }
    }
    if filled == 0 {
        return Ok(None);
    }
    buf.truncate(filled);
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]
mod tests;
