//! When to refresh a login, in one place: every command that needs a token
//! (`export-token`, `snapshot`, `run`, `chat`, the sidecar) and every
//! keeper that holds one fresh (`snapshot --watch`, `qbox run`) asks a
//! [`LoginKeeper`].
//!
//! The rule, after the AWS SDKs' SSO token provider:
//! - the refresh window is `--refresh-before` (5 minutes by default) capped
//!   at half the token's lifetime, so a short-lived token is not refreshed
//!   on every pass;
//! - at most one attempt per [`RefreshPolicy::min_interval`] (30 s) per
//!   login, across processes too: the attempt is made under a per-store
//!   lock, after re-reading the store (another process may have refreshed
//!   already), and the lock file records when it began;
//! - a failed attempt keeps the still-valid token in use and the next one
//!   waits, doubling with jitter up to [`RefreshPolicy::max_backoff`], but
//!   never later than halfway to the token's expiry;
//! - every attempt and its outcome is logged at info, without secrets.
//!
//! **The CLI refreshes too, without a lock.** The Kiro CLI (and the Amazon Q
//! CLI before it) refreshes a token inside its last minute, takes no lock,
//! writes the new token unconditionally and deletes the login when a
//! refresh is refused (`auth/builder_id.rs`, `social.rs`,
//! `external_idp.rs`). A rotating refresh token spent by qbox and by the CLI
//! at once logs the user out if the CLI loses. So qbox refreshes well
//! before the CLI would (the window above), never starts a refresh inside
//! [`RefreshPolicy::hands_off`] of expiry (the CLI's minute plus half of it
//! for the request in flight) while the token is still valid, re-reads the
//! store under its lock right before spending a refresh token, and adopts
//! the CLI's token when it loses a race. Only a token that has already
//! expired, met by both at once (after a sleep), is still a race.
//!
//! The token's lifetime is known once a qbox process has refreshed it (the
//! grant's `expiresIn`, recorded in the lock file for the other processes).
//! A token the CLI wrote has no known lifetime; its window is
//! `--refresh-before` itself, as in the SDKs, so a keeper started late in a
//! token's life refreshes it at once. The first refresh makes the lifetime
//! known, and the cap applies from then on.

use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;

use super::login::Login;
use super::refresh_lock::{self, LOCK_WAIT, RefreshLock};
use super::{AuthError, Refreshers, StoreError, off_reactor, read_login};

/// The timing rule of refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh when the token expires within this (`--refresh-before`),
    /// capped at half its lifetime.
    pub refresh_before: Duration,
    /// Never two attempts for one login closer together than this.
    pub min_interval: Duration,
    /// The longest wait after failed attempts.
    pub max_backoff: Duration,
    /// How long before expiry the CLI refreshes a token itself (its
    /// expiry rule: `now + 1 minute > expires_at`).
    pub cli_window: Duration,
}

/// `--refresh-before`'s default, the SDKs' window.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The SDKs' minimum time between two refresh attempts.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait between failed attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// How long before expiry the CLIs refresh a token themselves.
pub const CLI_WINDOW: Duration = Duration::from_secs(60);
/// Overrides [`CLI_WINDOW`] (whole seconds, at most an hour): for a CLI
/// that changes its window, and for tests whose tokens live minutes.
pub const CLI_WINDOW_ENV: &str = "QBOX_CLI_WINDOW";

