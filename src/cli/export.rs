//! `qbox export-token`: the login's tokens on stdout, in the form a script
//! or CI system wants, with a warning on stderr every time.
//!
//! `--format github` does a GitHub Actions step's whole job itself: the
//! `::add-mask::` commands go to stdout (the job log, where the runner reads
//! them), and the variables are appended to the file `GITHUB_ENV` names, in
//! the runner's `NAME<<DELIMITER` form with a delimiter drawn fresh for
//! every run, so no value can end its own entry and start another.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use time::OffsetDateTime;

use crate::app::term::Palette;
use crate::exit::{self, CommandError};
use crate::store::StoreQuery;
pub use crate::store::export::Exported;
use crate::timefmt::rfc3339;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox export-token                          # pretty JSON
  qbox export-token --format env > qbox.env  # for docker run --env-file
  eval \"$(qbox export-token --format shell)\"
  qbox export-token --format github          # in a GitHub Actions step
  curl -H \"Authorization: Bearer $(qbox export-token --field access)\" ...")]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Print only this token, raw, followed by a newline.
    #[arg(long, value_enum, conflicts_with = "format")]
    field: Option<Field>,
    /// Never refresh: fail (exit 4) if the token has expired.
    #[arg(long)]
    no_refresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Pretty JSON: accessToken, refreshToken, expiresAt, region, profileArn.
    Json,
    /// NAME=value lines (docker --env-file, systemd EnvironmentFile).
    Env,
    /// `export NAME='value'` lines for eval in sh, bash and zsh.
    Shell,
    /// In a GitHub Actions step: `::add-mask::` lines on stdout, the
    /// variables appended to the file named by $GITHUB_ENV.
    Github,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Field {
    Access,
    Refresh,
}

impl Exported {
    /// (name, value, secret) for the line formats, in a stable order.
    fn variables(&self) -> Vec<(&'static str, &str, bool)> {
        let mut vars = vec![("QBOX_ACCESS_TOKEN", self.access_token.expose(), true)];
        if let Some(refresh) = &self.refresh_token {
            vars.push(("QBOX_REFRESH_TOKEN", refresh.expose(), true));
        }
        vars.push(("QBOX_TOKEN_EXPIRES_AT", &self.expires_at, false));
        vars.push(("QBOX_REGION", &self.region, false));
        if let Some(arn) = &self.profile_arn {
            vars.push(("QBOX_PROFILE_ARN", arn, false));
        }
        vars
    }
}

/// Environment variable naming the file a GitHub Actions step appends its
/// variables to.
pub const GITHUB_ENV: &str = "GITHUB_ENV";

