//! The VMDK inspector: sparse extent header, embedded descriptor, grain directory and tables,
//! or the streamOptimized marker chain, as they stream past.

use crate::probe::{Detection, PlacedFindings, Probe};
use crate::stream::{Capture, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

use super::descriptor::{
    looks_like_text_descriptor, quote, until_nul, VmdkDescriptor, VMDK_TEXT_PROBE_WINDOW,
};
use super::footer::VmdkFooterWalk;
use super::header::{
    VmdkHeader, VmdkSubformat, GD_AT_END, SECTOR, VMDK3_MAGIC, VMDK4_MAGIC,
    VMDK_MAX_DESCRIPTOR_SECTORS,
};
use super::sparse::VmdkTableWalk;
use super::stream_optimized::VmdkMarkerWalk;

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
    /// The end-of-stream window of a monolithicSparse image with a footer.
    footer: Option<VmdkFooterWalk>,
}

/// Recognises VMDK images and checks them.
#[derive(Debug)]
pub(crate) struct VmdkProbe {
    max_tracked_tables: usize,
    /// `Limits::vmdk_max_footer_window`.
    max_footer_window: u64,
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
            max_footer_window: limits.vmdk_max_footer_window,
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
            match super::cowd::check(bytes) {
                Ok(size) => {
                    self.virtual_size = Some(size);
                    self.findings.push(
                        ReasonCode::UnsupportedFormat,
                        0,
                        "legacy VMDK3 (COWD) sparse extents are not ingested; convert to \
                         streamOptimized or qcow2 first",
                    );
                }
                Err((code, message)) => self.findings.push(code, 0, message),
            }
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
        let footer = match subformat {
            Some(VmdkSubformat::MonolithicSparse) if header.gd_offset == GD_AT_END => {
                match VmdkFooterWalk::new(&header, self.max_footer_window) {
                    Ok(walk) => Some(walk),
                    Err(message) => {
                        self.findings.push(ReasonCode::LimitExceeded, 0, message);
                        None
                    }
                }
            }
            _ => None,
        };
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
            footer,
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
        if let Some(footer) = sparse.footer.as_mut() {
            footer.feed(data);
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
        if let Some(sparse) = self.sparse.as_mut() {
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
            if let Some(footer) = sparse.footer.as_mut() {
                footer.finish(len, &mut self.findings);
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
                || s.footer.is_some()
        })
    }

    fn virtual_size(&self) -> Option<u64> {
        self.virtual_size
    }

    fn findings(&self) -> &[Reason] {
        self.findings.as_slice()
    }
}
