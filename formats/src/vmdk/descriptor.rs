//! The VMDK text descriptor: embedded in a sparse extent at sector 1, or a whole file on its own.
//!
//! Lines are `#` comments, blank, `ddb.*` disk-database entries, `key=value` pairs (`version`,
//! `CID`, `parentCID`, `createType`, ...) or extent lines
//! `RW|RDONLY|NOACCESS <sectors> <TYPE> "<file>" [offset]`. Like QEMU and oslo.utils, the text
//! ends at its first NUL byte.

/// The createTypes Sluice ingests: both keep their data inside the one file (Glance's
/// `vmdk_allowed_types` default).
const VMDK_ALLOWED_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

/// At most this many characters of a hostile line are quoted in a message.
const MAX_QUOTED_CHARS: usize = 80;

/// The `parentCID` value of a disk without a parent.
const VMDK_NO_PARENT_CID: &str = "ffffffff";

/// How many bytes of a stream QEMU's VMDK format probe looks at (`BLOCK_PROBE_BUF_SIZE`):
/// a text descriptor is recognised within this window, as QEMU would when auto-probing.
pub(crate) const VMDK_TEXT_PROBE_WINDOW: usize = 2048;

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmdkExtent {
    /// `RW`, `RDONLY` or `NOACCESS` (as written).
    pub(crate) access: String,
    /// Size in 512-byte sectors.
    pub(crate) sectors: u64,
    /// Extent type (`SPARSE`, `FLAT`, `ZERO`, `VMFS`, ...), upper-cased.
    pub(crate) kind: String,
    /// The quoted file name.
    pub(crate) file: String,
}

impl VmdkExtent {
    /// Whether the file name is a path (or empty) rather than a plain name in the same folder.
    pub(crate) fn names_path(&self) -> bool {
        self.file.is_empty() || self.file.contains('/') || self.file.contains('\\')
    }

    /// `TYPE "file"` for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} {} extent '{}'",
            self.access,
            self.kind,
            quote(&self.file)
        )
    }
}

/// What a descriptor says, as far as Sluice cares.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct VmdkDescriptor {
    /// The `createType` value, unquoted.
    pub(crate) create_type: Option<String>,
    /// The `parentCID` value.
    pub(crate) parent_cid: Option<String>,
    /// The `parentFileNameHint` value.
    pub(crate) parent_hint: Option<String>,
    /// The extent lines, in order (at most [`MAX_RECORDED_EXTENTS`]).
    pub(crate) extents: Vec<VmdkExtent>,
    /// How many extent lines there are (may exceed `extents.len()`).
    pub(crate) extent_count: u64,
    /// The first line that is none of the allowed kinds.
    pub(crate) invalid_line: Option<String>,
}

/// Extent lines remembered for messages; more are only counted (a descriptor may hold
/// thousands, each a reason to reject already).
const MAX_RECORDED_EXTENTS: usize = 4;

impl VmdkDescriptor {
    /// Parses descriptor text (already cut at its first NUL).
    pub(crate) fn parse(text: &[u8]) -> Self {
        let mut d = VmdkDescriptor::default();
        for raw in text.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(raw);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() >= 3 && line.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ddb")) {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if ["rw", "rdonly", "noaccess"]
                .iter()
                .any(|a| first.eq_ignore_ascii_case(a))
            {
                match parse_extent(line) {
                    Some(extent) => {
                        d.extent_count = d.extent_count.saturating_add(1);
                        if d.extents.len() < MAX_RECORDED_EXTENTS {
                            d.extents.push(extent);
                        }
                    }
                    None => d.note_invalid(line),
                }
                continue;
            }
            match line.split_once('=') {
                Some((key, value)) => {
                    let key = key.trim();
                    if key.is_empty() || key.contains(char::is_whitespace) {
                        d.note_invalid(line);
                        continue;
                    }
                    let value = unquote(value.trim()).to_owned();
                    if key.eq_ignore_ascii_case("createType") {
                        d.create_type.get_or_insert(value);
                    } else if key.eq_ignore_ascii_case("parentCID") {
                        d.parent_cid.get_or_insert(value);
                    } else if key.eq_ignore_ascii_case("parentFileNameHint") {
                        d.parent_hint.get_or_insert(value);
                    }
                }
                None => d.note_invalid(line),
            }
        }
        d
    }

    fn note_invalid(&mut self, line: &str) {
        if self.invalid_line.is_none() {
            self.invalid_line = Some(quote(line));
        }
    }

    /// Whether `createType` names a subformat Sluice ingests.
    pub(crate) fn create_type_allowed(&self) -> bool {
        self.create_type.as_deref().is_some_and(|t| {
            VMDK_ALLOWED_CREATE_TYPES
                .iter()
                .any(|a| a.eq_ignore_ascii_case(t))
        })
    }

    /// Whether the descriptor declares a parent (a delta link): a `parentCID` other than
    /// `ffffffff`, or a `parentFileNameHint`.
    pub(crate) fn parent(&self) -> Option<String> {
        if let Some(hint) = &self.parent_hint {
            return Some(format!("parent file '{}'", quote(hint)));
        }
        match &self.parent_cid {
            Some(cid) if !cid.eq_ignore_ascii_case(VMDK_NO_PARENT_CID) => {
                Some(format!("parentCID {}", quote(cid)))
            }
            _ => None,
        }
    }

    /// The sum of the extents' sizes in bytes (what `qemu-img info` reports for a descriptor
    /// file), when every extent was recorded and nothing overflows.
    pub(crate) fn extents_bytes(&self) -> Option<u64> {
        if u64::try_from(self.extents.len()).ok()? != self.extent_count {
            return None;
        }
        self.extents
            .iter()
            .try_fold(0u64, |acc, e| acc.checked_add(e.sectors.checked_mul(512)?))
    }
}

