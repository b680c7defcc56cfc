//! The bytes each project has staged (Glance's `image_stage_total` usage): complete stages
//! until they are imported, discarded or expire, and stages streaming in, charged as their
//! bytes arrive. Kept in memory under one lock, so a check and the charge it allows are one
//! step: two stages of a project can never both pass a limit that has room for one. After a
//! restart, recovery enters the complete stages it keeps ([`Ledger::enter`]).
//!
//! On a shared store the other nodes' stages count too: what they hold as last read from the
//! store ([`Ledger::set_elsewhere`]) is added to the project's own.
//!
//! Entries are keyed by image and claim: a second stage request for an image that has a
//! stage (refused a moment later by the image's lock, 409) claims an entry of its own, and
//! ending that claim leaves the first stage counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One stage: whose it is, how many bytes it holds or will hold, and whether it is complete
/// (it then outlives its claim).
#[derive(Debug)]
struct Entry {
    owner: String,
    bytes: u64,
    sealed: bool,
}

/// An entry's key: the image and the claim that made it.
type Key = (String, u64);

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Key, Entry>,
    next_token: u64,
    /// Per project, what its stages on other nodes hold, as last read; only projects with
    /// some there.
    elsewhere: HashMap<String, u64>,
}

impl Entries {
    /// What `owner`'s entries other than `key` hold, plus its stages on other nodes.
    fn others(&self, owner: &str, key: Option<&Key>) -> u64 {
        let elsewhere = self.elsewhere.get(owner).copied().unwrap_or(0);
        self.by_key
            .iter()
            .filter(|(k, e)| e.owner == owner && Some(*k) != key)
            .fold(elsewhere, |sum, (_, e)| sum.saturating_add(e.bytes))
    }

    fn insert(&mut self, id: &str, entry: Entry) -> Key {
        self.next_token = self.next_token.saturating_add(1);
        let key = (id.to_owned(), self.next_token);
        self.by_key.insert(key.clone(), entry);
        key
    }
}

/// The ledger (module documentation); shared by the staging area and the claims.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Mutex<Entries>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every critical section is a few plain assignments: a poisoned lock holds
        // consistent data.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the complete stage of image `id` (`bytes`, owned by `owner`).
    pub fn enter(&self, id: &str, owner: &str, bytes: u64) {
        let entry = Entry {
            owner: owner.to_owned(),
            bytes,
            sealed: true,
        };
        self.lock().insert(id, entry);
    }

    /// Stops counting the stages of image `id`, whoever made them.
    pub fn remove(&self, id: &str) {
        self.lock().by_key.retain(|(image, _), _| image != id);
    }

    /// What `owner` has staged (here, and on other nodes as last read).
    pub fn usage(&self, owner: &str) -> u64 {
        self.lock().others(owner, None)
    }

    /// Records what `owner`'s stages on other nodes hold, as just read from the shared store
    /// ([`crate::meta::MetaStore::staged_elsewhere`]): counted with its own until the next
    /// reading.
    pub fn set_elsewhere(&self, owner: &str, bytes: u64) {
        let mut entries = self.lock();
        if bytes == 0 {
            entries.elsewhere.remove(owner);
        } else {
            entries.elsewhere.insert(owner.to_owned(), bytes);
        }
    }

    /// Starts counting a stage of image `id` for `owner` at `bytes`, if `check` (given what
    /// the owner's other stages hold) allows it. The stage counts until the claim is dropped
    /// (unless [`StageClaim::seal`]ed) or the stage is removed.
    ///
    /// # Errors
    /// `check`'s error; nothing is counted then.
    pub fn claim<E>(
        self: &Arc<Self>,
        id: &str,
        owner: &str,
        bytes: u64,
        check: impl FnOnce(u64) -> Result<(), E>,
    ) -> Result<StageClaim, E> {
        let mut entries = self.lock();
        check(entries.others(owner, None))?;
        let entry = Entry {
            owner: owner.to_owned(),
            bytes,
            sealed: false,
        };
        let key = entries.insert(id, entry);
        Ok(StageClaim {
            ledger: Arc::clone(self),
            key,
            owner: owner.to_owned(),
        })
    }
}

/// A stage streaming in, counted in the [`Ledger`]; uncounted when dropped unless sealed.
#[derive(Debug)]
pub struct StageClaim {
    ledger: Arc<Ledger>,
    key: Key,
    owner: String,
}

