//! Vmdk probe (placeholder until the vmdk inspector lands).

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Limits, Reason};

/// Recognises vmdk images.
#[derive(Debug)]
pub(crate) struct VmdkProbe;

impl VmdkProbe {
    pub(crate) fn new(_limits: &Limits) -> Self {
        VmdkProbe
    }
}

impl Probe for VmdkProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Vmdk]
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
