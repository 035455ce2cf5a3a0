//! `qbox mcp-config --install`: one entry merged into a host's file.
//!
//! What else the file holds is kept: JSON is parsed and written back with
//! its keys in their order (a file JSON cannot read, comments included, is
//! refused rather than rewritten without them); TOML goes through
//! `toml_edit`, which keeps comments and layout; YAML is edited as text (the
//! entry's lines inserted, or an older entry's lines replaced) and the result
//! is parsed and compared with what was meant, so nothing else can have
//! changed. The file is replaced by renaming a finished temporary file in
//! its directory, keeps its mode, and its previous content stays beside it
//! as `NAME.qbox-backup`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use super::{Entry, Format};
use crate::exit::{self, CommandError};

/// A host file larger than this is refused (`~/.claude.json` holds a few MiB
/// of history at most).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Added,
    Replaced,
    Unchanged,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
        }
    }
}

/// The outcome of one install.
#[derive(Debug)]
pub struct Installed {
    pub action: Action,
    pub path: PathBuf,
    pub backup: Option<PathBuf>,
}

/// The file as it was: its text and mode.
struct Existing {
    text: String,
    mode: u32,
}

fn refuse(message: String, hint: impl Into<String>) -> CommandError {
    CommandError::new(exit::ERROR, message).hint(hint)
}

const PRINT_HINT: &str =
    "run the same command without --install to print the entry, and add it by hand";

/// Merges `entry` into the host file at `path` (created if missing).
/// A different server under the same name is replaced only with `force`.
pub fn install(path: &Path, entry: &Entry, force: bool) -> Result<Installed, CommandError> {
    let shown = path.display();
    let existing = read_existing(path)?;
    if entry.holds_secret
        && let Some(existing) = &existing
        && existing.mode & 0o077 != 0
    {
        return Err(refuse(
            format!(
                "{shown} can be read by other users, and {}'s entry would hold the token in clear",
                entry.host.title()
            ),
            format!(
                "make it yours alone first (chmod 600 {shown}), or use a host that references the token from its environment"
            ),
        ));
    }
    let old = existing.as_ref().map_or("", |e| e.text.as_str());
    let (new, action) = match entry.host.format() {
        Format::Json => merge_json(path, old, entry, force)?,
        Format::Toml => merge_toml(path, old, entry, force)?,
        Format::Yaml => merge_yaml(path, old, entry, force)?,
    };
    if action == Action::Unchanged {
        return Ok(Installed {
            action,
            path: path.to_owned(),
            backup: None,
        });
    }
    let io_error = |what: &str, err: std::io::Error| {
        CommandError::new(exit::ERROR, format!("{what} {shown}: {err}"))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|err| io_error("creating the directory of", err))?;
    let backup = match &existing {
        Some(existing) => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".qbox-backup");
            let backup = path.with_file_name(name);
            write_atomically(&backup, existing.text.as_bytes(), existing.mode)
                .map_err(|err| io_error("backing up", err))?;
            Some(backup)
        }
        None => None,
    };
    // The host may have written the file meanwhile: never replace what
    // was not read.
    let now = read_existing(path)?;
    if now.as_ref().map(|e| e.text.as_str()) != existing.as_ref().map(|e| e.text.as_str()) {
        return Err(refuse(
            format!("{shown} changed while qbox was merging into it"),
            "the host may be writing it: close the host or wait, then run the command again",
        ));
    }
    let mode = existing
        .as_ref()
        .map_or(if entry.holds_secret { 0o600 } else { 0o644 }, |e| e.mode);
    write_atomically(path, new.as_bytes(), mode).map_err(|err| io_error("writing", err))?;
    Ok(Installed {
        action,
        path: path.to_owned(),
        backup,
    })
}

