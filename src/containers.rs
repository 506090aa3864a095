//! Rules of containers that need no I/O: lifecycle transitions and validation of
//! names and settings.

use hoody_api::model::ContainerOperation;
use serde::{Deserialize, Serialize};

use crate::engine::EngineError;

/// Where a container stands in its lifecycle. The catalog records it as the
/// API spells it (`"running"`, …, `"deleting"`), so data dirs written when the
/// record held the API's type read unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerStatus {
    Running,
    Stopped,
    Paused,
    Copying,
    Failed,
    Deleting,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Running => "running",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Copying => "copying",
            ContainerStatus::Failed => "failed",
            ContainerStatus::Deleting => "deleting",
        }
    }
}

/// The status `op` leads to from `from`, or why it is not allowed (a 409).
pub fn transition(from: ContainerStatus, op: ContainerOperation) -> Result<ContainerStatus, String> {
    use ContainerOperation as O;
    use ContainerStatus as S;
    let to = match (op, from) {
        (O::Start, S::Stopped | S::Failed) => S::Running,
        (O::Stop, S::Running | S::Paused) => S::Stopped,
        (O::ForceStop, S::Running | S::Paused | S::Failed) => S::Stopped,
        (O::Restart, S::Running | S::Stopped) => S::Running,
        (O::Pause, S::Running) => S::Paused,
        (O::Resume, S::Paused) => S::Running,
        _ => return Err(format!("cannot {} a container that is {}", op.as_str(), from.as_str())),
    };
    Ok(to)
}

/// Names: 1–128 characters, no control characters, no leading or trailing space.
pub fn validate_name(field: &str, name: &str) -> Result<(), EngineError> {
    if name.is_empty() {
        return Err(EngineError::invalid(field, format!("`{field}` must not be empty")));
    }
    if name.chars().count() > 128 {
        return Err(EngineError::invalid(field, format!("`{field}` is longer than 128 characters")));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(EngineError::invalid(field, format!("`{field}` must not contain control characters or surrounding spaces")));
    }
    Ok(())
}

/// An SSH public key line: `<type> <base64> [comment]`.
pub fn validate_ssh_key(key: &str) -> Result<(), EngineError> {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
    let base64ish = !body.is_empty() && body.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !known || !base64ish {
        return Err(EngineError::invalid("ssh_public_key", "`ssh_public_key` must be an OpenSSH public key line such as `ssh-ed25519 AAAA… comment`"));
    }
    Ok(())
}

/// A cgroup v2 directory: an absolute path without `..`.
pub fn validate_cgroup_path(path: &str) -> Result<(), EngineError> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(EngineError::invalid("cgroup_path", "`cgroup_path` must be an absolute path without `..`"));
    }
    Ok(())
}

pub fn validate_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), EngineError> {
    for key in env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(EngineError::invalid(format!("env.{key}"), format!("environment variable name `{key}` must be non-empty without `=`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerOperation as O;
    use ContainerStatus as S;

    #[test]
    fn lifecycle_moves_along_valid_transitions_only() {
        assert_eq!(transition(S::Stopped, O::Start), Ok(S::Running));
        assert_eq!(transition(S::Running, O::Pause), Ok(S::Paused));
        assert_eq!(transition(S::Paused, O::Resume), Ok(S::Running));
        assert_eq!(transition(S::Paused, O::Stop), Ok(S::Stopped));
        assert_eq!(transition(S::Running, O::Restart), Ok(S::Running));
        assert!(transition(S::Running, O::Start).is_err());
        assert!(transition(S::Stopped, O::Pause).is_err());
        assert!(transition(S::Stopped, O::Resume).is_err());
        for op in O::ALL {
            assert!(transition(S::Copying, op).is_err(), "{op:?} while copying");
            assert!(transition(S::Deleting, op).is_err(), "{op:?} while deleting");
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate_name("name", "web-1").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", " x").is_err());
        assert!(validate_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3 me@host").is_ok());
        assert!(validate_ssh_key("hello").is_err());
        assert!(validate_cgroup_path("/sys/fs/cgroup/c1").is_ok());
        assert!(validate_cgroup_path("rel/x").is_err());
        assert!(validate_cgroup_path("/sys/../etc").is_err());
    }
}
