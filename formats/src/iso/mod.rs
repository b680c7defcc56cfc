//! ISO 9660 and UDF optical-disc filesystems.
//!
//! Both start with a *volume recognition sequence*: 2048-byte descriptors from byte 32768,
//! after a 32 KiB system area that is free-form (and so can hold another format's header:
//! the polyglot is caught by the inspector's multiple-format rule, not here).
//!
//! * ISO 9660 (ECMA-119): descriptors with identifier `CD001`; type 0 boot record, 1 primary
//!   volume descriptor (PVD), 2 supplementary (Joliet), 3 partition, 255 set terminator.
//! * UDF (ECMA-167): an extended area `BEA01` … `TEA01` holding `NSR02`/`NSR03`. On media
//!   with blocks larger than 2048 bytes each descriptor starts a block, so the 2048-byte slots
//!   in between are zero.
//!
//! A PVD or an NSR descriptor makes the stream an ISO. For ISO 9660 the PVD gives the volume's
//! size, which must fit in the stream. qemu-img treats the image as raw, so the inspector
//! reports the stream length as the virtual size.

use crate::probe::{Detection, Findings, Probe};
use crate::stream::{be_u16, be_u32, le_u16, le_u32, Capture, Tail};
use crate::{Format, Reason, ReasonCode};

/// Where the volume recognition sequence starts: after the 16-sector system area (ECMA-119
/// 6.2.1, ECMA-167 2/8.3).
const ISO_VRS_START: u64 = 32768;

/// Each volume descriptor occupies one 2048-byte sector.
const ISO_DESCRIPTOR_LEN: u64 = 2048;

/// The bytes of each descriptor the probe reads: type, identifier, version and the PVD fields
/// up to the logical block size (both-endian u16 at 128..132).
const ISO_DESCRIPTOR_HEAD: usize = 132;

/// Most descriptors walked. Linux's isofs looks for the primary volume descriptor in sectors
/// 16 to 99 only (84 descriptors); a longer sequence is not an ISO any system mounts.
const ISO_MAX_DESCRIPTORS: u64 = 84;

/// Descriptor type of the ISO 9660 primary volume descriptor.
const ISO_TYPE_PRIMARY: u8 = 1;

/// Offset in the PVD of the volume space size (both-endian u32: LE then BE), in blocks.
const ISO_PVD_VOLUME_SPACE_SIZE: usize = 80;

/// Offset in the PVD of the logical block size (both-endian u16: LE then BE), in bytes.
const ISO_PVD_LOGICAL_BLOCK_SIZE: usize = 128;

/// The logical block sizes ECMA-119 allows on a 2048-byte-sector medium (powers of two from
/// 512 up to the sector size).
const ISO_BLOCK_SIZES: [u16; 3] = [512, 1024, 2048];

/// Where the recognition sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IsoState {
    /// Reading the descriptor in slot `index` (its bytes arrive in `IsoProbe::slot`).
    Walking {
        /// Slot number counted from [`ISO_VRS_START`].
        index: u64,
        /// Whether a `BEA01` opened a UDF extended area not yet closed by `TEA01`.
        in_udf_area: bool,
    },
    /// The sequence ended (or a match was found): nothing more to read.
    Done,
}

/// What one descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IsoDescriptor {
    /// ISO 9660 primary volume descriptor.
    Primary,
    /// Any other ISO 9660 descriptor (boot record, supplementary, partition, terminator).
    OtherIso9660,
    /// UDF `BEA01`: the extended area begins.
    UdfBegin,
    /// UDF `NSR02` or `NSR03`: the volume holds a UDF filesystem.
    UdfNsr,
    /// UDF `TEA01`: the extended area ends, and with it the sequence.
    UdfEnd,
    /// `BOOT2` or `CDW02`: legal in the sequence, says nothing.
    OtherKnown,
    /// An all-zero slot: padding inside a UDF area with blocks above 2048 bytes.
    Blank,
    /// Anything else ends the sequence.
    Unknown,
}