/// The file's text and mode, `None` when it does not exist; refuses a
/// symbolic link, anything but a regular file, a file of another user, and
/// text that is not UTF-8.
fn read_existing(path: &Path) -> Result<Option<Existing>, CommandError> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(CommandError::new(
                exit::ERROR,
                format!("reading {shown}: {err}"),
            ));
        }
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(
            format!("{shown} is a symbolic link"),
            "qbox replaces only regular files (a link would be replaced, not followed); install into the file it points to by hand, or remove the link",
        ));
    }
    if !meta.file_type().is_file() {
        return Err(refuse(format!("{shown} is not a regular file"), PRINT_HINT));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse(
            format!("{shown} belongs to another user"),
            "run qbox as the file's owner, or add the entry by hand",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(refuse(format!("{shown} is larger than 64 MiB"), PRINT_HINT));
    }
    let bytes = std::fs::read(path)
        .map_err(|err| CommandError::new(exit::ERROR, format!("reading {shown}: {err}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| refuse(format!("{shown} is not UTF-8 text"), PRINT_HINT))?;
    Ok(Some(Existing {
        text,
        mode: meta.mode() & 0o7777,
    }))
}

/// Writes `bytes` to a temporary file in `path`'s directory, sets `mode`,
/// syncs, and renames it over `path`: a reader sees the old file or the new.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Created 0600: a token never sits in a file others can read.
    let mut file = tempfile::Builder::new()
        .prefix(".qbox-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|err| err.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The action for a name that holds `found` (if anything) when `wanted` is
/// to be there.
fn decide(
    path: &Path,
    name: &str,
    same: Option<bool>,
    force: bool,
) -> Result<Action, CommandError> {
    match same {
        None => Ok(Action::Added),
        Some(true) => Ok(Action::Unchanged),
        Some(false) if force => Ok(Action::Replaced),
        Some(false) => Err(refuse(
            format!(
                "{} already has a different server named {name}",
                path.display()
            ),
            "add --force to replace it (the file is backed up first), or choose another --name",
        )),
    }
}

fn merge_json(
    path: &Path,
    old: &str,
    entry: &Entry,
    force: bool,
) -> Result<(String, Action), CommandError> {
    let mut doc: Value = if old.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(old).map_err(|err| {
            refuse(
                format!(
                    "{} is not plain JSON (line {}, column {})",
                    path.display(),
                    err.line(),
                    err.column()
                ),
                "qbox writes back only what a JSON parser reads, so comments and trailing commas would be lost: remove them, or run without --install and paste the entry",
            )
        })?
    };
    let not_object = |what: &str| {
        refuse(
            format!("{what} in {} is not a JSON object", path.display()),
            PRINT_HINT,
        )
    };
    let Value::Object(root) = &mut doc else {
        return Err(not_object("the top level"));
    };
    let key = entry.host.servers_key();
    let Value::Object(servers) = root.entry(key).or_insert_with(|| Value::Object(Map::new()))
    else {
        return Err(not_object(key));
    };
    let found = servers.get(&entry.name).map(|v| *v == entry.server);
    let mut action = decide(path, &entry.name, found, force)?;
    servers.insert(entry.name.clone(), entry.server.clone());
    if let Some(input) = &entry.input {
        let Value::Array(inputs) = root
            .entry("inputs")
            .or_insert_with(|| Value::Array(Vec::new()))
        else {
            return Err(not_object("inputs"));
        };
        // The user's own prompt under this id is theirs to keep.
        if !inputs.iter().any(|i| i.get("id") == input.get("id")) {
            inputs.push(input.clone());
            if action == Action::Unchanged {
                action = Action::Replaced;
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    Ok((text, action))
}

/// `value` (a JSON object) as a TOML table; nested objects become inline tables.
pub fn toml_table(value: &Value) -> toml_edit::Table {
    let mut table = toml_edit::Table::new();
    if let Value::Object(map) = value {
        for (key, value) in map {
            if let Some(value) = toml_value(value) {
                table.insert(key, toml_edit::Item::Value(value));
            }
        }
    }
    table
}

fn toml_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            toml_edit::Value::Array(items.iter().filter_map(toml_value).collect())
        }
        Value::Object(map) => {
            let mut inline = toml_edit::InlineTable::new();
            for (k, v) in map {
                if let Some(v) = toml_value(v) {
                    inline.insert(k, v);
                }
            }
            toml_edit::Value::InlineTable(inline)
        }
    })
}

/// A TOML item as JSON, to compare an entry found with the one wanted.
pub fn toml_to_json(item: &toml_edit::Item) -> Value {
    fn value(v: &toml_edit::Value) -> Value {
        match v {
            toml_edit::Value::String(s) => Value::from(s.value().as_str()),
            toml_edit::Value::Integer(i) => Value::from(*i.value()),
            toml_edit::Value::Float(f) => Value::from(*f.value()),
            toml_edit::Value::Boolean(b) => Value::from(*b.value()),
            toml_edit::Value::Datetime(d) => Value::from(d.value().to_string()),
            toml_edit::Value::Array(a) => a.iter().map(value).collect(),
            toml_edit::Value::InlineTable(t) => {
                Value::Object(t.iter().map(|(k, v)| (k.to_owned(), value(v))).collect())
            }
        }
    }
    match item {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(v) => value(v),
        toml_edit::Item::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_owned(), toml_to_json(v)))
                .collect(),
        ),
        toml_edit::Item::ArrayOfTables(a) => a
            .iter()
            .map(|t| toml_to_json(&toml_edit::Item::Table(t.clone())))
            .collect(),
    }
}

