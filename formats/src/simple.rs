//! Formats recognised from their first sector alone: VDI, QED, LUKS and compression or archive
//! wrappers. Sluice ingests none of them; each is refused with a precise reason.

use crate::probe::{Detection, Findings, Probe};
use crate::stream::{le_u32, le_u64, Capture, Tail};
use crate::{Format, Reason, ReasonCode};

/// Every format here is decided from the first sector.
const HEADER_LEN: usize = 512;

/// A probe that captures the first sector and classifies it once.
#[derive(Debug)]
struct SectorProbe {
    header: Capture,
    detection: Detection,
    virtual_size: Option<u64>,
    findings: Findings,
}

impl SectorProbe {
    fn new() -> Self {
        SectorProbe {
            header: Capture::new(0, HEADER_LEN),
            detection: Detection::Pending,
            virtual_size: None,
            findings: Findings::default(),
        }
    }

    /// Feeds bytes; runs `classify` once the sector (or, at EOF, whatever exists) is in.
    fn feed(&mut self, pos: u64, data: &[u8], classify: fn(&[u8], &mut Self)) {
        if self.detection == Detection::Pending && self.header.feed(pos, data) {
            self.decide(classify);
        }
    }

    fn finish(&mut self, classify: fn(&[u8], &mut Self)) {
        if self.detection == Detection::Pending {
            self.decide(classify);
        }
    }

    fn decide(&mut self, classify: fn(&[u8], &mut Self)) {
        let header = self.header.bytes().to_vec();
        self.detection = Detection::No;
        classify(&header, self);
    }
}

macro_rules! sector_probe {
    ($(#[$doc:meta])* $name:ident, $candidates:expr, $classify:path) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name(SectorProbe);

        impl $name {
            pub(crate) fn new() -> Self {
                $name(SectorProbe::new())
            }
        }

        impl Probe for $name {
            fn candidates(&self) -> &'static [Format] {
                $candidates
            }
            fn feed(&mut self, pos: u64, data: &[u8]) {
                self.0.feed(pos, data, $classify);
            }
            fn finish(&mut self, _tail: &Tail) {
                self.0.finish($classify);
            }
            fn detection(&self) -> Detection {
                self.0.detection
            }
            fn wants(&self, _pos: u64) -> bool {
                self.0.detection == Detection::Pending
            }
            fn virtual_size(&self) -> Option<u64> {
                self.0.virtual_size
            }
            fn findings(&self) -> &[Reason] {
                self.0.findings.as_slice()
            }
        }
    };
}

sector_probe!(
    /// VirtualBox VDI: signature `0xBEDA107F` (LE) at 0x40, virtual size LE u64 at 0x170.
    VdiProbe,
    &[Format::Vdi],
    classify_vdi
);
sector_probe!(
    /// QEMU enhanced disk: `QED\0` at 0, image size LE u64 at 48.
    QedProbe,
    &[Format::Qed],
    classify_qed
);
sector_probe!(
    /// LUKS: `LUKS\xba\xbe` at 0, version BE u16 at 6.
    LuksProbe,
    &[Format::Luks],
    classify_luks
);
sector_probe!(
    /// Compression and archive wrappers, by their magic numbers.
    WrapperProbe,
    &[Format::Gzip, Format::Xz, Format::Zstd, Format::Bzip2, Format::Zip, Format::Tar],
    classify_wrapper
);

/// VDI's image signature, stored little-endian at 0x40.
const VDI_SIGNATURE: u32 = 0xBEDA_107F;

fn classify_vdi(h: &[u8], p: &mut SectorProbe) {
    if le_u32(h, 0x40) != Some(VDI_SIGNATURE) {
        return;
    }
    p.detection = Detection::Yes(Format::Vdi);
    p.virtual_size = le_u64(h, 0x170);
    p.findings.push(
        ReasonCode::UnsupportedFormat,
        "VDI images are not ingested; convert to qcow2 or raw first",
    );
}

fn classify_qed(h: &[u8], p: &mut SectorProbe) {
    if !h.starts_with(b"QED\0") {
        return;
    }
    p.detection = Detection::Yes(Format::Qed);
    p.virtual_size = le_u64(h, 48);
    p.findings.push(
        ReasonCode::UnsupportedFormat,
        "QED images are not ingested (QEMU deprecated the format); convert to qcow2 or raw first",
    );
}

fn classify_luks(h: &[u8], p: &mut SectorProbe) {
    if !h.starts_with(b"LUKS\xba\xbe") {
        return;
    }
    p.detection = Detection::Yes(Format::Luks);
    let version = h
        .get(6..8)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .map(u16::from_be_bytes);
    let version = version.map_or_else(|| "?".to_owned(), |v| v.to_string());
    p.findings.push(
        ReasonCode::Encrypted,
        format!("image is a LUKS version {version} encrypted volume"),
    );
}

/// bzip2 block magic (BCD digits of pi) and end-of-stream magic (sqrt pi), after `BZh1`..`BZh9`.
const BZIP2_BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
const BZIP2_EOS_MAGIC: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];

fn classify_wrapper(h: &[u8], p: &mut SectorProbe) {
    let bzip2 = h.starts_with(b"BZh")
        && h.get(3).is_some_and(|d| (b'1'..=b'9').contains(d))
        && h.get(4..10)
            .is_some_and(|m| m == BZIP2_BLOCK_MAGIC || m == BZIP2_EOS_MAGIC);
    let tar = h
        .get(257..265)
        .is_some_and(|m| m == b"ustar\x0000" || m == b"ustar  \0");
    let found = if h.starts_with(&[0x1f, 0x8b, 0x08]) {
        Format::Gzip
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Format::Xz
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Zstd
    } else if bzip2 {
        Format::Bzip2
    } else if h.starts_with(b"PK\x03\x04") || h.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if tar {
        Format::Tar
    } else {
        return;
    };
    p.detection = Detection::Yes(found);
    let what = if found == Format::Tar || found == Format::Zip {
        "archive"
    } else {
        "compressed stream"
    };
    p.findings.push(
        ReasonCode::Compressed,
        format!("image is a {found} {what}; unpack it and import the disk image inside"),
    );
}