impl IsoDescriptor {
    fn classify(head: &[u8]) -> Self {
        let kind = head.first().copied().unwrap_or(0);
        match head.get(1..6).unwrap_or(&[]) {
            b"CD001" if kind == ISO_TYPE_PRIMARY => IsoDescriptor::Primary,
            b"CD001" => IsoDescriptor::OtherIso9660,
            b"BEA01" => IsoDescriptor::UdfBegin,
            b"NSR02" | b"NSR03" => IsoDescriptor::UdfNsr,
            b"TEA01" => IsoDescriptor::UdfEnd,
            b"BOOT2" | b"CDW02" => IsoDescriptor::OtherKnown,
            _ if head.get(..7).is_some_and(|h| h.iter().all(|&b| b == 0)) => IsoDescriptor::Blank,
            _ => IsoDescriptor::Unknown,
        }
    }
}

/// Recognises ISO 9660 and UDF images by their volume recognition sequence.
#[derive(Debug)]
pub(crate) struct IsoProbe {
    state: IsoState,
    /// The head of the descriptor being read.
    slot: Capture,
    detection: Detection,
    /// The ISO 9660 volume size in bytes from the PVD (blocks × block size).
    volume_bytes: Option<u64>,
    findings: Findings,
}

impl IsoProbe {
    pub(crate) fn new() -> Self {
        IsoProbe {
            state: IsoState::Walking {
                index: 0,
                in_udf_area: false,
            },
            slot: Capture::new(ISO_VRS_START, ISO_DESCRIPTOR_HEAD),
            detection: Detection::Pending,
            volume_bytes: None,
            findings: Findings::default(),
        }
    }

    /// Acts on the completed descriptor in slot `index`; returns the next state.
    fn step(&mut self, index: u64, in_udf_area: bool) -> IsoState {
        let descriptor = IsoDescriptor::classify(self.slot.bytes());
        let mut in_udf_area = in_udf_area;
        match descriptor {
            IsoDescriptor::Primary => {
                self.read_primary();
                self.detection = Detection::Yes(Format::Iso);
                return IsoState::Done;
            }
            IsoDescriptor::UdfNsr => {
                self.detection = Detection::Yes(Format::Iso);
                return IsoState::Done;
            }
            IsoDescriptor::UdfBegin => in_udf_area = true,
            IsoDescriptor::OtherIso9660 | IsoDescriptor::OtherKnown => {}
            IsoDescriptor::Blank if in_udf_area => {}
            IsoDescriptor::UdfEnd | IsoDescriptor::Blank | IsoDescriptor::Unknown => {
                return IsoState::Done;
            }
        }
        let next = index.saturating_add(1);
        if next >= ISO_MAX_DESCRIPTORS {
            return IsoState::Done;
        }
        let start = ISO_DESCRIPTOR_LEN
            .saturating_mul(next)
            .saturating_add(ISO_VRS_START);
        self.slot = Capture::new(start, ISO_DESCRIPTOR_HEAD);
        IsoState::Walking {
            index: next,
            in_udf_area,
        }
    }

    /// Reads the volume size from the primary volume descriptor in `self.slot`.
    fn read_primary(&mut self) {
        let head = self.slot.bytes();
        let blocks_le = le_u32(head, ISO_PVD_VOLUME_SPACE_SIZE);
        let blocks_be = be_u32(head, ISO_PVD_VOLUME_SPACE_SIZE.saturating_add(4));
        let size_le = le_u16(head, ISO_PVD_LOGICAL_BLOCK_SIZE);
        let size_be = be_u16(head, ISO_PVD_LOGICAL_BLOCK_SIZE.saturating_add(2));
        let (Some(blocks), Some(block_size)) = (blocks_le, size_le) else {
            return;
        };
        if blocks_be != Some(blocks) || size_be != Some(block_size) {
            self.findings.push(
                ReasonCode::Corrupt,
                format!(
                    "ISO 9660 primary volume descriptor's little- and big-endian copies disagree \
                     (volume space size {blocks} vs {}, logical block size {block_size} vs {})",
                    blocks_be.unwrap_or(0),
                    size_be.unwrap_or(0)
                ),
            );
            return;
        }
        if !ISO_BLOCK_SIZES.contains(&block_size) {
            self.findings.push(
                ReasonCode::Corrupt,
                format!("ISO 9660 logical block size {block_size} is not 512, 1024 or 2048"),
            );
            return;
        }
        self.volume_bytes = u64::from(blocks).checked_mul(u64::from(block_size));
    }
}

