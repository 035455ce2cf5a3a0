//! Tokens never appear in logs, at any level, on any path (including a
//! refresh, where every secret crosses the process).

use qbox::standin::oidc::StandinOidc;
use qbox::store::Flavor;

use crate::util::{TestHome, expired_login};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_contain_tokens() {
    let oidc = StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-old",
    )
    .await
    .unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &expired_login("old"));
    let secrets = [
        "aoa-access-old",
        "aor-refresh-old",
        "fixture-client-secret",
        "standin-access-1",
        "standin-refresh-1",
    ];
    for args in [
        vec!["-vvv", "export-token"],
        vec!["-vvv", "doctor"],
        vec!["-vvv", "export-token", "--format", "github"],
    ] {
        let run = home
            .qbox()
            .env("GITHUB_ENV", home.path().join("github_env"))
            .env("RUST_LOG", "trace")
            .env("QBOX_OIDC_ENDPOINT", oidc.url())
            .args(&args)
            .run_async()
            .await;
        run.assert_code(0);
        assert!(
            run.stderr.lines().count() > 2,
            "trace logging is on, so there is output to search:\n{}",
            run.stderr
        );
        for secret in secrets {
            assert!(
                !run.stderr.contains(secret),
                "{secret} leaked into logs of {args:?}:\n{}",
                run.stderr
            );
        }
    }
    assert_eq!(oidc.requests().len(), 1, "the refresh happened once");
}
