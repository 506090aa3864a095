//! Cutting a file region into FastCDC chunks from big reads.
//!
//! The cut points are exactly those of `fastcdc::v2020::StreamCDC` over the
//! region (same sizes, normalization level 1): FastCDC looks for the next cut
//! from a chunk's start over at most [`CHUNK_MAX`] bytes, so cutting a big
//! buffer and carrying its uncut tail into the next one gives the same cuts,
//! provided a cut is only made once `CHUNK_MAX` bytes (or the region's end)
//! are in view. Chunks are ranges of the buffer: no allocation or copy per chunk.
//!
//! With the previous capture's chunks of the same region as hints, a chunk
//! whose content is unchanged is recognised by its hash instead of being cut
//! again (see [`Hints`]); the result is the same as cutting.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use fastcdc::v2020::{Normalization, MASKS};

use super::tree::Extent;
use crate::store::BlockHash;

/// FastCDC sizes: small enough that a rewritten 4 KiB page costs one 64 KiB
/// chunk, large enough to keep the index small.
pub const CHUNK_MIN: u32 = 16 * 1024;
pub const CHUNK_AVG: u32 = 64 * 1024;
pub const CHUNK_MAX: u32 = 256 * 1024;

/// Bytes read at a time: big enough that the carried tail (< `CHUNK_MAX`) and
/// the read calls cost little, small enough that the few buffers of each
/// worker thread are cheap to fault in (8 MiB buffers cost more than they saved).
pub const READ_BUF: usize = 2 << 20;

/// FastCDC's two masks (small before `CHUNK_AVG`, large after), as StreamCDC derives them.
fn masks() -> (u64, u64) {
    let bits = fastcdc::v2020::logarithm2(CHUNK_AVG);
    let level = Normalization::Level1.bits();
    (MASKS[(bits + level) as usize], MASKS[(bits - level) as usize])
}

/// The length of the chunk starting at `data[0]`; `data` holds `CHUNK_MAX`
/// bytes, or all that is left of the region when fewer.
fn cut_len(data: &[u8]) -> usize {
    let (mask_s, mask_l) = masks();
    let (_, len) = fastcdc::v2020::cut(data, CHUNK_MIN as usize, CHUNK_AVG as usize, CHUNK_MAX as usize, mask_s, mask_l, mask_s << 1, mask_l << 1);
    len
}

/// Whether FastCDC, cutting from `data[0]` with at least `CHUNK_MAX` bytes in
/// view, ends a chunk at `len` given that it did not end it earlier: the
/// max-size cut, or the gear hash test at `len` passes. The gear hash at a
/// position depends only on the 64 bytes up to it, the byte at `len` included
/// (the byte that decides a cut is the next chunk's first).
fn cuts_at(data: &[u8], len: usize) -> bool {
    if len == CHUNK_MAX as usize {
        return true;
    }
    static GEAR: OnceLock<Box<[u64; 256]>> = OnceLock::new();
    let gear = GEAR.get_or_init(|| fastcdc::v2020::get_gear_with_seed(0).0);
    // FastCDC's hash starts from 0 at CHUNK_MIN; one shift per byte.
    let from = len.saturating_sub(63).max(CHUNK_MIN as usize);
    let hash = data[from..=len].iter().fold(0u64, |h, &b| (h << 1).wrapping_add(gear[b as usize]));
    let (mask_s, mask_l) = masks();
    let mask = if len < CHUNK_AVG as usize { mask_s } else { mask_l };
    hash & mask == 0
}

/// The previous capture's chunks of the region (same start), to recognise
/// unchanged chunks without cutting. A chunk at an old boundary is taken as
/// is when its hash is the old one and the cut at its end still happens (see
/// [`cuts_at`]) — and only where FastCDC's cut depended on the data alone, not
/// on the end of the region: at least `CHUNK_MAX` bytes from its start, both
/// now and then.
pub struct Hints<'a> {
    chunks: &'a [(BlockHash, u32)],
    /// The first old chunk not behind the cutting position, and where it starts.
    next: usize,
    next_start: u64,
    old_len: u64,
}

impl<'a> Hints<'a> {
    pub fn new(old: &'a Extent) -> Self {
        Hints { chunks: &old.chunks, next: 0, next_start: 0, old_len: old.len() }
    }

    /// `data` starts at region position `pos`: the old chunk starting there
    /// and its hash, if it is what FastCDC would cut.
    fn verified(&mut self, pos: u64, data: &[u8]) -> Option<(usize, BlockHash)> {
        while self.next < self.chunks.len() && self.next_start < pos {
            self.next_start += self.chunks[self.next].1 as u64;
            self.next += 1;
        }
        let (hash, len) = *self.chunks.get(self.next)?;
        let len = len as usize;
        let full_view = data.len() >= CHUNK_MAX as usize && pos + CHUNK_MAX as u64 <= self.old_len;
        if self.next_start != pos || !full_view || !(CHUNK_MIN as usize..=CHUNK_MAX as usize).contains(&len) {
            return None;
        }
        let got = BlockHash::of(&data[..len]);
        (got == hash && cuts_at(data, len)).then_some((len, got))
    }
}

