//! hoodyd: the storage daemon of a container platform. This crate is the engine
//! and the wiring; HTTP, FUSE and QUIC live behind the traits of the `api`,
//! `fuse` and `transport` crates.
//!
//! - wiring: [`daemon`] (with `daemon::config` and `daemon::bootstrap`);
//! - the API face: [`engine`] (`share_api`, `snapshot_api`, `token_api`, `jobs`);
//! - mechanisms: [`snapshot`] (capture, restore, trees, `reachable`), [`shares`]
//!   (the local share backend and mounts), [`store`] (blocks and packs),
//!   [`catalog`] (records over the key-value seam), [`tokens`];
//! - rules for the daemon's own files and containers' files: [`durable`],
//!   [`layout`], [`beneath`].
//!
//! The `hoody` CLI is its own binary (`src/bin/hoody/`).

pub mod beneath;
pub mod catalog;
pub mod cluster;
pub mod containers;
pub mod durable;
pub mod daemon;
pub mod engine;
pub mod ids;
pub mod layout;
pub mod progress;
pub mod tokens;
pub mod store;
pub mod snapshot;
pub mod shares;
pub mod verify;
