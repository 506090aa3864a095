//! hoodyd: the storage daemon of a container platform. This crate is the engine
//! and the wiring; HTTP, FUSE and QUIC live behind the traits of the `api`,
//! `fuse` and `transport` crates.

pub mod beneath;
pub mod bootstrap;
pub mod catalog;
pub mod config;
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