fn merge_toml(
    path: &Path,
    old: &str,
    entry: &Entry,
    force: bool,
) -> Result<(String, Action), CommandError> {
    let mut doc: toml_edit::DocumentMut = old.parse().map_err(|err: toml_edit::TomlError| {
        let at = err
            .span()
            .map(|span| format!(" (at byte {})", span.start))
            .unwrap_or_default();
        refuse(
            format!("{} is not valid TOML{at}", path.display()),
            "fix the file first; qbox leaves a file it cannot read as it is",
        )
    })?;
    let key = entry.host.servers_key();
    let servers = doc.entry(key).or_insert_with(|| {
        let mut table = toml_edit::Table::new();
        table.set_implicit(true);
        toml_edit::Item::Table(table)
    });
    let Some(servers) = servers.as_table_like_mut() else {
        return Err(refuse(
            format!("{key} in {} is not a table", path.display()),
            PRINT_HINT,
        ));
    };
    let found = servers
        .get(&entry.name)
        .map(|item| toml_to_json(item) == entry.server);
    let action = decide(path, &entry.name, found, force)?;
    if action != Action::Unchanged {
        servers.insert(
            &entry.name,
            toml_edit::Item::Table(toml_table(&entry.server)),
        );
    }
    Ok((doc.to_string(), action))
}

/// A key as YAML: plain when it is a simple word, else double-quoted.
fn yaml_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with('-');
    if plain {
        key.to_owned()
    } else {
        Value::from(key).to_string()
    }
}

/// `name: value` as a YAML block mapping at `indent` spaces; each field's
/// value in flow style (JSON, which YAML reads as it is).
pub fn yaml_block(name: &str, value: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut text = format!("{pad}{}:\n", yaml_key(name));
    if let Value::Object(map) = value {
        for (key, value) in map {
            text.push_str(&format!("{pad}  {}: {value}\n", yaml_key(key)));
        }
    }
    text
}

fn json_to_yaml(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Yaml::Real(n.to_string()), Yaml::Integer),
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(json_to_yaml).collect()),
        Value::Object(map) => Yaml::Hash(
            map.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), json_to_yaml(v)))
                .collect(),
        ),
    }
}

/// Equal as data: mappings compared by their keys, not their order.
pub fn yaml_same(a: &Yaml, b: &Yaml) -> bool {
    match (a, b) {
        (Yaml::Hash(a), Yaml::Hash(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| yaml_same(v, w)))
        }
        (Yaml::Array(a), Yaml::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| yaml_same(v, w))
        }
        _ => a == b,
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

fn parse_yaml(path: &Path, text: &str) -> Result<Yaml, CommandError> {
    let docs = YamlLoader::load_from_str(text).map_err(|err| {
        refuse(
            format!("{} is not valid YAML ({err})", path.display()),
            "fix the file first; qbox leaves a file it cannot read as it is",
        )
    })?;
    match docs.len() {
        0 => Ok(Yaml::Hash(Default::default())),
        1 => Ok(match docs.into_iter().next() {
            Some(Yaml::Null) | None => Yaml::Hash(Default::default()),
            Some(doc) => doc,
        }),
        _ => Err(refuse(
            format!("{} holds more than one YAML document", path.display()),
            PRINT_HINT,
        )),
    }
}

