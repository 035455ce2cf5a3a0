//! A cgroup (v2) per agent call, where the sidecar may create one: every
//! process the call's CLI starts is born in it and cannot leave it without
//! privileges, so the end of the call freezes (`cgroup.freeze`) and kills
//! (`cgroup.kill`) all of them at once, however fast they fork; `pids.max`
//! bounds how many there can be, where the `pids` controller is available.
//!
//! The CLI is put in its call's cgroup without a window in which it could
//! fork outside: the sidecar moves itself into the call's cgroup, starts the
//! CLI (which is born there) and moves itself back. `CLONE_INTO_CGROUP` or a
//! move from `pre_exec` would need unsafe code, which qbox forbids.
//!
//! Where no cgroup can be made (no cgroup v2 hierarchy, a cgroup that is
//! not delegated to this user, a kernel without `cgroup.kill`), or
//! `QBOX_AGENT_CGROUP=off`, the tracker walks `/proc` instead
//! ([`super::tracker`]).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Set to `off` to contain calls by walking `/proc` even where a cgroup
/// could be made (tests use it to exercise that mode).
pub const CGROUP_ENV: &str = "QBOX_AGENT_CGROUP";
/// The most processes (and threads) a call may have at once, where the
/// `pids` controller is available to the sidecar's cgroup. A CLI with its
/// tools needs a few dozen; a fork bomb is stopped here, far below the
/// system's `pid_max`.
pub const PIDS_MAX: u32 = 1024;
/// The prefix of the call cgroups' names: `qbox-agent-SIDECARPID-CALL`.
const PREFIX: &str = "qbox-agent-";

/// Where this process's call cgroups are made.
#[derive(Debug)]
pub struct CgroupRoot {
    /// The sidecar's own cgroup, whose children the call cgroups are.
    own: PathBuf,
    /// Whether the call cgroups get `pids.max`.
    pids: bool,
}

impl CgroupRoot {
    /// The sidecar's own cgroup v2, if it may make call cgroups below it;
    /// otherwise why not (for the log).
    pub fn detect() -> Result<Self, String> {
        if std::env::var(CGROUP_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("off")) {
            return Err(format!("turned off by {CGROUP_ENV}=off"));
        }
        let own = own_cgroup_dir()?;
        let pids = enable_pids(&own);
        let root = Self { own, pids };
        // A probe: the directory can be made, and the kernel has the files
        // the end of a call needs (cgroup.kill arrived in Linux 5.14).
        let probe = root
            .own
            .join(format!("{PREFIX}{}-probe", std::process::id()));
        let _ = std::fs::remove_dir(&probe);
        std::fs::create_dir(&probe)
            .map_err(|err| format!("cannot create a cgroup in {}: {err}", root.own.display()))?;
        let complete = ["cgroup.kill", "cgroup.freeze", "cgroup.procs"]
            .iter()
            .all(|file| probe.join(file).exists());
        let _ = std::fs::remove_dir(&probe);
        if !complete {
            return Err("the kernel's cgroups have no cgroup.kill (Linux 5.14 or newer)".into());
        }
        root.sweep_stale();
        Ok(root)
    }

    pub fn dir(&self) -> &Path {
        &self.own
    }

    /// Whether call cgroups get a `pids.max`.
    pub fn limits_pids(&self) -> bool {
        self.pids
    }

    /// Makes the cgroup of call `call`.
    pub fn create(&self, call: u64) -> io::Result<CallCgroup> {
        let dir = self
            .own
            .join(format!("{PREFIX}{}-{call}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let cgroup = CallCgroup {
            dir,
            own_procs: self.own.join("cgroup.procs"),
        };
        if self.pids
            && let Err(err) = write(&cgroup.dir.join("pids.max"), &PIDS_MAX.to_string())
        {
            tracing::warn!("agent call {call}: cannot set pids.max: {err}");
        }
        Ok(cgroup)
    }

    /// Removes the empty call cgroups of sidecars that are gone (a sidecar
    /// killed during a call leaves its call's cgroup behind).
    fn sweep_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.own) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let cgroup = CallCgroup {
                    dir: entry.path(),
                    own_procs: self.own.join("cgroup.procs"),
                };
                cgroup.kill_and_remove(Duration::from_millis(500));
            }
        }
    }
}

