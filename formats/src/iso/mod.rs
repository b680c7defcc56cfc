//! Iso probe (placeholder until the iso inspector lands).

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Reason};

/// Recognises iso images.
#[derive(Debug)]
pub(crate) struct IsoProbe;

impl IsoProbe {
    pub(crate) fn new() -> Self {
        IsoProbe
    }
}

impl Probe for IsoProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Iso]
    }
    fn feed(&mut self, _pos: u64, _data: &[u8]) {}
    fn finish(&mut self, _tail: &Tail) {}
    fn detection(&self) -> Detection {
        Detection::No
    }
    fn wants(&self, _pos: u64) -> bool {
        false
    }
    fn virtual_size(&self) -> Option<u64> {
        None
    }
    fn findings(&self) -> &[Reason] {
        &[]
    }
}