/// One chunk of a batch: a range of the batch's buffer, with its hash when
/// recognising it computed it already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub start: usize,
    pub len: usize,
    pub hash: Option<BlockHash>,
}

/// A buffer of the region and the chunks cut in it (in order).
pub struct Batch {
    pub buf: Vec<u8>,
    pub cuts: Vec<Cut>,
}

impl Batch {
    pub fn data(&self, cut: &Cut) -> &[u8] {
        &self.buf[cut.start..cut.start + cut.len]
    }
}

/// Cuts the region `offset..offset + len` of a file, batch by batch.
pub struct RegionCutter<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    /// Region bytes read so far.
    read: u64,
    /// Region position of the first uncut byte (the carry's start).
    pos: u64,
    /// Uncut bytes at the end of the last batch (fewer than `CHUNK_MAX`).
    carry: Vec<u8>,
    /// The region's end (or the file's, if it shrank) was read.
    done: bool,
    hints: Option<Hints<'a>>,
}

impl<'a> RegionCutter<'a> {
    pub fn new(file: &'a File, offset: u64, len: u64, hints: Option<Hints<'a>>) -> Self {
        RegionCutter { file, offset, len, read: 0, pos: 0, carry: Vec::new(), done: len == 0, hints }
    }

    /// The next batch, read into `buf` (whose length is what is read at most:
    /// at least `2 * CHUNK_MAX`, or the whole region); one without cuts once
    /// the region is all cut. Buffers are meant to be handed back from batch
    /// to batch, so their pages are faulted in once.
    pub fn next_batch(&mut self, mut buf: Vec<u8>) -> io::Result<Batch> {
        if self.done && self.carry.is_empty() {
            return Ok(Batch { buf, cuts: Vec::new() });
        }
        assert!(buf.len() >= (2 * CHUNK_MAX as u64).min(self.len) as usize, "a batch holds the carry and a whole chunk");
        buf[..self.carry.len()].copy_from_slice(&self.carry);
        let filled = self.fill(&mut buf, self.carry.len())?;
        let mut cuts = Vec::with_capacity(filled / CHUNK_AVG as usize + 2);
        let mut at = 0;
        while at < filled && (self.done || filled - at >= CHUNK_MAX as usize) {
            let data = &buf[at..filled];
            let (len, hash) = match self.hints.as_mut().and_then(|h| h.verified(self.pos, data)) {
                Some((len, hash)) => (len, Some(hash)),
                None => (cut_len(&data[..data.len().min(CHUNK_MAX as usize)]), None),
            };
            cuts.push(Cut { start: at, len, hash });
            at += len;
            self.pos += len as u64;
        }
        self.carry.clear();
        self.carry.extend_from_slice(&buf[at..filled]);
        Ok(Batch { buf, cuts })
    }

