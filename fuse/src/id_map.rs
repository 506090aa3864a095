//! Hash maps keyed by numbers the kernel or the backend hands out (inode
//! numbers, node ids, handles), which sit on the path of every request.
//!
//! The standard hasher resists keys chosen to collide, at several times the
//! cost; these keys are not chosen by users (a filesystem allocates inode
//! numbers, and the rest are counters or hashes of them), so one folded
//! multiplication mixes them well enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` over numeric ids with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Hashes one or a few integers by a folded 64×64→128-bit multiplication.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let product = u128::from(self.0 ^ value).wrapping_mul(u128::from(MULTIPLIER));
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_i32(&mut self, value: i32) {
        self.write_u64(value as u32 as u64);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets_and_control_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (0..4096u64).map(|id| build.hash_one(id)).collect();
        // hashbrown picks the bucket from the low bits and a tag from the top 7.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 2500, "{} distinct buckets of 4096", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map: IdMap<u64, u64> = IdMap::default();
        for id in (0..10_000u64).map(|i| i * 4096) {
            map.insert(id, id + 1);
        }
        assert!((0..10_000u64).all(|i| map.get(&(i * 4096)) == Some(&(i * 4096 + 1))));
    }
}
