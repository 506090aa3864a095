//! Configuration: embedded defaults, then a TOML file, then environment
//! variables, then flags (each later layer wins).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Fixed, documented default ports on localhost.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7700";
pub const DEFAULT_QUIC: &str = "127.0.0.1:7701";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings of `hoodyd serve` once every layer is applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    pub node_name: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub host_paths: HostPaths,
    /// A join token to become a member of a cluster (`serve --join`; once only).
    pub join: Option<String>,
}

/// The host paths an admin may hand the daemon: directories to adopt as a
/// container's rootfs only beneath `adopt_roots`, cgroups to freeze only
/// beneath `cgroup_root`. With none configured, nobody adopts a directory or
/// names a cgroup: a tenant must never point the daemon at the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPaths {
    pub adopt_roots: Vec<PathBuf>,
    pub cgroup_root: Option<PathBuf>,
}

/// Why a host path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    #[error("no {0} is configured on this server")]
    NoneConfigured(&'static str),
    #[error("not beneath the configured {0}")]
    Outside(&'static str),
    #[error("{0}")]
    Unreadable(String),
}

impl HostPaths {
    /// `path` resolved (symlinks and `..` followed as the kernel would), if it
    /// lies strictly beneath one of the adopt roots.
    pub fn adoptable(&self, path: &Path) -> Result<PathBuf, HostPathError> {
        if self.adopt_roots.is_empty() {
            return Err(HostPathError::NoneConfigured("adopt_roots"));
        }
        let real = path.canonicalize().map_err(|e| HostPathError::Unreadable(e.to_string()))?;
        let inside = self.adopt_roots.iter().filter_map(|r| r.canonicalize().ok()).any(|root| real.starts_with(&root) && real != root);
        if inside { Ok(real) } else { Err(HostPathError::Outside("adopt_roots")) }
    }

    /// Whether the cgroup `path` lies beneath `cgroup_root` (lexically: a
    /// cgroup need not exist yet; `..` is refused before).
    pub fn cgroup_allowed(&self, path: &Path) -> Result<(), HostPathError> {
        let Some(root) = &self.cgroup_root else { return Err(HostPathError::NoneConfigured("cgroup_root")) };
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) || !path.starts_with(root) || path == root.as_path() {
            return Err(HostPathError::Outside("cgroup_root"));
        }
        Ok(())
    }
}

/// One layer of settings; every field optional. The TOML file has these keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub quic: Option<SocketAddr>,
    pub node_name: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    /// Directories beneath which an admin may adopt an existing rootfs.
    pub adopt_roots: Option<Vec<PathBuf>>,
    /// The cgroup directory beneath which an admin may name a container's cgroup.
    pub cgroup_root: Option<PathBuf>,
}

impl ConfigLayer {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// `self` over `lower`: fields set here win.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.or(lower.data_dir),
            http: self.http.or(lower.http),
            quic: self.quic.or(lower.quic),
            node_name: self.node_name.or(lower.node_name),
            log_format: self.log_format.or(lower.log_format),
            log_level: self.log_level.or(lower.log_level),
            adopt_roots: self.adopt_roots.or(lower.adopt_roots),
            cgroup_root: self.cgroup_root.or(lower.cgroup_root),
        }
    }

    pub fn resolve(self) -> Config {
        Config {
            data_dir: self.data_dir.unwrap_or_else(default_data_dir),
            http: self.http.unwrap_or_else(|| DEFAULT_HTTP.parse().expect("valid default")),
            quic: self.quic.unwrap_or_else(|| DEFAULT_QUIC.parse().expect("valid default")),
            node_name: self.node_name.unwrap_or_else(default_node_name),
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            log_level: self.log_level.unwrap_or_else(|| "info".into()),
            host_paths: HostPaths { adopt_roots: self.adopt_roots.unwrap_or_default(), cgroup_root: self.cgroup_root },
            join: None,
        }
    }
}

/// `/var/lib/hoody` for root, else `$XDG_DATA_HOME/hoody` (or `~/.local/share/hoody`).
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/hoody");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("hoody");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/hoody")
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_and_defaults_fill_the_rest() {
        let file: ConfigLayer = toml::from_str("http = \"127.0.0.1:9000\"\nnode_name = \"from-file\"\nlog_format = \"json\"").unwrap();
        let flags = ConfigLayer { node_name: Some("from-flag".into()), ..Default::default() };
        let c = flags.over(file).resolve();
        assert_eq!(c.http.port(), 9000);
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.quic, DEFAULT_QUIC.parse().unwrap());
    }

    #[test]
    fn host_paths_are_refused_unless_beneath_a_configured_root() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = tmp.path().join("roots");
        std::fs::create_dir_all(roots.join("legacy")).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), roots.join("link")).unwrap();
        let none = HostPaths::default();
        assert_eq!(none.adoptable(&roots.join("legacy")), Err(HostPathError::NoneConfigured("adopt_roots")));
        assert_eq!(none.cgroup_allowed(Path::new("/sys/fs/cgroup/x")), Err(HostPathError::NoneConfigured("cgroup_root")));
        let some = HostPaths { adopt_roots: vec![roots.clone()], cgroup_root: Some("/sys/fs/cgroup/hoody".into()) };
        assert!(some.adoptable(&roots.join("legacy")).is_ok());
        assert_eq!(some.adoptable(&roots), Err(HostPathError::Outside("adopt_roots")), "the root itself");
        assert_eq!(some.adoptable(&roots.join("link")), Err(HostPathError::Outside("adopt_roots")), "a link out of the root");
        assert_eq!(some.adoptable(&roots.join("legacy/../../elsewhere")), Err(HostPathError::Outside("adopt_roots")));
        assert!(some.cgroup_allowed(Path::new("/sys/fs/cgroup/hoody/c1")).is_ok());
        for bad in ["/sys/fs/cgroup/system.slice", "/sys/fs/cgroup/hoody", "/sys/fs/cgroup/hoody/../x", "/sys/fs/cgroup/hoodyx"] {
            assert!(some.cgroup_allowed(Path::new(bad)).is_err(), "{bad}");
        }
        let file: ConfigLayer = toml::from_str("adopt_roots = [\"/srv/roots\"]\ncgroup_root = \"/sys/fs/cgroup/hoody\"").unwrap();
        assert_eq!(file.resolve().host_paths.adopt_roots, vec![PathBuf::from("/srv/roots")]);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<ConfigLayer>("htp = \"x\"").is_err());
    }
}
