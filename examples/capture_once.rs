//! One capture outside the daemon, to time the snapshot path alone:
//! `capture_once STORE_DIR ROOTFS CACHE_IN CACHE_OUT` opens the store, loads the
//! stat cache, captures, commits and saves the new cache (what a snapshot
//! request does, without HTTP and the catalog record), then prints the root and
//! the stats. With `CAPTURE_TIMES` set it also prints how long each phase took.
use std::path::Path;
use std::time::Instant;

use hoodyd::snapshot::{capture::capture, statcache::StatCache};
use hoodyd::store::BlockStore;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, store, root, cache_in, cache_out] = &args[..] else {
        anyhow::bail!("usage: capture_once STORE_DIR ROOTFS CACHE_IN CACHE_OUT");
    };
    let timed = std::env::var_os("CAPTURE_TIMES").is_some();
    if timed {
        tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    }
    let t = Instant::now();
    let store = BlockStore::open(Path::new(store))?;
    let opened = t.elapsed();
    let cache = StatCache::load(Path::new(cache_in));
    let loaded = t.elapsed();
    let captured = capture(&store, Path::new(root), cache)?;
    let done = t.elapsed();
    captured.cache.save(Path::new(cache_out))?;
    captured.cache.drop_in_background();
    println!("{} {:?}", captured.root, captured.stats);
    if timed {
        eprintln!("store open {opened:?}, cache load {:?}, capture {:?}, cache save {:?}", loaded - opened, done - loaded, t.elapsed() - done);
    }
    Ok(())
}
