//! Where conversations are kept between turns: files in a directory (the
//! host's `<data dir>/qbox/conversations`, or `$QBOX_STATE_DIR/conversations`),
//! or this process's memory (a sidecar without `QBOX_STATE_DIR`, whose image
//! root is read-only).
//!
//! A file is `ID.json`, mode 0600, in a directory made 0700, written whole
//! to a temporary file and renamed into place, so a crash or a full disk
//! leaves the previous version, never a torn one. A file that cannot be read
//! is reported and left alone, never overwritten.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use time::OffsetDateTime;

use super::conversation::{Conversation, ConversationError, MEMORY_PLACE, parse_conversation_id};

/// Environment variable naming a writable directory for conversations.
pub const STATE_DIR_ENV: &str = "QBOX_STATE_DIR";
/// The most conversations kept in memory; the least recently used go first.
pub const MAX_MEMORY_CONVERSATIONS: usize = 1000;
/// The most bytes of a conversation file qbox reads (a guard against a
/// file that is not one).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// A stored conversation, as `--list-conversations` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    pub conversation_id: String,
    pub turns: usize,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    pub title: String,
    /// Why the file could not be read, for one that cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug)]
enum Backing {
    Memory(Mutex<HashMap<String, Conversation>>),
    Directory(PathBuf),
}

#[derive(Debug)]
struct Inner {
    backing: Backing,
    /// Conversations with a turn in flight in this process.
    busy: Mutex<HashSet<String>>,
}