fn merge_yaml(
    path: &Path,
    old: &str,
    entry: &Entry,
    force: bool,
) -> Result<(String, Action), CommandError> {
    let key = entry.host.servers_key();
    let root = parse_yaml(path, old)?;
    let Yaml::Hash(root_map) = &root else {
        return Err(refuse(
            format!("the top level of {} is not a mapping", path.display()),
            PRINT_HINT,
        ));
    };
    let key_yaml = Yaml::String(key.to_owned());
    let name_yaml = Yaml::String(entry.name.clone());
    let wanted = json_to_yaml(&entry.server);
    let extensions = root_map.get(&key_yaml);
    let found = match extensions {
        Some(Yaml::Hash(map)) => map.get(&name_yaml).map(|v| yaml_same(v, &wanted)),
        Some(Yaml::Null) | None => None,
        Some(_) => {
            return Err(refuse(
                format!("{key} in {} is not a mapping", path.display()),
                PRINT_HINT,
            ));
        }
    };
    let action = decide(path, &entry.name, found, force)?;
    if action == Action::Unchanged {
        return Ok((old.to_owned(), action));
    }
    let mut lines: Vec<String> = old.split_inclusive('\n').map(str::to_owned).collect();
    if let Some(last) = lines.last_mut().filter(|l| !l.ends_with('\n')) {
        last.push('\n');
    }
    let header = lines.iter().position(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    });
    match (extensions, header) {
        (None, _) => {
            lines.push(format!("{key}:\n"));
            lines.push(yaml_block(&entry.name, &entry.server, 2));
        }
        (Some(_), None) => {
            return Err(refuse(
                format!(
                    "{key} in {} is not written as a block mapping qbox can add to",
                    path.display()
                ),
                PRINT_HINT,
            ));
        }
        (Some(_), Some(header)) => {
            let indent = lines[header + 1..]
                .iter()
                .find(|line| is_content(line))
                .map(|line| indent_of(line))
                .filter(|&n| n > 0)
                .unwrap_or(2);
            let block = yaml_block(&entry.name, &entry.server, indent);
            let mut at = header + 1;
            if action == Action::Replaced {
                let quoted = Value::from(entry.name.as_str()).to_string();
                let starts = |line: &str| {
                    indent_of(line) == indent
                        && [entry.name.as_str(), quoted.as_str()].iter().any(|n| {
                            line.trim_start()
                                .strip_prefix(n)
                                .is_some_and(|r| r.starts_with(':'))
                        })
                };
                let Some(start) = lines[header + 1..].iter().position(|l| starts(l)) else {
                    return Err(refuse(
                        format!(
                            "qbox could not find the lines of {} in {}",
                            entry.name,
                            path.display()
                        ),
                        PRINT_HINT,
                    ));
                };
                let start = header + 1 + start;
                let end = lines[start + 1..]
                    .iter()
                    .position(|l| !l.trim().is_empty() && indent_of(l) <= indent)
                    .map_or(lines.len(), |n| start + 1 + n);
                lines.drain(start..end);
                at = start;
            }
            lines.insert(at, block);
        }
    }
    let new: String = lines.concat();
    // The text edit must have changed exactly the one entry.
    let mut expected = root_map.clone();
    let mut servers = match expected.get(&key_yaml) {
        Some(Yaml::Hash(map)) => map.clone(),
        _ => Default::default(),
    };
    servers.insert(name_yaml, wanted);
    expected.insert(key_yaml, Yaml::Hash(servers));
    let got = parse_yaml(path, &new)?;
    if !yaml_same(&got, &Yaml::Hash(expected)) {
        return Err(refuse(
            format!(
                "qbox could not add the entry to {} without changing what else it holds",
                path.display()
            ),
            PRINT_HINT,
        ));
    }
    Ok((new, action))
}

#[cfg(test)]
mod tests {
    use super::super::{Host, Launch, entry};
    use super::*;
    use serde_json::json;

    fn stdio(command: &str) -> Launch {
        Launch::Command {
            command: command.into(),
            args: vec!["serve".into()],
            env: Map::new(),
        }
    }

