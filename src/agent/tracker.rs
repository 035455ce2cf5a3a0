//! No process outlives its call: every process a call's CLI starts is
//! tracked, and ended with the call.
//!
//! A process group is not enough: a grandchild that calls `setsid` (or a
//! daemon that forks twice) leaves the group, and once its parent exits it
//! is adopted by init, out of reach. On Linux the sidecar therefore makes
//! itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): orphans of the
//! CLI's tree are adopted by the sidecar instead of init. Each call then
//!
//! - records its CLI and, every [`SCAN_INTERVAL`] while it runs, every
//!   process below it (walking `/proc` by parent pid), each named by pid
//!   *and* start time so that a reused pid is never taken for it;
//! - counts an orphan the sidecar adopted that no call has recorded as its
//!   own (it lost its parent before any walk saw it) as belonging to every
//!   call that was running when it started;
//! - when it ends (finished, timed out or cancelled) stops every one of its
//!   processes with `SIGSTOP`, round after round until a round finds no new
//!   one, so that nothing forks past the walk, then sends `SIGKILL` to all
//!   of them and reaps those the sidecar adopted. Signals go through a
//!   pidfd opened before the start time is checked again, so a pid reused
//!   in between cannot receive them.
//!
//! The sidecar also makes itself non-dumpable (`PR_SET_DUMPABLE` 0), so
//! that other processes of the same user, the CLI and the commands it runs
//! included, cannot read its memory or `/proc/PID/environ`, where the MCP
//! bearer token and the login live.
//!
//! Elsewhere (not Linux) only the process group is ended.
//!
//! **Invariant:** the process that enables the agent starts no child
//! process other than agent calls: a child it adopted is taken for a
//! leftover of a call. And only processes a call killed are ever reaped
//! here; the CLI itself is tokio's to wait for.

use std::time::Duration;

/// How often a running call looks for new processes below its CLI.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// How long the end of a call waits for the processes it killed to be gone.
const REAP_DEADLINE: Duration = Duration::from_secs(2);

/// Prepares this process to run agent calls (once; later calls do nothing).
pub fn prepare_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(platform::prepare_process);
}

/// A running call's processes.
#[derive(Debug)]
pub struct CallTracker {
    call: u64,
    root_pid: Option<u32>,
    finished: bool,
}

/// The processes a call stopped and killed when it ended.
#[derive(Debug, Default)]
pub struct Killed(Vec<platform::Identity>);

/// Starts `command` and begins tracking what it starts.
pub fn spawn(
    command: &mut tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, CallTracker)> {
    let (child, call) = platform::spawn(command)?;
    let root_pid = child.id();
    Ok((
        child,
        CallTracker {
            call,
            root_pid,
            finished: false,
        },
    ))
}

impl CallTracker {
    /// Records the processes below the CLI now (off the async runtime:
    /// walking `/proc` is a few hundred small reads).
    pub async fn scan(&self) {
        let call = self.call;
        let _ = tokio::task::spawn_blocking(move || platform::record(call)).await;
    }

    /// Stops, then kills, every process of the call.
    pub async fn freeze_and_kill(&self) -> Killed {
        let call = self.call;
        tokio::task::spawn_blocking(move || Killed(platform::freeze_and_kill(call)))
            .await
            .unwrap_or_default()
    }

