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
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<ConfigLayer>("htp = \"x\"").is_err());
    }
}