/// The CLI's window in force (read once per process).
fn cli_window() -> Duration {
    static WINDOW: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        let Some(text) = std::env::var(CLI_WINDOW_ENV).ok().filter(|v| !v.trim().is_empty())
        else {
            return CLI_WINDOW;
        };
        match text.trim().parse::<u64>() {
            Ok(seconds) if seconds <= 3600 => Duration::from_secs(seconds),
            _ => {
                tracing::warn!(
                    "{CLI_WINDOW_ENV}={text:?} is not a whole number of seconds up to 3600; using 60"
                );
                CLI_WINDOW
            }
        }
    })
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_before: DEFAULT_REFRESH_BEFORE,
            min_interval: MIN_REFRESH_INTERVAL,
            max_backoff: MAX_BACKOFF,
            cli_window: cli_window(),
        }
    }
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn to_std(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

impl RefreshPolicy {
    /// A policy with this `--refresh-before` and the standard limits.
    pub fn with_refresh_before(refresh_before: Duration) -> Self {
        Self {
            refresh_before,
            ..Self::default()
        }
    }

    /// How long before expiry qbox leaves a still-valid token to the CLI:
    /// its window and half of it again for a request in flight, so that a
    /// refresh qbox starts is written before the CLI would start its own.
    pub fn hands_off(&self) -> Duration {
        self.cli_window + self.cli_window / 2
    }

    /// True while a token expiring at `expires_at` is the CLI's to refresh:
    /// close to expiry, and not expired yet.
    pub fn leave_to_cli(&self, now: OffsetDateTime, expires_at: OffsetDateTime) -> bool {
        now < expires_at && now >= expires_at - to_time(self.hands_off())
    }

    /// How long before expiry a token of `lifetime` (if known) is refreshed.
    pub fn window(&self, lifetime: Option<Duration>) -> Duration {
        match lifetime {
            Some(lifetime) => self.refresh_before.min(lifetime / 2),
            None => self.refresh_before,
        }
    }

    /// When a token that expires at `expires_at` after `lifetime` is due.
    pub fn refresh_at(
        &self,
        expires_at: OffsetDateTime,
        lifetime: Option<Duration>,
    ) -> OffsetDateTime {
        expires_at - to_time(self.window(lifetime))
    }

    /// The wait after `failures` (at least 1) failed attempts in a row:
    /// `min_interval` doubled per failure up to `max_backoff`, plus up to a
    /// quarter more by `jitter` (in 0..1) so keepers that failed together
    /// do not retry together; no later than halfway to `until_expiry`
    /// while the token lives, and never shorter than `min_interval`.
    pub fn retry_delay(&self, failures: u32, until_expiry: Duration, jitter: f64) -> Duration {
        let doubling = 1u32 << failures.clamp(1, 16).saturating_sub(1);
        let base = self
            .min_interval
            .saturating_mul(doubling)
            .min(self.max_backoff);
        let jittered = base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 4.0);
        let by_expiry = if until_expiry.is_zero() {
            jittered
        } else {
            jittered.min(until_expiry / 2)
        };
        by_expiry.max(self.min_interval)
    }
}

/// A number in 0..1 from the operating system's generator (0 if it fails).
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    match crate::random::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.0,
    }
}

/// What the caller needs from [`LoginKeeper::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A token usable now (a command about to use it): an expired token is
    /// refreshed whatever the interval, and a failure is an error unless
    /// the token is still valid.
    Now,
    /// Keep the token fresh ahead of time (a keeper): refresh inside the
    /// window, report failures, never fail.
    Ahead,
}

/// What a check did, beyond returning the login.
#[derive(Debug)]
pub enum KeeperEvent {
    /// The token was refreshed and written back to the store.
    Refreshed { expires_at: OffsetDateTime },
    /// An attempt failed; the next is not before `retry_in`.
    Failed {
        error: AuthError,
        retry_in: Duration,
    },
    /// The token is due but cannot be refreshed without the CLI (reported
    /// once per token).
    Unrefreshable { error: StoreError },
}

/// The login, current after the check, and what happened.
#[derive(Debug)]
pub struct Checked {
    pub login: Login,
    pub event: Option<KeeperEvent>,
}

/// The token this keeper saw last and what it knows of its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    key: &'static str,
    expires_at: OffsetDateTime,
    lifetime: Option<Duration>,
}

/// Decides when to refresh one login and does it: the one refresh entry
/// point. Keep one per login for as long as the program runs; its memory
/// (lifetimes, failures, the next allowed attempt) is what spaces attempts.
#[derive(Debug)]
pub struct LoginKeeper {
    policy: RefreshPolicy,
    clients: Option<Refreshers>,
    seen: Option<Seen>,
    failures: u32,
    not_before: Option<Instant>,
    reported_blocked: Option<OffsetDateTime>,
}

