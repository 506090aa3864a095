//! Snapshots: trees of a container's filesystem in the block store, captured
//! incrementally and restored in place.

pub mod capture;
pub mod chunker;
pub mod freeze;
pub mod posix;
pub mod reachable;
pub mod restore;
pub mod statcache;
pub mod tree;

#[cfg(test)]
pub mod fidelity_tests;

#[cfg(test)]
mod containment_tests;