/// Parses `ACCESS SECTORS TYPE "FILE" [OFFSET]`; `None` when malformed.
fn parse_extent(line: &str) -> Option<VmdkExtent> {
    let (access, rest) = split_word(line)?;
    let (sectors, rest) = split_word(rest)?;
    let (kind, rest) = split_word(rest)?;
    let sectors: u64 = sectors.parse().ok()?;
    let rest = rest.strip_prefix('"')?;
    let (file, rest) = rest.split_once('"')?;
    let rest = rest.trim();
    if !rest.is_empty() && rest.parse::<u64>().is_err() {
        return None;
    }
    Some(VmdkExtent {
        access: access.to_ascii_uppercase(),
        sectors,
        kind: kind.to_ascii_uppercase(),
        file: file.to_owned(),
    })
}

/// The first whitespace-separated word and the rest (trimmed at its start).
fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace)?;
    let (word, rest) = s.split_at(end);
    Some((word, rest.trim_start()))
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// A value shortened for a message, with control characters replaced.
pub(crate) fn quote(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX_QUOTED_CHARS {
        out.push_str("...");
    }
    out
}

/// The text of a descriptor region: its bytes up to the first NUL.
pub(crate) fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => bytes.get(..n).unwrap_or(bytes),
        None => bytes,
    }
}

/// Whether the start of a stream (up to [`VMDK_TEXT_PROBE_WINDOW`] bytes, cut at the first
/// NUL) is a text-only VMDK descriptor.
///
/// Recognised, as QEMU's probe does, when the first line that is neither blank nor a `#`
/// comment is `version=N` — and also when it is `createType=...`, or the first line is the
/// `# Disk DescriptorFile` banner. Random text matches none of these. Only complete lines
/// count, so the answer depends on the bytes alone.
pub(crate) fn looks_like_text_descriptor(window: &[u8]) -> bool {
    let mut lines = window.split(|&b| b == b'\n').peekable();
    let mut first = true;
    while let Some(raw) = lines.next() {
        if lines.peek().is_none() {
            // The last piece has no newline: the window may have cut it.
            return false;
        }
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if first {
            first = false;
            let banner: String = line
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            if banner == "#diskdescriptorfile" {
                return true;
            }
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            return false;
        };
        let key = key.trim();
        return key.eq_ignore_ascii_case("version") || key.eq_ignore_ascii_case("createType");
    }
    false
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test arithmetic on small known values
mod tests {
    use super::*;

    const QEMU_SPARSE: &str = "# Disk DescriptorFile\nversion=1\nCID=c429258c\n\
parentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\n\
RW 204800 SPARSE \"a.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
ddb.adapterType = \"ide\"\n";

    #[test]
    fn test_descriptor_qemu_sparse_parses() {
        let d = VmdkDescriptor::parse(QEMU_SPARSE.as_bytes());
        assert!(matches!(d.create_type.as_deref(), Some("monolithicSparse")));
        assert!(d.create_type_allowed());
        assert!(d.parent().is_none());
        assert!(d.invalid_line.is_none());
        assert!(matches!(d.extent_count, 1));
        assert!(matches!(
            d.extents.first(),
            Some(VmdkExtent { sectors: 204_800, kind, file, .. }) if kind == "SPARSE" && file == "a.vmdk"
        ));
        assert!(matches!(d.extents_bytes(), Some(104_857_600)));
    }

    #[test]
    fn test_descriptor_flat_extent_with_offset_parses() {
        let d = VmdkDescriptor::parse(
            b"createType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/passwd\" 0\n",
        );
        assert!(!d.create_type_allowed());
        assert!(matches!(d.extents.first(), Some(e) if e.names_path() && e.kind == "FLAT"));
    }

    #[test]
    fn test_descriptor_garbage_line_is_invalid() {
        let d = VmdkDescriptor::parse(b"createType=\"streamOptimized\"\nhello world\n");
        assert!(matches!(d.invalid_line.as_deref(), Some("hello world")));
        let d = VmdkDescriptor::parse(b"two words=1\n");
        assert!(d.invalid_line.is_some());
        let d = VmdkDescriptor::parse(b"RW 12 SPARSE unquoted\n");
        assert!(d.invalid_line.is_some());
    }

    #[test]
    fn test_descriptor_parent_cid_is_parent() {
        let d = VmdkDescriptor::parse(b"parentCID=1234abcd\n");
        assert!(matches!(d.parent(), Some(p) if p.contains("1234abcd")));
        let d = VmdkDescriptor::parse(b"parentFileNameHint=\"base.vmdk\"\n");
        assert!(matches!(d.parent(), Some(p) if p.contains("base.vmdk")));
    }

    #[test]
    fn test_text_probe_descriptor_banner_or_version_matches() {
        assert!(looks_like_text_descriptor(QEMU_SPARSE.as_bytes()));
        assert!(looks_like_text_descriptor(b"\n  \n# c\nversion=1\n"));
        assert!(looks_like_text_descriptor(b"createType=\"vmfs\"\n"));
    }

    #[test]
    fn test_text_probe_random_text_does_not_match() {
        assert!(!looks_like_text_descriptor(b"hello\nversion=1\n"));
        assert!(!looks_like_text_descriptor(b"# just a comment\n"));
        assert!(!looks_like_text_descriptor(b"version=1"));
        assert!(!looks_like_text_descriptor(b""));
    }

    #[test]
    fn test_until_nul_cuts_text() {
        assert!(matches!(until_nul(b"ab\0cd"), b"ab"));
        assert!(matches!(until_nul(b"abcd"), b"abcd"));
    }
}
