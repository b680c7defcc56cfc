//! How an import's source is unwrapped, chosen by the image's `container_format` (README,
//! "Compressed images and OVA"), and what unwrapping adds to the image record.

use sluice_formats::Format;
use sluice_pipeline::unwrap::{UnwrapLimits, Unwrapped};
use sluice_pipeline::{ChunkSource, Ingested, SourceError};

use crate::meta::ImageRecord;

/// What is done to a source before the ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwrapping {
    /// `compressed`: left as it is (Glance's decompression plugin skips such images), so the
    /// inspector refuses it as `compressed`.
    Passthrough,
    /// Any other container but `ova`: a gzip/xz/zstd/bzip2 stream is decompressed.
    Compressed,
    /// `ova`: the tar is read and its one disk imported (Glance's `ovf_process`).
    Ova,
}

impl Unwrapping {
    /// The unwrapping an image of `container_format` gets.
    pub fn of(container_format: Option<&str>) -> Self {
        match container_format {
            Some("compressed") => Unwrapping::Passthrough,
            Some("ova") => Unwrapping::Ova,
            _ => Unwrapping::Compressed,
        }
    }

    /// Puts the unwrapping in front of `source`, whose image is declared `declared`, under
    /// `limits` (reads the head of a source that may be compressed).
    ///
    /// # Errors
    /// The source's errors while its head is read.
    pub async fn open<S: ChunkSource>(
        self,
        source: S,
        limits: UnwrapLimits,
        declared: Format,
    ) -> Result<Unwrapped<S>, SourceError> {
        match self {
            Unwrapping::Passthrough => Ok(Unwrapped::passthrough(source)),
            Unwrapping::Compressed => Unwrapped::open(source, limits).await,
            Unwrapping::Ova => Unwrapped::open_ova(source, limits, Some(declared)),
        }
    }
}

/// Records what unwrapping found: an OVA's disk is stored as a `bare` container (as Glance's
/// `ovf_process` does) and its descriptor's facts become properties the user did not set.
pub fn apply(image: &mut ImageRecord, ingested: &Ingested) {
    if ingested.unwrapped == Some("ova") {
        image.container_format = Some("bare".to_owned());
    }
    for (key, value) in &ingested.properties {
        image
            .properties
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
}
