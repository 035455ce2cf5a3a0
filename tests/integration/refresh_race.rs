//! qbox's keeper against a CLI that refreshes the same store as the Kiro
//! CLI 2.2.1 does (`auth/builder_id.rs`): no lock, a refresh inside its last
//! window before expiry, the new token written unconditionally, the login
//! deleted when the token service refuses the refresh token. The token
//! service rotates refresh tokens and refuses a spent one, so two parties
//! that spend the same refresh token log the user out whenever the CLI is
//! the one refused. The test counts those lost logins over many rounds.
//!
//! Time is scaled down: tokens live 5 s, the CLI's window is 1 s (the real
//! one is 60 s, with tokens of an hour); qbox's policy gets the same scale
//! through its public fields.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use qbox::standin::oidc::{OidcBehavior, StandinOidc};
use qbox::store::{
    Flavor, KiroAuthClient, LoginKeeper, Need, OidcClient, RefreshPolicy, Refreshers,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::util::{TestHome, valid_login};

const LIFETIME_S: i64 = 5;
const CLI_WINDOW: Duration = Duration::from_secs(1);

/// What the stand-in CLI did.
#[derive(Debug, Default)]
struct CliCounts {
    refreshed: AtomicU32,
    /// Refreshes the service refused, after which the CLI deleted the login.
    lost: AtomicU32,
}

fn read_token(path: &Path) -> Option<Value> {
    let conn = rusqlite::Connection::open(path).ok()?;
    let raw: String = conn
        .query_row(
            "SELECT value FROM auth_kv WHERE key = ?1",
            [Flavor::Kiro.token_key()],
            |row| row.get(0),
        )
        .ok()?;
    serde_json::from_str(&raw).ok()
}

fn write_token(path: &Path, token: &Value) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO auth_kv (key, value) VALUES (?1, ?2)",
        [Flavor::Kiro.token_key(), &token.to_string()],
    )
    .unwrap();
}

