//! The one wording of the login keeper's events ([`WatchEvent`]): `qbox
//! snapshot --watch` shows them on the terminal, `qbox run` shows the
//! warnings among them, and a detached container's keeper writes them all to
//! its log. Each place decides where a line goes and which it keeps; what a
//! line says is decided here, so the three never drift apart.

use time::OffsetDateTime;

use crate::exit::{self, Diagnose};
use crate::store::watch::WatchEvent;
use crate::timefmt::{relative, rfc3339_seconds};

/// What an event is worth to the person watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Things going as they should (hidden by `--quiet`).
    Progress,
    /// Something the person may need to act on (shown even with `--quiet`).
    Warning,
}

/// One event in words. The text may quote a server or a file: whoever
/// prints it passes it through [`super::report::printable_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub weight: Weight,
    pub text: String,
    pub hint: Option<String>,
}

/// `event` in words; `now` is the moment token lifetimes are measured from.
pub fn describe(event: &WatchEvent<'_>, now: OffsetDateTime) -> Described {
    let progress = |text: String| Described {
        weight: Weight::Progress,
        text,
        hint: None,
    };
    let warning = |text: String, hint: Option<String>| Described {
        weight: Weight::Warning,
        text,
        hint,
    };
    match event {
        WatchEvent::Written { expires_at, .. } => progress(match expires_at {
            Some(at) => format!(
                "snapshot written: token valid until {} ({})",
                rfc3339_seconds(*at),
                relative(*at, now)
            ),
            None => "snapshot written: no login on the host".to_owned(),
        }),
        WatchEvent::Refreshed { expires_at } => progress(format!(
            "host login refreshed, valid until {}",
            rfc3339_seconds(*expires_at)
        )),
        WatchEvent::Recreated { path } => warning(
            format!(
                "{} was missing (its directory deleted?); wrote it again",
                path.display()
            ),
            None,
        ),
        WatchEvent::WriteFailed { error } => warning(
            format!(
                "{}; the previous snapshot stays, retrying on the next pass",
                exit::chain(*error)
            ),
            None,
        ),
        WatchEvent::RefreshFailed { error, retry_in } => warning(
            format!(
                "{}; retrying in {}s",
                exit::chain(*error),
                retry_in.as_secs()
            ),
            error.hint(),
        ),
        WatchEvent::Unrefreshable { error } => warning(exit::chain(*error), error.hint()),
        WatchEvent::SourceProblem { error } => warning(
            format!("{}; the snapshot is left as it was", exit::chain(*error)),
            error.hint(),
        ),
    }
}
