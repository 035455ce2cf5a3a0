//! The CLI's own settings that decide where qbox sends a login: the Amazon Q
//! endpoint (`api.codewhisperer.service`, an object with `endpoint` and
//! `region`) and the Kiro auth service that refreshes social logins
//! (`api.kiroauth.service`, a URL). The Kiro CLI reads them from
//! `~/.kiro/settings/cli.json`, the Amazon Q CLI from `settings.json` beside
//! its store ([`Flavor::settings_path`]).
//!
//! The same file travels with the login: a snapshot and the agent's
//! private copy carry [`CliSettings::carried`], the keys of
//! [`CARRIED_KEYS`] the CLI reads that hold no secret (endpoint and region,
//! auth service, default model, telemetry, content sharing), each of the
//! type the CLI takes, and nothing else the file holds (an MCP server's
//! command line or a knowledge base path is the user's business, not the
//! container's). [`place`] writes them where the CLI reads them.
//!
//! A user whose CLI talks to another endpoint expects qbox to talk to it
//! too; qbox's own variables (`QBOX_Q_ENDPOINT`, `QBOX_KIRO_AUTH_ENDPOINT`)
//! still win. Only these keys are read. A file that is missing is no
//! setting; one that is not a regular file, is larger than
//! [`MAX_SETTINGS_BYTES`] or is not a JSON object is ignored with one
//! warning, and the login works as without it.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::flavor::Flavor;
use crate::regular_file::Identity;

/// The CLI's endpoint setting.
pub const ENDPOINT_KEY: &str = "api.codewhisperer.service";
/// The Kiro CLI's auth service setting.
pub const KIRO_AUTH_KEY: &str = "api.kiroauth.service";
/// The model a chat uses when none is named.
pub const DEFAULT_MODEL_KEY: &str = "chat.defaultModel";
/// Whether the user lets the service keep their content (`false` sends
/// `x-amzn-codewhisperer-optout: true`).
pub const SHARE_CONTENT_KEY: &str = "codeWhisperer.shareCodeWhispererContentWithAWS";
/// Whether the CLI sends telemetry.
pub const TELEMETRY_KEY: &str = "telemetry.enabled";
/// The keys a login's copy carries (the CLI's names, in
/// `crates/chat-cli/src/database/settings.rs` of the Kiro CLI 2.2.1 and the
/// Amazon Q CLI 1.19): none of them holds a secret.
pub const CARRIED_KEYS: [&str; 5] = [
    ENDPOINT_KEY,
    KIRO_AUTH_KEY,
    DEFAULT_MODEL_KEY,
    TELEMETRY_KEY,
    SHARE_CONTENT_KEY,
];
/// A larger settings file is not read.
pub const MAX_SETTINGS_BYTES: u64 = 1024 * 1024;

/// An endpoint the CLI's settings name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSetting {
    pub endpoint: String,
    pub region: String,
}