/// Renders what `format` prints on stdout (for `github`, only the masks;
/// the variables go to the file, see [`github_env_entries`]).
pub fn render(exported: &Exported, format: Format) -> Result<String, CommandError> {
    let vars = exported.variables();
    // A newline would end a NAME=value line early and let the rest be read
    // as another variable: refuse rather than emit something ambiguous.
    // (`github` writes heredoc entries and escaped masks, which carry one.)
    if format == Format::Env
        && let Some((name, _, _)) = vars.iter().find(|(_, v, _)| v.contains(['\n', '\r']))
    {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the value of {name} contains a line break and cannot be written as a line"),
        )
        .hint("use --format json or --format shell"));
    }
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(exported).expect("strings always serialize");
            out.push('\n');
        }
        Format::Env => {
            for (name, value, _) in &vars {
                out.push_str(&format!("{name}={value}\n"));
            }
        }
        Format::Shell => {
            for (name, value, _) in &vars {
                out.push_str(&format!("export {name}={}\n", shell_quote(value)));
            }
        }
        Format::Github => {
            // The runner registers a mask when it reads this line in the
            // log, before any later step could print the value.
            for (_, value, secret) in &vars {
                if *secret {
                    for mask in github_masks(value) {
                        out.push_str(&format!("::add-mask::{mask}\n"));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The `::add-mask::` data that hides `value` in a GitHub Actions log.
///
/// The runner un-escapes a command's data (`%25` to `%`, `%0D` to CR, `%0A`
/// to LF) before it registers the mask, so the value is escaped the same
/// way: unescaped, a token holding `%0A` would be masked as something else
/// and a line break would end the command early. The runner matches masks
/// against one log line at a time, so a value with line breaks also gets
/// one mask per line.
pub fn github_masks(value: &str) -> Vec<String> {
    let escape = |text: &str| {
        text.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let mut masks = vec![escape(value)];
    if value.contains(['\n', '\r']) {
        masks.extend(
            value
                .split(['\n', '\r'])
                .filter(|line| !line.trim().is_empty())
                .map(escape),
        );
    }
    masks
}

/// The variables as `GITHUB_ENV` entries: `NAME<<DELIMITER`, the value,
/// `DELIMITER`, one line each. The runner reads a value up to the first line
/// that equals the delimiter, so the delimiter must appear in no value:
/// `None` when one does (the caller draws another): a value with line
/// breaks can only end its entry early on a line equal to the delimiter,
/// which it cannot hold without containing it.
pub fn github_env_entries(exported: &Exported, delimiter: &str) -> Option<String> {
    let vars = exported.variables();
    if vars
        .iter()
        .any(|(name, value, _)| name.contains(delimiter) || value.contains(delimiter))
    {
        return None;
    }
    let mut out = String::new();
    for (name, value, _) in &vars {
        out.push_str(&format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"));
    }
    Some(out)
}

/// A delimiter nobody can predict: 128 random bits from the operating system, so not
/// even a value written to the store by a hostile server can anticipate it.
fn fresh_delimiter() -> Result<String, crate::random::RandomError> {
    Ok(format!("QBOX_EOF_{}", crate::random::hex(16)?))
}

/// The file `GITHUB_ENV` names, or a usage error outside a GitHub Actions
/// step: printing the variables instead would put the tokens in the log.
fn github_env_path() -> Result<PathBuf, CommandError> {
    std::env::var_os(GITHUB_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            CommandError::new(
                exit::USAGE,
                format!(
                    "--format github appends the variables to the file {GITHUB_ENV} names, and {GITHUB_ENV} is unset or empty"
                ),
            )
            .hint(
                "run it in a GitHub Actions step (the runner sets GITHUB_ENV); elsewhere use --format env or --format shell",
            )
        })
}

/// Appends `exported` to the `GITHUB_ENV` file at `path`, in one write.
fn append_github_env(path: &Path, exported: &Exported) -> Result<(), CommandError> {
    let failed = |err: std::io::Error| {
        CommandError::new(
            exit::ERROR,
            format!("cannot append to {} ({GITHUB_ENV}): {err}", path.display()),
        )
    };
    // 128 random bits make a clash a theoretical case; a few draws settle it.
    let mut entries = None;
    for _ in 0..4 {
        entries = github_env_entries(
            exported,
            &fresh_delimiter().map_err(|e| failed(std::io::Error::other(e)))?,
        );
        if entries.is_some() {
            break;
        }
    }
    let entries = entries.ok_or_else(|| {
        CommandError::new(
            exit::ERROR,
            "cannot find a delimiter that no value contains",
        )
    })?;
    // The runner creates the file; creating it here (0600: it will hold
    // tokens) only helps when GITHUB_ENV names a file of one's own.
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(entries.as_bytes()).map_err(failed)
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub async fn run(args: ExportArgs, query: StoreQuery, palette: Palette) -> anyhow::Result<u8> {
    crate::app::report::warn(
        palette,
        "this token grants access to your AWS account: never share it, log it or commit it",
        None,
    );
    // Checked before anything else: no refresh for an export with nowhere to go.
    let github_env = match (args.field, args.format) {
        (None, Format::Github) => Some(github_env_path()?),
        _ => None,
    };
    let exported = if args.no_refresh {
        let now = OffsetDateTime::now_utc();
        let login = query.resolve(now)?;
        let expires_at = login.require_token()?.token.expires_at;
        if login.require_token()?.token.is_expired_at(now) {
            return Err(CommandError::new(
                exit::NO_LOGIN,
                format!(
                    "the token in {} expired at {}",
                    login.path.display(),
                    rfc3339(expires_at)
                ),
            )
            .hint("drop --no-refresh to let qbox refresh it, or log in again")
            .into());
        }
        Exported::from_login(&login)?
    } else {
        crate::store::export::fresh_export(query).await?
    };
    let text = match args.field {
        Some(Field::Access) => format!("{}\n", exported.access_token.expose()),
        Some(Field::Refresh) => match &exported.refresh_token {
            Some(token) => format!("{}\n", token.expose()),
            None => {
                return Err(CommandError::new(
                    exit::ERROR,
                    format!(
                        "the login in {} has no refresh token",
                        exported.path.display()
                    ),
                )
                .hint("device-code and pkce logins have one; log in again to get one")
                .into());
            }
        },
        None => render(&exported, args.format)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    if let Some(path) = github_env {
        append_github_env(&path, &exported)?;
        let names: Vec<&str> = exported
            .variables()
            .iter()
            .map(|(name, _, _)| *name)
            .collect();
        eprintln!(
            "appended {} to {} ({GITHUB_ENV})",
            names.join(", "),
            path.display()
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn sample() -> Exported {
        Exported {
            access_token: Secret::new("aoaA"),
            refresh_token: Some(Secret::new("aorB")),
            expires_at: "2026-11-22T10:00:00Z".into(),
            region: "us-east-1".into(),
            profile_arn: None,
            path: "/store".into(),
        }
    }

    #[test]
    fn shell_quotes_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn line_formats_refuse_line_breaks() {
        let mut bad = sample();
        bad.access_token = Secret::new("a\nEVIL=1");
        assert!(render(&bad, Format::Env).is_err());
        assert!(render(&bad, Format::Github).is_ok());
        assert!(render(&bad, Format::Shell).is_ok());
    }

    /// What the runner's `ActionCommand` does to a command's data.
    fn unescape_like_the_runner(data: &str) -> String {
        data.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%25", "%")
    }

    #[test]
    fn github_masks_are_escaped_as_the_runner_unescapes_them() {
        for value in ["aoa%0Ax", "aoa%25", "100%", "a\nEVIL=1", "x\r\ny%0D"] {
            let masks = github_masks(value);
            assert!(masks.iter().all(|m| !m.contains(['\n', '\r'])), "{masks:?}");
            assert_eq!(unescape_like_the_runner(&masks[0]), value);
        }
        assert_eq!(github_masks("plain"), ["plain"]);
        // Each line of a multi-line value is masked on its own too.
        let lines: Vec<String> = github_masks("a\nEVIL=1")
            .iter()
            .map(|m| unescape_like_the_runner(m))
            .collect();
        assert_eq!(lines, ["a\nEVIL=1", "a", "EVIL=1"]);
    }

    #[test]
    fn github_prints_only_the_masks() {
        let text = render(&sample(), Format::Github).unwrap();
        assert_eq!(text, "::add-mask::aoaA\n::add-mask::aorB\n");
    }

    #[test]
    fn github_env_entries_use_the_delimiter_form() {
        let entries = github_env_entries(&sample(), "EOF_X").unwrap();
        assert!(
            entries
                .starts_with("QBOX_ACCESS_TOKEN<<EOF_X\naoaA\nEOF_X\nQBOX_REFRESH_TOKEN<<EOF_X\n")
        );
        assert!(entries.ends_with("QBOX_REGION<<EOF_X\nus-east-1\nEOF_X\n"));
    }

    #[test]
    fn a_value_holding_the_delimiter_is_never_written_with_it() {
        let mut clash = sample();
        clash.access_token = Secret::new("aoa-EOF_X-tail");
        assert_eq!(github_env_entries(&clash, "EOF_X"), None);
    }

    #[test]
    fn delimiters_differ_every_time() {
        let (a, b) = (fresh_delimiter().unwrap(), fresh_delimiter().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), "QBOX_EOF_".len() + 32);
    }
}
