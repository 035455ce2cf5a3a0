//! The Linux process table as `/proc` shows it: each process's parent, its
//! start time (which, with the pid, names one process even after the pid is
//! reused) and whether it is a zombie.

use std::collections::{HashMap, HashSet};

/// One process, named so that a reused pid is never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    pub pid: i32,
    /// Clock ticks after boot at which the process started (`stat` field 22).
    pub start: u64,
}

/// What the table records of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub identity: Identity,
    pub ppid: i32,
    pub zombie: bool,
}

/// A snapshot of every process visible in `/proc`.
#[derive(Debug, Clone, Default)]
pub struct ProcTable {
    entries: HashMap<i32, Entry>,
}

impl ProcTable {
    /// Reads `/proc`. Processes that end while it is read are left out.
    pub fn read() -> Self {
        let mut entries = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Self { entries };
        };
        for item in dir.flatten() {
            let Some(pid) = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(entry) = read_entry(pid) {
                entries.insert(pid, entry);
            }
        }
        Self { entries }
    }

    /// A table of the given entries.
    #[cfg(test)]
    fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        Self {
            entries: entries.into_iter().map(|e| (e.identity.pid, e)).collect(),
        }
    }

    pub fn get(&self, pid: i32) -> Option<&Entry> {
        self.entries.get(&pid)
    }

    /// Whether the process `identity` names is still in the table.
    pub fn contains(&self, identity: Identity) -> bool {
        self.get(identity.pid)
            .is_some_and(|e| e.identity.start == identity.start)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Every process below one of `roots` (the roots that are still there
    /// included), following parent links.
    pub fn descendants(&self, roots: impl IntoIterator<Item = Identity>) -> Vec<Identity> {
        let mut children: HashMap<i32, Vec<&Entry>> = HashMap::new();
        for entry in self.entries.values() {
            children.entry(entry.ppid).or_default().push(entry);
        }
        let mut found: Vec<Identity> = roots.into_iter().filter(|r| self.contains(*r)).collect();
        let mut seen: HashSet<Identity> = found.iter().copied().collect();
        let mut next = 0;
        while next < found.len() {
            let parent = found[next];
            next += 1;
            for child in children.get(&parent.pid).into_iter().flatten() {
                // A child started before its parent is not its child: the
                // parent's pid was reused after the real parent ended.
                if child.identity.start >= parent.start && seen.insert(child.identity) {
                    found.push(child.identity);
                }
            }
        }
        found
    }
}

/// The table entry of `pid`, from `/proc/PID/stat`.
pub fn read_entry(pid: i32) -> Option<Entry> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &String::from_utf8_lossy(&stat))
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so the fields are counted
/// from the last `)`.
fn parse_stat(pid: i32, stat: &str) -> Option<Entry> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let state = *fields.first()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some(Entry {
        identity: Identity { pid, start },
        ppid,
        zombie: state == "Z",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, ppid: i32, start: u64) -> Entry {
        Entry {
            identity: Identity { pid, start },
            ppid,
            zombie: false,
        }
    }

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let entry = parse_stat(4242, stat).unwrap();
        assert_eq!(entry.ppid, 17);
        assert_eq!(entry.identity.start, 987654);
        assert!(!entry.zombie);
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = read_entry(std::process::id() as i32).unwrap();
        assert_eq!(me.identity.pid, std::process::id() as i32);
        assert!(ProcTable::read().contains(me.identity));
    }

    #[test]
    fn descendants_follow_parents_but_not_a_reused_pid() {
        let table = ProcTable::from_entries([
            entry(10, 1, 100),
            entry(11, 10, 110),
            entry(12, 11, 120),
            // Pid 13's parent is 10, but it started before 10 did.
            entry(13, 10, 50),
            entry(20, 1, 105),
        ]);
        let mut found = table.descendants([Identity {
            pid: 10,
            start: 100,
        }]);
        found.sort_by_key(|i| i.pid);
        let pids: Vec<i32> = found.iter().map(|i| i.pid).collect();
        assert_eq!(pids, [10, 11, 12]);
        // A root whose pid now names another process finds nothing.
        assert!(
            table
                .descendants([Identity { pid: 10, start: 99 }])
                .is_empty()
        );
    }
}