    #[test]
    fn json_keeps_other_keys_in_order_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        std::fs::write(
            &path,
            r#"{"theme": "dark", "mcpServers": {"other": {"command": "x"}}, "z": [1, 2]}"#,
        )
        .unwrap();
        let e = entry(Host::Cursor, "qbox", &stdio("/bin/sidecar")).unwrap();
        let done = install(&path, &e, false).unwrap();
        assert_eq!(done.action, Action::Added);
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["theme", "mcpServers", "z"]);
        let servers: Vec<&String> = doc["mcpServers"].as_object().unwrap().keys().collect();
        assert_eq!(servers, ["other", "qbox"]);
        assert!(done.backup.unwrap().exists());
        assert_eq!(install(&path, &e, false).unwrap().action, Action::Unchanged);
        let other = entry(Host::Cursor, "qbox", &stdio("/elsewhere")).unwrap();
        assert!(install(&path, &other, false).is_err());
        assert_eq!(
            install(&path, &other, true).unwrap().action,
            Action::Replaced
        );
    }

    #[test]
    fn jsonc_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let text = "// my settings\n{\"theme\": \"dark\",}\n";
        std::fs::write(&path, text).unwrap();
        let e = entry(Host::Zed, "qbox", &stdio("/bin/sidecar")).unwrap();
        let err = install(&path, &e, false).unwrap_err();
        assert!(err.message.contains("not plain JSON"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn toml_keeps_comments_and_other_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = "# my codex\nmodel = \"o3\"  # the model\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\"\n";
        std::fs::write(&path, text).unwrap();
        let e = entry(Host::Codex, "qbox", &stdio("/bin/sidecar")).unwrap();
        assert_eq!(install(&path, &e, false).unwrap().action, Action::Added);
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.starts_with(text), "{new}");
        let doc: toml_edit::DocumentMut = new.parse().unwrap();
        assert_eq!(
            doc["mcp_servers"]["qbox"]["command"].as_str(),
            Some("/bin/sidecar")
        );
        assert_eq!(install(&path, &e, false).unwrap().action, Action::Unchanged);
    }

    #[test]
    fn yaml_inserts_lines_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let text = "# goose\nGOOSE_PROVIDER: openai\nextensions:\n    developer:  # built in\n        enabled: true\n        type: builtin\n        name: developer\nGOOSE_MODE: auto\n";
        std::fs::write(&path, text).unwrap();
        let e = entry(Host::Goose, "qbox", &stdio("/bin/sidecar")).unwrap();
        assert_eq!(install(&path, &e, false).unwrap().action, Action::Added);
        let new = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            assert!(new.contains(line), "{line} lost:\n{new}");
        }
        let doc = &YamlLoader::load_from_str(&new).unwrap()[0];
        assert_eq!(
            doc["extensions"]["qbox"]["cmd"].as_str(),
            Some("/bin/sidecar")
        );
        assert_eq!(
            doc["extensions"]["developer"]["type"].as_str(),
            Some("builtin")
        );
        assert_eq!(install(&path, &e, false).unwrap().action, Action::Unchanged);
        let other = entry(Host::Goose, "qbox", &stdio("/elsewhere")).unwrap();
        assert_eq!(
            install(&path, &other, true).unwrap().action,
            Action::Replaced
        );
        let newer = std::fs::read_to_string(&path).unwrap();
        let doc = &YamlLoader::load_from_str(&newer).unwrap()[0];
        assert_eq!(
            doc["extensions"]["qbox"]["cmd"].as_str(),
            Some("/elsewhere")
        );
        assert_eq!(doc["GOOSE_MODE"].as_str(), Some("auto"));
        assert!(newer.contains("# built in"));
    }

    #[test]
    fn a_literal_token_never_goes_into_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = entry(
            Host::Zed,
            "qbox",
            &Launch::Http {
                url: "http://127.0.0.1:1/mcp".into(),
                literal: Some(crate::secret::Secret::new("tok-abcdefghijklmnop")),
            },
        )
        .unwrap();
        assert!(install(&path, &e, false).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        let fresh = dir.path().join("new").join("settings.json");
        install(&fresh, &e, false).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        std::fs::write(&target, "{}").unwrap();
        let link = dir.path().join("mcp.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = entry(Host::Cursor, "qbox", &stdio("/bin/sidecar")).unwrap();
        assert!(install(&link, &e, false).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        let _ = json!(null);
    }
}
