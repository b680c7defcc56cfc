//! Where converters write: the caller's [`ConvertSink`] (output image and spill area), and an
//! in-memory one for tests and fuzzing.

/// Where a converter's output goes.
pub trait ConvertSink {
    /// Writes `data` at `offset` of the output image. Regions never written read as zeros.
    /// Converters write in increasing offsets whenever the input's layout allows, so the
    /// caller can hash the output as it is produced.
    ///
    /// # Errors
    /// When the output cannot be written.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;

    /// Stores `data` at `offset` of the spill area (bytes whose place is not known yet).
    ///
    /// # Errors
    /// When the spill area cannot be written.
    fn spill_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;

    /// Reads `buf.len()` bytes at `offset` of the spill area.
    ///
    /// # Errors
    /// When the spill area cannot be read (or was never written there).
    fn spill_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SinkError>;
}

/// The caller's sink failed (I/O). Not the image's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// An in-memory [`ConvertSink`] for tests and fuzzing: the output and spill areas as
/// vectors, bounded by `max_len` bytes each (writes beyond fail).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct MemorySink {
    /// The output written so far (zeros where nothing was written).
    pub output: Vec<u8>,
    /// The spill area.
    pub spill: Vec<u8>,
    /// Largest output or spill offset accepted.
    pub max_len: usize,
}

impl MemorySink {
    /// A sink accepting up to `max_len` bytes of output and of spill.
    pub fn new(max_len: usize) -> Self {
        MemorySink {
            output: Vec::new(),
            spill: Vec::new(),
            max_len,
        }
    }
}

fn put(area: &mut Vec<u8>, max_len: usize, offset: u64, data: &[u8]) -> Result<(), SinkError> {
    let start = usize::try_from(offset).map_err(|_| SinkError("offset too large".into()))?;
    let end = start
        .checked_add(data.len())
        .filter(|end| *end <= max_len)
        .ok_or_else(|| SinkError(format!("write at {offset} beyond the test sink's limit")))?;
    if area.len() < end {
        area.resize(end, 0);
    }
    area.get_mut(start..end)
        .ok_or_else(|| SinkError("write out of range".into()))?
        .copy_from_slice(data);
    Ok(())
}

impl ConvertSink for MemorySink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        put(&mut self.output, self.max_len, offset, data)
    }

    fn spill_write(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        put(&mut self.spill, self.max_len, offset, data)
    }

    fn spill_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SinkError> {
        let start = usize::try_from(offset).map_err(|_| SinkError("offset too large".into()))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.spill.get(start..end))
            .ok_or_else(|| SinkError(format!("spill read at {offset} past what was spilled")))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
