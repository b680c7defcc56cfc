//! Compressed qcow2 clusters: each inflates (raw deflate, or zstd frames when
//! `compression_type` is 1) into exactly one cluster, as QEMU's `qcow2_decompress` does.
//! Shared by the converter and the inspector's compressed-cluster check.

use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use crate::stream::u64_of;
use crate::support::converter::{corrupt, ConvertError};

/// Largest zstd window accepted: 8 MiB. QEMU compresses one cluster (≤ 2 MiB) per frame, so
/// its frames need a 2 MiB window at most; a frame asking for more is refused instead of
/// letting a hostile image make the decoder allocate up to 2 GiB.
const QCOW2_ZSTD_MAX_WINDOW_LOG: u32 = 23;

/// The decompressors, created once per conversion and reset per cluster.
pub(crate) struct Codec {
    zstd: Option<ZstdDecoder<'static>>,
    deflate: Decompress,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("zstd", &self.zstd.is_some())
            .finish_non_exhaustive()
    }
}

impl Codec {
    pub(crate) fn new(zstd: bool) -> Result<Self, ConvertError> {
        let zstd = if zstd {
            let mut d = ZstdDecoder::new()
                .map_err(|e| corrupt(format!("cannot create a zstd decoder: {e}")))?;
            d.set_parameter(DParameter::WindowLogMax(QCOW2_ZSTD_MAX_WINDOW_LOG))
                .map_err(|e| corrupt(format!("cannot configure the zstd decoder: {e}")))?;
            Some(d)
        } else {
            None
        };
        Ok(Codec {
            zstd,
            deflate: Decompress::new(false),
        })
    }

    /// Decompresses `input` into exactly `out.len()` bytes, accepting what QEMU accepts:
    /// deflate may stop anywhere once the cluster is full; zstd must end a frame exactly
    /// there (further frames are read while the cluster is not full).
    pub(crate) fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match &mut self.zstd {
            Some(d) => zstd_cluster(d, input, out),
            None => deflate_cluster(&mut self.deflate, input, out),
        }
    }
}

pub(crate) fn deflate_cluster(
    d: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    d.reset(false);
    loop {
        let in_pos = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
        let out_pos = usize::try_from(d.total_out()).unwrap_or(usize::MAX);
        if out_pos >= out.len() {
            return Ok(());
        }
        let (Some(src), Some(dst)) = (input.get(in_pos..), out.get_mut(out_pos..)) else {
            return Err("the deflate decoder overran its buffers".to_owned());
        };
        let status = d
            .decompress(src, dst, FlushDecompress::Finish)
            .map_err(|e| format!("invalid deflate data: {e}"))?;
        let progressed = d.total_in() > u64_of(in_pos) || d.total_out() > u64_of(out_pos);
        if d.total_out() >= u64_of(out.len()) {
            return Ok(());
        }
        if matches!(status, Status::StreamEnd) {
            return Err(format!(
                "deflate data ends after {} of {} bytes",
                d.total_out(),
                out.len()
            ));
        }
        if !progressed {
            return Err(format!(
                "deflate data runs out after {} of {} bytes",
                d.total_out(),
                out.len()
            ));
        }
    }
}

pub(crate) fn zstd_cluster(
    d: &mut ZstdDecoder<'static>,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    d.reinit()
        .map_err(|e| format!("zstd decoder reset failed: {e}"))?;
    let want = out.len();
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    let mut last = 0usize;
    while outb.pos() < want {
        let (in_before, out_before) = (inb.pos(), outb.pos());
        last = d
            .run(&mut inb, &mut outb)
            .map_err(|e| format!("invalid zstd data: {e}"))?;
        if inb.pos() <= in_before && outb.pos() <= out_before {
            return Err(format!(
                "zstd data runs out after {} of {want} bytes",
                outb.pos()
            ));
        }
    }
    if last > 0 {
        return Err(format!("zstd frame continues past the {want}-byte cluster"));
    }
    Ok(())
}
