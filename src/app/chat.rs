//! `chat`: one prompt to Amazon Q through qbox's own streaming client,
//! the answer streamed to stdout as it arrives, in a conversation kept
//! across runs (shared by `qbox` and `qbox-sidecar`).

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;

use crate::exit::{self, CommandError};
use crate::qapi::conversation::parse_conversation_id;
use crate::qapi::{ConversationError, ConversationStore, QClient};
use crate::store::StoreQuery;
use crate::timefmt::rfc3339_seconds;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox chat \"explain this error: E0502\"
  git diff | qbox chat -                      # the prompt from stdin
  qbox chat --format json \"hi\" | jq -c .     # one JSON object per event
  qbox chat --conversation-id ID \"and then?\" # ID: printed on stderr after each answer
  qbox chat --list-conversations
  qbox chat --forget ID

Conversations are kept in <data dir>/qbox/conversations (QBOX_STATE_DIR/conversations when
set; in the sidecar, in memory unless QBOX_STATE_DIR is set).
Exit codes: 0 ok, 1 service or transport error, 2 usage (also an unknown conversation id),
4 no usable login.")]
pub struct ChatArgs {
    /// The prompt; `-` or nothing (with stdin not a terminal) reads stdin.
    prompt: Option<String>,
    /// Model id to ask for (default: the service's choice).
    #[arg(long)]
    model: Option<String>,
    /// Continue this conversation (its id is printed on stderr after each answer).
    #[arg(long, value_name = "ID")]
    conversation_id: Option<String>,
    /// `text` prints the answer; `json` prints one JSON object per event.
    #[arg(long, value_enum, default_value_t = ChatFormat::Text)]
    format: ChatFormat,
    /// List the stored conversations (id, turns, last update, first prompt) and exit.
    #[arg(long, conflicts_with_all = ["prompt", "model", "conversation_id", "forget"])]
    list_conversations: bool,
    /// Delete the stored conversation ID and exit.
    #[arg(long, value_name = "ID", conflicts_with_all = ["prompt", "model", "conversation_id"])]
    forget: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChatFormat {
    Text,
    Json,
}

/// Which binary runs `chat`, which decides where conversations live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSide {
    /// `qbox chat`: the user's data directory (or `QBOX_STATE_DIR`).
    Host,
    /// `qbox-sidecar chat`: `QBOX_STATE_DIR`, else memory (the image's root is read-only).
    Sidecar,
}

impl ChatSide {
    fn store(self) -> Result<ConversationStore, ConversationError> {
        match self {
            Self::Host => ConversationStore::from_env_or_data_dir(),
            Self::Sidecar => Ok(ConversationStore::from_env_or_memory()),
        }
    }
}

fn read_prompt(arg: Option<String>) -> anyhow::Result<String> {
    let from_stdin = match arg.as_deref() {
        Some("-") => true,
        Some(_) => false,
        None if std::io::stdin().is_terminal() => {
            return Err(CommandError::new(exit::USAGE, "no prompt given")
                .hint("pass it as an argument, or pipe it in and use `-`")
                .into());
        }
        None => true,
    };
    let prompt = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the prompt from stdin")?;
        text
    } else {
        arg.unwrap_or_default()
    };
    if prompt.trim().is_empty() {
        return Err(CommandError::new(exit::USAGE, "the prompt is empty").into());
    }
    Ok(prompt)
}

/// Runs `chat`. `refresh` allows refreshing an expired token in the store.
pub async fn run(
    args: ChatArgs,
    query: StoreQuery,
    refresh: bool,
    quiet: bool,
    side: ChatSide,
) -> anyhow::Result<u8> {
    let store = side.store()?;
    if args.list_conversations {
        return list(&store, args.format);
    }
    if let Some(id) = &args.forget {
        let id = parse_conversation_id(id)?;
        store.forget(&id)?;
        if !quiet {
            eprintln!("forgot conversation {id}");
        }
        return Ok(exit::OK);
    }
    let prompt = read_prompt(args.prompt)?;
    let client = QClient::from_env(query, refresh)?.with_conversations(store);
    let mut turn = client
        .chat(&prompt, args.model, args.conversation_id.as_deref())
        .await?;
    let mut stdout = std::io::stdout().lock();
    let mut ends_with_newline = true;
    let result = async {
        while let Some(event) = turn.next_event().await? {
            match args.format {
                ChatFormat::Json => writeln!(stdout, "{}", event.to_json()),
                ChatFormat::Text => match event.text() {
                    Some(text) if !text.is_empty() => {
                        ends_with_newline = text.ends_with('\n');
                        stdout.write_all(text.as_bytes())
                    }
                    _ => Ok(()),
                },
            }
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        }
        anyhow::Ok(())
    }
    .await;
    if args.format == ChatFormat::Text && !ends_with_newline {
        let _ = writeln!(stdout);
    }
    let _ = stdout.flush();
    result?;
    // Only a saved turn has a conversation to continue.
    if !quiet {
        eprintln!("conversation: {}", turn.conversation_id());
    }
    Ok(exit::OK)
}

/// `--list-conversations`: one line per conversation (text) or a JSON array.
fn list(store: &ConversationStore, format: ChatFormat) -> anyhow::Result<u8> {
    let summaries = store.list()?;
    let mut stdout = std::io::stdout().lock();
    match format {
        ChatFormat::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&summaries)?),
        ChatFormat::Text => summaries.iter().try_for_each(|s| {
            let updated = s.updated_at.map_or_else(|| "-".to_owned(), rfc3339_seconds);
            let about = s
                .problem
                .as_deref()
                .map_or_else(|| s.title.clone(), |p| format!("(unreadable: {p})"));
            writeln!(
                stdout,
                "{}  {:>3} turn{}  {updated}  {about}",
                s.conversation_id,
                s.turns,
                if s.turns == 1 { " " } else { "s" }
            )
        }),
    }
    .context("writing to stdout")?;
    Ok(exit::OK)
}
