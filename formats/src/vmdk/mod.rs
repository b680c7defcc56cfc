//! VMware VMDK: hosted sparse extents (`KDMV`: monolithicSparse and streamOptimized), the
//! legacy `COWD` extent, and text-only descriptor files.
//!
//! Sluice ingests a VMDK only when it is one self-contained sparse extent: createType
//! `monolithicSparse` or `streamOptimized`, one `SPARSE` extent naming a plain file (itself),
//! no parent. Anything that makes QEMU open another file is refused: descriptor files (their
//! data is always elsewhere), FLAT/VMFS/ZERO extents and paths (CVE-2022-47951), parents. Past
//! those checks (oslo.utils' and more), the structure is walked as it streams: grain
//! directory → grain tables → grains, and for streamOptimized the marker chain and footer.

pub(crate) mod convert;
mod descriptor;
mod header;
mod sparse;
mod stream_optimized;

use crate::probe::{Detection, PlacedFindings, Probe};
use crate::stream::{le_u32, Capture, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

use descriptor::{
    looks_like_text_descriptor, quote, until_nul, VmdkDescriptor, VMDK_TEXT_PROBE_WINDOW,
};
use header::{
    VmdkHeader, VmdkSubformat, GD_AT_END, SECTOR, VMDK3_MAGIC, VMDK4_MAGIC,
    VMDK_MAX_DESCRIPTOR_SECTORS,
};
use sparse::VmdkTableWalk;
use stream_optimized::VmdkMarkerWalk;

/// The sparse extent header is one sector.
const HEADER_LEN: usize = 512;

/// Largest descriptor text read: QEMU's `vmdk_read_desc` and oslo.utils stop at 1 MiB − 1.
const VMDK_MAX_DESCRIPTOR_BYTES: usize = (1 << 20) - 1;

/// QEMU reads this many sectors at the descriptor offset when it looks for `parentCID` and
/// `parentFileNameHint` (`DESC_SIZE`), whatever `descriptorSize` says; Sluice captures at
/// least as much so it sees every parent QEMU would follow.
const QEMU_DESCRIPTOR_WINDOW_SECTORS: u64 = 20;

/// The text-descriptor side of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextState {
    /// Collecting the probe window.
    Probing,
    /// Recognised; collecting the whole descriptor.
    Collecting,
    /// Not a descriptor, or already parsed.
    Done,
}

/// A sparse extent's state once its header is known.
#[derive(Debug)]
struct VmdkSparse {
    header: VmdkHeader,
    /// The header's layout, when the header passed its checks.
    subformat: Option<VmdkSubformat>,
    /// The descriptor area: at least QEMU's window, of which `declared` bytes are the
    /// descriptor proper.
    descriptor: Option<(Capture, usize)>,
    tables: Option<VmdkTableWalk>,
    markers: Option<VmdkMarkerWalk>,
}

/// Recognises VMDK images and checks them.
#[derive(Debug)]
pub(crate) struct VmdkProbe {
    max_tracked_tables: usize,
    head: Capture,
    head_done: bool,
    text: Vec<u8>,
    text_ended: bool,
    text_state: TextState,
    sparse: Option<Box<VmdkSparse>>,
    detection: Detection,
    virtual_size: Option<u64>,
    findings: PlacedFindings,
}

impl VmdkProbe {
    pub(crate) fn new(limits: &Limits) -> Self {
        VmdkProbe {
            max_tracked_tables: limits.max_tracked_tables,
            head: Capture::new(0, HEADER_LEN),
            head_done: false,
            text: Vec::new(),
            text_ended: false,
            text_state: TextState::Probing,
            sparse: None,
            detection: Detection::Pending,
            virtual_size: None,
            findings: PlacedFindings::default(),
        }
    }

    /// Appends text bytes from the start of the stream until a NUL or the cap.
    fn feed_text(&mut self, pos: u64, data: &[u8]) {
        if self.text_ended || self.text_state == TextState::Done {
            return;
        }
        let cap = match self.text_state {
            TextState::Probing => VMDK_TEXT_PROBE_WINDOW,
            _ => VMDK_MAX_DESCRIPTOR_BYTES,
        };
        let have = u64::try_from(self.text.len()).unwrap_or(u64::MAX);
        let cap64 = u64::try_from(cap).unwrap_or(u64::MAX);
        let Some((_, part)) = crate::stream::intersect(pos, data, have, cap64) else {
            return;
        };
        if pos > have {
            // Bytes were skipped (contiguous feeding never does this): the text is incomplete.
            self.text_ended = true;
            return;
        }
        match part.iter().position(|&b| b == 0) {
            Some(n) => {
                self.text.extend_from_slice(part.get(..n).unwrap_or(&[]));
                self.text_ended = true;
            }
            None => self.text.extend_from_slice(part),
        }
        if self.text.len() >= VMDK_MAX_DESCRIPTOR_BYTES {
            self.text_ended = true;
        }
    }