impl LoginKeeper {
    pub fn new(policy: RefreshPolicy) -> Self {
        Self {
            policy,
            clients: None,
            seen: None,
            failures: 0,
            not_before: None,
            reported_blocked: None,
        }
    }

    /// Uses these clients instead of ones made from the environment.
    pub fn with_clients(mut self, clients: Refreshers) -> Self {
        self.clients = Some(clients);
        self
    }

    /// The lifetime of the login's token, if known: from this keeper's
    /// own refresh, else from the lock file's record of another process's.
    fn lifetime(&mut self, login: &Login) -> Option<Duration> {
        let entry = login.token.as_ref()?;
        if let Some(seen) = &self.seen
            && seen.key == entry.key
            && seen.expires_at == entry.token.expires_at
        {
            return seen.lifetime;
        }
        let lifetime = refresh_lock::record(&login.path).lifetime_of(entry.token.expires_at);
        self.seen = Some(Seen {
            key: entry.key,
            expires_at: entry.token.expires_at,
            lifetime,
        });
        lifetime
    }

    fn clients(&mut self) -> Result<Refreshers, AuthError> {
        if let Some(clients) = &self.clients {
            return Ok(clients.clone());
        }
        let clients = Refreshers::from_env()?;
        Ok(self.clients.insert(clients).clone())
    }

    /// The one refresh entry point: returns the login with a token fresh
    /// enough for `need`, refreshing it (and writing it back) when the
    /// policy says so. See the module documentation for the rule.
    pub async fn check(&mut self, login: Login, need: Need) -> Result<Checked, AuthError> {
        // A grant a killed qbox received but never wrote goes in first: the
        // refresh token the store still holds was spent.
        let login = super::recover_recorded_grant(login).await;
        let now = OffsetDateTime::now_utc();
        let Some(entry) = login.token.as_ref() else {
            return match need {
                Need::Now => Err(no_token(&login).into()),
                Need::Ahead => Ok(Checked { login, event: None }),
            };
        };
        let expires_at = entry.token.expires_at;
        let expired = entry.token.is_expired_at(now);
        let lifetime = self.lifetime(&login);
        // A command holding only an expired token has nothing to serve.
        let urgent = need == Need::Now && expired;
        if now < self.policy.refresh_at(expires_at, lifetime) && !urgent {
            return Ok(Checked { login, event: None });
        }
        if self.policy.leave_to_cli(now, expires_at) {
            // Still valid, and the CLI may be spending the refresh token.
            tracing::debug!(
                path = %login.path.display(),
                "leaving the refresh of a token this close to expiry to the CLI"
            );
            return Ok(Checked { login, event: None });
        }
        // An access-only copy is rewritten by its host keeper; before it
        // expires there is nothing to do or report here.
        if login.access_only && !expired {
            return Ok(Checked { login, event: None });
        }
        if let Some(reason) = login.refresh_blocker(now) {
            let error = login.unrefreshable(expires_at, reason);
            if urgent {
                return Err(error.into());
            }
            let event =
                (need == Need::Ahead && self.reported_blocked != Some(expires_at)).then(|| {
                    self.reported_blocked = Some(expires_at);
                    KeeperEvent::Unrefreshable { error }
                });
            return Ok(Checked { login, event });
        }
        if !urgent && self.not_before.is_some_and(|at| Instant::now() < at) {
            return Ok(Checked { login, event: None });
        }
        // Boxed: the attempt (lock, store, http) is a large future, and
        // callers hold this one across their own awaits.
        Box::pin(self.attempt(login, need, urgent)).await
    }

