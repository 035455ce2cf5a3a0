//! Links qbox's executables at a fixed address on Linux.
//!
//! A position-independent executable of this size carries about 22,000
//! relocation records, and the dynamic loader applies them at every start:
//! it writes to about 90 pages of read-only-after-relocation data, each a
//! copy-on-write page fault, before `main`. For `qbox export-token`, a
//! whole process that lives a few milliseconds, that is a large share of its
//! time (docs/performance.md). At a fixed address the linker resolves them
//! once. What is given up is the randomised address of the executable's own
//! code and data; the libraries, heap and stack are still randomised, and
//! qbox forbids unsafe code.
//!
//! Only for the usual dynamically linked glibc build: the static builds of
//! the sidecar image choose their own relocation model
//! (`src/container/static_binary.rs`), and a static-pie link must not be
//! told otherwise.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let dynamic_glibc = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|feature| feature == "crt-static");
    if dynamic_glibc {
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
}