    /// Decides the text side once the window is full, the text ended, or at EOF.
    fn step_text(&mut self, at_eof: bool) {
        if self.text_state == TextState::Probing
            && (at_eof || self.text_ended || self.text.len() >= VMDK_TEXT_PROBE_WINDOW)
        {
            if looks_like_text_descriptor(&self.text) {
                self.detection = Detection::Yes(Format::Vmdk);
                self.text_state = TextState::Collecting;
            } else {
                self.text_state = TextState::Done;
                self.text = Vec::new();
            }
        }
        if self.text_state == TextState::Collecting && (at_eof || self.text_ended) {
            self.text_state = TextState::Done;
            let d = VmdkDescriptor::parse(&self.text);
            self.text = Vec::new();
            self.check_text_descriptor(&d);
        }
    }

    /// A descriptor file: never self-contained.
    fn check_text_descriptor(&mut self, d: &VmdkDescriptor) {
        self.virtual_size = d.extents_bytes();
        self.check_descriptor_common(d, 0);
        for extent in &d.extents {
            self.findings.push(
                ReasonCode::ExternalExtent,
                0,
                format!(
                    "VMDK descriptor file references {}; a descriptor without a sparse \
                     header keeps its data in other files",
                    extent.describe()
                ),
            );
        }
    }

    /// Checks shared by embedded and stand-alone descriptors.
    fn check_descriptor_common(&mut self, d: &VmdkDescriptor, pos: u64) {
        if let Some(line) = &d.invalid_line {
            self.findings.push(
                ReasonCode::Corrupt,
                pos,
                format!("invalid VMDK descriptor line '{line}'"),
            );
        }
        match &d.create_type {
            None => self.findings.push(
                ReasonCode::UnsupportedSubformat,
                pos,
                "VMDK descriptor has no createType",
            ),
            Some(t) if !d.create_type_allowed() => self.findings.push(
                ReasonCode::UnsupportedSubformat,
                pos,
                format!(
                    "VMDK createType '{}' is not supported (only monolithicSparse and \
                     streamOptimized)",
                    quote(t)
                ),
            ),
            Some(_) => {}
        }
        if d.extent_count == 0 {
            self.findings
                .push(ReasonCode::Corrupt, pos, "VMDK descriptor has no extents");
        }
        if let Some(parent) = d.parent() {
            self.findings.push(
                ReasonCode::BackingFile,
                pos,
                format!("VMDK descriptor references {parent}"),
            );
        }
    }

    /// Decides the sparse side once the header sector is in (or at EOF).
    fn step_head(&mut self, at_eof: bool) {
        if self.head_done || !(at_eof || self.head.is_complete()) {
            return;
        }
        self.head_done = true;
        let bytes = self.head.bytes();
        if bytes.starts_with(VMDK3_MAGIC) {
            self.detection = Detection::Yes(Format::Vmdk);
            self.virtual_size = le_u32(bytes, 12).and_then(|s| u64::from(s).checked_mul(SECTOR));
            self.findings.push(
                ReasonCode::UnsupportedFormat,
                0,
                "legacy VMDK3 (COWD) sparse extents are not ingested; convert to \
                 streamOptimized or qcow2 first",
            );
            return;
        }
        if !bytes.starts_with(VMDK4_MAGIC) {
            return;
        }
        self.detection = Detection::Yes(Format::Vmdk);
        let Some(header) = (bytes.len() == HEADER_LEN)
            .then(|| VmdkHeader::parse(bytes))
            .flatten()
        else {
            let len = bytes.len();
            self.findings.push(
                ReasonCode::Truncated,
                u64::try_from(len).unwrap_or(0),
                format!("VMDK sparse extent header is cut short at {len} bytes"),
            );
            return;
        };
        self.virtual_size = header.virtual_size();
        let subformat = match header.check() {
            Ok(s) => Some(s),
            Err((code, message)) => {
                self.findings.push(code, 0, message);
                None
            }
        };
        let descriptor = (header.desc_offset == 1
            && (1..=VMDK_MAX_DESCRIPTOR_SECTORS).contains(&header.desc_size))
        .then(|| {
            let sectors = header.desc_size.max(QEMU_DESCRIPTOR_WINDOW_SECTORS);
            let len = usize::try_from(sectors.saturating_mul(SECTOR)).ok()?;
            let declared = usize::try_from(header.desc_size.saturating_mul(SECTOR)).ok()?;
            Some((Capture::new(SECTOR, len), declared))
        })
        .flatten();
        let (tables, markers) = match subformat {
            Some(s) => {
                let stream = s == VmdkSubformat::StreamOptimized;
                let tables = (header.gd_offset != GD_AT_END)
                    .then(|| VmdkTableWalk::new(&header, stream, self.max_tracked_tables))
                    .flatten();
                let markers = stream.then(|| VmdkMarkerWalk::new(&header)).flatten();
                (tables, markers)
            }
            None => (None, None),
        };
        self.sparse = Some(Box::new(VmdkSparse {
            header,
            subformat,
            descriptor,
            tables,
            markers,
        }));
    }

