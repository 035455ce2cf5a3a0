//! The one place errors are printed for people, and the exit code they mean.
//!
//! Every failure prints `error: <what, with the path or value>` and, where a
//! next step exists, `hint: <what to do>` on the following line. Both lines
//! pass through [`printable_line`]: no known secret and no control character
//! reaches the terminal, whatever a server or a file put in the message.
//! A closed stdout (`qbox ... | head -1`) anywhere in the chain is not a
//! failure: the process exits 0 and prints nothing.
//!
//! Warnings have one voice too: [`warn`] prints `warning: <what>` and an
//! optional `hint:` line, cleaned the same way, for both binaries.

use std::error::Error;

use crate::exit::{self, Diagnose};

use super::term::Palette;

/// The first cause in `cause`'s chain that carries an exit code and a hint.
///
/// `anyhow` can only downcast to concrete types, so every type that
/// implements [`Diagnose`] is listed here once; the invariants test fails
/// when one is missing.
fn diagnosis<'a>(cause: &'a (dyn Error + 'static)) -> Option<&'a dyn Diagnose> {
    macro_rules! known {
        ($($ty:ty),+ $(,)?) => {
            $(if let Some(found) = cause.downcast_ref::<$ty>() {
                return Some(found);
            })+
        };
    }
    known!(
        exit::CommandError,
        crate::container::run::RunError,
        crate::container::runtime_dir::RuntimeDirError,
        crate::container::keeper::KeeperError,
        crate::container::spec::SpecError,
        crate::container::options::OptionError,
        crate::container::static_binary::StaticBinaryError,
        crate::container::sidecar_image::SidecarImageError,
        crate::container::sidecar_image::McpSidecarError,
        crate::container::agent_image::AgentImageError,
        crate::qapi::ApiError,
        crate::qapi::ConversationError,
        crate::store::AuthError,
        crate::store::StoreError,
        crate::store::RefreshError,
        crate::mcp::client::CallError,
    );
    None
}

/// The exit code and hint `err` carries (1 and none when no cause says).
pub fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    err.chain()
        .find_map(diagnosis)
        .map(|found| (found.exit_code(), found.hint()))
        .unwrap_or((exit::ERROR, None))
}

/// True when the chain holds a write to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `err` and its causes on one line, each cause once (`what: why: why`).
pub fn render(err: &anyhow::Error) -> String {
    exit::chain(err.as_ref())
}

/// Prints the error (and its hint) to stderr and returns the exit code.
pub fn report(err: &anyhow::Error, palette: Palette) -> u8 {
    if is_broken_pipe(err) {
        // The reader went away (`| head -1`): what it wanted, it has.
        return exit::OK;
    }
    let (code, hint) = classify(err);
    eprintln!(
        "{} {}",
        palette.error("error:"),
        printable_line(&render(err))
    );
    if let Some(hint) = hint {
        eprintln!("{} {}", palette.bold("hint:"), printable_line(&hint));
    }
    code
}

/// The prefix of every warning, on a terminal or in a keeper's log.
pub const WARNING: &str = "warning:";

/// Prints a warning to stderr: `warning: <message>` and, when given,
/// `hint: <hint>` on the next line, both through [`printable_line`]. The one
/// prefix for both binaries; the palette colours it (never under
/// `NO_COLOR`, `TERM=dumb` or off a terminal).
pub fn warn(palette: Palette, message: &str, hint: Option<&str>) {
    eprintln!("{} {}", palette.warning(WARNING), printable_line(message));
    if let Some(hint) = hint {
        eprintln!("{} {}", palette.bold("hint:"), printable_line(hint));
    }
}