    /// Ends tracking once the CLI itself has been waited for: reaps the
    /// killed processes the sidecar adopted, waiting up to
    /// [`REAP_DEADLINE`] for them to die. Those still there then (or when
    /// this future is dropped) are reaped at the end of a later call.
    pub async fn finish(mut self, killed: Killed) {
        self.finished = true;
        platform::forget(self.call, self.root_pid);
        platform::remember_for_reaping(&killed.0);
        let deadline = tokio::time::Instant::now() + REAP_DEADLINE;
        loop {
            let own = killed.0.clone();
            let left = tokio::task::spawn_blocking(move || platform::reap(&own))
                .await
                .unwrap_or(false);
            if !left || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for CallTracker {
    /// The call's future was dropped before it ended (its client went
    /// away): end its processes anyway, without waiting.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let killed = platform::freeze_and_kill(self.call);
        platform::forget(self.call, self.root_pid);
        platform::remember_for_reaping(&killed);
        platform::reap(&killed);
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::collections::{HashMap, HashSet};
    use std::sync::{LazyLock, Mutex, MutexGuard};

    use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

    pub use super::super::proc_table::Identity;
    use super::super::proc_table::{ProcTable, read_entry};

    /// How many freeze rounds a call's end makes at most (each one stops
    /// the processes the previous round's processes had just started).
    const FREEZE_ROUNDS: usize = 64;
    /// Killed processes remembered for a later reap at most (one that
    /// never dies, such as a set-user-ID program the sidecar may not
    /// signal, must not grow the set without end).
    const REAP_LATER_MAX: usize = 16 * 1024;

    #[derive(Debug, Default)]
    struct Registry {
        next_call: u64,
        /// The CLIs of running calls: tokio waits for them, this module
        /// never does.
        roots: HashSet<i32>,
        calls: HashMap<u64, CallProcesses>,
        /// Killed processes not reaped yet (or, if they are not the
        /// sidecar's to reap, not gone yet).
        reap_later: HashSet<Identity>,
    }

    #[derive(Debug, Default)]
    struct CallProcesses {
        root: Option<Identity>,
        known: HashSet<Identity>,
    }

    static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

    fn registry() -> MutexGuard<'static, Registry> {
        REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn this_pid() -> i32 {
        rustix::process::getpid().as_raw_nonzero().get()
    }

    pub fn prepare_process() {
        match rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            Ok(()) => SUBREAPER.store(true, std::sync::atomic::Ordering::Relaxed),
            Err(err) => tracing::warn!(
                "cannot adopt the agent's orphaned processes (PR_SET_CHILD_SUBREAPER: {err}); a process that leaves the CLI's process group may outlive its call"
            ),
        }
        if let Err(err) =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        {
            tracing::warn!(
                "cannot protect the sidecar's memory from other processes of this user (PR_SET_DUMPABLE: {err})"
            );
        }
    }

    pub fn spawn(
        command: &mut tokio::process::Command,
    ) -> std::io::Result<(tokio::process::Child, u64)> {
        // The registry is held across the spawn, so that no walk can see
        // the new CLI before it is known as a call's own child.
        let mut registry = registry();
        let child = command.spawn()?;
        let call = registry.next_call;
        registry.next_call += 1;
        let mut processes = CallProcesses::default();
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            registry.roots.insert(pid);
            if let Some(entry) = read_entry(pid) {
                processes.root = Some(entry.identity);
                processes.known.insert(entry.identity);
            }
        }
        registry.calls.insert(call, processes);
        Ok((child, call))
    }

    /// Whether the sidecar is the subreaper of what its calls start (set
    /// once, by `prepare_process`).
    static SUBREAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Walks `/proc` and returns every process of `call`, recording them.
    pub fn record(call: u64) -> Vec<Identity> {
        if nothing_left(call) {
            return Vec::new();
        }
        let table = ProcTable::read();
        let mut registry = registry();
        adopt_orphans(&table, &mut registry);
        let Some(processes) = registry.calls.get_mut(&call) else {
            return Vec::new();
        };
        let members = table.descendants(processes.known.iter().copied());
        processes.known.extend(members.iter().copied());
        members
    }

    /// Whether `call` certainly has no process left, known without walking
    /// `/proc` (a walk reads every process's `stat`: about a millisecond
    /// per hundred processes, on every call). As the subreaper, the sidecar
    /// is an ancestor of every process a call starts that is still alive:
    /// each one's chain of parents reaches either the call's CLI or, once a
    /// parent has died, the sidecar. So when the CLI is no longer a child
    /// and every child the sidecar has is another running call's CLI,
    /// nothing of this call is left.
    fn nothing_left(call: u64) -> bool {
        if !SUBREAPER.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let Some(children) = own_children() else {
            return false;
        };
        let registry = registry();
        let Some(this_root) = registry.calls.get(&call).map(|c| c.root.map(|r| r.pid)) else {
            return false;
        };
        children
            .iter()
            .all(|pid| Some(*pid) != this_root && registry.roots.contains(pid))
    }

    /// The sidecar's children (of every thread: an orphan is given to any
    /// thread of its subreaper), or `None` when the kernel does not list
    /// them (`/proc/PID/task/TID/children` needs CONFIG_PROC_CHILDREN).
    fn own_children() -> Option<Vec<i32>> {
        let mut children = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let text = std::fs::read_to_string(task.ok()?.path().join("children")).ok()?;
            children.extend(
                text.split_whitespace()
                    .filter_map(|pid| pid.parse::<i32>().ok()),
            );
        }
        Some(children)
    }

