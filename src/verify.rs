//! `hoodyd verify`: re-reads every object of the store and every snapshot's
//! trees, and reports corruption by snapshot and path. Read-only, so it can run
//! beside the daemon (it holds the store's lock shared, so GC waits for it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::layout::DataLayout;
use crate::snapshot::tree::{Content, Tree};
use crate::store::{BlockHash, BlockStore, StoreLock};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `container/alias` of the snapshot affected, if any.
    pub snapshot: Option<String>,
    /// Path inside the snapshot.
    pub path: Option<String>,
    pub object: BlockHash,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub objects: u64,
    pub bytes: u64,
    pub snapshots: u64,
    pub problems: Vec<Problem>,
}

pub async fn verify(data_dir: &std::path::Path) -> anyhow::Result<Report> {
    let layout = DataLayout::new(data_dir);
    let catalog = crate::daemon::bootstrap::open_catalog(&layout).await?;
    let snapshots = catalog.all_snapshots().await?;
    let store_dir = layout.store();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Report> {
        let _lock = StoreLock::shared(&store_dir)?;
        let store = BlockStore::open_read_only(&store_dir)?;
        let mut report = Report::default();
        let mut bad: HashMap<BlockHash, String> = HashMap::new();
        for (hash, loc) in store.objects() {
            report.objects += 1;
            report.bytes += loc.stored_len as u64;
            if let Err(e) = store.get(&hash) {
                bad.insert(hash, e.to_string());
            }
        }
        let mut reported = std::collections::HashSet::new();
        for s in &snapshots {
            report.snapshots += 1;
            let name = format!("{}/{}", s.container_id, s.alias);
            let Some(root) = BlockHash::from_hex(&s.id) else { continue };
            let mut stack = vec![(root, PathBuf::from("/"))];
            while let Some((tree_hash, path)) = stack.pop() {
                let tree = match store.get(&tree_hash).ok().and_then(|b| Tree::decode(&b)) {
                    Some(t) => t,
                    None => {
                        let reason = bad.get(&tree_hash).cloned().unwrap_or_else(|| "tree missing or undecodable".into());
                        report.problems.push(Problem { snapshot: Some(name.clone()), path: Some(path.display().to_string()), object: tree_hash, reason });
                        reported.insert(tree_hash);
                        continue;
                    }
                };
                for e in tree.entries {
                    let child = if e.name.is_empty() { path.clone() } else { path.join(OsStr::from_bytes(&e.name)) };
                    match e.content {
                        Content::Dir(sub) => stack.push((sub, child)),
                        Content::File(extents) => {
                            for (h, _) in extents.iter().flat_map(|x| x.chunks.iter()) {
                                let reason = match bad.get(h) {
                                    Some(r) => Some(r.clone()),
                                    None if !store.contains(h) => Some("block missing from the store".into()),
                                    None => None,
                                };
                                if let Some(reason) = reason {
                                    report.problems.push(Problem { snapshot: Some(name.clone()), path: Some(child.display().to_string()), object: *h, reason });
                                    reported.insert(*h);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        for (h, reason) in bad {
            if !reported.contains(&h) {
                report.problems.push(Problem { snapshot: None, path: None, object: h, reason });
            }
        }
        Ok(report)
    })
    .await?
}