/// One pass of the stand-in CLI: refreshes when the token is inside its
/// window, as the CLI's `load` does on every command.
async fn cli_pass(path: &Path, oidc_url: &str, http: &reqwest::Client, counts: &CliCounts) {
    let Some(mut token) = read_token(path) else {
        return;
    };
    let expires_at = OffsetDateTime::parse(
        token["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let cli_window = time::Duration::try_from(CLI_WINDOW).unwrap();
    if OffsetDateTime::now_utc() + cli_window <= expires_at {
        return;
    }
    let answer = http
        .post(format!("{oidc_url}/token"))
        .json(&json!({
            "clientId": "fixture-client-id",
            "clientSecret": "fixture-client-secret",
            "grantType": "refresh_token",
            "refreshToken": token["refresh_token"],
        }))
        .send()
        .await
        .unwrap();
    if !answer.status().is_success() {
        // The CLI deletes the login on a refused refresh.
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute(
            "DELETE FROM auth_kv WHERE key = ?1",
            [Flavor::Kiro.token_key()],
        )
        .unwrap();
        counts.lost.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let grant: Value = answer.json().await.unwrap();
    let expires_in = grant["expiresIn"].as_i64().unwrap();
    token["access_token"] = grant["accessToken"].clone();
    token["refresh_token"] = grant["refreshToken"].clone();
    token["expires_at"] =
        qbox::timefmt::rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(expires_in))
            .into();
    write_token(path, &token);
    counts.refreshed.fetch_add(1, Ordering::SeqCst);
}

/// The login back after the CLI lost it (the user logging in again), so
/// that the rounds can go on and every loss is counted.
fn log_in_again(path: &Path, oidc: &StandinOidc) {
    if read_token(path).is_some() {
        return;
    }
    let mut login = valid_login("race");
    login.refresh_token = Some(oidc.current_refresh_token());
    login.expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(LIFETIME_S);
    write_token(path, &serde_json::from_str(&login.token_json()).unwrap());
}

struct Race {
    path: PathBuf,
    oidc: Arc<StandinOidc>,
    counts: Arc<CliCounts>,
    keeper_on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    qbox_refreshes: Arc<AtomicU32>,
}

impl Race {
    async fn start(home: &TestHome) -> Self {
        let mut login = valid_login("race");
        login.expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(LIFETIME_S);
        let path = home.login(Flavor::Kiro, &login);
        let oidc = StandinOidc::start(
            "fixture-client-id",
            "fixture-client-secret",
            login.refresh_token.as_deref().unwrap(),
        )
        .await
        .unwrap();
        oidc.set_behavior(OidcBehavior::Issue {
            expires_in: LIFETIME_S,
            rotate: true,
        });
        Self {
            path,
            oidc: Arc::new(oidc),
            counts: Arc::default(),
            keeper_on: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            qbox_refreshes: Arc::default(),
        }
    }

    /// The stand-in CLI, run on every pass as a user would run it often.
    fn spawn_cli(&self) -> tokio::task::JoinHandle<()> {
        let (path, oidc, counts, stop) = (
            self.path.clone(),
            Arc::clone(&self.oidc),
            Arc::clone(&self.counts),
            Arc::clone(&self.stop),
        );
        tokio::spawn(async move {
            let http = qbox::http::client(None).unwrap();
            let url = oidc.url();
            while !stop.load(Ordering::SeqCst) {
                cli_pass(&path, &url, &http, &counts).await;
                log_in_again(&path, &oidc);
                tokio::time::sleep(Duration::from_millis(37)).await;
            }
        })
    }

    /// qbox's keeper (what `snapshot --watch` and `qbox run` run), with the
    /// policy scaled as the CLI is, while `keeper_on` is set.
    fn spawn_keeper(&self) -> tokio::task::JoinHandle<()> {
        let (path, oidc, keeper_on, stop, refreshes) = (
            self.path.clone(),
            Arc::clone(&self.oidc),
            Arc::clone(&self.keeper_on),
            Arc::clone(&self.stop),
            Arc::clone(&self.qbox_refreshes),
        );
        tokio::spawn(async move {
            let policy = RefreshPolicy {
                refresh_before: Duration::from_millis(2500),
                min_interval: Duration::from_millis(200),
                max_backoff: Duration::from_secs(1),
                cli_window: CLI_WINDOW,
            };
            let clients = Refreshers {
                oidc: OidcClient::new(Some(oidc.url())).unwrap(),
                kiro: KiroAuthClient::new(None).unwrap(),
            };
            let mut keeper = LoginKeeper::new(policy).with_clients(clients);
            while !stop.load(Ordering::SeqCst) {
                if keeper_on.load(Ordering::SeqCst)
                    && let Ok(login) = qbox::store::read_login(&path, Some(Flavor::Kiro))
                    && let Ok(checked) = keeper.check(login, Need::Ahead).await
                    && matches!(
                        checked.event,
                        Some(qbox::store::KeeperEvent::Refreshed { .. })
                    )
                {
                    refreshes.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_refreshing_the_same_store_never_loses_the_login_to_qbox() {
    let home = TestHome::new();
    let race = Race::start(&home).await;
    let cli = race.spawn_cli();
    let keeper = race.spawn_keeper();

    // Both run all the time: qbox refreshes ahead of the CLI's window.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let qbox_alone = race.qbox_refreshes.load(Ordering::SeqCst);
    let cli_alone = race.counts.refreshed.load(Ordering::SeqCst);
    assert!(qbox_alone >= 3, "qbox refreshed {qbox_alone} times");

    // The keeper stops and starts again, as a laptop's keeper does: the
    // CLI refreshes while it is away, qbox takes over the CLI's tokens.
    for _ in 0..4 {
        race.keeper_on.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        race.keeper_on.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3000)).await;
    }
    race.stop.store(true, Ordering::SeqCst);
    cli.await.unwrap();
    keeper.await.unwrap();

    let lost = race.counts.lost.load(Ordering::SeqCst);
    let cli_refreshes = race.counts.refreshed.load(Ordering::SeqCst);
    let qbox_refreshes = race.qbox_refreshes.load(Ordering::SeqCst);
    eprintln!(
        "refresh race: qbox {qbox_refreshes} refreshes, the CLI {cli_refreshes} ({cli_alone} while both ran), lost logins {lost}"
    );
    assert_eq!(cli_alone, 0, "the CLI refreshed although qbox's keeper ran");
    assert!(
        cli_refreshes >= 2,
        "the CLI refreshed {cli_refreshes} times"
    );
    assert!(qbox_refreshes > qbox_alone, "qbox took over again");
    assert_eq!(lost, 0, "the CLI lost the login {lost} times");
    // Every grant the service made ended up in the store or was replaced
    // by a later one: the store holds the current refresh token.
    let token = read_token(&race.path).unwrap();
    assert_eq!(token["refresh_token"], race.oidc.current_refresh_token());
}

/// The moment the race is lost when nothing prevents it: a token inside the
/// CLI's window, qbox starting a refresh, the CLI starting its own while
/// qbox's request is in flight on a slow service. Without qbox's rule the
/// CLI is refused and deletes the login; with it, qbox leaves the token to
/// the CLI and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qbox_leaves_a_token_inside_the_clis_window_to_the_cli() {
    const ROUNDS: u32 = 4;
    let mut lost_by_arm = Vec::new();
    for cli_window in [CLI_WINDOW, Duration::ZERO] {
        let home = TestHome::new();
        let race = Race::start(&home).await;
        race.oidc.set_delay(Duration::from_millis(300));
        let http = qbox::http::client(None).unwrap();
        let mut qbox_refreshed = 0;
        for _ in 0..ROUNDS {
            // The token 1.2 s from expiry: inside the CLI's 1 s window by
            // the time the CLI looks, inside qbox's 1.5 s hands-off zone.
            let mut token = read_token(&race.path).unwrap_or_else(|| {
                serde_json::from_str(&valid_login("race").token_json()).unwrap()
            });
            token["refresh_token"] = race.oidc.current_refresh_token().into();
            token["expires_at"] = qbox::timefmt::rfc3339(
                OffsetDateTime::now_utc() + time::Duration::milliseconds(1200),
            )
            .into();
            write_token(&race.path, &token);
            let policy = RefreshPolicy {
                refresh_before: Duration::from_millis(2500),
                min_interval: Duration::from_millis(10),
                max_backoff: Duration::from_secs(1),
                cli_window,
            };
            let clients = Refreshers {
                oidc: OidcClient::new(Some(race.oidc.url())).unwrap(),
                kiro: KiroAuthClient::new(None).unwrap(),
            };
            let path = race.path.clone();
            let qbox = tokio::spawn(async move {
                let mut keeper = LoginKeeper::new(policy).with_clients(clients);
                let login = qbox::store::read_login(&path, Some(Flavor::Kiro)).unwrap();
                keeper.check(login, Need::Ahead).await.unwrap().event
            });
            tokio::time::sleep(Duration::from_millis(250)).await;
            cli_pass(&race.path, &race.oidc.url(), &http, &race.counts).await;
            if matches!(
                qbox.await.unwrap(),
                Some(qbox::store::KeeperEvent::Refreshed { .. })
            ) {
                qbox_refreshed += 1;
            }
            log_in_again(&race.path, &race.oidc);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let lost = race.counts.lost.load(Ordering::SeqCst);
        eprintln!(
            "cli window {cli_window:?}: qbox refreshed {qbox_refreshed}, the CLI lost the login {lost} times"
        );
        if cli_window == CLI_WINDOW {
            assert_eq!(qbox_refreshed, 0, "qbox refreshed inside the CLI's window");
        }
        lost_by_arm.push(lost);
    }
    assert_eq!(
        lost_by_arm[0], 0,
        "the CLI lost the login although qbox kept out"
    );
    assert!(
        lost_by_arm[1] > 0,
        "without the rule the race is lost: the test must be able to see it"
    );
}