    /// Takes the lock, re-reads the store and refreshes if still needed.
    async fn attempt(
        &mut self,
        login: Login,
        need: Need,
        urgent: bool,
    ) -> Result<Checked, AuthError> {
        let lock = RefreshLock::acquire(&login.path, LOCK_WAIT).await;
        // Another process may have refreshed while this one waited.
        let current = {
            let (path, flavor) = (login.path.clone(), login.flavor);
            off_reactor(move || read_login(&path, Some(flavor))).await
        };
        let login = match current {
            Ok(current) => current,
            Err(error) if urgent => return Err(error.into()),
            Err(error) => return Ok(self.failed(login, error.into())),
        };
        let now = OffsetDateTime::now_utc();
        let Some(entry) = login.token.as_ref() else {
            return match need {
                Need::Now => Err(no_token(&login).into()),
                Need::Ahead => Ok(Checked { login, event: None }),
            };
        };
        let expires_at = entry.token.expires_at;
        let urgent = need == Need::Now && entry.token.is_expired_at(now);
        let lifetime = self.lifetime(&login);
        if self.policy.leave_to_cli(now, expires_at) {
            return Ok(Checked { login, event: None });
        }
        if now < self.policy.refresh_at(expires_at, lifetime) && !urgent {
            tracing::info!(
                path = %login.path.display(),
                expires_at = %crate::timefmt::rfc3339(expires_at),
                "the store already holds a refreshed token"
            );
            return Ok(Checked { login, event: None });
        }
        if !urgent
            && let Some(last) = lock.as_ref().and_then(|l| l.record().last_attempt())
            && let Ok(since) = SystemTime::now().duration_since(last)
            && since < self.policy.min_interval
        {
            // Another process tried moments ago; wait out the interval.
            self.not_before = Some(Instant::now() + (self.policy.min_interval - since));
            return Ok(Checked { login, event: None });
        }
        if let Some(lock) = &lock {
            lock.record_attempt(SystemTime::now());
        }
        let kind = login.kind().map_or("unknown", |k| k.name());
        tracing::info!(
            path = %login.path.display(),
            kind,
            expires_at = %crate::timefmt::rfc3339(expires_at),
            "refreshing the login's token"
        );
        let clients = match self.clients() {
            Ok(clients) => clients,
            Err(error) if urgent => return Err(error),
            Err(error) => return Ok(self.failed(login, error)),
        };
        let started = OffsetDateTime::now_utc();
        let result = super::refresh(login.clone(), &clients).await;
        match result {
            Ok(fresh) => {
                self.failures = 0;
                self.not_before = Some(Instant::now() + self.policy.min_interval);
                let expires_at = fresh.token.as_ref().map(|e| e.token.expires_at);
                if let (Some(entry), Some(expires_at)) = (&fresh.token, expires_at)
                    && expires_at > started
                {
                    let lifetime = to_std(expires_at - started);
                    if let Some(lock) = &lock {
                        lock.record_grant(expires_at, lifetime);
                    }
                    self.seen = Some(Seen {
                        key: entry.key,
                        expires_at,
                        lifetime: Some(lifetime),
                    });
                }
                drop(lock);
                tracing::info!(
                    path = %fresh.path.display(),
                    kind,
                    expires_at = %expires_at.map(crate::timefmt::rfc3339).unwrap_or_default(),
                    "token refreshed"
                );
                Ok(Checked {
                    event: expires_at.map(|expires_at| KeeperEvent::Refreshed { expires_at }),
                    login: fresh,
                })
            }
            Err(error) if urgent => {
                self.note_failure(&login, &error);
                Err(error)
            }
            Err(error) => Ok(self.failed(login, error)),
        }
    }

    /// Records a failed attempt; the login is returned as it was.
    fn failed(&mut self, login: Login, error: AuthError) -> Checked {
        let retry_in = self.note_failure(&login, &error);
        Checked {
            login,
            event: Some(KeeperEvent::Failed { error, retry_in }),
        }
    }

    /// Counts a failed attempt, logs it and sets the wait before the next.
    fn note_failure(&mut self, login: &Login, error: &AuthError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let until_expiry = login
            .token
            .as_ref()
            .map(|e| to_std(e.token.expires_at - OffsetDateTime::now_utc()))
            .unwrap_or_default();
        let retry_in = self
            .policy
            .retry_delay(self.failures, until_expiry, jitter());
        self.not_before = Some(Instant::now() + retry_in);
        tracing::info!(
            path = %login.path.display(),
            failures = self.failures,
            retry_in_s = retry_in.as_secs(),
            "token refresh failed: {}",
            crate::exit::chain(error)
        );
        retry_in
    }
}

