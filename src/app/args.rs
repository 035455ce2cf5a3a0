//! Parsers for option values that clap does not know, and the rule that an
//! empty environment variable counts as unset.

use std::time::Duration;

/// Unbinds, in `command` and all its subcommands, every option whose
/// environment variable is set to the empty string, so that clap treats
/// `QBOX_DB=` like an unset `QBOX_DB` instead of failing with "a value is
/// required". CI templates set variables to "" to mean unset, and Docker
/// and the AWS CLI read them that way. (Variables qbox reads itself go
/// through helpers that ignore empty values the same way.)
pub fn ignore_empty_env(command: clap::Command) -> clap::Command {
    // Rebuilding a command's arguments allocates on every start, and almost
    // no run has an empty variable: look before touching anything.
    if !has_empty_env(&command) {
        return command;
    }
    command
        .mut_args(|arg| {
            if env_is_empty(&arg) {
                arg.env(None::<&'static str>)
            } else {
                arg
            }
        })
        .mut_subcommands(ignore_empty_env)
}

/// Whether an option of `command` or of one of its subcommands has its
/// environment variable set to the empty string.
fn has_empty_env(command: &clap::Command) -> bool {
    command.get_arguments().any(env_is_empty) || command.get_subcommands().any(has_empty_env)
}

fn env_is_empty(arg: &clap::Arg) -> bool {
    arg.get_env()
        .and_then(std::env::var_os)
        .is_some_and(|value| value.is_empty())
}

/// Parses `90`, `90s`, `500ms`, `5m` or `1h` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 2s, 500ms, 5m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    // `from_secs_f64` panics past u64::MAX seconds; such a value is refused.
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}` is longer than any duration qbox can wait"))
}

/// Like [`parse_duration`], but zero is refused.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_positive_duration("0").is_err());
        // Past u64::MAX seconds: an error, not a panic.
        assert!(parse_duration("99999999999999999999999h").is_err());
        assert!(parse_duration(&"9".repeat(400)).is_err());
    }
}
