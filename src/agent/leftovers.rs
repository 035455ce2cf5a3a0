//! The agent's private directories (the copy of the login, a private
//! `HOME`) and the sweep of those a killed sidecar left.
//!
//! A sidecar removes its directories when it ends, also on SIGTERM, SIGINT
//! and SIGHUP; one killed with SIGKILL cannot, and its copy of the login
//! (with a refreshable snapshot: the refresh token and client secret)
//! would stay in the temporary directory. So each directory is named after
//! its sidecar, `qbox-agent-<pid>-<start>-<random>` (`<start>`: the
//! process's start time in clock ticks since boot, so a reused pid is not
//! taken for the owner), and the next sidecar whose agent is enabled
//! removes those whose owner is gone, as `qbox run` sweeps the snapshots of
//! killed runs; `qbox doctor` lists them. Only real directories owned by
//! the user with that name shape are touched, never through a symbolic
//! link, and never one whose owner runs or might run.

use std::path::Path;

use crate::container::runtime_dir::{self, RunEntry};
use crate::store::StoreError;

/// The prefix of every private directory of the agent.
const PREFIX: &str = "qbox-agent-";

/// A new private directory (mode 0700) in the temporary directory, named
/// after this process; removed when the handle is dropped.
pub fn private_dir() -> Result<tempfile::TempDir, StoreError> {
    let pid = std::process::id();
    let start = runtime_dir::process_start(pid).unwrap_or(0);
    crate::store::private_file::private_temp_dir(&format!("{PREFIX}{pid}-{start}-"))
}

/// A private directory of the agent found in the temporary directory: a
/// directory named after its owner, as a run's is.
pub type Leftover = RunEntry;

/// `qbox-agent-<pid>-<start>-<rest>` → (pid, start).
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.splitn(3, '-');
    let (pid, start, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(start) || rest.is_empty() {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    (pid > 0 && i32::try_from(pid).is_ok()).then_some((pid, start.parse().ok()?))
}

/// The agent's private directories in `dir` (the temporary directory),
/// with whether their sidecar runs.
pub fn entries_in(dir: &Path) -> Vec<Leftover> {
    let mut found = runtime_dir::owned_dirs(dir, parse_name).unwrap_or_default();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// [`entries_in`] the temporary directory.
pub fn entries() -> Vec<Leftover> {
    entries_in(&std::env::temp_dir())
}

/// Removes the directories in the temporary directory whose sidecar is
/// gone, and returns them; one that cannot be removed is logged and left.
/// The same sweep as `qbox run`'s (`runtime_dir::remove_abandoned`).
pub fn sweep() -> Vec<Leftover> {
    runtime_dir::remove_abandoned(
        entries(),
        "removed the private copy of the login a killed sidecar left",
        "could not remove a killed sidecar's private directory",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::runtime_dir::Owner;

    #[test]
    fn only_names_the_agent_gives_are_its_own() {
        assert_eq!(parse_name("qbox-agent-12-345-aBc9"), Some((12, 345)));
        assert_eq!(parse_name("qbox-agent-12-0-x-y"), Some((12, 0)));
        for other in [
            "qbox-agent-",
            "qbox-agent-12-345",
            "qbox-agent-12-345-",
            "qbox-agent-home-abc",
            "qbox-agent-0-1-x",
            "qbox-agent-x-1-y",
            "qbox-agent-4294967295-1-x",
            "qbox-run-1-2-x",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_directory_of_this_process_is_alive_and_kept() {
        let dir = private_dir().unwrap();
        let parent = dir.path().parent().unwrap();
        let found: Vec<_> = entries_in(parent)
            .into_iter()
            .filter(|e| e.path == dir.path())
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].owner, Owner::Alive);
    }
}
