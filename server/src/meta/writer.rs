//! Writer leases of images (issue #13, "Many nodes"): the node receiving an image's body
//! (`PUT …/file`, the image `saving`) or stage (`PUT …/stage`, `uploading`) holds a lease on
//! the image record, renews it while the body arrives, and drops it when the body ends. A
//! writer lease that ran out ([`super::MetaStore::expired_writers`]) marks an image whose
//! writer stopped renewing (its node died, or is cut off from the database): any node's
//! sweep takes it back ([`seize`] under the sweeper's own lease, then, once what the dead
//! writer may have stored is removed, [`release`]) and it is `queued` again, as after a
//! failed upload.
//!
//! Renewals and take-backs are changes run by [`super::MetaStore::transition_image`] (its
//! compare-and-swap): the decisions every store shares live here, so that a renewal racing a
//! take-back, or two take-backs, never both write.

use serde::{Deserialize, Serialize};

use super::{Decision, ImageRecord, ImageStatus, Timestamp};

/// One upload's hold on the image it writes: the upload runs until `until` unless it renews
/// first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterLease {
    /// The writing node's id (as in a [`super::TaskLease`]).
    pub node: String,
    /// The upload's own id (a random UUID per admitted body): tells apart two uploads of one
    /// image by one node, so that an upload that lost its hold never takes a later one's.
    pub upload: String,
    /// When the lease ends, unless renewed.
    pub until: Timestamp,
    /// The bytes the upload had charged to its project's `image_size_total` at its last
    /// renewal (as [`super::TaskLease::charged`]).
    #[serde(default, skip_serializing_if = "super::lease::is_zero")]
    pub charged: u64,
}

impl WriterLease {
    /// Whether `self` and `other` are the same upload's (whatever their `until`).
    pub fn same_upload(&self, other: &WriterLease) -> bool {
        self.node == other.node && self.upload == other.upload
    }
}

/// Whether an image in `status` has a writer: its body or stage is arriving (`saving`,
/// `uploading`). A transition to any other status drops the writer lease
/// (`plan_transition`).
pub fn is_written(status: ImageStatus) -> bool {
    matches!(status, ImageStatus::Saving | ImageStatus::Uploading)
}

/// When the writer lease of `image` ends, if it is in the writer index: `saving` or
/// `uploading` with a writer lease.
pub fn indexed_until(image: &ImageRecord) -> Option<Timestamp> {
    match &image.writer {
        Some(lease) if is_written(image.status) => Some(lease.until),
        _ => None,
    }
}

/// Whether the upload of `holder` still holds `image`: it is `saving` or `uploading` under a
/// writer lease of that very upload.
pub fn holds(image: &ImageRecord, holder: &WriterLease) -> bool {
    is_written(image.status)
        && image
            .writer
            .as_ref()
            .is_some_and(|lease| lease.same_upload(holder))
}

/// The change of a renewal: extends the lease of `holder`'s upload to `until`, its charge
/// set to `charged`, when it still holds `image` ([`holds`]); [`Decision::Keep`] when the
/// lease is lost. `updated_at` is left alone: a renewal is not a change a client sees.
pub fn renew(
    image: &mut ImageRecord,
    holder: &WriterLease,
    until: Timestamp,
    charged: u64,
) -> Decision {
    if !holds(image, holder) {
        return Decision::Keep;
    }
    image.writer = Some(WriterLease {
        until,
        charged,
        ..holder.clone()
    });
    Decision::Write
}

/// The first change of a take-back: when `image` is `saving` or `uploading` under exactly
/// `expired` (the lease as read: a renewal since changed it) and that lease ended by `now`,
/// the sweeping node's lease `by` replaces it; else [`Decision::Keep`]. The status stays, so
/// no new upload can start while the sweeper removes what the dead writer may have
/// committed to the image store between its store commit and its record; the sweeper then
/// gives the image back with [`release`]. A sweeper that dies meanwhile leaves a lease that
/// runs out in turn, and the next sweep takes the image back again.
pub fn seize(
    image: &mut ImageRecord,
    expired: &WriterLease,
    by: &WriterLease,
    now: Timestamp,
) -> Decision {
    let dead =
        is_written(image.status) && image.writer.as_ref() == Some(expired) && expired.until <= now;
    if !dead {
        return Decision::Keep;
    }
    image.writer = Some(by.clone());
    Decision::Write
}