    /// Reads region bytes into `buf[from..]` until it is full or the region
    /// ends; returns how much of `buf` holds data.
    fn fill(&mut self, buf: &mut [u8], from: usize) -> io::Result<usize> {
        let mut filled = from;
        while !self.done && filled < buf.len() {
            let want = (buf.len() - filled).min((self.len - self.read) as usize);
            match self.file.read_at(&mut buf[filled..filled + want], self.offset + self.read) {
                Ok(0) => self.done = true, // the file shrank: cut what there is
                Ok(n) => {
                    filled += n;
                    self.read += n as u64;
                    self.done = self.read == self.len;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// Read buffers of [`READ_BUF`] bytes kept by a thread from file to file:
/// a fresh one costs a page fault every 4 KiB, more than reading into it.
#[derive(Default)]
pub struct Buffers(Vec<Vec<u8>>);

impl Buffers {
    pub fn take(&mut self) -> Vec<u8> {
        self.0.pop().unwrap_or_else(|| vec![0; READ_BUF])
    }

    pub fn give(&mut self, buf: Vec<u8>) {
        self.0.push(buf);
    }
}

/// Every chunk of a region in order: `f(data, hash if already known)`.
pub fn for_each_chunk<E: From<io::Error>>(
    file: &File,
    offset: u64,
    len: u64,
    hints: Option<Hints<'_>>,
    buffers: &mut Buffers,
    mut f: impl FnMut(&[u8], Option<BlockHash>) -> Result<(), E>,
) -> Result<(), E> {
    let mut cutter = RegionCutter::new(file, offset, len, hints);
    let mut buf = buffers.take();
    loop {
        let batch = cutter.next_batch(buf)?;
        for cut in &batch.cuts {
            f(batch.data(cut), cut.hash)?;
        }
        buf = batch.buf;
        if batch.cuts.is_empty() {
            buffers.give(buf);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use std::io::Write;

    /// The reference: StreamCDC over the region, as captures cut before.
    fn stream_cuts(file: &File, offset: u64, len: u64) -> Vec<(u64, usize)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset)).unwrap();
        fastcdc::v2020::StreamCDC::new(f.take(len), CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).map(|c| c.unwrap()).map(|c| (c.offset, c.length)).collect()
    }

    fn batch_cuts(file: &File, offset: u64, len: u64, hints: Option<Hints<'_>>, buf_size: usize) -> Vec<(u64, usize)> {
        let mut cutter = RegionCutter::new(file, offset, len, hints);
        let (mut buf, mut out, mut pos) = (vec![0; buf_size], Vec::new(), 0u64);
        loop {
            let batch = cutter.next_batch(buf).unwrap();
            if batch.cuts.is_empty() {
                return out;
            }
            for c in &batch.cuts {
                if let Some(h) = c.hash {
                    assert_eq!(h, BlockHash::of(batch.data(c)), "a recognised chunk's hash is its content's");
                }
                out.push((pos, c.len));
                pos += c.len as u64;
            }
            buf = batch.buf;
        }
    }

    fn file_of(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn extent_of(data: &[u8], cuts: &[(u64, usize)]) -> Extent {
        Extent { offset: 0, chunks: cuts.iter().map(|&(o, l)| (BlockHash::of(&data[o as usize..o as usize + l]), l as u32)).collect() }
    }

    /// Random bytes, with a run of zeros (max-size cuts) in the bigger ones.
    fn data(rng: &mut impl RngCore, size: usize) -> Vec<u8> {
        let mut d = vec![0u8; size];
        rng.fill_bytes(&mut d);
        if size > 4 * CHUNK_MAX as usize {
            d[CHUNK_MAX as usize..3 * CHUNK_MAX as usize].fill(0);
        }
        d
    }

    #[test]
    fn cuts_like_stream_cdc_at_every_size() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (min, max, buf) = (CHUNK_MIN as usize, CHUNK_MAX as usize, 2 * CHUNK_MAX as usize);
        let sizes = [0, 1, min - 1, min, min + 1, CHUNK_AVG as usize, max - 1, max, max + 1, buf - 1, buf, buf + 1, 3 * buf, 5 * buf + 12345, 12 << 20, (8 << 20) + 1];
        for size in sizes {
            let d = data(&mut rng, size);
            let f = file_of(&d);
            let want = stream_cuts(&f, 0, size as u64);
            for b in [buf, buf + 4097, READ_BUF] {
                assert_eq!(batch_cuts(&f, 0, size as u64, None, b), want, "size {size}, buffer {b}");
            }
            if size > 1000 {
                assert_eq!(batch_cuts(&f, 333, size as u64 - 999, None, buf), stream_cuts(&f, 333, size as u64 - 999), "a region inside, size {size}");
            }
        }
    }

    #[test]
    fn a_file_shorter_than_its_region_is_cut_to_its_end() {
        let d = data(&mut rand::rngs::StdRng::seed_from_u64(3), 3 << 20);
        let f = file_of(&d);
        assert_eq!(batch_cuts(&f, 0, 5 << 20, None, 2 * CHUNK_MAX as usize), stream_cuts(&f, 0, 5 << 20));
    }

    #[test]
    fn hints_give_the_cuts_of_cutting_after_any_change() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..24 {
            let size = rng.gen_range(1..(6 << 20));
            let old = data(&mut rng, size);
            let old_cuts = stream_cuts(&file_of(&old), 0, old.len() as u64);
            let hint = extent_of(&old, &old_cuts);
            let mut new = old.clone();
            match round % 4 {
                // the first byte after a boundary: the byte that decided the cut
                0 => old_cuts.iter().skip(1).step_by(3).for_each(|&(o, _)| new[o as usize] ^= 0x5a),
                1 => {
                    let grown = rng.gen_range(1..(1 << 20));
                    new.extend(data(&mut rng, grown))
                }
                2 => new.truncate(rng.gen_range(0..new.len())),
                _ => {
                    for _ in 0..rng.gen_range(1..20) {
                        let at = rng.gen_range(0..new.len());
                        let n = rng.gen_range(1..5000).min(new.len() - at);
                        rng.fill_bytes(&mut new[at..at + n]);
                    }
                }
            }
            let f = file_of(&new);
            let want = stream_cuts(&f, 0, new.len() as u64);
            for b in [2 * CHUNK_MAX as usize, READ_BUF] {
                assert_eq!(batch_cuts(&f, 0, new.len() as u64, Some(Hints::new(&hint)), b), want, "round {round}, buffer {b}");
            }
        }
    }

    #[test]
    fn the_gear_test_matches_fastcdc_at_every_cut() {
        let d = data(&mut rand::rngs::StdRng::seed_from_u64(5), 8 << 20);
        let mut at = 0;
        while d.len() - at > CHUNK_MAX as usize {
            let len = cut_len(&d[at..at + CHUNK_MAX as usize]);
            assert!(cuts_at(&d[at..], len), "cut at {at}+{len}");
            at += len;
        }
    }
}
