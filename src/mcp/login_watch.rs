//! Whether the sidecar has a usable login, as `/health` reports it: read
//! from the store on a blocking thread every few seconds and kept in
//! memory, so that answering `/health` never touches the store.
//!
//! Why: the store is an SQLite file the CLI locks while it writes; a read
//! waits for the lock (up to `QBOX_LOCK_TIMEOUT`). Done inside a request on
//! the sidecar's single-threaded runtime, every other request waited too,
//! and anyone who can reach `/health`, which needs no token, could keep
//! the whole server stalled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::{StoreError, StoreQuery};

/// How often the store is read again.
pub const LOGIN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The last known login state, updated in the background while it lives.
#[derive(Debug)]
pub struct LoginWatch {
    usable: Arc<AtomicBool>,
    refresher: tokio::task::JoinHandle<()>,
}

impl LoginWatch {
    /// Reads the login of `query` once (off the runtime's thread), then
    /// again every `interval` in the background.
    pub async fn start(query: StoreQuery, interval: Duration) -> Self {
        let first = check_off_reactor(&query).await.unwrap_or(false);
        let usable = Arc::new(AtomicBool::new(first));
        let shared = usable.clone();
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                // A store that stays locked says nothing about the login:
                // the last answer stands until a read gets through.
                if let Some(now_usable) = check_off_reactor(&query).await {
                    shared.store(now_usable, Ordering::Relaxed);
                }
            }
        });
        Self { usable, refresher }
    }

    /// True when the last read found a usable login (or a bare token).
    pub fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }
}

impl Drop for LoginWatch {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn check_off_reactor(query: &StoreQuery) -> Option<bool> {
    let query = query.clone();
    tokio::task::spawn_blocking(move || login_usable(&query))
        .await
        .unwrap_or(Some(false))
}

/// Whether the native client has a login: a bare `QBOX_ACCESS_TOKEN`, a
/// store with a token that is not expired, or else a valid Kiro API key.
/// `None` when the store stayed locked. Blocking: reads the store.
pub fn login_usable(query: &StoreQuery) -> Option<bool> {
    if crate::qapi::bare_token_given() {
        return Some(true);
    }
    let now = time::OffsetDateTime::now_utc();
    let stored = match query.resolve(now) {
        Ok(login) => login.status(now).is_usable(),
        Err(StoreError::Locked { .. }) => return None,
        Err(_) => false,
    };
    Some(stored || matches!(crate::qapi::ApiKey::from_env(), Ok(Some(_))))
}