/// The settings qbox honours, and the file they came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CliSettings {
    /// The file read (or looked for).
    pub path: Option<PathBuf>,
    /// `api.codewhisperer.service`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointSetting>,
    /// `api.kiroauth.service`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kiro_auth: Option<String>,
    /// `chat.defaultModel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// `codeWhisperer.shareCodeWhispererContentWithAWS`, when a boolean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_content: Option<bool>,
    /// Why the file (or part of it) was ignored, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// What a copy of the login carries: the allow-listed keys of a file
    /// that could be read, each with the type the CLI takes; `None` when
    /// there is no file or it was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CliSettings {
    /// The settings of `flavor` on this machine (none where the platform
    /// has no home directory). A problem with the file is logged once per
    /// call as a warning and leaves the settings empty.
    pub fn of(flavor: Flavor) -> Self {
        Self::own_path(flavor).map_or_else(Self::default, |path| Self::load(&path))
    }

    /// Where `flavor`'s CLI keeps its settings on this machine (none where
    /// the platform has no home directory).
    pub fn own_path(flavor: Flavor) -> Option<PathBuf> {
        let (Some(home), Some(data)) = (dirs::home_dir(), dirs::data_local_dir()) else {
            return None;
        };
        Some(flavor.settings_path(&home, &data))
    }

    /// The settings in the file at `path`; a problem is logged as a
    /// warning.
    pub fn load(path: &Path) -> Self {
        let settings = Self::load_quiet(path);
        if let Some(warning) = settings.warning() {
            tracing::warn!("{warning}");
        }
        settings
    }

    /// The settings of `flavor` on this machine, without a warning (for a
    /// keeper that reads the file every pass and warns once per problem).
    pub fn of_quiet(flavor: Flavor) -> Self {
        Self::own_path(flavor).map_or_else(Self::default, |path| Self::load_quiet(&path))
    }

    /// The warning a problem with the file deserves, if any.
    pub fn warning(&self) -> Option<String> {
        let problem = self.ignored.as_deref()?;
        let path = self
            .path
            .as_deref()
            .map_or_else(String::new, |p| format!(" {}", p.display()));
        Some(if self.carried.is_some() {
            format!("ignoring part of the CLI's settings{path}: {problem}")
        } else {
            format!("ignoring the CLI's settings{path}: {problem}")
        })
    }

    /// The bytes of the settings file a copy of the login carries
    /// (`None`: no file to place).
    pub fn carried_bytes(&self) -> Option<Vec<u8>> {
        self.carried
            .as_ref()
            .and_then(|map| serde_json::to_vec_pretty(map).ok())
    }

    /// [`Self::load`] without the warning.
    pub fn load_quiet(path: &Path) -> Self {
        Self::load_quiet_kept(path).0
    }

    /// [`Self::load_quiet`], with the file read (still open) and its
    /// identity when there was one to read.
    fn load_quiet_kept(path: &Path) -> (Self, Option<(std::fs::File, Identity)>) {
        let settings = Self {
            path: Some(path.to_owned()),
            ..Self::default()
        };
        match read_settings_file(path) {
            Ok(Some((text, file, identity))) => {
                (settings.parsed(&text), identity.map(|id| (file, id)))
            }
            Ok(None) => (settings, None),
            Err(problem) => (settings.ignore(problem), None),
        }
    }

    /// These settings with the file's `text` read into them.
    fn parsed(self, text: &str) -> Self {
        let mut settings = self;
        let object = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => {
                return settings.ignore("it is not a JSON object".into());
            }
            Err(e) => {
                return settings.ignore(format!(
                    "it is not JSON ({})",
                    super::error::describe_json_error(&e)
                ));
            }
        };
        settings.carried = Some(carried(&object));
        // The Kiro CLI takes the override only as an object with both
        // strings; anything else means its default endpoint.
        settings.endpoint = object.get(ENDPOINT_KEY).and_then(|value| {
            let endpoint = value.get("endpoint")?.as_str()?.trim();
            let region = value.get("region")?.as_str()?.trim();
            (!endpoint.is_empty()).then(|| EndpointSetting {
                endpoint: endpoint.to_owned(),
                region: region.to_owned(),
            })
        });
        let text = |key: &str| {
            object
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        settings.kiro_auth = text(KIRO_AUTH_KEY);
        // A token goes only over https (or to this machine): an address a
        // file names is held to that, whoever wrote the file.
        let mut refused = Vec::new();
        if settings
            .endpoint
            .as_ref()
            .is_some_and(|e| !crate::http::https_or_loopback(&e.endpoint))
        {
            settings.endpoint = None;
            refused.push(ENDPOINT_KEY);
        }
        if settings
            .kiro_auth
            .as_deref()
            .is_some_and(|url| !crate::http::https_or_loopback(url))
        {
            settings.kiro_auth = None;
            refused.push(KIRO_AUTH_KEY);
        }
        if !refused.is_empty() {
            let problem = format!(
                "{} is not an https url (plain http only to this machine), and qbox sends tokens only over https",
                refused.join(" and ")
            );
            settings.ignored = Some(problem);
        }
        settings.default_model = text(DEFAULT_MODEL_KEY);
        // Anything but a boolean counts as unset, as in the CLI.
        settings.share_content = object
            .get(SHARE_CONTENT_KEY)
            .and_then(serde_json::Value::as_bool);
        settings
    }

    fn ignore(mut self, problem: String) -> Self {
        self.ignored = Some(problem);
        self
    }
}

/// The allow-listed keys of `object`, each only with the type the CLI
/// takes (the endpoint as an object of two strings, and nothing else it
/// may hold); the rest of the file stays behind.
fn carried(
    object: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut kept = serde_json::Map::new();
    for key in CARRIED_KEYS {
        let Some(value) = object.get(key) else {
            continue;
        };
        let value = match (key, value) {
            (ENDPOINT_KEY, Value::Object(endpoint)) => {
                let (Some(Value::String(url)), Some(Value::String(region))) =
                    (endpoint.get("endpoint"), endpoint.get("region"))
                else {
                    continue;
                };
                serde_json::json!({ "endpoint": url, "region": region })
            }
            (KIRO_AUTH_KEY | DEFAULT_MODEL_KEY, Value::String(text)) => Value::String(text.clone()),
            (TELEMETRY_KEY | SHARE_CONTENT_KEY, Value::Bool(flag)) => Value::Bool(*flag),
            _ => continue,
        };
        kept.insert(key.to_owned(), value);
    }
    kept
}

