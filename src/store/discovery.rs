//! Where the CLIs keep their auth store on each platform, and which store a
//! command should use.
//!
//! At run time the data directory comes from `dirs::data_local_dir()`. The
//! unit tests hold a pure model of its rules (`store_paths_for`), which
//! documents the paths on Linux, macOS and Windows on any host and is
//! checked against `dirs` on the host the tests run on.

use std::path::{Path, PathBuf};

use super::flavor::Flavor;

/// The file name of the store inside the CLI's data directory.
pub const STORE_FILE_NAME: &str = "data.sqlite3";

/// A platform whose data directory rules qbox knows.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Linux,
    MacOs,
    Windows,
}

/// What the data directory depends on, per platform.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct PlatformEnv {
    pub home: PathBuf,
    /// `$XDG_DATA_HOME` (Linux); used only when absolute, as the XDG spec says.
    pub xdg_data_home: Option<PathBuf>,
    /// The Local AppData known folder (Windows), normally `%LOCALAPPDATA%`.
    pub local_app_data: Option<PathBuf>,
}

/// The local data directory of `platform`, as `dirs::data_local_dir` computes it.
#[cfg(test)]
fn data_local_dir_for(platform: Platform, env: &PlatformEnv) -> PathBuf {
    match platform {
        Platform::Linux => match &env.xdg_data_home {
            Some(dir) if dir.is_absolute() => dir.clone(),
            _ => env.home.join(".local").join("share"),
        },
        Platform::MacOs => env.home.join("Library").join("Application Support"),
        Platform::Windows => env
            .local_app_data
            .clone()
            .unwrap_or_else(|| env.home.join("AppData").join("Local")),
    }
}

/// The store paths of both CLIs under a data directory, the Kiro CLI first.
pub fn store_paths_in(data_local_dir: &Path) -> Vec<(Flavor, PathBuf)> {
    Flavor::ALL
        .into_iter()
        .map(|f| (f, data_local_dir.join(f.dir_name()).join(STORE_FILE_NAME)))
        .collect()
}

/// The store paths of both CLIs on `platform`.
#[cfg(test)]
fn store_paths_for(platform: Platform, env: &PlatformEnv) -> Vec<(Flavor, PathBuf)> {
    store_paths_in(&data_local_dir_for(platform, env))
}

/// The store paths of both CLIs on this machine (empty if the platform has no
/// data directory, which `dirs` reports for a user without a home).
pub fn default_store_paths() -> Vec<(Flavor, PathBuf)> {
    dirs::data_local_dir()
        .map(|dir| store_paths_in(&dir))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home: &str) -> PlatformEnv {
        PlatformEnv {
            home: PathBuf::from(home),
            ..PlatformEnv::default()
        }
    }

    #[test]
    fn linux_uses_local_share_or_xdg_data_home() {
        let paths = store_paths_for(Platform::Linux, &env("/home/ana"));
        assert_eq!(
            paths[1].1,
            PathBuf::from("/home/ana/.local/share/amazon-q/data.sqlite3")
        );
        assert_eq!(
            paths[0].1,
            PathBuf::from("/home/ana/.local/share/kiro-cli/data.sqlite3")
        );

        let mut with_xdg = env("/home/ana");
        with_xdg.xdg_data_home = Some(PathBuf::from("/data/xdg"));
        assert_eq!(
            store_paths_for(Platform::Linux, &with_xdg)[0].1,
            PathBuf::from("/data/xdg/kiro-cli/data.sqlite3")
        );

        // A relative XDG_DATA_HOME is invalid per the spec and ignored.
        with_xdg.xdg_data_home = Some(PathBuf::from("relative"));
        assert_eq!(
            store_paths_for(Platform::Linux, &with_xdg)[1].1,
            PathBuf::from("/home/ana/.local/share/amazon-q/data.sqlite3")
        );
    }

    #[test]
    fn macos_uses_application_support() {
        let paths = store_paths_for(Platform::MacOs, &env("/Users/ana"));
        assert_eq!(
            paths[1].1,
            PathBuf::from("/Users/ana/Library/Application Support/amazon-q/data.sqlite3")
        );
        assert_eq!(
            paths[0].1,
            PathBuf::from("/Users/ana/Library/Application Support/kiro-cli/data.sqlite3")
        );
    }

    #[test]
    fn windows_uses_local_app_data() {
        // Built with join so the test holds on every host's separator.
        let local = PathBuf::from("C:\\Users\\ana\\AppData\\Local");
        let windows = PlatformEnv {
            home: PathBuf::from("C:\\Users\\ana"),
            local_app_data: Some(local.clone()),
            ..PlatformEnv::default()
        };
        let paths = store_paths_for(Platform::Windows, &windows);
        assert_eq!(paths[1].1, local.join("amazon-q").join("data.sqlite3"));
        assert_eq!(paths[0].1, local.join("kiro-cli").join("data.sqlite3"));

        let fallback = store_paths_for(Platform::Windows, &env("C:\\Users\\ana"));
        assert_eq!(
            fallback[1].1,
            PathBuf::from("C:\\Users\\ana")
                .join("AppData")
                .join("Local")
                .join("amazon-q")
                .join("data.sqlite3")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn runtime_paths_agree_with_dirs_on_this_host() {
        let home = dirs::home_dir().unwrap();
        let env = PlatformEnv {
            home,
            xdg_data_home: std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
            local_app_data: None,
        };
        assert_eq!(
            store_paths_for(Platform::Linux, &env),
            default_store_paths()
        );
    }
}