impl Probe for IsoProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Iso]
    }

    fn feed(&mut self, pos: u64, data: &[u8]) {
        // One chunk can complete several descriptors (each 2048 bytes apart).
        while let IsoState::Walking { index, in_udf_area } = self.state {
            if !self.slot.feed(pos, data) {
                return;
            }
            self.state = self.step(index, in_udf_area);
        }
    }

    fn finish(&mut self, tail: &Tail) {
        self.state = IsoState::Done;
        if self.detection == Detection::Pending {
            self.detection = Detection::No;
        }
        if let Some(volume) = self.volume_bytes {
            let len = tail.stream_len();
            if volume > len {
                self.findings.push(
                    ReasonCode::Truncated,
                    format!(
                        "ISO 9660 volume is {volume} bytes but the image holds only {len} bytes"
                    ),
                );
            }
        }
    }

    fn detection(&self) -> Detection {
        self.detection
    }

    fn wants(&self, _pos: u64) -> bool {
        matches!(self.state, IsoState::Walking { .. })
    }

    fn virtual_size(&self) -> Option<u64> {
        None
    }

    fn findings(&self) -> &[Reason] {
        self.findings.as_slice()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test builders compute small fixed offsets
mod tests {
    use super::*;

    /// Builds a stream holding a system area and the given descriptors (type, identifier),
    /// each in its 2048-byte slot; a PVD gets `blocks` × `block_size` written both-endian.
    fn image(descriptors: &[(u8, &[u8; 5])], blocks: u32, block_size: u16, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        for (i, (kind, ident)) in descriptors.iter().enumerate() {
            if ident == &&[0; 5] {
                continue; // a blank slot
            }
            let at = ISO_VRS_START as usize + i * ISO_DESCRIPTOR_LEN as usize;
            buf[at] = *kind;
            buf[at + 1..at + 6].copy_from_slice(*ident);
            buf[at + 6] = 1;
            if *kind == ISO_TYPE_PRIMARY && ident == &b"CD001" {
                let v = at + ISO_PVD_VOLUME_SPACE_SIZE;
                buf[v..v + 4].copy_from_slice(&blocks.to_le_bytes());
                buf[v + 4..v + 8].copy_from_slice(&blocks.to_be_bytes());
                let b = at + ISO_PVD_LOGICAL_BLOCK_SIZE;
                buf[b..b + 2].copy_from_slice(&block_size.to_le_bytes());
                buf[b + 2..b + 4].copy_from_slice(&block_size.to_be_bytes());
            }
        }
        buf
    }

    fn run(bytes: &[u8], chunk: usize) -> IsoProbe {
        let mut probe = IsoProbe::new();
        let mut tail = Tail::new();
        let mut pos = 0u64;
        for piece in bytes.chunks(chunk) {
            if probe.wants(pos) {
                probe.feed(pos, piece);
            }
            tail.feed(piece);
            pos += piece.len() as u64;
        }
        probe.finish(&tail);
        probe
    }

    fn codes(probe: &IsoProbe) -> Vec<ReasonCode> {
        probe.findings().iter().map(|r| r.code).collect()
    }

    #[test]
    fn test_iso_primary_descriptor_whole_volume_is_accepted() {
        let bytes = image(&[(1, b"CD001"), (255, b"CD001")], 20, 2048, 40960);
        for chunk in [1, 7, 2048, 1 << 20] {
            let probe = run(&bytes, chunk);
            assert!(matches!(probe.detection(), Detection::Yes(Format::Iso)));
            assert!(probe.findings().is_empty());
        }
    }

    #[test]
    fn test_iso_primary_after_boot_record_is_detected() {
        let bytes = image(&[(0, b"CD001"), (1, b"CD001")], 18, 2048, 36864);
        assert!(matches!(
            run(&bytes, 333).detection(),
            Detection::Yes(Format::Iso)
        ));
    }

    #[test]
    fn test_iso_volume_larger_than_stream_is_truncated() {
        let bytes = image(&[(1, b"CD001")], 100, 2048, 40960);
        let probe = run(&bytes, 4096);
        assert!(matches!(probe.detection(), Detection::Yes(Format::Iso)));
        assert!(matches!(codes(&probe).as_slice(), [ReasonCode::Truncated]));
    }

    #[test]
    fn test_iso_odd_block_size_is_corrupt() {
        let bytes = image(&[(1, b"CD001")], 20, 4096, 40960);
        let probe = run(&bytes, 4096);
        assert!(matches!(codes(&probe).as_slice(), [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_iso_endian_copies_disagreeing_is_corrupt() {
        let mut bytes = image(&[(1, b"CD001")], 20, 2048, 40960);
        let be_copy = ISO_VRS_START as usize + ISO_PVD_VOLUME_SPACE_SIZE + 4;
        bytes[be_copy + 3] ^= 1;
        let probe = run(&bytes, 4096);
        assert!(matches!(codes(&probe).as_slice(), [ReasonCode::Corrupt]));
    }

    #[test]
    fn test_iso_udf_with_blank_padding_slots_is_detected() {
        // 4096-byte UDF blocks: BEA01, blank, NSR03.
        let bytes = image(&[(0, b"BEA01"), (0, &[0; 5]), (0, b"NSR03")], 0, 0, 40960);
        let probe = run(&bytes, 100);
        assert!(matches!(probe.detection(), Detection::Yes(Format::Iso)));
        assert!(probe.findings().is_empty());
    }

    #[test]
    fn test_iso_udf_area_closed_without_nsr_is_not_iso() {
        let bytes = image(&[(0, b"BEA01"), (0, b"TEA01"), (0, b"NSR03")], 0, 0, 40960);
        assert!(matches!(run(&bytes, 4096).detection(), Detection::No));
    }

    #[test]
    fn test_iso_blank_first_slot_is_not_iso() {
        let bytes = image(&[(0, &[0; 5]), (1, b"CD001")], 18, 2048, 40960);
        assert!(matches!(run(&bytes, 4096).detection(), Detection::No));
    }

    #[test]
    fn test_iso_stream_ending_in_system_area_is_not_iso() {
        assert!(matches!(run(&[0u8; 1000], 10).detection(), Detection::No));
    }

    #[test]
    fn test_iso_endless_boot_records_stop_at_limit() {
        let many: Vec<(u8, &[u8; 5])> = vec![(0, b"CD001"); 100];
        let bytes = image(&many, 0, 0, 32768 + 100 * 2048);
        let probe = run(&bytes, 4096);
        assert!(matches!(probe.detection(), Detection::No));
    }

    proptest::proptest! {
        /// Any patch of the descriptors gives the same answer under any chunking, without
        /// panicking.
        #[test]
        fn test_iso_patched_descriptors_any_chunking_is_consistent(
            patches in proptest::collection::vec((32768usize..40960, proptest::num::u8::ANY), 1..16),
            chunk in 1usize..3000,
        ) {
            let mut bytes = image(
                &[(0, b"CD001"), (1, b"CD001"), (255, b"CD001"), (0, b"BEA01"), (0, b"NSR03")],
                30,
                2048,
                49152,
            );
            for (at, v) in patches {
                bytes[at] = v;
            }
            let whole = run(&bytes, bytes.len());
            let split = run(&bytes, chunk);
            proptest::prop_assert_eq!(whole.detection(), split.detection());
            proptest::prop_assert_eq!(whole.findings(), split.findings());
        }
    }
}
