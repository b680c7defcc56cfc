//! The qcow2 inspector: the header decides, then the tables are walked as they stream past.

use crate::probe::{Detection, PlacedFindings, Probe};
use crate::stream::{Capture, Tail};
use crate::{Format, Limits, Reason, ReasonCode};

use super::header::{self, Qcow2Kind, QcowV1Header, QCOW_MAGIC, QCOW_V1_HEADER_LEN};
use super::limits::QCOW2_HEADER_CAPTURE;
use super::tables::Qcow2Walk;

/// Recognises qcow2 and QCOW v1 images and checks them for unsafe or inconsistent metadata.
#[derive(Debug)]
pub(crate) struct Qcow2Probe {
    limits: Limits,
    header: Capture,
    state: State,
    virtual_size: Option<u64>,
    findings: PlacedFindings,
}

/// Where the probe is.
#[derive(Debug)]
enum State {
    /// Waiting for the header.
    Pending,
    /// Not a QCOW image.
    No,
    /// A QCOW v1 image (refused, nothing more to check).
    V1,
    /// A qcow2 image whose header is too broken to walk its tables.
    Broken,
    /// A qcow2 image whose tables are being walked.
    Walking(Box<Qcow2Walk>),
}

impl Qcow2Probe {
    /// A probe bounded by `limits`.
    pub(crate) fn new(limits: &Limits) -> Self {
        Qcow2Probe {
            limits: limits.clone(),
            header: Capture::new(0, QCOW2_HEADER_CAPTURE),
            state: State::Pending,
            virtual_size: None,
            findings: PlacedFindings::default(),
        }
    }

    /// Decides from the captured header bytes (all of them, or fewer at end of stream).
    fn decide(&mut self) {
        let mut bytes = [0u8; QCOW2_HEADER_CAPTURE];
        let have = self.header.bytes().len().min(QCOW2_HEADER_CAPTURE);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..have), self.header.bytes().get(..have)) {
            dst.copy_from_slice(src);
        }
        let b = bytes.get(..have).unwrap_or(&[]);
        match header::classify(b) {
            Ok(Qcow2Kind::NotQcow) => self.state = State::No,
            Ok(Qcow2Kind::V1) => self.decide_v1(b),
            Ok(Qcow2Kind::Qcow2(h)) => {
                let walk = Qcow2Walk::new(&h, &self.limits, &mut self.findings);
                self.virtual_size = Some(h.virtual_size());
                match walk {
                    Some(mut walk) => {
                        // Extensions may start inside the captured header: replay it.
                        walk.feed(0, b, &mut self.findings);
                        self.state = State::Walking(Box::new(walk));
                    }
                    None => self.state = State::Broken,
                }
            }
            Err(p) => {
                self.state = State::Broken;
                self.findings.push(p.code, p.at, p.message);
            }
        }
    }

    fn decide_v1(&mut self, b: &[u8]) {
        self.state = State::V1;
        self.findings.push(
            ReasonCode::UnsupportedFormat,
            header::off::VERSION as u64,
            "QCOW version 1 images are not ingested (QEMU deprecated the format); \
             convert to qcow2 or raw first"
                .to_owned(),
        );
        let parsed = if b.len() >= QCOW_V1_HEADER_LEN {
            QcowV1Header::parse(b)
        } else {
            None
        };
        match parsed {
            Some(h) => {
                self.virtual_size = Some(h.size & !511);
                if h.backing_file_offset != 0 {
                    self.findings.push(
                        ReasonCode::BackingFile,
                        header::off::BACKING_FILE_OFFSET as u64,
                        "QCOW v1 image references a backing file".to_owned(),
                    );
                }
            }
            _ => self.truncated_header(b.len()),
        }
    }

    fn truncated_header(&mut self, have: usize) {
        self.findings.push(
            ReasonCode::Truncated,
            u64::MAX,
            format!("qcow2 header is cut short: the stream ends after {have} bytes"),
        );
    }
}

impl Probe for Qcow2Probe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Qcow2, Format::Qcow]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        if matches!(self.state, State::Pending) {
            if self.header.feed(pos, data) {
                self.decide();
            } else if self
                .header
                .bytes()
                .get(..QCOW_MAGIC.len())
                .is_some_and(|m| m != QCOW_MAGIC)
            {
                self.state = State::No;
            }
        }
        if let State::Walking(walk) = &mut self.state {
            walk.feed(pos, data, &mut self.findings);
        }
    }

    fn finish(&mut self, tail: &Tail) {
        if matches!(self.state, State::Pending) {
            self.decide();
        }
        if let State::Walking(walk) = &mut self.state {
            walk.finish(tail.stream_len(), &mut self.findings);
        }
    }

    fn detection(&self) -> Detection {
        match self.state {
            State::Pending => Detection::Pending,
            State::No => Detection::No,
            State::V1 => Detection::Yes(Format::Qcow),
            State::Broken | State::Walking(_) => Detection::Yes(Format::Qcow2),
        }
    }

    fn wants(&self, pos: u64) -> bool {
        match &self.state {
            State::Pending => true,
            State::Walking(walk) => walk.active(pos),
            State::No | State::V1 | State::Broken => false,
        }
    }

    fn virtual_size(&self) -> Option<u64> {
        self.virtual_size
    }

    fn findings(&self) -> &[Reason] {
        self.findings.as_slice()
    }
}

/// A name from the image, printable in a message: control characters and invalid UTF-8 are
/// escaped.
pub(crate) fn display_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}