/// Where a copy of the login puts the settings for `flavor`'s CLI, given
/// the copy's data directory (the CLI's `XDG_DATA_HOME`) and home: the
/// Amazon Q CLI reads `settings.json` beside its store, the Kiro CLI
/// `~/.kiro/settings/cli.json`.
pub fn placed_path(flavor: Flavor, data_home: &Path, home: &Path) -> PathBuf {
    flavor.settings_path(home, data_home)
}

/// The file's text, with the open file and its identity (as the
/// descriptor says); `None` when it does not exist. Opened without
/// blocking on a FIFO and judged on the descriptor ([`crate::regular_file`]);
/// a symlink is followed (a dotfiles manager links settings).
fn read_settings_file(
    path: &Path,
) -> Result<Option<(String, std::fs::File, Option<Identity>)>, String> {
    let mut file = match crate::regular_file::open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if crate::regular_file::is_not_regular(&e) => {
            return Err("it is not a regular file".into());
        }
        Err(e) => return Err(format!("it cannot be read: {e}")),
    };
    let metadata = file
        .metadata()
        .map_err(|e| format!("it cannot be read: {e}"))?;
    if metadata.len() > MAX_SETTINGS_BYTES {
        return Err(format!(
            "it is larger than {} KiB",
            MAX_SETTINGS_BYTES / 1024
        ));
    }
    let mut text = String::new();
    (&mut file)
        .take(MAX_SETTINGS_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("it cannot be read: {e}"))?;
    Ok(Some((text, file, Identity::of(&metadata))))
}

/// A settings file read on every use (the agent's private copy carries it
/// into every call) but read and parsed again only when it may have
/// changed: the path still names the file last read, kept open so that
/// its inode is not another file's, with the same identity
/// ([`Identity`]: size and times), and that identity settled before the
/// read began ([`Identity::settled`]: a write in place within one
/// timestamp tick of the read leaves the times as they were, so a file
/// changed that recently is read every time until it is not).
#[derive(Debug, Default)]
pub struct SettingsReader {
    last: Option<LastSettingsRead>,
}

#[derive(Debug)]
struct LastSettingsRead {
    settings: CliSettings,
    /// The file read and what it was: `None` when there was none to keep
    /// (missing, refused), which is looked at again on every use.
    kept: Option<(std::fs::File, Identity)>,
    read_started: std::time::SystemTime,
}

impl SettingsReader {
    /// [`CliSettings::load_quiet`] of `path`, reusing the last read when
    /// it was of the same file, unchanged.
    pub fn load_quiet(&mut self, path: &Path) -> &CliSettings {
        self.read(path).0
    }

    /// [`Self::load_quiet`], and whether the file was read anew.
    fn read(&mut self, path: &Path) -> (&CliSettings, bool) {
        let previous = self.last.take().filter(|last| {
            last.settings.path.as_deref() == Some(path)
                && last.kept.as_ref().is_some_and(|(_, identity)| {
                    identity.settled(last.read_started)
                        && Identity::of_path(path) == Some(*identity)
                })
        });
        let (last, fresh) = match previous {
            Some(last) => (last, false),
            None => {
                let read_started = std::time::SystemTime::now();
                let (settings, kept) = CliSettings::load_quiet_kept(path);
                let last = LastSettingsRead {
                    settings,
                    kept,
                    read_started,
                };
                (last, true)
            }
        };
        (&self.last.insert(last).settings, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regular_file::TIMESTAMP_GRANULARITY;

    fn settings_in(text: &str) -> CliSettings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.json");
        std::fs::write(&path, text).unwrap();
        CliSettings::load(&path)
    }

    #[test]
    fn endpoint_and_auth_service_are_read_as_the_kiro_cli_reads_them() {
        let settings = settings_in(
            r#"{"api.codewhisperer.service":{"endpoint":"http://127.0.0.1:9","region":"us-east-1"},
                "api.kiroauth.service":"http://127.0.0.1:10","chat.defaultModel":"x",
                "codeWhisperer.shareCodeWhispererContentWithAWS":false}"#,
        );
        assert_eq!(settings.default_model.as_deref(), Some("x"));
        assert_eq!(settings.share_content, Some(false));
        assert_eq!(
            settings.endpoint,
            Some(EndpointSetting {
                endpoint: "http://127.0.0.1:9".into(),
                region: "us-east-1".into()
            })
        );
        assert_eq!(settings.kiro_auth.as_deref(), Some("http://127.0.0.1:10"));
        assert_eq!(settings.ignored, None);
        // Tokens go only over https, or to this machine.
        let plain = settings_in(
            r#"{"api.codewhisperer.service":{"endpoint":"http://q.example.com","region":"us-east-1"},
                "api.kiroauth.service":"http://auth.example.com","chat.defaultModel":"m"}"#,
        );
        assert_eq!((plain.endpoint, plain.kiro_auth), (None, None));
        assert!(plain.ignored.unwrap().contains("not an https url"));
        assert_eq!(plain.default_model.as_deref(), Some("m"));
        // Half an override is none, as in the CLI.
        let half = settings_in(r#"{"api.codewhisperer.service":{"endpoint":"http://x"}}"#);
        assert_eq!(half.endpoint, None);
        let string = settings_in(r#"{"api.codewhisperer.service":"http://x"}"#);
        assert_eq!(string.endpoint, None);
    }

    #[test]
    fn a_copy_carries_only_the_allow_listed_keys_of_the_types_the_cli_takes() {
        let settings = settings_in(
            r#"{"api.codewhisperer.service":{"endpoint":"https://q.test","region":"eu-central-1","x":1},
                "api.kiroauth.service":"https://auth.test","chat.defaultModel":"m",
                "telemetry.enabled":"no","codeWhisperer.shareCodeWhispererContentWithAWS":false,
                "mcpServers":{"a":{"env":{"TOKEN":"t"}}},"chat.enableKnowledge":true}"#,
        );
        assert_eq!(
            serde_json::Value::Object(settings.carried.unwrap()),
            serde_json::json!({
                "api.codewhisperer.service": {"endpoint": "https://q.test", "region": "eu-central-1"},
                "api.kiroauth.service": "https://auth.test",
                "chat.defaultModel": "m",
                "codeWhisperer.shareCodeWhispererContentWithAWS": false
            })
        );
        assert_eq!(settings_in("{oops").carried, None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CliSettings::load(&dir.path().join("missing")).carried, None);
    }

