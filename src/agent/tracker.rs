//! No process outlives its call: every process a call's CLI starts is
//! contained, and ended with the call.
//!
//! A process group is not enough: a grandchild that calls `setsid` (or a
//! daemon that forks twice) leaves the group, and once its parent exits it
//! is adopted by init, out of reach. On Linux the sidecar therefore makes
//! itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): orphans of the
//! CLI's tree are adopted by the sidecar instead of init, and a reaper
//! thread reaps every one of them that exits, by itself or killed, on each
//! `SIGCHLD` (only the calls' CLIs are left to tokio, which waits for
//! them). Each call is then contained in one of two ways, and the log says
//! which (at info):
//!
//! - **a cgroup of its own** ([`super::cgroup`]), where the sidecar may make
//!   one: the CLI is born in it, so is everything it starts, and the end of
//!   the call freezes and kills the whole cgroup at once, however fast its
//!   processes fork; `pids.max` bounds them where that controller is
//!   available;
//! - **the `/proc` walk** otherwise (and, in both modes, at the end of a
//!   call for a process that left its cgroup): every [`SCAN_INTERVAL`]
//!   while the call runs, every process below the CLI is recorded (walking
//!   `/proc` by parent pid), each named by pid *and* start time so that a
//!   reused pid is never taken for it; an orphan the sidecar adopted that
//!   no call has recorded counts as belonging to every call that was
//!   running when it started; when the call ends, every one of its
//!   processes is stopped with `SIGSTOP`, round after round with no round
//!   limit until a round finds no new living one, then all get `SIGKILL`.
//!   Signals go through a pidfd opened before the start time is checked
//!   again, so a pid reused in between cannot receive them.
//!
//! The sidecar also makes itself non-dumpable (`PR_SET_DUMPABLE` 0), so
//! that other processes of the same user, the CLI and the commands it runs
//! included, cannot read its memory or `/proc/PID/environ`, where the MCP
//! bearer token and the login live.
//!
//! Elsewhere (not Linux) only the process group is ended.
//!
//! **Invariant:** the process that enables the agent starts no child
//! process other than agent calls: every other child it has is taken for a
//! leftover of a call, and reaped. The CLIs themselves are tokio's to wait
//! for, never the reaper's.

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

