//! Docker Engine access through its API.
//!
//! **Architecture invariant:** this is the only module that imports
//! `bollard`; every mount of auth state it creates is read-only.

pub(crate) mod agent_image;
pub(crate) mod bundle;
pub(crate) mod detached;
pub mod engine;
pub(crate) mod image;
pub(crate) mod manage;
pub(crate) mod options;
pub(crate) mod run;
pub(crate) mod runtime_dir;
pub(crate) mod spec;
pub(crate) mod static_binary;
pub(crate) mod transport;
pub(crate) mod tty;
