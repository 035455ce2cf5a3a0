//! Refresh through a real loopback SSO OIDC stand-in: success writes the
//! token back exactly as the CLI would; every failure leaves the store as it
//! was, byte for byte.

use qbox::standin::oidc::{OidcBehavior, StandinOidc};
use qbox::store::{self, Flavor};
use serde_json::Value;

use crate::util::{TestHome, expired_login, file_bytes};

async fn standin() -> StandinOidc {
    StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-old",
    )
    .await
    .unwrap()
}

fn stored_token(path: &std::path::Path, flavor: Flavor) -> Value {
    let conn = rusqlite::Connection::open(path).unwrap();
    let raw: String = conn
        .query_row(
            "SELECT value FROM auth_kv WHERE key = ?1",
            [flavor.token_key()],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_and_written_back_for_both_clis() {
    for flavor in Flavor::ALL {
        let oidc = standin().await;
        let home = TestHome::new();
        let path = home.login(flavor, &expired_login("old"));
        let before = stored_token(&path, flavor);

        let run = home
            .qbox()
            .env("QBOX_OIDC_ENDPOINT", oidc.url())
            .args(["export-token", "--field", "access"])
            .run_async()
            .await;
        run.assert_code(0);
        assert_eq!(run.stdout, "standin-access-1\n");

        let requests = oidc.requests();
        assert_eq!(requests.len(), 1);
        let body = &requests[0].body;
        assert_eq!(body["grantType"], "refresh_token");
        assert_eq!(body["clientId"], "fixture-client-id");
        assert_eq!(body["clientSecret"], "fixture-client-secret");
        assert_eq!(body["refreshToken"], "aor-refresh-old");

        let after = stored_token(&path, flavor);
        assert_eq!(after["access_token"], "standin-access-1");
        assert_eq!(
            after["refresh_token"], "standin-refresh-1",
            "rotated refresh token kept"
        );
        for kept in ["start_url", "oauth_flow", "scopes", "region"] {
            assert_eq!(after[kept], before[kept], "{kept} preserved");
        }
        let expires: time::OffsetDateTime = time::OffsetDateTime::parse(
            after["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let lifetime = expires - time::OffsetDateTime::now_utc();
        assert!(
            lifetime > time::Duration::minutes(55),
            "expiry from expiresIn"
        );

        // The next run uses the stored token without calling the service.
        let again = home
            .qbox()
            .env("QBOX_OIDC_ENDPOINT", oidc.url())
            .args(["export-token", "--field", "access"])
            .run_async()
            .await;
        assert_eq!(again.stdout, "standin-access-1\n");
        assert_eq!(oidc.requests().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_refresh_flag_never_calls_the_service() {
    let oidc = standin().await;
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &expired_login("old"));
    let before = file_bytes(&path);
    let run = home
        .qbox()
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .args(["export-token", "--no-refresh"])
        .run_async()
        .await;
    run.assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("expired at");
    assert!(oidc.requests().is_empty());
    assert_eq!(file_bytes(&path), before);
}

/// Runs export-token against a failing stand-in and checks the exit code,
/// the message, that nothing reached stdout, and that the store is
/// byte-for-byte unchanged. Returns the run for further checks.
async fn failing_refresh(behavior: OidcBehavior, code: i32, message: &str) -> crate::util::Run {
    let oidc = standin().await;
    oidc.set_behavior(behavior);
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &expired_login("old"));
    let before = file_bytes(&path);
    let run = home
        .qbox()
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .args(["export-token"])
        .run_async()
        .await;
    run.assert_code(code)
        .assert_one_line_error()
        .assert_stderr_contains(message);
    assert_eq!(run.stdout, "");
    assert_eq!(
        file_bytes(&path),
        before,
        "a failed refresh leaves the store alone"
    );
    assert_eq!(oidc.requests().len(), 1);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_means_no_usable_login_and_keeps_the_store() {
    failing_refresh(OidcBehavior::InvalidGrant, 4, "invalid_grant")
        .await
        .assert_stderr_contains("hint: ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_is_an_error_and_keeps_the_store() {
    failing_refresh(OidcBehavior::ServerError(503), 1, "http 503")
        .await
        .assert_stderr_contains("hint: ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answer_is_an_error_and_keeps_the_store() {
    failing_refresh(OidcBehavior::Garbage, 1, "unexpected answer").await;
}

#[test]
fn unreachable_service_is_a_network_error() {
    // Bind and drop a listener so the port is known to refuse connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &expired_login("old"));
    let before = file_bytes(&path);
    let run = home
        .qbox()
        .env("QBOX_OIDC_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .args(["export-token"])
        .run();
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("cannot reach")
        .assert_stderr_contains("QBOX_OIDC_ENDPOINT");
    assert_eq!(file_bytes(&path), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refreshed_by_someone_else_meanwhile_wins() {
    // The stand-in rejects our refresh token because another program
    // already rotated it; qbox must then use the other program's token.
    let oidc = standin().await;
    oidc.set_behavior(OidcBehavior::InvalidGrant);
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &expired_login("old"));
    let login = store::read_login(&path, Some(Flavor::AmazonQ)).unwrap();
    // Another writer stores a fresh token after qbox read the old one.
    let fresh = crate::util::valid_login("other-writer");
    crate::util::replace_stored_token(&path, Flavor::AmazonQ, &fresh.token_json());
    let clients = store::Refreshers {
        oidc: store::OidcClient::new(Some(oidc.url())).unwrap(),
        kiro: store::KiroAuthClient::new(Some(oidc.url())).unwrap(),
    };
    let mut keeper = store::LoginKeeper::new(store::RefreshPolicy::default()).with_clients(clients);
    let result = keeper.check(login, store::Need::Now).await.unwrap().login;
    // The keeper re-read the store under the refresh lock and found the
    // other writer's token: the old refresh token was never sent.
    assert!(oidc.requests().is_empty());
    assert_eq!(
        result.token.unwrap().token.access_token.expose(),
        "aoa-access-other-writer"
    );
    assert_eq!(
        stored_token(&path, Flavor::AmazonQ)["access_token"],
        "aoa-access-other-writer"
    );
}