/// The processes a call stopped and killed when it ended, and whether any
/// of them was still there (alive or a zombie) right after.
#[derive(Debug, Default)]
pub struct Killed {
    processes: Vec<platform::Identity>,
    left: bool,
}

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
        let _ = tokio::task::spawn_blocking(move || platform::scan(call)).await;
    }

    /// Stops, then kills, every process of the call, and reaps those
    /// already gone (one trip to the blocking pool: a call whose CLI left
    /// nothing behind needs no other, and leaves the reaping of orphans
    /// that exited by themselves to the reaper).
    pub async fn freeze_and_kill(&self) -> Killed {
        let call = self.call;
        // Most calls leave nothing running: that is told at once (an empty
        // cgroup removed, the sidecar's children listed: no waiting on any
        // process), without a trip to the blocking pool, which on a busy
        // machine costs a wake-up of another thread each way.
        if platform::nothing_left_at_once(call) {
            platform::remove_leftover_cgroups();
            return Killed::default();
        }
        tokio::task::spawn_blocking(move || {
            let processes = platform::freeze_and_kill(call, REAP_DEADLINE);
            let left = if processes.is_empty() {
                platform::remove_leftover_cgroups();
                false
            } else {
                platform::reap(&processes)
            };
            Killed { processes, left }
        })
        .await
        .unwrap_or_default()
    }

    /// Ends tracking once the CLI itself has been waited for: waits up to
    /// [`REAP_DEADLINE`] for the killed processes to be gone, reaped by
    /// the reaper (which also reaps those still there later).
    pub async fn finish(mut self, killed: Killed) {
        self.finished = true;
        platform::forget(self.call, self.root_pid);
        if !killed.left {
            return;
        }
        let deadline = tokio::time::Instant::now() + REAP_DEADLINE;
        loop {
            let own = killed.processes.clone();
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
        // No waiting here: a call whose cgroup is not empty at once leaves
        // it for the end of a later call to remove.
        let killed = platform::freeze_and_kill(self.call, Duration::ZERO);
        platform::forget(self.call, self.root_pid);
        platform::reap(&killed);
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::collections::{HashMap, HashSet};
    use std::sync::{LazyLock, Mutex, MutexGuard};
    use std::time::Duration;

    use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

    use super::super::cgroup::{CallCgroup, CgroupRoot, Inside};
    pub use super::super::proc_table::Identity;
    use super::super::proc_table::{ProcTable, read_entry};

    /// How often the reaper looks for dead children even without a
    /// `SIGCHLD` (signals of the same kind coalesce; this is the net).
    const REAP_INTERVAL: Duration = Duration::from_secs(1);

    #[derive(Debug, Default)]
    struct Registry {
        next_call: u64,
        /// The CLIs of running calls: tokio waits for them, this module
        /// never does.
        roots: HashSet<i32>,
        /// The CLIs of ended calls, until they are gone: a call dropped
        /// before its CLI was waited for leaves it to tokio, which reaps it
        /// later; the reaper must not take its exit status first.
        tokio_owned: HashSet<Identity>,
        calls: HashMap<u64, CallProcesses>,
        /// Call cgroups not empty yet when their call ended (removed at
        /// the end of a later call).
        leftover_cgroups: Vec<CallCgroup>,
    }

    #[derive(Debug, Default)]
    struct CallProcesses {
        root: Option<Identity>,
        known: HashSet<Identity>,
        /// The call's cgroup, when it has one.
        cgroup: Option<CallCgroup>,
    }

    static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

    fn registry() -> MutexGuard<'static, Registry> {
        REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn this_pid() -> i32 {
        rustix::process::getpid().as_raw_nonzero().get()
    }

    /// Where call cgroups are made, decided once and logged: the tool's log
    /// says which containment its calls get.
    static CGROUPS: LazyLock<Option<CgroupRoot>> = LazyLock::new(|| match CgroupRoot::detect() {
        Ok(root) => {
            let pids = if root.limits_pids() {
                format!("at most {} processes each", super::super::cgroup::PIDS_MAX)
            } else {
                "no process limit: the pids controller is not available there".to_owned()
            };
            tracing::info!(
                "agent calls are contained in a cgroup each, under {} ({pids}); the end of a call freezes and kills the cgroup",
                root.dir().display()
            );
            Some(root)
        }
        Err(reason) => {
            tracing::info!(
                "agent calls are contained by walking /proc (no cgroup per call: {reason})"
            );
            None
        }
    });

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
        start_reaper();
    }

    pub fn spawn(
        command: &mut tokio::process::Command,
    ) -> std::io::Result<(tokio::process::Child, u64)> {
        let cgroups = CGROUPS.as_ref();
        // The registry is held across the spawn, so that neither a walk nor
        // the reaper can see the new CLI before it is known as a call's
        // own child.
        let mut registry = registry();
        let call = registry.next_call;
        registry.next_call += 1;
        let mut cgroup = cgroups.and_then(|root| match root.create(call) {
            Ok(cgroup) => Some(cgroup),
            Err(err) => {
                tracing::info!(
                    "agent call {call}: no cgroup ({err}); contained by walking /proc instead"
                );
                None
            }
        });
        let child = match &cgroup {
            Some(inside) => match inside.spawn_inside(|| command.spawn()) {
                Inside::Spawned { spawned, stuck } => {
                    if let Some(err) = stuck {
                        // The cgroup holds the sidecar itself now: never
                        // kill it; the walk ends the call's processes.
                        tracing::error!(
                            "agent call {call}: cannot leave its cgroup {} ({err}); contained by walking /proc instead",
                            inside.dir().display()
                        );
                        cgroup = None;
                    }
                    spawned
                }
                Inside::NotMoved(err) => {
                    tracing::info!(
                        "agent call {call}: cannot enter its cgroup ({err}); contained by walking /proc instead"
                    );
                    if let Some(unused) = cgroup.take() {
                        unused.kill_and_remove(Duration::ZERO);
                    }
                    command.spawn()
                }
            },
            None => command.spawn(),
        };
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                if let Some(unused) = cgroup {
                    unused.kill_and_remove(Duration::ZERO);
                }
                return Err(err);
            }
        };
        let mut processes = CallProcesses {
            cgroup,
            ..CallProcesses::default()
        };
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

    /// Records the processes below a running call's CLI, unless its cgroup
    /// holds them all anyway.
    pub fn scan(call: u64) {
        let contained = registry()
            .calls
            .get(&call)
            .is_some_and(|c| c.cgroup.is_some());
        if !contained {
            record(call);
        }
    }

    /// Walks `/proc` and returns every process of `call`, recording them.
    fn record(call: u64) -> Vec<(Identity, bool)> {
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
            .into_iter()
            .map(|m| (m, table.get(m.pid).is_some_and(|e| e.zombie)))
            .collect()
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
        // The registry is held while the children are listed: the reaper
        // then cannot reap a zombie whose living child, adopted by a
        // thread whose list was read before, would go unseen.
        let registry = registry();
        let Some(children) = own_children() else {
            return false;
        };
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
            .filter(|e| e.ppid == me && !e.zombie && !registry.roots.contains(&e.identity.pid))
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

    /// Whether nothing of `call` is left, told without waiting: its cgroup
    /// (frozen, killed and) removed if it is empty already, then the
    /// sidecar's children ([`nothing_left`]). `false` leaves everything to
    /// [`freeze_and_kill`], a cgroup not empty yet included.
    pub fn nothing_left_at_once(call: u64) -> bool {
        let cgroup = registry()
            .calls
            .get_mut(&call)
            .and_then(|c| c.cgroup.take());
        if let Some(cgroup) = cgroup
            && !cgroup.kill_and_remove(Duration::ZERO)
        {
            let mut registry = registry();
            match registry.calls.get_mut(&call) {
                Some(processes) => processes.cgroup = Some(cgroup),
                None => registry.leftover_cgroups.push(cgroup),
            }
            return false;
        }
        nothing_left(call)
    }

    /// Ends every process of `call`: its cgroup frozen and killed when it
    /// has one, then (in both modes, for a process that left the cgroup)
    /// the walk: every process found is stopped, round after round until a
    /// round finds no new living one, and all of them are killed.
    ///
    /// The walk has no round limit: a process that forks and exits in a
    /// loop is caught by the first round that finds its current
    /// generation alive (a stopped process forks no more), and each
    /// generation it outran is adopted by the sidecar and found by the
    /// next round.
    pub fn freeze_and_kill(call: u64, wait: Duration) -> Vec<Identity> {
        let cgroup = registry()
            .calls
            .get_mut(&call)
            .and_then(|c| c.cgroup.take());
        if let Some(cgroup) = cgroup
            && !cgroup.kill_and_remove(wait)
        {
            tracing::warn!(
                "agent call {call}: its cgroup {} is not empty yet; removed later",
                cgroup.dir().display()
            );
            registry().leftover_cgroups.push(cgroup);
        }
        // The usual end of a call, whose CLI started nothing that outlived
        // it: nothing of the call is alive, which the sidecar's children
        // tell without walking `/proc` round after round.
        if nothing_left(call) {
            return Vec::new();
        }
        let mut frozen: Vec<Identity> = Vec::new();
        let mut seen: HashSet<Identity> = HashSet::new();
        // Rounds in a row that found nothing new: two are needed, so that a
        // process forked while one walk read `/proc` (its pid behind the
        // walk's position once pids wrap) is found by the next.
        let mut quiet = 0;
        loop {
            let new: Vec<Identity> = record(call)
                .into_iter()
                .filter(|(_, zombie)| !zombie)
                .map(|(m, _)| m)
                .filter(|m| seen.insert(*m))
                .collect();
            if new.is_empty() {
                quiet += 1;
                if quiet >= 2 && !living_orphan_unseen(call, &seen) {
                    break;
                }
                continue;
            }
            quiet = 0;
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

    /// Whether the sidecar has a living child that `call` would claim (no
    /// other call's, started after the call's CLI) and that is not in
    /// `seen`: a process that forks and exits in a loop always has its
    /// current generation there once the previous one exited.
    fn living_orphan_unseen(call: u64, seen: &HashSet<Identity>) -> bool {
        let registry = registry();
        let Some(root) = registry.calls.get(&call).and_then(|c| c.root) else {
            return false;
        };
        let Some(children) = own_children() else {
            return false;
        };
        children.into_iter().any(|pid| {
            !registry.roots.contains(&pid)
                && read_entry(pid).is_some_and(|e| {
                    !e.zombie
                        && e.identity.start >= root.start
                        && !seen.contains(&e.identity)
                        && !registry
                            .calls
                            .iter()
                            .any(|(other, c)| *other != call && c.known.contains(&e.identity))
                })
        })
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

    /// Reaps, then says whether any of `own` (processes a call killed) is
    /// still there, alive or a zombie; removes the call cgroups left
    /// earlier that are empty now.
    pub fn reap(own: &[Identity]) -> bool {
        reap_children();
        remove_leftover_cgroups();
        own.iter()
            .any(|p| read_entry(p.pid).is_some_and(|e| e.identity == *p))
    }

    /// Removes the call cgroups left earlier that are empty now.
    pub fn remove_leftover_cgroups() {
        let leftovers = std::mem::take(&mut registry().leftover_cgroups);
        let left: Vec<CallCgroup> = leftovers
            .into_iter()
            .filter(|cgroup| !cgroup.kill_and_remove(Duration::ZERO))
            .collect();
        registry().leftover_cgroups.extend(left);
    }

    /// Starts the reaper, once: a thread that reaps every child of the
    /// sidecar that has exited, except the calls' CLIs (tokio waits for
    /// those), each time a `SIGCHLD` arrives and every [`REAP_INTERVAL`].
    /// The sidecar is a subreaper: every orphan of every call is its child,
    /// and one that exits by itself (a process that forks and exits in a
    /// loop leaves one per generation) must not stay a zombie, holding a
    /// pid, for the life of the sidecar.
    fn start_reaper() {
        let started = std::thread::Builder::new()
            .name("qbox-reaper".into())
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(runtime) = runtime else {
                    loop {
                        std::thread::sleep(REAP_INTERVAL / 4);
                        reap_children();
                    }
                };
                runtime.block_on(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut sigchld = signal(SignalKind::child()).ok();
                    loop {
                        match sigchld.as_mut() {
                            Some(sigchld) => {
                                let _ = tokio::time::timeout(REAP_INTERVAL, sigchld.recv()).await;
                            }
                            None => tokio::time::sleep(REAP_INTERVAL / 4).await,
                        }
                        reap_children();
                    }
                });
            });
        if let Err(err) = started {
            tracing::warn!("cannot start the reaper of the agent's orphans: {err}");
        }
    }

    /// Reaps every exited child of the sidecar that is not a call's CLI.
    /// The registry is held throughout: a CLI being started is in `roots`
    /// before the reaper can see it.
    fn reap_children() {
        let mut registry = registry();
        registry
            .tokio_owned
            .retain(|cli| read_entry(cli.pid).is_some_and(|e| e.identity == *cli));
        let me = this_pid();
        let children = own_children().unwrap_or_else(|| {
            ProcTable::read()
                .entries()
                .filter(|e| e.ppid == me)
                .map(|e| e.identity.pid)
                .collect()
        });
        for pid in children {
            if registry.roots.contains(&pid) || registry.tokio_owned.iter().any(|c| c.pid == pid) {
                continue;
            }
            // Only a child that has exited is reaped; a living one is left.
            let _ = rustix::process::waitpid(Pid::from_raw(pid), WaitOptions::NOHANG);
        }
    }

    pub fn forget(call: u64, root_pid: Option<u32>) {
        let mut registry = registry();
        let processes = registry.calls.remove(&call);
        if let Some(pid) = root_pid.and_then(|p| i32::try_from(p).ok()) {
            registry.roots.remove(&pid);
            if let Some(root) = processes.as_ref().and_then(|p| p.root) {
                registry.tokio_owned.insert(root);
            }
        }
        if let Some(cgroup) = processes.and_then(|p| p.cgroup) {
            registry.leftover_cgroups.push(cgroup);
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

    pub fn scan(_call: u64) {}

    pub fn nothing_left_at_once(_call: u64) -> bool {
        true
    }

    pub fn freeze_and_kill(_call: u64, _wait: std::time::Duration) -> Vec<Identity> {
        Vec::new()
    }

    pub fn reap(_own: &[Identity]) -> bool {
        false
    }

    pub fn remove_leftover_cgroups() {}

    pub fn forget(_call: u64, _root_pid: Option<u32>) {}
}