impl StageClaim {
    /// Raises the stage's count to `bytes` if `check` (given what the owner's other stages
    /// hold) allows it; atomic with the other stages' charges.
    ///
    /// # Errors
    /// `check`'s error; the count is unchanged then.
    pub fn charge<E>(&self, bytes: u64, check: impl FnOnce(u64) -> Result<(), E>) -> Result<(), E> {
        let mut entries = self.ledger.lock();
        check(entries.others(&self.owner, Some(&self.key)))?;
        if let Some(e) = entries.by_key.get_mut(&self.key) {
            e.bytes = e.bytes.max(bytes);
        }
        Ok(())
    }

    /// The stage is complete with `bytes`: it counts until it is removed from the ledger.
    pub fn seal(&self, bytes: u64) {
        if let Some(e) = self.ledger.lock().by_key.get_mut(&self.key) {
            e.bytes = bytes;
            e.sealed = true;
        }
    }
}

impl Drop for StageClaim {
    fn drop(&mut self) {
        let mut entries = self.ledger.lock();
        if entries.by_key.get(&self.key).is_some_and(|e| !e.sealed) {
            entries.by_key.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn under(limit: u64, delta: u64) -> impl FnOnce(u64) -> Result<(), u64> {
        move |others| {
            if others + delta > limit {
                Err(others)
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn test_ledger_claims_charge_seal_and_release_per_owner() {
        let ledger = Arc::new(Ledger::default());
        ledger.enter("old", "p", 10);
        let a = ledger.claim("a", "p", 5, under(20, 5)).unwrap();
        assert_eq!(ledger.usage("p"), 15);
        // Another project is not counted; the owner's other stages are.
        let other = ledger.claim("x", "q", 100, under(100, 100)).unwrap();
        assert_eq!(ledger.claim("b", "p", 6, under(20, 6)).unwrap_err(), 15);
        a.charge(8, under(20, 8)).unwrap();
        assert_eq!(a.charge(11, under(20, 11)), Err(10));
        assert_eq!(ledger.usage("p"), 18);
        a.seal(7);
        drop(a);
        assert_eq!(ledger.usage("p"), 17, "a sealed stage stays counted");
        ledger.remove("a");
        ledger.remove("old");
        assert_eq!(ledger.usage("p"), 0);
        drop(other);
        assert_eq!(ledger.usage("q"), 0, "an unsealed claim ends with its drop");
    }

    #[test]
    fn test_ledger_claims_on_one_image_do_not_release_each_other() {
        let ledger = Arc::new(Ledger::default());
        // A sealed stage, then a second stage request for the same image (refused by the
        // image's lock): ending the second claim leaves the first stage counted.
        let first = ledger.claim("a", "p", 5, under(10, 5)).unwrap();
        first.seal(5);
        drop(first);
        let second = ledger.claim("a", "p", 3, under(10, 3)).unwrap();
        assert_eq!(ledger.usage("p"), 8);
        drop(second);
        assert_eq!(ledger.usage("p"), 5);
        // A stage discarded, then the image staged again: the old claim charges nothing.
        ledger.remove("a");
        let old = ledger.claim("b", "p", 5, under(10, 5)).unwrap();
        ledger.remove("b");
        let new = ledger.claim("b", "p", 3, under(10, 3)).unwrap();
        old.charge(6, under(10, 6)).unwrap();
        drop(old);
        assert_eq!(ledger.usage("p"), 3);
        drop(new);
        assert_eq!(ledger.usage("p"), 0);
    }

    #[test]
    fn test_ledger_counts_other_nodes_stages_until_read_again() {
        let ledger = Arc::new(Ledger::default());
        ledger.set_elsewhere("p", 6);
        assert_eq!(ledger.usage("p"), 6);
        assert_eq!(ledger.claim("a", "p", 5, under(10, 5)).unwrap_err(), 6);
        let a = ledger.claim("a", "p", 4, under(10, 4)).unwrap();
        assert_eq!(a.charge(5, under(10, 5)), Err(6));
        ledger.set_elsewhere("p", 0);
        a.charge(9, under(10, 9)).unwrap();
        assert_eq!((ledger.usage("p"), ledger.usage("q")), (9, 0));
    }
}