/// What [`CallCgroup::spawn_inside`] did.
#[derive(Debug)]
pub enum Inside<T> {
    /// This process could not enter the cgroup; nothing was started.
    NotMoved(io::Error),
    /// `spawn` ran inside the cgroup. `stuck` is why this process could not
    /// move back: then the cgroup holds the sidecar itself and must never
    /// be killed.
    Spawned {
        spawned: io::Result<T>,
        stuck: Option<io::Error>,
    },
}

/// One call's cgroup.
#[derive(Debug)]
pub struct CallCgroup {
    dir: PathBuf,
    /// The sidecar's own cgroup's `cgroup.procs`, to move back to.
    own_procs: PathBuf,
}

impl CallCgroup {
    /// Runs `spawn` with this process inside the call's cgroup, so that
    /// what it starts is born there, then moves this process back.
    pub fn spawn_inside<T>(&self, spawn: impl FnOnce() -> io::Result<T>) -> Inside<T> {
        let me = std::process::id().to_string();
        if let Err(err) = write(&self.dir.join("cgroup.procs"), &me) {
            return Inside::NotMoved(err);
        }
        let spawned = spawn();
        Inside::Spawned {
            spawned,
            stuck: write(&self.own_procs, &me).err(),
        }
    }

    /// Freezes every process of the cgroup, kills them all and removes the
    /// cgroup once they are gone (waiting up to `wait`); returns whether
    /// the cgroup is gone.
    pub fn kill_and_remove(&self, wait: Duration) -> bool {
        // Frozen first, so that nothing forks while the kill walks the
        // cgroup (the kernel's kill also refuses forks into a cgroup being
        // killed; the freeze makes it so on every kernel with cgroup.kill).
        let _ = write(&self.dir.join("cgroup.freeze"), "1");
        let _ = write(&self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + wait;
        loop {
            // Gone once every process exited (a zombie no longer counts).
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return true,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return true,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `value` to a cgroup file in a single `write`, as the kernel
/// expects.
fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

/// The directory of this process's cgroup in the v2 hierarchy.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let membership = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|err| format!("cannot read /proc/self/cgroup: {err}"))?;
    let own = membership
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|err| format!("cannot read /proc/self/mountinfo: {err}"))?;
    let (root, mount_point) =
        cgroup2_mount(&mountinfo).ok_or("no cgroup v2 file system is mounted")?;
    // The mount shows the hierarchy from `root` on (a container's cgroup
    // namespace or a bind mount of a part of it).
    let relative = Path::new(own)
        .strip_prefix(&root)
        .map_err(|_| format!("this process's cgroup {own} is outside the mounted {root}"))?;
    let dir = Path::new(&mount_point).join(relative);
    if dir.join("cgroup.procs").exists() {
        Ok(dir)
    } else {
        Err(format!("{} is not a cgroup directory", dir.display()))
    }
}

/// The root and mount point of the first cgroup2 mount in `mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        Some((unescape(fields.get(3)?), unescape(fields.get(4)?)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes the `pids` controller available to the call cgroups if the
/// sidecar's cgroup offers it: possible in the root cgroup, or in one with
/// no process of its own (cgroup v2 puts processes only in leaves).
fn enable_pids(own: &Path) -> bool {
    let has = |file: &str| {
        std::fs::read_to_string(own.join(file))
            .is_ok_and(|text| text.split_whitespace().any(|c| c == "pids"))
    };
    if !has("cgroup.controllers") {
        return false;
    }
    has("cgroup.subtree_control") || write(&own.join("cgroup.subtree_control"), "+pids").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let mountinfo = "\
25 30 0:22 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids
26 30 0:23 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
27 30 0:24 /docker/abc /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        assert_eq!(
            cgroup2_mount(mountinfo.lines().nth(2).unwrap_or_default()),
            Some(("/docker/abc".into(), "/sys/fs/cgroup x".into()))
        );
        assert_eq!(
            cgroup2_mount(mountinfo.lines().next().unwrap_or_default()),
            None
        );
    }
}
