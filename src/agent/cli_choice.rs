//! Which CLI binary the agent tool runs: the one `QBOX_AGENT_CLI` names,
//! else the CLI of the login the call serves, found on `PATH` (its release
//! binaries, the Kiro CLI's `kiro-cli` and `kiro-cli-chat`, then the legacy
//! `q`), else any other CLI found there. A call with no stored login (a Kiro
//! API key, or nothing) looks for the Kiro CLI first.
//!
//! A binary found is remembered per flavor, so a call costs no `PATH` walk
//! once its CLI has been found; one not found is looked for again on the
//! next call (it may have been installed meanwhile).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::Flavor;

/// The binary a call runs and the CLI it belongs to (for the wording of
/// its messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenCli {
    /// A path when found on `PATH` or named with one, else the bare name
    /// (then starting it fails with "not found", reported as such).
    pub program: String,
    pub flavor: Flavor,
    /// Whether the operator named it (`QBOX_AGENT_CLI`).
    pub explicit: bool,
}

impl ChosenCli {
    /// The name people know it by (`kiro-cli`, `q`, or what was named).
    pub fn name(&self) -> &str {
        if self.explicit {
            return &self.program;
        }
        Path::new(&self.program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&self.program)
    }
}

/// Chooses the binary for each call.
#[derive(Debug)]
pub struct CliChooser {
    explicit: Option<String>,
    path: Option<OsString>,
    found: Mutex<HashMap<Flavor, PathBuf>>,
}

impl CliChooser {
    /// `explicit` is `QBOX_AGENT_CLI`; `path` the `PATH` the CLI is
    /// looked for in (the sidecar's own, which the CLI inherits).
    pub fn new(explicit: Option<String>, path: Option<OsString>) -> Self {
        Self {
            explicit,
            path,
            found: Mutex::new(HashMap::new()),
        }
    }

    /// The binary for a call serving a login of `login` (none: an API key
    /// or no login at all).
    pub fn choose(&self, login: Option<Flavor>) -> ChosenCli {
        if let Some(program) = &self.explicit {
            return ChosenCli {
                flavor: Flavor::from_binary_name(Path::new(program)).unwrap_or(Flavor::ALL[0]),
                program: program.clone(),
                explicit: true,
            };
        }
        let preferred = login.unwrap_or(Flavor::ALL[0]);
        let order =
            std::iter::once(preferred).chain(Flavor::ALL.into_iter().filter(|f| *f != preferred));
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        for flavor in order {
            if let Some(path) = found.get(&flavor) {
                return chosen(path, flavor);
            }
            if let Some(path) = self.search(flavor) {
                found.insert(flavor, path.clone());
                return chosen(&path, flavor);
            }
        }
        ChosenCli {
            program: preferred.binary().to_owned(),
            flavor: preferred,
            explicit: false,
        }
    }

    /// The first of `flavor`'s release binaries on `PATH`.
    fn search(&self, flavor: Flavor) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        flavor.release_binaries().iter().find_map(|name| {
            std::env::split_paths(path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(name))
                .find(|candidate| is_executable(candidate))
        })
    }
}

fn chosen(path: &Path, flavor: Flavor) -> ChosenCli {
    ChosenCli {
        program: path.display().to_string(),
        flavor,
        explicit: false,
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn install(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[cfg(unix)]
    #[test]
    fn the_logins_cli_first_then_the_kiro_cli_then_q() {
        let (kiro_dir, q_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let path = std::env::join_paths([q_dir.path(), kiro_dir.path()]).unwrap();
        let q = install(q_dir.path(), "q");
        let chooser = CliChooser::new(None, Some(path.clone()));
        // Only q: every login gets it.
        assert_eq!(
            chooser.choose(Some(Flavor::Kiro)).program,
            q.display().to_string()
        );

        let kiro = install(kiro_dir.path(), "kiro-cli");
        let chooser = CliChooser::new(None, Some(path));
        let for_kiro = chooser.choose(Some(Flavor::Kiro));
        assert_eq!(for_kiro.program, kiro.display().to_string());
        assert_eq!(for_kiro.name(), "kiro-cli");
        assert_eq!(
            chooser.choose(Some(Flavor::AmazonQ)).program,
            q.display().to_string()
        );
        assert_eq!(
            chooser.choose(None).flavor,
            Flavor::Kiro,
            "an API key: the Kiro CLI"
        );
    }

    #[cfg(unix)]
    #[test]
    fn kiro_cli_chat_alone_serves_and_nothing_found_names_the_kiro_cli() {
        let dir = tempfile::tempdir().unwrap();
        let chat = install(dir.path(), "kiro-cli-chat");
        let chooser = CliChooser::new(None, Some(dir.path().as_os_str().to_owned()));
        assert_eq!(chooser.choose(None).program, chat.display().to_string());

        let empty = tempfile::tempdir().unwrap();
        let none = CliChooser::new(None, Some(empty.path().as_os_str().to_owned())).choose(None);
        assert_eq!(
            (none.program.as_str(), none.flavor),
            ("kiro-cli", Flavor::Kiro)
        );
        // Not executable: not a CLI.
        std::fs::write(empty.path().join("q"), "").unwrap();
        let still = CliChooser::new(None, Some(empty.path().as_os_str().to_owned()));
        assert_eq!(still.choose(Some(Flavor::AmazonQ)).program, "q");
    }

    #[test]
    fn an_explicit_cli_wins_and_its_name_tells_the_flavor() {
        let chooser = CliChooser::new(Some("/opt/q/bin/q".into()), None);
        let chosen = chooser.choose(Some(Flavor::Kiro));
        assert_eq!(chosen.program, "/opt/q/bin/q");
        assert_eq!(chosen.flavor, Flavor::AmazonQ);
        assert!(chosen.explicit);
        let other = CliChooser::new(Some("my-wrapper".into()), None).choose(None);
        assert_eq!((other.name(), other.flavor), ("my-wrapper", Flavor::Kiro));
    }
}