    /// Gives every orphan the sidecar adopted that no call has recorded to
    /// each running call that started before it did.
    fn adopt_orphans(table: &ProcTable, registry: &mut Registry) {
        let me = this_pid();
        let claimed: HashSet<Identity> = registry
            .calls
            .values()
            .flat_map(|c| c.known.iter().copied())
            .collect();
        let orphans: Vec<Identity> = table
            .entries()
            .filter(|e| e.ppid == me && !registry.roots.contains(&e.identity.pid))
            .map(|e| e.identity)
            .filter(|identity| !claimed.contains(identity))
            .collect();
        for orphan in orphans {
            for call in registry.calls.values_mut() {
                if call.root.is_some_and(|root| root.start <= orphan.start) {
                    call.known.insert(orphan);
                }
            }
        }
    }

    pub fn freeze_and_kill(call: u64) -> Vec<Identity> {
        let mut frozen: Vec<Identity> = Vec::new();
        let mut seen: HashSet<Identity> = HashSet::new();
        for _ in 0..FREEZE_ROUNDS {
            let new: Vec<Identity> = record(call)
                .into_iter()
                .filter(|m| seen.insert(*m))
                .collect();
            if new.is_empty() {
                break;
            }
            for process in new {
                signal(process, Signal::STOP);
                frozen.push(process);
            }
        }
        // A stopped process still dies of SIGKILL.
        for process in &frozen {
            signal(*process, Signal::KILL);
        }
        frozen
    }

    /// Sends `signal` to `process` if it is still the process it names.
    fn signal(process: Identity, signal: Signal) {
        let Some(pid) = Pid::from_raw(process.pid) else {
            return;
        };
        let still_there = || read_entry(process.pid).is_some_and(|e| e.identity == process);
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            // The descriptor names one process for good: when that process
            // still has the start time, the signal cannot go elsewhere.
            Ok(pidfd) => {
                if still_there() {
                    let _ = rustix::process::pidfd_send_signal(&pidfd, signal);
                }
            }
            // Kernels before 5.3: a plain kill right after the check.
            Err(rustix::io::Errno::NOSYS) => {
                if still_there() {
                    let _ = rustix::process::kill_process(pid, signal);
                }
            }
            Err(_) => {}
        }
    }

    /// Reaps the remembered killed processes that died as children of the
    /// sidecar and forgets those that are gone; returns whether any of
    /// `own` is still there.
    pub fn reap(own: &[Identity]) -> bool {
        let me = this_pid();
        let mut registry = registry();
        let mut pending = std::mem::take(&mut registry.reap_later);
        pending.retain(|process| {
            let Some(entry) = read_entry(process.pid) else {
                return false;
            };
            if entry.identity != *process {
                return false;
            }
            if !entry.zombie || entry.ppid != me || registry.roots.contains(&process.pid) {
                // Alive, or a zombie its own (killed) parent has yet to
                // reap: once that parent is gone, it is the sidecar's.
                return true;
            }
            let pid = Pid::from_raw(process.pid);
            !matches!(
                rustix::process::waitpid(pid, WaitOptions::NOHANG),
                Ok(Some(_)) | Err(rustix::io::Errno::CHILD)
            )
        });
        let own_left = pending.iter().any(|p| own.contains(p));
        registry.reap_later = pending;
        own_left
    }

    /// Adds killed processes to those reaped by [`reap`].
    pub fn remember_for_reaping(killed: &[Identity]) {
        let mut registry = registry();
        for process in killed {
            if registry.reap_later.len() >= REAP_LATER_MAX {
                break;
            }
            registry.reap_later.insert(*process);
        }
    }

    pub fn forget(call: u64, root_pid: Option<u32>) {
        let mut registry = registry();
        registry.calls.remove(&call);
        if let Some(pid) = root_pid.and_then(|p| i32::try_from(p).ok()) {
            registry.roots.remove(&pid);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    //! Without `/proc` and a subreaper, only the process group is ended
    //! (by the runner).

    /// Nothing is tracked.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Identity {}

    pub fn prepare_process() {}

    pub fn spawn(
        command: &mut tokio::process::Command,
    ) -> std::io::Result<(tokio::process::Child, u64)> {
        Ok((command.spawn()?, 0))
    }

    pub fn record(_call: u64) {}

    pub fn freeze_and_kill(_call: u64) -> Vec<Identity> {
        Vec::new()
    }

    pub fn reap(_own: &[Identity]) -> bool {
        false
    }

    pub fn remember_for_reaping(_killed: &[Identity]) {}

    pub fn forget(_call: u64, _root_pid: Option<u32>) {}
}
