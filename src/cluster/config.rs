//! `cluster.json` in the data dir: present once the node belongs to a cluster,
//! naming where the cluster's catalog lives. Written by `hoodyd cluster init`,
//! by joining (`hoodyd serve --join`) and by `hoodyd cluster add-node`; read at
//! every start. Without it the node is a cluster of one on its embedded catalog.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;

pub const FILE_NAME: &str = "cluster.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs, tried in turn.
    pub etcd: Vec<String>,
    /// Key prefix of this cluster's catalog inside etcd (one etcd may hold several).
    pub prefix: String,
}

pub const DEFAULT_PREFIX: &str = "hoody/";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The node's cluster, or `None` for a node on its own.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<ClusterConfig>> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn save(data_dir: &Path, config: &ClusterConfig) -> anyhow::Result<()> {
    write_atomic(&path(data_dir), &serde_json::to_vec_pretty(config)?, crate::layout::PRIVATE_FILE).with_context(|| format!("writing {}", path(data_dir).display()))
}

/// Checks etcd URLs given on the command line: `http://host:port`, one or more,
/// comma-separated.
pub fn parse_etcd_urls(arg: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = arg.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.trim_end_matches('/').to_string()).collect();
    if urls.is_empty() {
        anyhow::bail!("--etcd needs at least one URL, e.g. http://127.0.0.1:2379");
    }
    for url in &urls {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("etcd URL `{url}` must start with http://"))?;
        if rest.is_empty() || rest.contains('/') {
            anyhow::bail!("etcd URL `{url}` must be http://host:port");
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_are_checked() {
        assert_eq!(parse_etcd_urls("http://127.0.0.1:2379/, http://10.0.0.2:2379").unwrap(), vec!["http://127.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert!(parse_etcd_urls("").is_err());
        assert!(parse_etcd_urls("https://x:1").is_err());
        assert!(parse_etcd_urls("http://x:1/v3").is_err());
    }

    #[test]
    fn a_saved_config_loads_back_and_its_absence_is_a_single_node() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let c = ClusterConfig { etcd: vec!["http://127.0.0.1:2379".into()], prefix: DEFAULT_PREFIX.into() };
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(c));
    }
}
