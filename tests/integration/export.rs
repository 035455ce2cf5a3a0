//! `qbox export-token`: exact output of every format, for both CLIs.

use std::collections::BTreeMap;
use std::path::Path;

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

    // --format github: only the masks on stdout (the variables go to the
    // file GITHUB_ENV names; see the issue_13 tests below).
    let github_env = home.path().join("github_env");
    let github = home
        .qbox()
        .env("GITHUB_ENV", &github_env)
        .args(["export-token", "--format", "github"])
        .run();
    github.assert_code(0).assert_stderr_contains(WARNING);
    assert_eq!(
        github.stdout,
        "::add-mask::aoa-access-fmt\n::add-mask::aor-refresh-fmt\n"
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
    // The shell, and the qbox it starts, get the harness's clean environment.
    let out = crate::util::clean_command("sh", home.path())
        .args(["-c", &script])
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

/// Reads a `GITHUB_ENV` file with the rules of the GitHub Actions runner on
/// Linux (its `SetEnvFileCommand`): lines end at LF and empty ones are
/// skipped; a line whose first `=` comes before any `<<` is `NAME=VALUE`; a
/// line whose `<<` comes first is `NAME<<DELIMITER`, and the value is every
/// following line up to the first one equal to the delimiter (joined by
/// LF); any other line, an empty name or delimiter, or a missing closing
/// delimiter fails the step. Later entries override earlier ones.
fn parse_like_the_runner(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.is_empty() || text.ends_with('\n') {
        lines.pop();
    }
    let mut vars = BTreeMap::new();
    let mut rest = lines.into_iter();
    while let Some(line) = rest.next() {
        if line.is_empty() {
            continue;
        }
        let equals = line.find('=');
        let heredoc = line.find("<<");
        match (equals, heredoc) {
            (Some(eq), hd) if hd.is_none_or(|hd| eq < hd) => {
                let (name, value) = (&line[..eq], &line[eq + 1..]);
                if name.is_empty() {
                    return Err(format!("invalid format {line:?}: empty name"));
                }
                vars.insert(name.to_owned(), value.to_owned());
            }
            (_, Some(hd)) => {
                let (name, delimiter) = (&line[..hd], &line[hd + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return Err(format!("invalid format {line:?}: empty name or delimiter"));
                }
                let mut value = Vec::new();
                loop {
                    match rest.next() {
                        Some(next) if next == delimiter => break,
                        Some(next) => value.push(next),
                        None => return Err(format!("matching delimiter not found {delimiter:?}")),
                    }
                }
                vars.insert(name.to_owned(), value.join("\n"));
            }
            _ => return Err(format!("invalid format {line:?}")),
        }
    }
    Ok(vars)
}

/// The delimiters of the heredoc entries in a `GITHUB_ENV` file.
fn delimiters(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_once("<<").map(|(_, d)| d.to_owned()))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn issue_13_the_runner_parser_rejects_what_the_old_recipe_appended() {
    // `--format github >> "$GITHUB_ENV"` used to append the masks too: the
    // runner fails the step on them, so nothing was masked or set.
    let old = "::add-mask::aoa-x\nQBOX_ACCESS_TOKEN=aoa-x\n";
    assert!(parse_like_the_runner(old).is_err());
    let token_with_equals = "::add-mask::aoa=x\n";
    assert_eq!(
        parse_like_the_runner(token_with_equals).unwrap()["::add-mask::aoa"],
        "x",
        "a token with `=` turned into a variable name"
    );
    assert!(parse_like_the_runner("A<<EOF\nvalue\n").is_err());
}

#[test]
fn issue_13_github_format_masks_in_the_log_and_appends_variables_the_runner_reads() {
    let home = TestHome::new();
    let mut login = valid_login("gha");
    login.profile_arn = Some("arn:aws:codewhisperer:eu-central-1:123456789012:profile/P1".into());
    home.login(Flavor::Kiro, &login);
    let github_env = home.path().join("set_env_file");
    std::fs::write(&github_env, "EARLIER=kept\n").unwrap();

    let mut seen_delimiters = Vec::new();
    for _ in 0..2 {
        let before = read(&github_env);
        let run = home
            .qbox()
            .env("GITHUB_ENV", &github_env)
            .args(["export-token", "--format", "github"])
            .run();
        run.assert_code(0)
            .assert_stderr_contains(WARNING)
            .assert_stderr_contains("appended QBOX_ACCESS_TOKEN, QBOX_REFRESH_TOKEN");
        // The log gets the masks and nothing else: no NAME=value lines.
        assert_eq!(
            run.stdout,
            "::add-mask::aoa-access-gha\n::add-mask::aor-refresh-gha\n"
        );
        assert!(
            !run.stdout.lines().any(|l| l.contains('=')),
            "{}",
            run.stdout
        );

        let after = read(&github_env);
        assert!(after.starts_with(&before), "the file is appended to");
        let appended = &after[before.len()..];
        let new_delimiters = delimiters(appended);
        assert_eq!(new_delimiters.len(), 5, "one heredoc per variable");
        seen_delimiters.push(new_delimiters[0].clone());

        let vars = parse_like_the_runner(&after).unwrap_or_else(|err| panic!("{err}:\n{after}"));
        let expected: BTreeMap<String, String> = [
            ("EARLIER", "kept"),
            ("QBOX_ACCESS_TOKEN", "aoa-access-gha"),
            ("QBOX_REFRESH_TOKEN", "aor-refresh-gha"),
            ("QBOX_TOKEN_EXPIRES_AT", rfc3339(login.expires_at).as_str()),
            ("QBOX_REGION", "eu-central-1"),
            (
                "QBOX_PROFILE_ARN",
                "arn:aws:codewhisperer:eu-central-1:123456789012:profile/P1",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(vars, expected);
    }
    assert_ne!(
        seen_delimiters[0], seen_delimiters[1],
        "each run draws a fresh delimiter"
    );
}

#[test]
fn issue_13_github_format_values_cannot_smuggle_in_variables() {
    let home = TestHome::new();
    // A token shaped to end a heredoc or start an entry of its own.
    let sly = "aoa=EVIL<<EOF";
    let mut login = valid_login("sly");
    login.access_token = sly.to_owned();
    home.login(Flavor::AmazonQ, &login);
    let github_env = home.path().join("set_env_file");
    let run = home
        .qbox()
        .env("GITHUB_ENV", &github_env)
        .args(["export-token", "--format", "github"])
        .run();
    run.assert_code(0);
    assert!(run.stdout.starts_with(&format!("::add-mask::{sly}\n")));
    let vars = parse_like_the_runner(&read(&github_env)).unwrap();
    assert_eq!(vars["QBOX_ACCESS_TOKEN"], sly);
    assert_eq!(
        vars.keys().collect::<Vec<_>>(),
        [
            "QBOX_ACCESS_TOKEN",
            "QBOX_REFRESH_TOKEN",
            "QBOX_REGION",
            "QBOX_TOKEN_EXPIRES_AT"
        ]
    );
}

#[test]
fn issue_13_github_format_outside_actions_is_a_usage_error() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("nogha"));
    for value in [None, Some("")] {
        let mut qbox = home.qbox().args(["export-token", "--format", "github"]);
        if let Some(value) = value {
            qbox = qbox.env("GITHUB_ENV", value);
        }
        let run = qbox.run();
        run.assert_code(2)
            .assert_one_line_error()
            .assert_stderr_contains("GITHUB_ENV is unset or empty")
            .assert_stderr_contains("hint: run it in a GitHub Actions step");
        assert_eq!(run.stdout, "", "nothing, not even a mask, reaches the log");
    }
    // A GITHUB_ENV that cannot be appended to is an error naming it.
    let run = home
        .qbox()
        .env("GITHUB_ENV", home.path())
        .args(["export-token", "--format", "github"])
        .run();
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("cannot append to");
}

/// What the runner's `ActionCommand` does to a command's data before it
/// registers a mask (`%0D`, then `%0A`, then `%25`).
fn unescape_mask_like_the_runner(data: &str) -> String {
    data.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

#[test]
fn issue_30_github_masks_are_escaped_so_the_runner_masks_the_token_itself() {
    let home = TestHome::new();
    // A `%0A` in a token used to be read by the runner as a line break (so
    // the mask was something else), and a real line break ended the
    // command early, leaving the rest unmasked.
    let percent = "aoa%0Aperc%25ent";
    let broken = "aor-first\r\nsecond%";
    let mut login = valid_login("pct");
    login.access_token = percent.to_owned();
    login.refresh_token = Some(broken.to_owned());
    home.login(Flavor::AmazonQ, &login);
    let github_env = home.path().join("set_env_file");
    let run = home
        .qbox()
        .env("GITHUB_ENV", &github_env)
        .args(["export-token", "--format", "github"])
        .run();
    run.assert_code(0);
    let masks: Vec<String> = run
        .stdout
        .lines()
        .map(|line| {
            let data = line
                .strip_prefix("::add-mask::")
                .unwrap_or_else(|| panic!("not a mask command: {line:?}"));
            unescape_mask_like_the_runner(data)
        })
        .collect();
    assert_eq!(
        masks,
        [percent, broken, "aor-first", "second%"],
        "{}",
        run.stdout
    );
    let vars = parse_like_the_runner(&read(&github_env)).unwrap();
    assert_eq!(vars["QBOX_ACCESS_TOKEN"], percent);
    assert_eq!(vars["QBOX_REFRESH_TOKEN"], broken);
}