/// The change of a writer giving the image back (a failed upload, or a sweeper after
/// [`seize`]): when `holder`'s upload still holds `image` ([`holds`]), the image goes back to
/// `queued` without its lease and without what described data (Glance's state after a
/// failed upload), changed at `now`; else [`Decision::Keep`].
pub fn release(image: &mut ImageRecord, holder: &WriterLease, now: Timestamp) -> Decision {
    if !holds(image, holder) {
        return Decision::Keep;
    }
    image.status = ImageStatus::Queued;
    image.writer = None;
    image.forget_data();
    image.updated_at = now;
    Decision::Write
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::sample_image;

    fn lease(upload: &str, until: Timestamp) -> WriterLease {
        WriterLease {
            node: "node-a".to_owned(),
            upload: upload.to_owned(),
            until,
            charged: 0,
        }
    }

    fn saving(writer: Option<WriterLease>) -> ImageRecord {
        let mut image = sample_image("img");
        image.status = ImageStatus::Saving;
        image.forget_data();
        image.writer = writer;
        image
    }

    #[test]
    fn test_renew_only_the_holding_upload_extends_its_lease() {
        let mut image = saving(Some(lease("u1", 100)));
        assert_eq!(renew(&mut image, &lease("u1", 0), 200, 5), Decision::Write);
        let charged = WriterLease {
            charged: 5,
            ..lease("u1", 200)
        };
        assert_eq!(image.writer, Some(charged));
        // Another upload of the same node, an image without a lease, or one no longer
        // being written: lost.
        assert_eq!(renew(&mut image, &lease("u2", 0), 300, 0), Decision::Keep);
        let mut unleased = saving(None);
        assert_eq!(
            renew(&mut unleased, &lease("u1", 0), 300, 0),
            Decision::Keep
        );
        let mut active = saving(Some(lease("u1", 100)));
        active.status = ImageStatus::Active;
        assert_eq!(renew(&mut active, &lease("u1", 0), 300, 0), Decision::Keep);
    }

    #[test]
    fn test_seize_only_the_lease_as_read_once_ended_then_release_by_the_sweeper() {
        let read = lease("u1", 100);
        let sweeper = lease("sweep", 400);
        let mut live = saving(Some(read.clone()));
        assert_eq!(
            seize(&mut live, &read, &sweeper, 99),
            Decision::Keep,
            "not ended"
        );
        let mut renewed = saving(Some(lease("u1", 200)));
        assert_eq!(seize(&mut renewed, &read, &sweeper, 150), Decision::Keep);
        let mut dead = saving(Some(read.clone()));
        dead.size = Some(7);
        assert_eq!(seize(&mut dead, &read, &sweeper, 100), Decision::Write);
        assert_eq!(
            (dead.status, dead.writer.as_ref(), dead.size),
            (ImageStatus::Saving, Some(&sweeper), Some(7)),
            "seized, not yet given back"
        );
        assert_eq!(
            release(&mut dead, &read, 120),
            Decision::Keep,
            "the dead upload lost it"
        );
        assert_eq!(release(&mut dead, &sweeper, 120), Decision::Write);
        assert_eq!(
            (dead.status, dead.writer.clone(), dead.size, dead.updated_at),
            (ImageStatus::Queued, None, None, 120)
        );
        assert_eq!(release(&mut dead, &sweeper, 130), Decision::Keep, "once");
    }

    #[test]
    fn test_indexed_until_only_images_being_written() {
        let mut image = saving(Some(lease("u1", 100)));
        assert_eq!(indexed_until(&image), Some(100));
        image.status = ImageStatus::Uploading;
        assert_eq!(indexed_until(&image), Some(100));
        image.status = ImageStatus::Active;
        assert_eq!(indexed_until(&image), None);
        assert_eq!(indexed_until(&saving(None)), None);
    }
}
