//! Link settings for qbox's executables on Linux with glibc, both for the
//! start-up of short commands such as `qbox export-token`, whose whole life
//! is a few milliseconds (docs/performance.md).
//!
//! A fixed address: a position-independent executable of this size carries
//! about 22,000 relocation records, and the dynamic loader applies them at
//! every start: it writes to about 90 pages of read-only-after-relocation
//! data, each a copy-on-write page fault, before `main`. At a fixed address
//! the linker resolves them once. What is given up is the randomised address
//! of the executable's own code and data; the libraries, heap and stack are
//! still randomised, and qbox forbids unsafe code.
//!
//! A start-up order: `benches/startup.order` lists the functions
//! `qbox export-token` runs, and lld places them next to each other at the
//! start of `.text`, so the command faults in a few dozen pages of code
//! instead of scattering faults over 13 MB. The list names symbols, and
//! Rust's carry hashes of the toolchain and the dependencies: names that no
//! longer exist are skipped without a warning, so a stale list costs speed,
//! never a build. `benches/startup-order.sh` writes it afresh.
//!
//! Only for the usual dynamically linked glibc build: the static builds of
//! the sidecar image choose their own relocation model
//! (`src/container/static_binary.rs`), and a static-pie link must not be
//! told otherwise.

use std::path::Path;

/// The start-up order, relative to the package.
const STARTUP_ORDER: &str = "benches/startup.order";
/// Set to a path to have the linker write qbox's link map there (what
/// `benches/startup-order.sh` reads).
const LINK_MAP_VAR: &str = "QBOX_LINK_MAP";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={STARTUP_ORDER}");
    println!("cargo::rerun-if-env-changed={LINK_MAP_VAR}");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let dynamic_glibc = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|feature| feature == "crt-static");
    if !dynamic_glibc {
        return;
    }
    println!("cargo::rustc-link-arg-bins=-no-pie");
    if !links_with_rust_lld(&var) {
        return;
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(STARTUP_ORDER);
    // `-Wl,` splits its argument at commas.
    if order.is_file() && !order.to_string_lossy().contains(',') {
        println!(
            "cargo::rustc-link-arg-bin=qbox=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bin=qbox=-Wl,--no-warn-symbol-ordering");
    }
    let map = var(LINK_MAP_VAR);
    if !map.is_empty() && !map.contains(',') {
        println!("cargo::rustc-link-arg-bin=qbox=-Wl,-Map={map}");
    }
}

/// Whether the link is rustc's default for x86_64 Linux since 1.90, its own
/// lld (the options above are lld's: GNU ld would refuse them). Any linker
/// setting of the user's is respected by passing nothing.
fn links_with_rust_lld(var: &impl Fn(&str) -> String) -> bool {
    if var("TARGET") != "x86_64-unknown-linux-gnu"
        || !var("RUSTC_LINKER").is_empty()
        || !var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = std::process::Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let release = version
        .lines()
        .find_map(|line| line.strip_prefix("release: "))
        .unwrap_or_default();
    let mut numbers = release
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