    fn feed_sparse(&mut self, pos: u64, data: &[u8]) {
        let Some(sparse) = self.sparse.as_mut() else {
            return;
        };
        let mut descriptor_done = false;
        if let Some((capture, _)) = sparse.descriptor.as_mut() {
            descriptor_done = capture.feed(pos, data);
        }
        if let Some(tables) = sparse.tables.as_mut() {
            tables.feed(pos, data, &mut self.findings);
        }
        if let Some(markers) = sparse.markers.as_mut() {
            markers.feed(pos, data, &mut self.findings);
        }
        if descriptor_done {
            self.check_embedded_descriptor();
        }
    }

    /// Checks the embedded descriptor once captured (or at EOF with what arrived).
    fn check_embedded_descriptor(&mut self) {
        let Some(sparse) = self.sparse.as_mut() else {
            return;
        };
        let Some((capture, declared)) = sparse.descriptor.take() else {
            return;
        };
        let (header, subformat) = (sparse.header, sparse.subformat);
        let window = capture.bytes();
        let pos = SECTOR;
        if window.len() < declared {
            self.findings.push(
                ReasonCode::Truncated,
                pos,
                format!(
                    "VMDK image ends inside its descriptor ({} of {declared} bytes)",
                    window.len()
                ),
            );
        }
        let text = until_nul(window.get(..declared).unwrap_or(window));
        let d = VmdkDescriptor::parse(text);
        self.check_descriptor_common(&d, pos);
        if let (Some(s), Some(t)) = (subformat, &d.create_type) {
            if d.create_type_allowed() && !t.eq_ignore_ascii_case(s.create_type()) {
                self.findings.push(
                    ReasonCode::Corrupt,
                    pos,
                    format!(
                        "VMDK createType '{}' does not match its sparse extent header ({})",
                        quote(t),
                        s.create_type()
                    ),
                );
            }
        }
        for (i, extent) in d.extents.iter().enumerate() {
            if i > 0 || extent.kind != "SPARSE" || extent.names_path() {
                self.findings.push(
                    ReasonCode::ExternalExtent,
                    pos,
                    format!(
                        "VMDK descriptor references {}; a sparse extent may only describe \
                         itself",
                        extent.describe()
                    ),
                );
            } else if extent.sectors != header.capacity {
                self.findings.push(
                    ReasonCode::Corrupt,
                    pos,
                    format!(
                        "VMDK extent of {} sectors differs from the header capacity of {} \
                         sectors",
                        extent.sectors, header.capacity
                    ),
                );
            }
        }
        // QEMU finds a parent by substring anywhere in its descriptor window.
        let qemu_view = String::from_utf8_lossy(until_nul(window)).to_ascii_lowercase();
        if qemu_view.contains("parentfilenamehint") {
            self.findings.push(
                ReasonCode::BackingFile,
                pos.saturating_add(1),
                "VMDK descriptor area names a parentFileNameHint",
            );
        }
    }
}

