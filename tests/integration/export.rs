//! `qbox export-token`: exact output of every format, for both CLIs.

use qbox::store::Flavor;
use qbox::timefmt::rfc3339;

use crate::util::{TestHome, valid_login};

const WARNING: &str = "warning: this token grants access to your AWS account";

#[test]
fn json_is_the_default_and_exact_for_both_clis() {
    for flavor in Flavor::ALL {
        let home = TestHome::new();
        let login = valid_login("json");
        home.login(flavor, &login);
        let run = home.qbox().args(["export-token"]).run();
        run.assert_code(0).assert_stderr_contains(WARNING);
        let expected = format!(
            "{{\n  \"accessToken\": \"aoa-access-json\",\n  \"refreshToken\": \"aor-refresh-json\",\n  \"expiresAt\": \"{}\",\n  \"region\": \"us-east-1\",\n  \"profileArn\": null\n}}\n",
            rfc3339(login.expires_at)
        );
        assert_eq!(run.stdout, expected, "flavor {flavor:?}");
    }
}

#[test]
fn env_shell_and_github_formats_are_exact() {
    let home = TestHome::new();
    let mut login = valid_login("fmt");
    login.profile_arn = Some("arn:aws:codewhisperer:eu-central-1:123456789012:profile/P1".into());
    home.login(Flavor::Kiro, &login);
    let expires = rfc3339(login.expires_at);

    let env = home.qbox().args(["export-token", "--format", "env"]).run();
    env.assert_code(0).assert_stderr_contains(WARNING);
    assert_eq!(
        env.stdout,
        format!(
            "QBOX_ACCESS_TOKEN=aoa-access-fmt\nQBOX_REFRESH_TOKEN=aor-refresh-fmt\nQBOX_TOKEN_EXPIRES_AT={expires}\nQBOX_REGION=eu-central-1\nQBOX_PROFILE_ARN=arn:aws:codewhisperer:eu-central-1:123456789012:profile/P1\n"
        )
    );

    let shell = home
        .qbox()
        .args(["export-token", "--format", "shell"])
        .run();
    shell.assert_code(0).assert_stderr_contains(WARNING);
    assert_eq!(
        shell.stdout,
        format!(
            "export QBOX_ACCESS_TOKEN='aoa-access-fmt'\nexport QBOX_REFRESH_TOKEN='aor-refresh-fmt'\nexport QBOX_TOKEN_EXPIRES_AT='{expires}'\nexport QBOX_REGION='eu-central-1'\nexport QBOX_PROFILE_ARN='arn:aws:codewhisperer:eu-central-1:123456789012:profile/P1'\n"
        )
    );

    let github = home
        .qbox()
        .args(["export-token", "--format", "github"])
        .run();
    github.assert_code(0).assert_stderr_contains(WARNING);
    assert_eq!(
        github.stdout,
        format!(
            "::add-mask::aoa-access-fmt\n::add-mask::aor-refresh-fmt\nQBOX_ACCESS_TOKEN=aoa-access-fmt\nQBOX_REFRESH_TOKEN=aor-refresh-fmt\nQBOX_TOKEN_EXPIRES_AT={expires}\nQBOX_REGION=eu-central-1\nQBOX_PROFILE_ARN=arn:aws:codewhisperer:eu-central-1:123456789012:profile/P1\n"
        )
    );
}

#[test]
fn shell_output_evaluates_in_a_real_shell() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("eval"));
    let script = format!(
        "eval \"$('{}' export-token --format shell 2>/dev/null)\" && printf %s \"$QBOX_ACCESS_TOKEN\"",
        env!("CARGO_BIN_EXE_qbox")
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.data_dir())
        .env_remove("QBOX_DB")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "aoa-access-eval");
}

#[test]
fn field_prints_one_raw_value() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("field"));
    let access = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run();
    access.assert_code(0).assert_stderr_contains(WARNING);
    assert_eq!(access.stdout, "aoa-access-field\n");
    let refresh = home
        .qbox()
        .args(["export-token", "--field", "refresh"])
        .run();
    refresh.assert_code(0);
    assert_eq!(refresh.stdout, "aor-refresh-field\n");
}

#[test]
fn field_refresh_without_refresh_token_fails_clearly() {
    let home = TestHome::new();
    let mut login = valid_login("norefresh");
    login.refresh_token = None;
    home.login(Flavor::AmazonQ, &login);
    let run = home
        .qbox()
        .args(["export-token", "--field", "refresh"])
        .run();
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("has no refresh token");
    assert_eq!(run.stdout, "");
}

#[test]
fn explicit_db_wins_over_discovery() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("default"));
    let other = home.path().join("elsewhere.sqlite3");
    qbox::store::schema::StoreBuilder::create(&other, Flavor::Kiro)
        .unwrap()
        .login(&valid_login("explicit"))
        .unwrap();
    let by_flag = home
        .qbox()
        .args([
            "--db",
            other.to_str().unwrap(),
            "export-token",
            "--field",
            "access",
        ])
        .run();
    by_flag.assert_code(0);
    assert_eq!(by_flag.stdout, "aoa-access-explicit\n");
    let by_env = home
        .qbox()
        .env("QBOX_DB", &other)
        .args(["export-token", "--field", "access"])
        .run();
    assert_eq!(by_env.stdout, "aoa-access-explicit\n");
}

#[test]
fn both_clis_installed_prefers_the_usable_login_unless_told() {
    let home = TestHome::new();
    let mut unusable = crate::util::expired_login("q");
    unusable.refresh_token = None;
    home.login(Flavor::AmazonQ, &unusable);
    home.login(Flavor::Kiro, &valid_login("kiro"));
    let picked = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run();
    picked.assert_code(0);
    assert_eq!(picked.stdout, "aoa-access-kiro\n");

    let forced = home
        .qbox()
        .args([
            "--cli",
            "q",
            "export-token",
            "--field",
            "access",
            "--no-refresh",
        ])
        .run();
    forced.assert_code(4).assert_one_line_error();
    let by_env = home
        .qbox()
        .env("QBOX_CLI", "kiro")
        .args(["export-token", "--field", "access"])
        .run();
    assert_eq!(by_env.stdout, "aoa-access-kiro\n");
}

#[test]
fn both_valid_prefers_the_most_recent_login() {
    let home = TestHome::new();
    let mut older = valid_login("older");
    older.expires_at -= time::Duration::minutes(30);
    home.login(Flavor::Kiro, &older);
    home.login(Flavor::AmazonQ, &valid_login("newer"));
    let run = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run();
    assert_eq!(run.stdout, "aoa-access-newer\n");
}

#[test]
fn completions_and_help() {
    let home = TestHome::new();
    let bash = home.qbox().args(["completions", "bash"]).run();
    bash.assert_code(0);
    assert!(bash.stdout.contains("export-token"), "{}", bash.stdout);
    let help = home.qbox().args(["export-token", "--help"]).run();
    help.assert_code(0);
    assert!(help.stdout.contains("Examples:"));
    let usage = home.qbox().args(["export-token", "--format", "yaml"]).run();
    usage.assert_code(2);
    assert_eq!(usage.stdout, "");
    let conflict = home
        .qbox()
        .args(["export-token", "--format", "env", "--field", "access"])
        .run();
    conflict.assert_code(2);
}
