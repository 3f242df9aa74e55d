//! Tokens whose signature the current key set has already verified. Clients reuse a function
//! token for many calls, and an RSA or ECDSA check costs far more than the rest of a call
//! (RustCrypto's big-number arithmetic built for size: about 270 µs of CPU for RS256, 710 µs
//! for ES256, against 37 µs for a whole call without jwt_auth; see README → Benchmarks): a
//! token seen before, byte for byte (its SHA-256), skips only the signature check; its claims
//! (`exp`, `nbf`, `iss`, `aud`, `function`) are checked on every call. A new key set forgets
//! everything, and a check that started under the old set does not enter its result.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

/// Tokens remembered at most; the oldest goes first.
const CAPACITY: usize = 1024;

pub(crate) type Fingerprint = [u8; 32];

pub(crate) fn fingerprint(token: &str) -> Fingerprint {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) struct Verified(Mutex<Inner>);

struct Inner {
    /// Bumped for every new key set.
    generation: u64,
    seen: HashSet<Fingerprint>,
    order: VecDeque<Fingerprint>,
}

impl Verified {
    pub(crate) fn new() -> Verified {
        Verified(Mutex::new(Inner { generation: 0, seen: HashSet::new(), order: VecDeque::new() }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `None` when the token was verified already; otherwise the key set's generation, to pass
    /// to `insert` after its check.
    pub(crate) fn unverified(&self, token: &Fingerprint) -> Option<u64> {
        let inner = self.lock();
        (!inner.seen.contains(token)).then_some(inner.generation)
    }

    /// Remembers a token verified under the key set of `generation`, if that is still the one.
    pub(crate) fn insert(&self, token: Fingerprint, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation || !inner.seen.insert(token) {
            return;
        }
        inner.order.push_back(token);
        if inner.order.len() > CAPACITY
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.seen.remove(&oldest);
        }
    }

    /// A new key set: nothing verified before counts.
    pub(crate) fn renew(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.seen.clear();
        inner.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_tokens_of_the_current_key_set_only() {
        let v = Verified::new();
        let known = |t: &str| v.unverified(&fingerprint(t)).is_none();
        let g = v.unverified(&fingerprint("a")).expect("nothing is known at first");
        v.insert(fingerprint("a"), g);
        assert!(known("a"));
        assert!(!known("b"));
        for i in 0..CAPACITY {
            v.insert(fingerprint(&i.to_string()), g);
        }
        assert!(!known("a"), "the oldest is forgotten beyond the capacity");
        assert!(known("0"));
        v.renew();
        assert!(!known("0"), "a new key set forgets");
        v.insert(fingerprint("late"), g);
        assert!(!known("late"), "a check made under the old key set is not kept");
        let now = v.unverified(&fingerprint("new")).expect("unknown");
        assert_ne!(now, g);
        v.insert(fingerprint("new"), now);
        assert!(known("new"));
    }
}