impl Probe for VmdkProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Vmdk]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        if self.detection == Detection::No {
            return;
        }
        let probing = self.text_state == TextState::Probing;
        self.feed_text(pos, data);
        self.step_text(false);
        if probing && self.text_state == TextState::Collecting {
            // Recognised inside this chunk: collect the rest of it too.
            self.feed_text(pos, data);
            self.step_text(false);
        }
        if !self.head_done {
            self.head.feed(pos, data);
            self.step_head(false);
        }
        self.feed_sparse(pos, data);
        if self.detection == Detection::Pending
            && self.head_done
            && self.text_state == TextState::Done
        {
            self.detection = Detection::No;
        }
    }

    fn finish(&mut self, tail: &Tail) {
        self.step_text(true);
        self.step_head(true);
        if self.sparse.as_ref().is_some_and(|s| s.descriptor.is_some()) {
            self.check_embedded_descriptor();
        }
        if let Some(sparse) = self.sparse.as_ref() {
            let len = tail.stream_len();
            let overhead = sparse.header.overhead.saturating_mul(SECTOR);
            if sparse.subformat.is_some() && len < overhead {
                self.findings.push(
                    ReasonCode::Truncated,
                    len,
                    format!("VMDK image is {len} bytes, shorter than its {overhead}-byte metadata"),
                );
            }
            if let Some(tables) = &sparse.tables {
                tables.finish(len, &mut self.findings);
            }
            if let Some(markers) = &sparse.markers {
                let footer = sparse.header.gd_offset == GD_AT_END;
                markers.finish(&sparse.header, tail, footer, &mut self.findings);
            }
        }
        if self.detection == Detection::Pending {
            self.detection = Detection::No;
        }
    }

    fn detection(&self) -> Detection {
        self.detection
    }

    fn wants(&self, pos: u64) -> bool {
        match self.detection {
            Detection::No => return false,
            Detection::Pending => return true,
            Detection::Yes(_) => {}
        }
        if self.text_state == TextState::Collecting {
            return true;
        }
        self.sparse.as_ref().is_some_and(|s| {
            s.descriptor.is_some()
                || s.tables.as_ref().is_some_and(|t| !t.is_done(pos))
                || s.markers.as_ref().is_some_and(VmdkMarkerWalk::is_running)
        })
    }

    fn virtual_size(&self) -> Option<u64> {
        self.virtual_size
    }

    fn findings(&self) -> &[Reason] {
        self.findings.as_slice()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test arithmetic on small known values
mod tests {
    use super::header::tests::{encode, qemu_sparse_header};
    use super::*;

    fn probe(bytes: &[u8], chunk: usize) -> VmdkProbe {
        let mut p = VmdkProbe::new(&Limits::default());
        let mut tail = Tail::new();
        for (i, c) in bytes.chunks(chunk.max(1)).enumerate() {
            if p.wants((i * chunk) as u64) {
                p.feed((i * chunk) as u64, c);
            }
            tail.feed(c);
        }
        p.finish(&tail);
        p
    }

    fn codes(p: &VmdkProbe) -> Vec<ReasonCode> {
        p.findings().iter().map(|r| r.code).collect()
    }

    /// A QEMU-like 100 MiB monolithicSparse image without data: header, descriptor, RGD and
    /// GD with their tables, padded to overHead.
    fn sparse_image(descriptor: &str) -> Vec<u8> {
        let h = qemu_sparse_header();
        let mut img = encode(&h);
        img.extend_from_slice(descriptor.as_bytes());
        img.resize(128 * 512, 0);
        for (gd, first_gt) in [(21usize, 22u32), (38, 39)] {
            for i in 0..4u32 {
                let at = gd * 512 + i as usize * 4;
                img[at..at + 4].copy_from_slice(&(first_gt + 4 * i).to_le_bytes());
            }
        }
        img
    }

    const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
createType=\"monolithicSparse\"\nRW 204800 SPARSE \"x.vmdk\"\nddb.adapterType = \"ide\"\n";

    #[test]
    fn test_probe_sparse_image_is_accepted() {
        let img = sparse_image(DESCRIPTOR);
        for chunk in [1, 511, 4096, img.len()] {
            let p = probe(&img, chunk);
            assert!(matches!(p.detection(), Detection::Yes(Format::Vmdk)));
            assert!(p.findings().is_empty(), "{:?}", p.findings());
            assert!(matches!(p.virtual_size(), Some(104_857_600)));
        }
    }

    #[test]
    fn test_probe_external_extent_is_refused() {
        let d = DESCRIPTOR.replace("\"x.vmdk\"", "\"/etc/passwd\"");
        assert!(codes(&probe(&sparse_image(&d), 4096)).contains(&ReasonCode::ExternalExtent));
        let d = DESCRIPTOR.replace(
            "RW 204800 SPARSE \"x.vmdk\"\n",
            "RW 204800 SPARSE \"x.vmdk\"\nRW 2048 FLAT \"y\" 0\n",
        );
        assert!(codes(&probe(&sparse_image(&d), 4096)).contains(&ReasonCode::ExternalExtent));
    }

    #[test]
    fn test_probe_parent_is_backing_file() {
        let d = DESCRIPTOR.replace("parentCID=ffffffff", "parentCID=12345678");
        assert!(codes(&probe(&sparse_image(&d), 4096)).contains(&ReasonCode::BackingFile));
    }

    #[test]
    fn test_probe_text_descriptor_is_vmdk_and_refused() {
        let text = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n\
RW 2048 FLAT \"/etc/passwd\" 0\n";
        for chunk in [1, 3, 4096] {
            let p = probe(text, chunk);
            assert!(matches!(p.detection(), Detection::Yes(Format::Vmdk)));
            let c = codes(&p);
            assert!(c.contains(&ReasonCode::UnsupportedSubformat));
            assert!(c.contains(&ReasonCode::ExternalExtent));
        }
    }

    #[test]
    fn test_probe_random_bytes_are_not_vmdk() {
        let p = probe(b"hello world\nversion=1\n", 4);
        assert!(matches!(p.detection(), Detection::No));
        let p = probe(&[0u8; 4096], 4096);
        assert!(matches!(p.detection(), Detection::No));
        assert!(!p.wants(4096));
    }

    #[test]
    fn test_probe_cowd_is_unsupported_format() {
        let mut img = vec![0u8; 512];
        img[..4].copy_from_slice(b"COWD");
        assert!(codes(&probe(&img, 512)).contains(&ReasonCode::UnsupportedFormat));
    }

    #[test]
    fn test_probe_short_header_is_truncated() {
        let img = sparse_image(DESCRIPTOR);
        assert!(codes(&probe(&img[..100], 7)).contains(&ReasonCode::Truncated));
    }

    #[test]
    fn test_probe_hostile_bytes_never_panic() {
        let mut img = sparse_image(DESCRIPTOR);
        let mut seed = 0x1234_5678u32;
        for _ in 0..200 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let at = (seed as usize >> 8) % 2048;
            img[at] = (seed >> 3) as u8;
            let _ = probe(&img, 333);
        }
    }

    /// Randomly damaged images must give the same findings however they are split.
    #[test]
    fn test_probe_mutated_images_are_chunking_invariant() {
        let mut sparse = sparse_image(DESCRIPTOR);
        // One allocated grain at sector 128 in both tables, and its data.
        for gt in [22usize, 39] {
            sparse[gt * 512..gt * 512 + 4].copy_from_slice(&128u32.to_le_bytes());
        }
        sparse.resize(256 * 512, 0x5a);
        let (_, stream) = super::stream_optimized::tests::tiny_stream();
        let mut seed = 0x9e37_79b9u32;
        for base in [sparse, stream] {
            for round in 0..150 {
                let mut img = base.clone();
                for _ in 0..(round % 4 + 1) {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let at = (seed as usize >> 4) % img.len().min(24 * 512);
                    let at = if round % 3 == 0 {
                        img.len() - 1 - at % 1536
                    } else {
                        at
                    };
                    img[at] = (seed >> 20) as u8;
                }
                let whole = probe(&img, img.len());
                for chunk in [1, 3, 64, 511, 4096] {
                    let split = probe(&img, chunk);
                    assert_eq!(
                        split.findings(),
                        whole.findings(),
                        "round {round} chunk {chunk}"
                    );
                    assert_eq!(split.detection(), whole.detection());
                    assert_eq!(split.virtual_size(), whole.virtual_size());
                }
            }
        }
    }

    #[test]
    fn test_probe_long_text_descriptor_is_chunking_invariant() {
        let mut text = String::from("# Disk DescriptorFile\nversion=1\n");
        while text.len() < 3000 {
            text.push_str("# padding comment line\n");
        }
        text.push_str("createType=\"monolithicSparse\"\nRW 2048 FLAT \"/etc/shadow\" 0\n");
        let whole = probe(text.as_bytes(), text.len());
        assert!(whole
            .findings()
            .iter()
            .any(|r| r.message.contains("/etc/shadow")));
        for chunk in [1, 7, 2047, 2049, 4096] {
            let split = probe(text.as_bytes(), chunk);
            assert_eq!(split.findings(), whole.findings(), "chunk {chunk}");
        }
    }
}