/// Where conversations live. Clones share the same conversations.
#[derive(Debug, Clone)]
pub struct ConversationStore {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConversationStore {
    fn with(backing: Backing) -> Self {
        Self {
            inner: Arc::new(Inner {
                backing,
                busy: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Conversations in this process's memory only.
    pub fn memory() -> Self {
        Self::with(Backing::Memory(Mutex::new(HashMap::new())))
    }

    /// Conversations as files in `dir` (created 0700 on the first save).
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        Self::with(Backing::Directory(dir.into()))
    }

    /// `$QBOX_STATE_DIR/conversations`, when set.
    fn state_dir_from_env() -> Option<PathBuf> {
        super::env_value(STATE_DIR_ENV).map(|dir| PathBuf::from(dir).join("conversations"))
    }

    /// The sidecar's store: `$QBOX_STATE_DIR/conversations`, else memory.
    pub fn from_env_or_memory() -> Self {
        Self::state_dir_from_env().map_or_else(Self::memory, Self::directory)
    }

    /// The host's store: `$QBOX_STATE_DIR/conversations`, else
    /// `<data dir>/qbox/conversations` (the data dir of the CLIs' stores).
    pub fn from_env_or_data_dir() -> Result<Self, ConversationError> {
        if let Some(dir) = Self::state_dir_from_env() {
            return Ok(Self::directory(dir));
        }
        let data = dirs::data_local_dir().ok_or(ConversationError::NoDataDir)?;
        Ok(Self::directory(data.join("qbox").join("conversations")))
    }

    /// The directory, or how errors name the memory.
    pub fn place(&self) -> String {
        match &self.inner.backing {
            Backing::Memory(_) => MEMORY_PLACE.to_owned(),
            Backing::Directory(dir) => dir.display().to_string(),
        }
    }

    fn file(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// The conversation `id` (an id checked by `parse_conversation_id`).
    pub fn load(&self, id: &str) -> Result<Conversation, ConversationError> {
        let unknown = || ConversationError::Unknown {
            id: id.to_owned(),
            place: self.place(),
        };
        match &self.inner.backing {
            Backing::Memory(map) => lock(map).get(id).cloned().ok_or_else(unknown),
            Backing::Directory(dir) => {
                let path = Self::file(dir, id);
                match read_file(&path, id) {
                    Err(ConversationError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Err(unknown())
                    }
                    other => other,
                }
            }
        }
    }

    /// Stores `conversation`, replacing its previous version whole.
    pub fn save(&self, conversation: &Conversation) -> Result<(), ConversationError> {
        let id = &conversation.conversation_id;
        match &self.inner.backing {
            Backing::Memory(map) => {
                let mut map = lock(map);
                map.insert(id.clone(), conversation.clone());
                if map.len() > MAX_MEMORY_CONVERSATIONS
                    && let Some(oldest) = map
                        .values()
                        .min_by_key(|c| c.updated_at)
                        .map(|c| c.conversation_id.clone())
                {
                    map.remove(&oldest);
                }
                Ok(())
            }
            Backing::Directory(dir) => {
                let name = format!("{id}.json");
                let bytes = fitting_bytes(conversation, MAX_FILE_BYTES).ok_or_else(|| {
                    ConversationError::Write {
                        id: id.clone(),
                        source: crate::store::StoreError::io(
                            "writing",
                            dir.join(&name),
                            std::io::Error::other(format!(
                                "its last turn alone is larger than the {MAX_FILE_BYTES} bytes a conversation file may hold"
                            )),
                        ),
                    }
                })?;
                crate::store::private_file::write_private_file(dir, &name, &bytes)
                    .map(drop)
                    .map_err(|source| ConversationError::Write {
                        id: id.clone(),
                        source,
                    })
            }
        }
    }

    /// Fails early, before a question is sent, when an answer could not be
    /// saved: the directory cannot be created or written.
    pub fn check_writable(&self) -> Result<(), ConversationError> {
        let Backing::Directory(dir) = &self.inner.backing else {
            return Ok(());
        };
        // The same directory rules the save itself will apply.
        crate::store::private_file::prepare_private_dir(dir)
            .map_err(|source| ConversationError::Directory { source })?;
        tempfile::tempfile_in(dir)
            .map(drop)
            .map_err(|source| ConversationError::Io {
                action: "cannot write conversations to",
                path: dir.clone(),
                source,
            })
    }

    /// Every stored conversation, most recently updated first. Files that
    /// cannot be read are listed with their problem.
    pub fn list(&self) -> Result<Vec<ConversationSummary>, ConversationError> {
        let mut summaries: Vec<ConversationSummary> = match &self.inner.backing {
            Backing::Memory(map) => lock(map).values().map(summary).collect(),
            Backing::Directory(dir) => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(source) => {
                        return Err(ConversationError::Io {
                            action: "cannot list",
                            path: dir.clone(),
                            source,
                        });
                    }
                };
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| {
                        let name = entry.file_name().into_string().ok()?;
                        let id = parse_conversation_id(name.strip_suffix(".json")?).ok()?;
                        Some(match read_file(&entry.path(), &id) {
                            Ok(conversation) => summary(&conversation),
                            Err(err) => ConversationSummary {
                                conversation_id: id,
                                turns: 0,
                                updated_at: None,
                                title: String::new(),
                                problem: Some(err.to_string()),
                            },
                        })
                    })
                    .collect()
            }
        };
        summaries.sort_by_key(|s| std::cmp::Reverse(s.updated_at));
        Ok(summaries)
    }

    /// Removes the conversation `id` (checked by `parse_conversation_id`).
    pub fn forget(&self, id: &str) -> Result<(), ConversationError> {
        let unknown = || ConversationError::Unknown {
            id: id.to_owned(),
            place: self.place(),
        };
        match &self.inner.backing {
            Backing::Memory(map) => lock(map).remove(id).map(drop).ok_or_else(unknown),
            Backing::Directory(dir) => {
                let path = Self::file(dir, id);
                std::fs::remove_file(&path).map_err(|source| {
                    if source.kind() == std::io::ErrorKind::NotFound {
                        unknown()
                    } else {
                        ConversationError::Io {
                            action: "cannot remove",
                            path,
                            source,
                        }
                    }
                })
            }
        }
    }

    /// Marks `id` as having a turn in flight until the guard is dropped: two
    /// turns at once would each send a history without the other's answer,
    /// and the later save would lose the earlier one.
    pub(crate) fn claim(&self, id: &str) -> Result<ConversationClaim, ConversationError> {
        if !lock(&self.inner.busy).insert(id.to_owned()) {
            return Err(ConversationError::Busy { id: id.to_owned() });
        }
        Ok(ConversationClaim {
            store: self.clone(),
            id: id.to_owned(),
        })
    }
}

/// A turn in flight on a conversation (see [`ConversationStore::claim`]).
#[derive(Debug)]
pub(crate) struct ConversationClaim {
    store: ConversationStore,
    id: String,
}

impl Drop for ConversationClaim {
    fn drop(&mut self) {
        lock(&self.store.inner.busy).remove(&self.id);
    }
}

fn summary(conversation: &Conversation) -> ConversationSummary {
    ConversationSummary {
        conversation_id: conversation.conversation_id.clone(),
        turns: conversation.turns.len(),
        updated_at: Some(conversation.updated_at),
        title: conversation.title(),
        problem: None,
    }
}

/// Reads and checks one conversation file.
fn read_file(path: &Path, id: &str) -> Result<Conversation, ConversationError> {
    let io = |source| ConversationError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    };
    let corrupt = |detail: String| ConversationError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(corrupt(format!(
            "{len} bytes is more than a conversation file holds"
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let conversation: Conversation = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(crate::store::error::describe_json_error(&e)))?;
    conversation.validate(id).map_err(corrupt)?;
    Ok(conversation)
}

/// `conversation` as the bytes of its file, at most `limit` of them, which
/// [`read_file`] accepts: a file is never written larger than it can be read
/// back. A conversation over the limit loses its oldest turns (as the
/// history limits drop them) until it fits; `None` when not even its last
/// turn does.
fn fitting_bytes(conversation: &Conversation, limit: u64) -> Option<Vec<u8>> {
    let encode = |c: &Conversation| serde_json::to_vec_pretty(c).expect("conversations serialize");
    let bytes = encode(conversation);
    if bytes.len() as u64 <= limit {
        return Some(bytes);
    }
    let mut trimmed = conversation.clone();
    let mut size = bytes.len() as u64;
    while trimmed.turns.len() > 1 {
        // Drop about as many of the oldest turns as the excess weighs.
        let mut dropped = 0;
        let mut freed = 0u64;
        while dropped + 1 < trimmed.turns.len() && freed < size - limit {
            freed +=
                serde_json::to_vec_pretty(&trimmed.turns[dropped]).map_or(0, |t| t.len()) as u64;
            dropped += 1;
        }
        trimmed.turns.drain(..dropped.max(1));
        let bytes = encode(&trimmed);
        size = bytes.len() as u64;
        if size <= limit {
            return Some(bytes);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Diagnose;

    #[test]
    fn a_file_is_never_written_larger_than_it_can_be_read_back() {
        let turns: Vec<(String, String)> = (0..20)
            .map(|n| {
                (
                    format!("question {n}"),
                    format!("answer {n} {}", "x".repeat(500)),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = turns
            .iter()
            .map(|(q, a)| (q.as_str(), a.as_str()))
            .collect();
        let conversation = conversation_with(&pairs);
        let whole = serde_json::to_vec_pretty(&conversation).unwrap().len() as u64;
        assert_eq!(
            fitting_bytes(&conversation, whole).unwrap().len() as u64,
            whole
        );
        let limit = whole / 3;
        let bytes = fitting_bytes(&conversation, limit).unwrap();
        assert!(bytes.len() as u64 <= limit);
        let kept: Conversation = serde_json::from_slice(&bytes).unwrap();
        assert!(kept.turns.len() < 20 && !kept.turns.is_empty());
        // The newest turns stay, the oldest go.
        assert_eq!(kept.turns.last(), conversation.turns.last());
        assert_eq!(
            fitting_bytes(&conversation, 100),
            None,
            "not even one turn fits"
        );
    }

    fn conversation_with(turns: &[(&str, &str)]) -> Conversation {
        let mut conversation = Conversation::new();
        for (q, a) in turns {
            conversation.push(q, (*a).to_owned());
        }
        conversation
    }

    #[test]
    fn memory_store_keeps_lists_and_forgets() {
        let store = ConversationStore::memory();
        let conversation = conversation_with(&[("hi", "hello")]);
        let id = conversation.conversation_id.clone();
        assert!(matches!(
            store.load(&id),
            Err(ConversationError::Unknown { .. })
        ));
        store.save(&conversation).unwrap();
        assert_eq!(store.load(&id).unwrap(), conversation);
        assert_eq!(store.list().unwrap()[0].title, "hi");
        let claim = store.claim(&id).unwrap();
        let shared = store.clone();
        assert!(matches!(
            shared.claim(&id),
            Err(ConversationError::Busy { .. })
        ));
        drop(claim);
        assert!(store.claim(&id).is_ok());
        store.forget(&id).unwrap();
        assert!(matches!(
            store.forget(&id),
            Err(ConversationError::Unknown { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_change_is_refused_before_a_question_is_sent() {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ConversationStore::directory(&dir)
            .check_writable()
            .unwrap_err();
        assert!(matches!(err, ConversationError::Directory { .. }), "{err}");
        assert!(err.hint().is_some());
    }

    #[test]
    fn directory_store_writes_private_files_and_reports_corrupt_ones() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("qbox").join("conversations");
        let store = ConversationStore::directory(&dir);
        assert!(store.list().unwrap().is_empty());
        store.check_writable().unwrap();
        let conversation = conversation_with(&[("one", "1"), ("two", "2")]);
        let id = conversation.conversation_id.clone();
        store.save(&conversation).unwrap();
        let path = dir.join(format!("{id}.json"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        assert_eq!(store.load(&id).unwrap(), conversation);

        // A truncated file is an error that names it, and stays as it was.
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = store.load(&id).unwrap_err();
        assert!(matches!(err, ConversationError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read(&path).unwrap(), &text[..text.len() / 2]);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].problem.is_some());

        // A file that holds another conversation is not this one.
        let other = conversation_with(&[("x", "y")]);
        std::fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(matches!(
            store.load(&id),
            Err(ConversationError::Corrupt { .. })
        ));
        store.forget(&id).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn memory_store_is_bounded() {
        let store = ConversationStore::memory();
        let first = conversation_with(&[("first", "a")]);
        store.save(&first).unwrap();
        for _ in 0..MAX_MEMORY_CONVERSATIONS {
            store.save(&conversation_with(&[("q", "a")])).unwrap();
        }
        assert_eq!(store.list().unwrap().len(), MAX_MEMORY_CONVERSATIONS);
        assert!(store.load(&first.conversation_id).is_err());
    }
}
