//! Sans-I/O streaming inspection of untrusted VM disk images.
//!
//! Bytes arrive in chunks of any size; the [`Inspector`] runs every format's probe over each
//! chunk, holds only small bounded regions (headers, descriptors, a tail window), and produces a
//! [`Report`]: the detected [`Format`], the virtual size, and a [`Verdict`] with stable
//! [`ReasonCode`]s. It refuses what is unsafe to ingest (backing files, external data files,
//! VMDK extents naming host files, polyglots, encryption, corrupt or truncated metadata) as
//! early as the bytes allow.
//!
//! ```
//! use sluice_formats::{Format, Inspector, Limits, Progress, ReasonCode};
//!
//! // A qcow2 v2 header whose backing file is /etc/passwd.
//! let mut header = vec![0u8; 4096];
//! header[..4].copy_from_slice(b"QFI\xfb");
//! header[4..8].copy_from_slice(&2u32.to_be_bytes()); // version
//! header[8..16].copy_from_slice(&512u64.to_be_bytes()); // backing_file_offset
//! header[16..20].copy_from_slice(&11u32.to_be_bytes()); // backing_file_size
//! header[20..24].copy_from_slice(&16u32.to_be_bytes()); // cluster_bits
//! header[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes()); // size
//! header[512..523].copy_from_slice(b"/etc/passwd");
//!
//! let mut inspector = Inspector::new(Some(Format::Qcow2), Limits::default());
//! match inspector.feed(&header) {
//!     Progress::Rejected(report) => assert!(report.has_reason(ReasonCode::BackingFile)),
//!     Progress::NeedMore => panic!("a backing file is known from the header"),
//! }
//! ```
//!
//! Every probe obeys the chunking invariant: the report is identical whether the stream is fed
//! whole, byte by byte, or split anywhere.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects
)]

pub mod convert;
mod format;
mod inspector;
mod limits;
mod probe;
mod report;
mod stream;
mod support;

mod gpt;
mod iso;
mod qcow2;
mod simple;
mod vhd;
mod vhdx;
mod vmdk;

#[doc(hidden)]
pub mod fuzzing;

pub use convert::{
    ConvertError, ConvertLimits, ConvertSink, Converter, SinkError, Target, VMDK_FOOTER_TAIL_BYTES,
};
pub use format::{Format, UnknownFormat};
pub use inspector::{Inspector, Progress, DECISION_STEP, INSPECTOR_FIXED_BOUND};
pub use limits::{
    Limits, DEFAULT_MAX_VIRTUAL_SIZE, QCOW2_MAX_BITMAP_CLUSTERS, QCOW2_MAX_PENDING_COMPRESSED,
    VMDK_MAX_FOOTER_WINDOW,
};
pub use report::{Reason, ReasonCode, Report, Verdict};
pub use support::is_zero;

/// One fresh probe per recognisable format family, in report order.
fn probes(limits: &Limits) -> Vec<Box<dyn probe::Probe>> {
    vec![
        Box::new(qcow2::Qcow2Probe::new(limits)),
        Box::new(vmdk::VmdkProbe::new(limits)),
        Box::new(vhd::VhdProbe::new(limits)),
        Box::new(vhdx::VhdxProbe::new(limits)),
        Box::new(iso::IsoProbe::new()),
        Box::new(gpt::GptProbe::new()),
        Box::new(simple::VdiProbe::new()),
        Box::new(simple::QedProbe::new()),
        Box::new(simple::LuksProbe::new()),
        Box::new(simple::WrapperProbe::new()),
    ]
}

/// Inspects a whole in-memory image in one call (tests, tools, small inputs).
pub fn inspect_bytes(bytes: &[u8], declared: Option<Format>, limits: Limits) -> Report {
    let mut inspector = Inspector::new(declared, limits);
    // A rejection is returned by `finish` unchanged.
    let _ = inspector.feed(bytes);
    inspector.finish()
}
