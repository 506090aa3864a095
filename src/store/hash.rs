//! `BlockHash`: the BLAKE3 name of a block or tree, so hashes never mix with other bytes.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

/// A BLAKE3 output is uniformly random already: 8 of its bytes are as good a
/// hash-table key as all 32, and much cheaper to feed a hasher.
impl Hash for BlockHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

/// Hasher for maps keyed by [`BlockHash`]: one keyed multiply instead of
/// SipHash. Keyed per process, because block contents come from tenants: with
/// a known function they could make blocks whose hashes share the bits that
/// pick a bucket, and slow every lookup.
#[derive(Clone, Copy)]
pub struct BlockHashState {
    key: u64,
}

impl Default for BlockHashState {
    fn default() -> Self {
        static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        // std's RandomState is seeded from the OS: hash anything with it for a key.
        let key = *KEY.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0x686f_6f64_u64) | 1);
        BlockHashState { key }
    }
}

impl BuildHasher for BlockHashState {
    type Hasher = BlockHasher;
    fn build_hasher(&self) -> BlockHasher {
        BlockHasher { key: self.key, hash: 0 }
    }
}

pub struct BlockHasher {
    key: u64,
    hash: u64,
}

impl Hasher for BlockHasher {
    fn write_u64(&mut self, v: u64) {
        // Folded multiply: every bit of the product's two halves depends on
        // every bit of `v` and of the key.
        let wide = ((v ^ self.hash) as u128) * (self.key as u128);
        self.hash = (wide as u64) ^ ((wide >> 64) as u64);
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by BlockHash; correct (if slower) for anything else.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

impl BlockHash {
    pub fn of(data: &[u8]) -> Self {
        BlockHash(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(BlockHash(out))
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_value() {
        let h = BlockHash::of(b"");
        assert_eq!(h.to_hex(), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        assert_eq!(BlockHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(BlockHash::from_hex("zz"), None);
    }
}
