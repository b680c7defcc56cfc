//! Qcow2 probe (placeholder until the qcow2 inspector lands).

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Limits, Reason};

/// Recognises qcow2 images.
#[derive(Debug)]
pub(crate) struct Qcow2Probe;

impl Qcow2Probe {
    pub(crate) fn new(_limits: &Limits) -> Self {
        Qcow2Probe
    }
}

impl Probe for Qcow2Probe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Qcow2]
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
