//! The CLI's store schema (the end state of its migrations), and a builder
//! for stores in that schema: used by the test suite, benchmarks and
//! `qbox demo`, never on a user's real store.

use std::path::Path;

use rusqlite::Connection;
use serde_json::json;
use time::OffsetDateTime;

use super::flavor::Flavor;
use super::token::{BUILDER_ID_START_URL, DEFAULT_REGION};
use crate::timefmt::rfc3339;

/// Tables created by migrations 000-007, shared by both CLIs.
const BASE_SCHEMA: &str = "
CREATE TABLE migrations (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, migration_time INTEGER NOT NULL);
CREATE TABLE history (id INTEGER PRIMARY KEY, command TEXT, shell TEXT, pid INTEGER, session_id TEXT, cwd TEXT, start_time INTEGER, hostname TEXT, exit_code INTEGER, end_time INTEGER, duration INTEGER);
CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE conversations (key TEXT PRIMARY KEY, value TEXT);
";

/// Migration 008, which the Kiro CLI adds.
const KIRO_SCHEMA: &str = "
CREATE TABLE conversations_v2 (key TEXT NOT NULL, conversation_id TEXT NOT NULL, value TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (key, conversation_id));
CREATE INDEX idx_conversations_v2_key_updated ON conversations_v2(key, updated_at DESC);
CREATE INDEX idx_conversations_v2_updated_at ON conversations_v2(updated_at DESC);
";

/// How many migrations each flavor has applied (000-007, 000-008).
fn migration_count(flavor: Flavor) -> i64 {
    match flavor {
        Flavor::AmazonQ => 8,
        Flavor::Kiro => 9,
    }
}

/// A login to put into a store built by [`StoreBuilder`].
#[derive(Debug, Clone)]
pub struct FixtureLogin {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: OffsetDateTime,
    pub region: String,
    pub start_url: String,
    pub oauth_flow: String,
    pub client_id: String,
    pub client_secret: String,
    pub registration_expires_at: Option<OffsetDateTime>,
    /// Identity Center profile ARN; `None` for Builder ID.
    pub profile_arn: Option<String>,
}

impl FixtureLogin {
    /// A Builder ID login valid for an hour.
    pub fn builder_id(access_token: &str, refresh_token: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            access_token: access_token.to_owned(),
            refresh_token: Some(refresh_token.to_owned()),
            expires_at: now + time::Duration::hours(1),
            region: DEFAULT_REGION.to_owned(),
            start_url: BUILDER_ID_START_URL.to_owned(),
            oauth_flow: "DeviceCode".to_owned(),
            client_id: "fixture-client-id".to_owned(),
            client_secret: "fixture-client-secret".to_owned(),
            registration_expires_at: Some(now + time::Duration::days(90)),
            profile_arn: None,
        }
    }

    /// The token JSON exactly as the CLI serializes it.
    pub fn token_json(&self) -> String {
        json!({
            "access_token": self.access_token,
            "expires_at": rfc3339(self.expires_at),
            "refresh_token": self.refresh_token,
            "region": self.region,
            "start_url": self.start_url,
            "oauth_flow": self.oauth_flow,
            "scopes": ["codewhisperer:completions", "codewhisperer:analysis", "codewhisperer:conversations"],
        })
        .to_string()
    }

    /// The device registration JSON exactly as the CLI serializes it.
    pub fn registration_json(&self) -> String {
        json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "client_secret_expires_at": self.registration_expires_at.map(rfc3339),
            "region": self.region,
            "oauth_flow": self.oauth_flow,
            "scopes": ["codewhisperer:completions", "codewhisperer:analysis", "codewhisperer:conversations"],
        })
        .to_string()
    }
}

/// Builds a store file in the real schema.
#[derive(Debug)]
pub struct StoreBuilder {
    conn: Connection,
    flavor: Flavor,
}

impl StoreBuilder {
    /// Creates (or opens) `path` and applies the schema of `flavor`.
    pub fn create(path: &Path, flavor: Flavor) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(BASE_SCHEMA)?;
        if flavor == Flavor::Kiro {
            conn.execute_batch(KIRO_SCHEMA)?;
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for id in 0..migration_count(flavor) {
            conn.execute(
                "INSERT INTO migrations (id, version, migration_time) VALUES (?1, ?1, ?2)",
                [id, now],
            )?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The CLI chmods its store to 0600; fixtures match.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self { conn, flavor })
    }

    /// Writes the token, registration and state rows of `login`.
    pub fn login(self, login: &FixtureLogin) -> rusqlite::Result<Self> {
        self.auth_kv(self.flavor.token_key(), &login.token_json())?;
        self.auth_kv(self.flavor.registration_key(), &login.registration_json())?;
        self.state("auth.idc.start-url", &json!(login.start_url).to_string())?;
        self.state("auth.idc.region", &json!(login.region).to_string())?;
        if let Some(arn) = &login.profile_arn {
            let profile = json!({"arn": arn, "profile_name": "fixture-profile"});
            self.state("api.codewhisperer.profile", &profile.to_string())?;
        }
        Ok(self)
    }

    /// Sets an `auth_kv` row.
    pub fn auth_kv(&self, key: &str, value: &str) -> rusqlite::Result<&Self> {
        self.conn.execute(
            "INSERT OR REPLACE INTO auth_kv (key, value) VALUES (?1, ?2)",
            [key, value],
        )?;
        Ok(self)
    }

    /// Sets a `state` row as the CLI writes one: JSON text in a column
    /// declared BLOB since migration 006 (`set_json_entry` binds a
    /// `String`). The CLI reads it back as a `String`, so a value stored as
    /// a BLOB is one it cannot read (its profile is then "missing").
    pub fn state(&self, key: &str, json_value: &str) -> rusqlite::Result<&Self> {
        self.conn.execute(
            "INSERT OR REPLACE INTO state (key, value) VALUES (?1, ?2)",
            [key, json_value],
        )?;
        Ok(self)
    }

    /// Adds a conversation (private data a snapshot must never carry).
    pub fn conversation(&self, directory: &str, text: &str) -> rusqlite::Result<&Self> {
        let value = json!({"conversation_id": "c-1", "history": [text]}).to_string();
        self.conn.execute(
            "INSERT OR REPLACE INTO conversations (key, value) VALUES (?1, ?2)",
            [directory, &value],
        )?;
        if self.flavor == Flavor::Kiro {
            self.conn.execute(
                "INSERT OR REPLACE INTO conversations_v2 (key, conversation_id, value, created_at, updated_at) VALUES (?1, 'c-1', ?2, 0, 0)",
                [directory, &value],
            )?;
        }
        self.conn.execute(
            "INSERT INTO history (command, cwd) VALUES (?1, ?2)",
            [text, directory],
        )?;
        Ok(self)
    }
}
