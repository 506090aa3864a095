//! The one mapping between the engine's types and the wire's
//! (`hoody_api::model`), at the HTTP edge: the engine, the domain modules and
//! the catalog keep their own types; what the API shows of them is said here.

use hoody_api::model as wire;

use crate::containers::ContainerStatus;
use crate::progress::JobProgress;
use crate::shares::{ShareMode, ShareStatus};

impl From<ContainerStatus> for wire::ContainerStatus {
    fn from(s: ContainerStatus) -> Self {
        match s {
            ContainerStatus::Running => wire::ContainerStatus::Running,
            ContainerStatus::Stopped => wire::ContainerStatus::Stopped,
            ContainerStatus::Paused => wire::ContainerStatus::Paused,
            ContainerStatus::Copying => wire::ContainerStatus::Copying,
            ContainerStatus::Failed => wire::ContainerStatus::Failed,
            ContainerStatus::Deleting => wire::ContainerStatus::Deleting,
        }
    }
}

impl From<JobProgress> for wire::Progress {
    fn from(p: JobProgress) -> Self {
        let JobProgress { phase, bytes_done, bytes_total, files_done, files_total, rate, totals_exact, job, snapshot, started_at } = p;
        wire::Progress { phase, bytes_done, bytes_total, files_done, files_total, rate, totals_exact, job, snapshot, started_at }
    }
}

impl From<wire::ShareMode> for ShareMode {
    fn from(m: wire::ShareMode) -> Self {
        match m {
            wire::ShareMode::Readonly => ShareMode::ReadOnly,
            wire::ShareMode::Readwrite => ShareMode::ReadWrite,
        }
    }
}

impl From<ShareMode> for wire::ShareMode {
    fn from(m: ShareMode) -> Self {
        match m {
            ShareMode::ReadOnly => wire::ShareMode::Readonly,
            ShareMode::ReadWrite => wire::ShareMode::Readwrite,
        }
    }
}

impl From<ShareStatus> for wire::ShareStatus {
    fn from(s: ShareStatus) -> Self {
        match s {
            ShareStatus::Active => wire::ShareStatus::Active,
            ShareStatus::Failed => wire::ShareStatus::Failed,
            ShareStatus::Pending => wire::ShareStatus::Pending,
            ShareStatus::Unmounted => wire::ShareStatus::Unmounted,
            ShareStatus::Disabled => wire::ShareStatus::Disabled,
            ShareStatus::Expired => wire::ShareStatus::Expired,
        }
    }
}