fn no_token(login: &Login) -> StoreError {
    StoreError::NoToken {
        path: login.path.clone(),
        flavor: login.flavor,
    }
}

/// For a command that uses the login once: a login whose token is usable
/// now, refreshed (and written back) if it has expired. A failed refresh
/// is an error only when the token is no longer valid.
pub async fn ensure_fresh(login: Login) -> Result<Login, AuthError> {
    let mut keeper = LoginKeeper::new(RefreshPolicy::default());
    Ok(keeper.check(login, Need::Now).await?.login)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_token_close_to_expiry_is_left_to_the_cli_until_it_expires() {
        let policy = RefreshPolicy::default();
        assert_eq!(policy.hands_off(), Duration::from_secs(90));
        let expires_at = time::macros::datetime!(2026-11-30 12:00:00 UTC);
        let at = |s: i64| expires_at + time::Duration::seconds(s);
        assert!(
            !policy.leave_to_cli(at(-300), expires_at),
            "qbox's own window"
        );
        assert!(!policy.leave_to_cli(at(-91), expires_at));
        assert!(policy.leave_to_cli(at(-90), expires_at));
        assert!(policy.leave_to_cli(at(-1), expires_at));
        assert!(
            !policy.leave_to_cli(at(0), expires_at),
            "expired: anyone refreshes"
        );
        assert!(!policy.leave_to_cli(at(30), expires_at));
    }

    #[test]
    fn the_window_is_capped_at_half_the_lifetime() {
        let policy = RefreshPolicy::default();
        assert_eq!(policy.window(Some(60 * MIN)), 5 * MIN);
        assert_eq!(policy.window(Some(8 * MIN)), 4 * MIN);
        assert_eq!(
            policy.window(Some(Duration::from_secs(75))),
            Duration::from_millis(37_500)
        );
        assert_eq!(policy.window(Some(Duration::ZERO)), Duration::ZERO);
        // A lifetime no one recorded: the window as given.
        assert_eq!(policy.window(None), 5 * MIN);
        let expires_at = time::macros::datetime!(2026-11-30 12:00:00 UTC);
        assert_eq!(
            policy.refresh_at(expires_at, Some(60 * MIN)),
            time::macros::datetime!(2026-11-30 11:55:00 UTC)
        );
        assert_eq!(
            policy.refresh_at(expires_at, Some(Duration::from_secs(90))),
            time::macros::datetime!(2026-11-30 11:59:15 UTC)
        );
        let narrow = RefreshPolicy::with_refresh_before(Duration::from_secs(10));
        assert_eq!(narrow.window(Some(60 * MIN)), Duration::from_secs(10));
    }

    #[test]
    fn retries_back_off_with_jitter_and_respect_the_interval() {
        let policy = RefreshPolicy::default();
        let far = 60 * MIN;
        assert_eq!(policy.retry_delay(1, far, 0.0), Duration::from_secs(30));
        assert_eq!(policy.retry_delay(2, far, 0.0), Duration::from_secs(60));
        assert_eq!(policy.retry_delay(3, far, 0.0), Duration::from_secs(120));
        assert_eq!(policy.retry_delay(9, far, 0.0), MAX_BACKOFF);
        assert_eq!(policy.retry_delay(40, far, 0.0), MAX_BACKOFF);
        // Jitter adds up to a quarter, never takes away.
        assert_eq!(
            policy.retry_delay(2, far, 0.999_999),
            Duration::from_secs(60).mul_f64(1.0 + 0.999_999 / 4.0)
        );
        assert!(policy.retry_delay(1, far, 0.5) > Duration::from_secs(30));
        // Close to expiry: no later than halfway there...
        assert_eq!(
            policy.retry_delay(4, Duration::from_secs(150), 0.0),
            Duration::from_secs(75)
        );
        // ...but never sooner than the minimum interval.
        assert_eq!(
            policy.retry_delay(4, Duration::from_secs(20), 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            policy.retry_delay(4, Duration::ZERO, 0.0),
            Duration::from_secs(240)
        );
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