    #[test]
    fn bad_files_are_ignored_with_a_reason() {
        assert!(
            settings_in("{not json")
                .ignored
                .unwrap()
                .starts_with("it is not JSON")
        );
        assert_eq!(
            settings_in("[1]").ignored.as_deref(),
            Some("it is not a JSON object")
        );
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(MAX_SETTINGS_BYTES as usize));
        assert!(settings_in(&big).ignored.unwrap().contains("larger than"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CliSettings::load(&dir.path().join("missing")).ignored, None);
        assert!(
            CliSettings::load(dir.path())
                .ignored
                .unwrap()
                .contains("not a regular file")
        );
    }

    #[test]
    fn a_settings_file_is_read_again_only_when_it_may_have_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.json");
        let model = |settings: &CliSettings| settings.default_model.clone();
        std::fs::write(&path, r#"{"chat.defaultModel":"a"}"#).unwrap();
        let mut reader = SettingsReader::default();
        let (settings, fresh) = reader.read(&path);
        assert_eq!((model(settings).as_deref(), fresh), (Some("a"), true));
        // Just written: two writes within one timestamp tick would leave
        // the same identity, so it is read every time for now.
        assert!(reader.read(&path).1);
        // As if read long after it was written: reused while unchanged.
        let settle = |reader: &mut SettingsReader| {
            reader.last.as_mut().unwrap().read_started += TIMESTAMP_GRANULARITY * 2;
        };
        settle(&mut reader);
        let (settings, fresh) = reader.read(&path);
        assert_eq!((model(settings).as_deref(), fresh), (Some("a"), false));
        // Written in place (another size), and replaced by a rename (the
        // same size) while the reader holds the old file open: read again.
        std::fs::write(&path, r#"{"chat.defaultModel":"bb"}"#).unwrap();
        let (settings, fresh) = reader.read(&path);
        assert_eq!((model(settings).as_deref(), fresh), (Some("bb"), true));
        settle(&mut reader);
        let next = dir.path().join("next.json");
        std::fs::write(&next, r#"{"chat.defaultModel":"cc"}"#).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(model(reader.read(&path).0).as_deref(), Some("cc"));
        // Another path, and a file that went: read.
        settle(&mut reader);
        let other = dir.path().join("other.json");
        std::fs::write(&other, r#"{"chat.defaultModel":"d"}"#).unwrap();
        assert_eq!(model(reader.read(&other).0).as_deref(), Some("d"));
        settle(&mut reader);
        std::fs::remove_file(&other).unwrap();
        let (settings, fresh) = reader.read(&other);
        assert_eq!((model(settings), fresh), (None, true));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cli.json");
        crate::regular_file::make_fifo(&fifo);
        assert_eq!(
            CliSettings::load(&fifo).ignored.as_deref(),
            Some("it is not a regular file")
        );
    }
}
