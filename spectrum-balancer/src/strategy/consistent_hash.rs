//! Consistent hashing with bounded load: affinity by key.

use std::sync::Arc;

use parking_lot::RwLock;

use super::{BalancingStrategy, LeastRequests, RequestContext};
use crate::backend::Backend;

/// [`ConsistentHash`]'s default bound on a backend's load, relative to the average.
pub const DEFAULT_LOAD_FACTOR: f64 = 1.25;
/// Points on the ring per backend, at most (fewer for large lists, see [`Ring::build`]).
const DEFAULT_POINTS_PER_BACKEND: usize = 100;
/// Ring points in all, at most (the ring of 1,000 backends has 16 points each).
const MAX_RING_POINTS: usize = 16_384;

/// 64-bit FNV-1a: stable across processes and platforms, so keys map the same way
/// after a restart.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Scrambles a hash (SplitMix64's finalizer), so nearby inputs land far apart.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key_hash(key: &[u8]) -> u64 {
    mix(fnv1a(key))
}

fn point_hash(id_hash: u64, replica: u64) -> u64 {
    mix(id_hash ^ replica.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The hash ring of one backend list.
#[derive(Debug)]
struct Ring {
    /// Identity of the list it was built from: address and length of the slice.
    list: (usize, usize),
    /// The backend ids, by index in that list, to check the list is still the same.
    ids: Vec<String>,
    /// Sorted points: (hash, backend index).
    points: Vec<(u64, u32)>,
}

impl Ring {
    fn build(backends: &[Backend], points_per_backend: usize) -> Ring {
        let per = points_per_backend.min(MAX_RING_POINTS / backends.len().max(1)).max(1);
        let mut points = Vec::with_capacity(backends.len() * per);
        for (i, b) in backends.iter().enumerate() {
            let id_hash = fnv1a(b.id.as_str().as_bytes());
            for replica in 0..per {
                points.push((point_hash(id_hash, replica as u64), i as u32));
            }
        }
        points.sort_unstable();
        Ring {
            list: (backends.as_ptr() as usize, backends.len()),
            ids: backends.iter().map(|b| b.id.as_str().to_owned()).collect(),
            points,
        }
    }

    fn serves(&self, backends: &[Backend]) -> bool {
        self.list == (backends.as_ptr() as usize, backends.len())
    }

    /// The backend index at ring position `pos`, if the list still holds it there.
    fn at(&self, pos: usize, backends: &[Backend]) -> Option<usize> {
        let index = self.points[pos % self.points.len()].1 as usize;
        (backends.get(index)?.id.as_str() == self.ids[index]).then_some(index)
    }
}

/// Sends requests with the same affinity key to the same backend, while no backend
/// gets more than [`load_factor`](Self::load_factor) times the average load
/// ("consistent hashing with bounded loads", Mirrokni et al., as in HAProxy and
/// Envoy).
///
/// The key is [`RequestContext::affinity_key`], taken from the header set in
/// [`BalancerConfig::affinity_header`](crate::BalancerConfig::affinity_header).
/// Each backend owns points on a hash ring (by its id, so the mapping is the same
/// in every balancer and after restarts); a key goes to the owner of the next
/// point, or further along the ring while that backend is over the bound. When
/// membership changes, only the keys of the backends that came or went move: about
/// 1/N of them. Requests without a key go to the least loaded backend
/// ([`LeastRequests`]). On failover (attempt > 0) the next candidate is chosen by
/// rendezvous hashing of the key over the untried backends, so it is stable too.
///
/// The ring is built when the backend list changes and cached: a pick walks a
/// sorted array (O(log n)); it reads a lock only contended while the ring is rebuilt.
#[derive(Debug)]
pub struct ConsistentHash {
    ring: RwLock<Option<Arc<Ring>>>,
    load_factor: f64,
    points_per_backend: usize,
    fallback: LeastRequests,
}

impl ConsistentHash {
    /// Bounded load 1.25 × average; requests without key use a randomly seeded
    /// [`LeastRequests`].
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// As [`new`](Self::new), with the fallback's random draws determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            ring: RwLock::new(None),
            load_factor: DEFAULT_LOAD_FACTOR,
            points_per_backend: DEFAULT_POINTS_PER_BACKEND,
            fallback: LeastRequests::with_seed(seed),
        }
    }

    /// The most a backend may carry, relative to the average in-flight load, before
    /// its keys spill to the next backend on the ring (default 1.25; values below
    /// 1 are taken as 1). Use `f64::INFINITY` for plain consistent hashing.
    #[must_use]
    pub fn load_factor(mut self, factor: f64) -> Self {
        self.load_factor = if factor.is_nan() { DEFAULT_LOAD_FACTOR } else { factor.max(1.0) };
        self
    }

    fn ring_for(&self, backends: &[Backend]) -> Arc<Ring> {
        if let Some(ring) = self.ring.read().as_ref().filter(|r| r.serves(backends)) {
            return ring.clone();
        }
        let ring = Arc::new(Ring::build(backends, self.points_per_backend));
        *self.ring.write() = Some(ring.clone());
        ring
    }

    /// Highest random weight of `key` over `backends`.
    fn rendezvous(key: u64, backends: &[Backend]) -> Option<usize> {
        (0..backends.len()).max_by_key(|&i| mix(key ^ fnv1a(backends[i].id.as_str().as_bytes())))
    }

    fn bound(&self, backends: &[Backend]) -> u64 {
        let total: u64 = backends.iter().map(|b| b.load.in_flight()).sum();
        let bound = (self.load_factor * (total + 1) as f64 / backends.len() as f64).ceil();
        if bound >= u64::MAX as f64 { u64::MAX } else { (bound as u64).max(1) }
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl BalancingStrategy for ConsistentHash {
    fn pick(&self, backends: &[Backend], ctx: &RequestContext<'_>) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        let Some(key) = ctx.affinity_key else {
            return self.fallback.pick(backends, ctx);
        };
        let hash = key_hash(key);
        if ctx.attempt > 0 {
            return Self::rendezvous(hash, backends);
        }
        let mut ring = self.ring_for(backends);
        let start = ring.points.partition_point(|&(h, _)| h < hash);
        let first = match ring.at(start, backends) {
            Some(i) => i,
            None => {
                // Same address and length, other backends: a new list; rebuild.
                let fresh = Arc::new(Ring::build(backends, self.points_per_backend));
                *self.ring.write() = Some(fresh.clone());
                ring = fresh;
                ring.at(start, backends)?
            }
        };
        if backends[first].load.in_flight() == 0 {
            return Some(first);
        }
        // Bounded load: walk on while the owner carries too much. Some backend is
        // always under the bound, so the walk ends; racing updates are cut short.
        let bound = self.bound(backends);
        for step in 0..ring.points.len() {
            match ring.at(start + step, backends) {
                Some(i) if backends[i].load.in_flight() < bound => return Some(i),
                _ => {}
            }
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::testing::{backends, conformance_suite};

    fn ctx(key: &[u8]) -> RequestContext<'_> {
        RequestContext::new(&http::Method::POST, "/svc/M").with_affinity_key(key)
    }

    fn owners(s: &ConsistentHash, list: &[Backend], keys: &[String]) -> HashMap<String, String> {
        keys.iter()
            .map(|k| (k.clone(), list[s.pick(list, &ctx(k.as_bytes())).unwrap()].id.to_string()))
            .collect()
    }

    #[test]
    fn consistent_hash_passes_the_conformance_suite() {
        conformance_suite(|| Arc::new(ConsistentHash::with_seed(1)));
    }

    #[test]
    fn the_same_key_goes_to_the_same_backend() {
        let list = backends(5);
        let s = ConsistentHash::with_seed(1);
        for key in ["alice", "bob", "carol"] {
            let first = s.pick(&list, &ctx(key.as_bytes()));
            assert!((0..100).all(|_| s.pick(&list, &ctx(key.as_bytes())) == first), "{key}");
        }
        // A fresh strategy (another balancer, a restart) maps keys the same way.
        let other = ConsistentHash::with_seed(99);
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        assert_eq!(owners(&s, &list, &keys), owners(&other, &list.clone(), &keys));
    }

    #[test]
    fn keys_spread_over_backends() {
        let list = backends(4);
        let s = ConsistentHash::with_seed(1);
        let keys: Vec<String> = (0..8_000).map(|i| format!("key-{i}")).collect();
        let map = owners(&s, &list, &keys);
        for b in &list {
            let n = map.values().filter(|o| **o == b.id.to_string()).count();
            assert!((1_400..=2_600).contains(&n), "{} owns {n} of 8000 keys", b.id);
        }
    }

    #[test]
    fn a_membership_change_moves_only_about_one_key_in_n() {
        let all = backends(11);
        let s = ConsistentHash::with_seed(1);
        let keys: Vec<String> = (0..10_000).map(|i| format!("session-{i}")).collect();
        let before = owners(&s, &all[..10], &keys);

        // A backend joins: only keys that now belong to it move.
        let grown = owners(&s, &all, &keys);
        let moved: Vec<&String> = keys.iter().filter(|k| before[*k] != grown[*k]).collect();
        assert!(moved.iter().all(|k| grown[*k] == "b10"), "keys moved between old backends");
        let share = moved.len() as f64 / keys.len() as f64;
        assert!((0.04..=0.16).contains(&share), "{share} of keys moved; expected about 1/11");

        // A backend leaves: only its keys move.
        let shrunk: Vec<Backend> = all[..10].iter().filter(|b| b.id.as_str() != "b3").cloned().collect();
        let after = owners(&s, &shrunk, &keys);
        for k in &keys {
            if before[k] != "b3" {
                assert_eq!(before[k], after[k], "{k} moved though its backend stayed");
            }
        }
    }

    #[test]
    fn a_loaded_owner_spills_to_the_next_backend_within_the_bound() {
        let list = backends(4);
        let s = ConsistentHash::with_seed(1);
        let owner = s.pick(&list, &ctx(b"hot")).unwrap();
        for _ in 0..10 {
            list[owner].load.start();
        }
        // Average load with one more request: 11/4; bound ceil(1.25 × 11/4) = 4.
        let spilled = s.pick(&list, &ctx(b"hot")).unwrap();
        assert_ne!(spilled, owner);
        for _ in 0..10 {
            list[owner].load.finish();
        }
        assert_eq!(s.pick(&list, &ctx(b"hot")), Some(owner), "affinity comes back with the load");
    }

    #[test]
    fn failover_candidates_are_stable_per_key() {
        let list = backends(5);
        let s = ConsistentHash::with_seed(1);
        let c = ctx(b"k").with_attempt(1);
        let first = s.pick(&list[1..], &c);
        assert!((0..20).all(|_| s.pick(&list[1..], &c) == first));
    }
}