/// `text` as one line fit for a terminal: every known secret redacted and
/// every control character (escape sequences, CR, LF) made a space, so no
/// part of a message can move the cursor or start a line of its own (a
/// forged `hint:`). Messages that quote a server have already been
/// sanitised where they were built; this is the last line of defence for
/// everything else printed about an error.
pub fn printable_line(text: &str) -> String {
    // Cleaned first, so that no escape sequence splits a secret in two
    // before redaction looks for it.
    crate::secret::redact(&crate::http::clean_remote(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_line_redacts_secrets_and_flattens_control_characters() {
        crate::secret::register("exit-unit-secret-token");
        let shown = printable_line("bad exit-unit-secret-token\x1b[31m\r\nhint: run this");
        assert_eq!(shown, "bad [redacted]   hint: run this");
    }

    #[test]
    fn a_closed_pipe_anywhere_in_the_chain_is_quiet_success() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::new(pipe).context("writing to stdout");
        assert!(is_broken_pipe(&err));
        assert_eq!(report(&err, Palette::plain()), exit::OK);
        let other = anyhow::anyhow!("broken pipe, but only in words");
        assert!(!is_broken_pipe(&other));
    }

    /// Every variant of every error type the crate reports, each with the
    /// exit code it must map to. The `expected_*` functions match without a
    /// wildcard: a new variant does not compile until someone decides its
    /// code here.
    mod every_error {
        use std::path::PathBuf;
        use std::time::Duration;

        use super::super::*;
        use crate::container::agent_image::AgentImageError;
        use crate::container::keeper::KeeperError;
        use crate::container::options::OptionError;
        use crate::container::run::RunError;
        use crate::container::runtime_dir::RuntimeDirError;
        use crate::container::sidecar_image::{McpSidecarError, SidecarImageError};
        use crate::container::spec::SpecError;
        use crate::container::static_binary::StaticBinaryError;
        use crate::eventstream::FrameError;
        use crate::exit::CommandError;
        use crate::mcp::client::CallError;
        use crate::qapi::{ApiError, ConversationError, ErrorKind};
        use crate::store::{AuthError, Flavor, RefreshError, StoreError};

        const NO_LOGIN: u8 = exit::NO_LOGIN;
        const ERROR: u8 = exit::ERROR;

        fn path() -> PathBuf {
            PathBuf::from("/home/u/.local/share/amazon-q/data.sqlite3")
        }

        fn io(text: &str) -> std::io::Error {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, text.to_owned())
        }

        fn when() -> time::OffsetDateTime {
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
        }

        fn store_errors() -> Vec<StoreError> {
            vec![
                StoreError::NotFound {
                    searched: vec![path()],
                },
                StoreError::ExplicitPathMissing { path: path() },
                StoreError::NotAFile { path: path() },
                StoreError::PermissionDenied { path: path() },
                StoreError::NotSqlite { path: path() },
                StoreError::Corrupt {
                    path: path(),
                    detail: "bad page".into(),
                },
                StoreError::MissingTable {
                    path: path(),
                    table: "auth_kv".into(),
                },
                StoreError::Locked {
                    path: path(),
                    waited: Duration::from_secs(5),
                },
                StoreError::NoToken {
                    path: path(),
                    flavor: Flavor::AmazonQ,
                },
                StoreError::BadJson {
                    path: path(),
                    key: "k".into(),
                    detail: "truncated json".into(),
                },
                StoreError::Unrefreshable {
                    path: path(),
                    flavor: Flavor::Kiro,
                    expires_at: when(),
                    reason: "no refresh token".into(),
                },
                StoreError::AccessOnlyExpired {
                    path: path(),
                    expires_at: when(),
                },
                StoreError::UnsafeDirectory {
                    path: path(),
                    reason: "others can write it".into(),
                },
                StoreError::HotJournal {
                    path: path(),
                    source: rusqlite::Error::InvalidQuery,
                },
                StoreError::UntrustedJournal {
                    path: path(),
                    reason: "it belongs to uid 1001".into(),
                },
                StoreError::Sqlite {
                    path: path(),
                    source: rusqlite::Error::InvalidQuery,
                },
                StoreError::io("reading", path(), io("sqlite source text")),
            ]
        }

        fn expected_store(e: &StoreError) -> u8 {
            match e {
                StoreError::NotFound { .. }
                | StoreError::ExplicitPathMissing { .. }
                | StoreError::NoToken { .. }
                | StoreError::Unrefreshable { .. }
                | StoreError::AccessOnlyExpired { .. } => NO_LOGIN,
                StoreError::NotAFile { .. }
                | StoreError::PermissionDenied { .. }
                | StoreError::NotSqlite { .. }
                | StoreError::Corrupt { .. }
                | StoreError::MissingTable { .. }
                | StoreError::Locked { .. }
                | StoreError::BadJson { .. }
                | StoreError::UnsafeDirectory { .. }
                | StoreError::HotJournal { .. }
                | StoreError::UntrustedJournal { .. }
                | StoreError::Sqlite { .. }
                | StoreError::Io { .. } => ERROR,
            }
        }

        fn refresh_errors() -> Vec<RefreshError> {
            let url = "https://oidc.us-east-1.amazonaws.com/token".to_owned();
            vec![
                RefreshError::Rejected {
                    url: url.clone(),
                    status: 400,
                    code: "invalid_grant".into(),
                    description: Some("expired".into()),
                },
                RefreshError::Server {
                    url: url.clone(),
                    status: 500,
                },
                RefreshError::Redirected {
                    url: url.clone(),
                    status: 302,
                    location: "http://x".into(),
                    env: "QBOX_OIDC_ENDPOINT",
                },
                RefreshError::Network {
                    url: url.clone(),
                    detail: "connection refused".into(),
                    env: "QBOX_KIRO_AUTH_ENDPOINT",
                },
                RefreshError::BadResponse {
                    url: url.clone(),
                    detail: "missing field".into(),
                    env: "QBOX_OIDC_ENDPOINT",
                },
                // An external identity provider's endpoint: no variable
                // overrides it.
                RefreshError::Redirected {
                    url: url.clone(),
                    status: 302,
                    location: "http://x".into(),
                    env: "",
                },
                RefreshError::Network {
                    url: url.clone(),
                    detail: "connection refused".into(),
                    env: "",
                },
                RefreshError::BadResponse {
                    url,
                    detail: "missing field".into(),
                    env: "",
                },
                RefreshError::Client("no roots".into()),
            ]
        }

        fn expected_refresh(e: &RefreshError) -> u8 {
            match e {
                RefreshError::Rejected { .. } => NO_LOGIN,
                RefreshError::Server { .. }
                | RefreshError::Redirected { .. }
                | RefreshError::Network { .. }
                | RefreshError::BadResponse { .. }
                | RefreshError::Client(_) => ERROR,
            }
        }

        fn conversation_errors() -> Vec<ConversationError> {
            let id = "0f8fad5b-d9cb-469f-a165-70867728950e".to_owned();
            vec![
                ConversationError::InvalidId { id: "nope".into() },
                ConversationError::Unknown {
                    id: id.clone(),
                    place: "memory".into(),
                },
                ConversationError::Corrupt {
                    path: path(),
                    detail: "truncated json".into(),
                },
                ConversationError::Busy { id: id.clone() },
                ConversationError::Io {
                    action: "reading",
                    path: path(),
                    source: io("conversation io text"),
                },
                ConversationError::Write {
                    id,
                    source: StoreError::io("writing", path(), io("disk full text")),
                },
                ConversationError::Directory {
                    source: StoreError::UnsafeDirectory {
                        path: path(),
                        reason: "not yours".into(),
                    },
                },
                ConversationError::NoDataDir,
            ]
        }

        fn expected_conversation(e: &ConversationError) -> u8 {
            match e {
                ConversationError::InvalidId { .. } | ConversationError::Unknown { .. } => {
                    exit::USAGE
                }
                ConversationError::Write { source, .. }
                | ConversationError::Directory { source } => expected_store(source),
                ConversationError::Corrupt { .. }
                | ConversationError::Busy { .. }
                | ConversationError::Io { .. }
                | ConversationError::NoDataDir => ERROR,
            }
        }

        fn api_errors() -> Vec<ApiError> {
            let url = "https://q.us-east-1.amazonaws.com/".to_owned();
            let mut errors = vec![
                ApiError::Http {
                    status: 403,
                    kind: ErrorKind::ExpiredToken,
                    code: "ExpiredTokenException".into(),
                    message: "expired".into(),
                },
                ApiError::Http {
                    status: 429,
                    kind: ErrorKind::Throttling,
                    code: "ThrottlingException".into(),
                    message: String::new(),
                },
                ApiError::Exception {
                    kind: ErrorKind::MonthlyLimit,
                    code: "ServiceQuotaExceededException".into(),
                    message: "MONTHLY_REQUEST_COUNT".into(),
                },
                ApiError::Transport {
                    url: url.clone(),
                    detail: "connection reset".into(),
                },
                ApiError::Redirect {
                    url: url.clone(),
                    status: 302,
                    location: "http://x".into(),
                },
                ApiError::Timeout {
                    url: url.clone(),
                    seconds: 300,
                    waiting_for: "before answering",
                },
                ApiError::NotEventStream {
                    url,
                    content_type: "text/html".into(),
                    detail: "<html>".into(),
                },
                ApiError::Frame(FrameError::TruncatedFrame {
                    have: 3,
                    needed: 16,
                }),
                ApiError::BadEvent {
                    event_type: "assistantResponseEvent".into(),
                    detail: "eof".into(),
                },
                ApiError::MissingMessageType,
                ApiError::AnswerTooLarge { limit: 2 },
                ApiError::BadSetting {
                    name: "QBOX_Q_TIMEOUT",
                    value: "soon".into(),
                    problem: "is not a number".into(),
                },
                ApiError::NoLogin("no store".into()),
                ApiError::BareTokenExpired {
                    expires_at: "2024-01-01T00:00:00Z".into(),
                },
            ];
            errors.extend(
                conversation_errors()
                    .into_iter()
                    .map(ApiError::Conversation),
            );
            errors.extend(
                store_errors()
                    .into_iter()
                    .map(|e| ApiError::Auth(AuthError::Store(e))),
            );
            errors.push(ApiError::ApiKey(crate::qapi::api_key::ApiKeyError {
                source_name: "KIRO_API_KEY".into(),
                problem: "is set but empty".into(),
            }));
            errors.push(ApiError::ApiKeyRejected {
                source_name: "KIRO_API_KEY".into(),
                detail: "amazon q denied access".into(),
            });
            errors.extend(
                refresh_errors()
                    .into_iter()
                    .map(|e| ApiError::Auth(AuthError::Refresh(e))),
            );
            errors
        }

        fn expected_auth(e: &AuthError) -> u8 {
            match e {
                AuthError::Store(e) => expected_store(e),
                AuthError::Refresh(e) => expected_refresh(e),
            }
        }

        fn expected_api(e: &ApiError) -> u8 {
            match e {
                ApiError::Http { kind, .. } | ApiError::Exception { kind, .. } => {
                    if *kind == ErrorKind::ExpiredToken {
                        NO_LOGIN
                    } else {
                        ERROR
                    }
                }
                ApiError::NoLogin(_)
                | ApiError::BareTokenExpired { .. }
                | ApiError::ApiKeyRejected { .. } => NO_LOGIN,
                ApiError::BadSetting { .. } | ApiError::ApiKey(_) => exit::USAGE,
                ApiError::Conversation(e) => expected_conversation(e),
                ApiError::Auth(e) => expected_auth(e),
                ApiError::Transport { .. }
                | ApiError::Redirect { .. }
                | ApiError::Timeout { .. }
                | ApiError::NotEventStream { .. }
                | ApiError::Frame(_)
                | ApiError::BadEvent { .. }
                | ApiError::MissingMessageType
                | ApiError::AnswerTooLarge { .. } => ERROR,
            }
        }

        fn run_errors() -> Vec<RunError> {
            vec![
                RunError::Engine {
                    endpoint: "unix:///var/run/docker.sock".into(),
                    detail: "refused".into(),
                },
                RunError::ImageMissing {
                    image: "img".into(),
                },
                RunError::NameConflict { name: "n".into() },
                RunError::CannotInvoke {
                    image: "img".into(),
                    detail: "permission denied".into(),
                },
                RunError::CommandNotFound {
                    image: "img".into(),
                    detail: "executable file not found".into(),
                },
                RunError::Failed("engine text".into()),
                RunError::Interrupted(crate::container::run::StopSignal::TERMINATE),
                RunError::EngineLost {
                    id: "abc".into(),
                    detail: "eof".into(),
                },
            ]
        }

        fn expected_run(e: &RunError) -> u8 {
            match e {
                RunError::CannotInvoke { .. } => exit::CANNOT_INVOKE,
                RunError::CommandNotFound { .. } => exit::COMMAND_NOT_FOUND,
                RunError::Engine { .. }
                | RunError::ImageMissing { .. }
                | RunError::NameConflict { .. }
                | RunError::Failed(_)
                | RunError::EngineLost { .. } => exit::ENGINE,
                RunError::Interrupted(signal) => signal.exit_code(),
            }
        }

        fn runtime_dir_errors() -> Vec<RuntimeDirError> {
            let mut errors = vec![
                RuntimeDirError::Unsafe {
                    path: path(),
                    reason: "it belongs to another user (uid 1000)".into(),
                },
                RuntimeDirError::Io {
                    action: "listing",
                    path: path(),
                    source: io("permission denied"),
                },
            ];
            errors.extend(store_errors().into_iter().map(RuntimeDirError::from));
            errors
        }

        fn expected_runtime_dir(e: &RuntimeDirError) -> u8 {
            match e {
                RuntimeDirError::Unsafe { .. }
                | RuntimeDirError::Io { .. }
                | RuntimeDirError::Store(_) => exit::ENGINE,
            }
        }

        fn spec_errors() -> Vec<SpecError> {
            vec![
                SpecError::LiveNotCliDir(path()),
                SpecError::LiveUnresolved(path(), "no such file".into()),
            ]
        }

        fn expected_spec(e: &SpecError) -> u8 {
            match e {
                SpecError::LiveNotCliDir(_) | SpecError::LiveUnresolved(..) => exit::ENGINE,
            }
        }

        fn option_errors() -> Vec<OptionError> {
            vec![
                OptionError::Invalid {
                    option: "--publish",
                    value: "x".into(),
                    expected: "a port".into(),
                },
                OptionError::Env("=x".into()),
                OptionError::Volume("a".into()),
                OptionError::VolumeSourceMissing(path()),
                OptionError::ReservedTarget("/run/qbox/auth".into()),
                OptionError::User("a:b:c".into()),
                OptionError::Memory("1k".into()),
                OptionError::UndoesReadOnlyLogin {
                    option: "--cap-add",
                    value: "CAP_SYS_ADMIN".into(),
                },
            ]
        }

        fn expected_option(e: &OptionError) -> u8 {
            match e {
                OptionError::Invalid { .. }
                | OptionError::Env(_)
                | OptionError::Volume(_)
                | OptionError::VolumeSourceMissing(_)
                | OptionError::ReservedTarget(_)
                | OptionError::User(_)
                | OptionError::Memory(_)
                | OptionError::UndoesReadOnlyLogin { .. } => exit::ENGINE,
            }
        }

        fn static_binary_errors() -> Vec<StaticBinaryError> {
            vec![
                StaticBinaryError::Read {
                    path: path(),
                    source: io("read text"),
                },
                StaticBinaryError::NotElf { path: path() },
                StaticBinaryError::Dynamic {
                    path: path(),
                    interpreter: "/lib/ld.so".into(),
                },
                StaticBinaryError::WrongArch {
                    path: path(),
                    binary: "arm64".into(),
                    engine: "amd64".into(),
                },
                StaticBinaryError::NothingToBuildFrom,
                StaticBinaryError::CargoMissing(io("cargo missing text")),
                StaticBinaryError::CargoFailed {
                    target: "x86_64-unknown-linux-musl".into(),
                    status: "exit 101".into(),
                },
                StaticBinaryError::NoArtifact,
            ]
        }

        fn expected_static_binary(e: &StaticBinaryError) -> u8 {
            match e {
                StaticBinaryError::Read { .. }
                | StaticBinaryError::NotElf { .. }
                | StaticBinaryError::Dynamic { .. }
                | StaticBinaryError::WrongArch { .. }
                | StaticBinaryError::NothingToBuildFrom
                | StaticBinaryError::CargoMissing(_)
                | StaticBinaryError::CargoFailed { .. }
                | StaticBinaryError::NoArtifact => ERROR,
            }
        }

        fn keeper_errors() -> Vec<KeeperError> {
            let log = || PathBuf::from("/home/u/.local/state/qbox/keepers/c.log");
            let mut errors = vec![
                KeeperError::NoLogDir,
                KeeperError::OpenLog {
                    path: log(),
                    source: io("open log text"),
                },
                KeeperError::CurrentExe(io("current exe text")),
                KeeperError::Start(io("start text")),
                KeeperError::ExitedAtStart {
                    container: "c".into(),
                    status: "exit status: 1".into(),
                    log: log(),
                },
                KeeperError::NotStarted {
                    container: "c".into(),
                    seconds: 20,
                    log: log(),
                },
                KeeperError::NoContainer("c".into()),
                KeeperError::NoSnapshot("c".into()),
                KeeperError::Lock {
                    path: path(),
                    source: io("lock text"),
                },
                KeeperError::Held(path()),
                KeeperError::Record {
                    path: path(),
                    source: io("record text"),
                },
            ];
            errors.extend(store_errors().into_iter().map(KeeperError::LogDir));
            errors.extend(run_errors().into_iter().map(KeeperError::Engine));
            errors
        }

        fn expected_keeper(e: &KeeperError) -> u8 {
            match e {
                KeeperError::LogDir(e) => expected_store(e),
                KeeperError::Engine(e) => expected_run(e),
                KeeperError::NoLogDir
                | KeeperError::OpenLog { .. }
                | KeeperError::CurrentExe(_)
                | KeeperError::Start(_)
                | KeeperError::ExitedAtStart { .. }
                | KeeperError::NotStarted { .. }
                | KeeperError::NoContainer(_)
                | KeeperError::NoSnapshot(_)
                | KeeperError::Lock { .. }
                | KeeperError::Held(_)
                | KeeperError::Record { .. } => ERROR,
            }
        }

        fn sidecar_image_errors() -> Vec<SidecarImageError> {
            let mut errors = vec![SidecarImageError::CannotPack(
                crate::container::bundle::BundleError::NotElf,
            )];
            errors.extend(run_errors().into_iter().map(SidecarImageError::Engine));
            errors.extend(
                static_binary_errors()
                    .into_iter()
                    .map(SidecarImageError::Static),
            );
            errors
        }

        fn expected_sidecar_image(e: &SidecarImageError) -> u8 {
            match e {
                SidecarImageError::Static(e) => expected_static_binary(e),
                // An engine failure while building exits 1, as `docker build` does.
                SidecarImageError::CannotPack(_)
                | SidecarImageError::Engine(_)
                | SidecarImageError::BuildTask(_) => ERROR,
            }
        }

        fn agent_image_errors() -> Vec<AgentImageError> {
            vec![
                AgentImageError::CliUnreadable {
                    path: path(),
                    source: io("cli unreadable text"),
                },
                AgentImageError::CliNotElf {
                    path: path(),
                    found: "it is a script",
                },
                AgentImageError::CliNotExecutable {
                    path: path(),
                    mode: 0o644,
                },
                AgentImageError::CliWrongArch {
                    path: path(),
                    cli: "arm64".into(),
                    sidecar: "amd64".into(),
                },
                AgentImageError::CliNeedsLoader {
                    path: path(),
                    interpreter: "/lib/ld.so".into(),
                    base: "qbox-sidecar:latest".into(),
                },
                AgentImageError::BaseMissing {
                    image: "base:1".into(),
                },
                AgentImageError::BaseWrongPlatform {
                    image: "base:1".into(),
                    platform: "linux/arm64".into(),
                    sidecar: "amd64".into(),
                },
                AgentImageError::ImageWrongPlatform {
                    image: "dev:1".into(),
                    platform: "linux/arm64".into(),
                    sidecar: "amd64".into(),
                },
            ]
        }

        fn expected_agent_image(e: &AgentImageError) -> u8 {
            match e {
                AgentImageError::CliUnreadable { .. }
                | AgentImageError::CliNotElf { .. }
                | AgentImageError::CliNotExecutable { .. }
                | AgentImageError::CliWrongArch { .. }
                | AgentImageError::CliNeedsLoader { .. }
                | AgentImageError::BaseMissing { .. }
                | AgentImageError::BaseWrongPlatform { .. }
                | AgentImageError::ImageWrongPlatform { .. } => ERROR,
            }
        }

        fn call_errors() -> Vec<CallError> {
            vec![
                CallError::Spawn {
                    program: "qbox-sidecar".into(),
                    source: io("spawn text"),
                },
                CallError::Connect {
                    endpoint: "http://127.0.0.1:1/mcp".into(),
                    detail: "refused".into(),
                },
                CallError::Unauthorized {
                    endpoint: "http://127.0.0.1:1/mcp".into(),
                },
                CallError::Call {
                    tool: "q-chat".into(),
                    detail: "closed".into(),
                },
            ]
        }

        fn expected_call(e: &CallError) -> u8 {
            match e {
                CallError::Spawn { .. }
                | CallError::Connect { .. }
                | CallError::Unauthorized { .. }
                | CallError::Call { .. } => ERROR,
            }
        }

        /// Each error as a command would return it (sometimes with a
        /// context line on top), with the code it must exit with.
        fn table() -> Vec<(anyhow::Error, u8)> {
            let mut table: Vec<(anyhow::Error, u8)> = Vec::new();
            macro_rules! add {
                ($errors:expr, $expected:expr) => {
                    for e in $errors {
                        let code = $expected(&e);
                        table.push((anyhow::Error::new(e), code));
                    }
                };
            }
            add!(store_errors(), expected_store);
            add!(refresh_errors(), expected_refresh);
            add!(
                store_errors().into_iter().map(AuthError::Store),
                expected_auth
            );
            add!(
                refresh_errors().into_iter().map(AuthError::Refresh),
                expected_auth
            );
            add!(conversation_errors(), expected_conversation);
            add!(api_errors(), expected_api);
            add!(run_errors(), expected_run);
            add!(runtime_dir_errors(), expected_runtime_dir);
            add!(spec_errors(), expected_spec);
            add!(option_errors(), expected_option);
            add!(static_binary_errors(), expected_static_binary);
            add!(agent_image_errors(), expected_agent_image);
            add!(keeper_errors(), expected_keeper);
            add!(sidecar_image_errors(), expected_sidecar_image);
            for e in [
                McpSidecarError::CannotRun {
                    image: "img".into(),
                    why: crate::container::bundle::BundleError::NotElf,
                },
                McpSidecarError::Unreadable {
                    path: path(),
                    user: "1000".into(),
                    image: "img".into(),
                },
            ] {
                table.push((e.into(), exit::ENGINE));
            }
            add!(call_errors(), expected_call);
            for (code, expected) in [(exit::USAGE, exit::USAGE), (NO_LOGIN, NO_LOGIN)] {
                table.push((
                    CommandError::new(code, "a command's own error").into(),
                    expected,
                ));
            }
            // A context line over a typed error keeps the typed error's code.
            for e in store_errors() {
                let code = expected_store(&e);
                table.push((anyhow::Error::new(e).context("preparing the login"), code));
            }
            table
        }

        #[test]
        fn every_error_maps_to_its_code_and_no_line_repeats_a_cause() {
            let table = table();
            assert!(table.len() > 80, "{}", table.len());
            for (err, expected) in &table {
                let shown = render(err);
                let (code, _) = classify(err);
                assert_eq!(code, *expected, "exit code of `{shown}`");
                let mut causes = err.chain();
                let mut outer = causes.next().unwrap().to_string();
                for cause in causes {
                    let inner = cause.to_string();
                    assert!(
                        inner.is_empty() || !outer.contains(&inner),
                        "`{outer}` repeats its cause `{inner}`"
                    );
                    assert_eq!(
                        shown.matches(&inner).count(),
                        1,
                        "`{shown}` repeats `{inner}`"
                    );
                    outer = inner;
                }
            }
        }
    }
}
