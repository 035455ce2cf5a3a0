//! Docker Engine access through its API.
//!
//! **Architecture invariant:** this is the only module that imports
//! `bollard`; every mount of auth state it creates is read-only.

pub mod engine;
pub mod image;
pub mod options;
pub mod run;
pub mod runtime_dir;
pub mod spec;
pub mod static_binary;
pub mod tty;
