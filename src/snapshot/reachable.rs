//! What the snapshot trees reach: every tree and block a set of roots needs.
//! GC marks with it; copy and sync walk the same trees to find what a
//! target lacks.

use std::collections::HashSet;

use super::tree::{Content, Tree};
use crate::progress::Reporter;
use crate::store::{BlockHash, BlockStore};

/// Every object reachable from `roots`. Refuses (rather than guessing) when a
/// tree cannot be read: GC must never delete what it could not see. Counts
/// the trees read (files) and their bytes on `progress`, phase `marking`.
pub fn reachable(store: &BlockStore, roots: &[BlockHash], progress: &Reporter) -> anyhow::Result<HashSet<BlockHash>> {
    progress.set_phase("marking");
    let mut live = HashSet::new();
    let mut stack: Vec<BlockHash> = roots.to_vec();
    while let Some(tree) = stack.pop() {
        if !live.insert(tree) {
            continue;
        }
        let bytes = store.get(&tree).map_err(|e| anyhow::anyhow!("cannot read tree {tree}: {e}; not collecting"))?;
        progress.file_done(bytes.len() as u64, 0);
        let tree = Tree::decode(&bytes).ok_or_else(|| anyhow::anyhow!("tree {tree} does not decode; not collecting"))?;
        for e in tree.entries {
            match e.content {
                Content::Dir(sub) => stack.push(sub),
                Content::File(extents) => live.extend(extents.iter().flat_map(|x| x.chunks.iter().map(|(h, _)| *h))),
                _ => {}
            }
        }
    }
    Ok(live)
}
