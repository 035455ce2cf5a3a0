//! `chat`: one prompt to Amazon Q through qbox's own streaming client,
//! the answer streamed to stdout as it arrives (shared by `qbox` and
//! `qbox-sidecar`).

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;

use crate::exit::{self, CommandError};
use crate::qapi::{ChatEvent, GenerateAssistantResponseRequest, QClient};
use crate::store::StoreQuery;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox chat \"explain this error: E0502\"
  git diff | qbox chat -                      # the prompt from stdin
  qbox chat --format json \"hi\" | jq -c .     # one JSON object per event
  qbox chat --conversation-id ID \"and then?\"

Exit codes: 0 ok, 1 service or transport error, 2 usage, 4 no usable login.")]
pub struct ChatArgs {
    /// The prompt; `-` or nothing (with stdin not a terminal) reads stdin.
    prompt: Option<String>,
    /// Model id to ask for (default: the service's choice).
    #[arg(long)]
    model: Option<String>,
    /// Continue this conversation (printed on stderr after each answer).
    #[arg(long)]
    conversation_id: Option<String>,
    /// `text` prints the answer; `json` prints one JSON object per event.
    #[arg(long, value_enum, default_value_t = ChatFormat::Text)]
    format: ChatFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChatFormat {
    Text,
    Json,
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
) -> anyhow::Result<u8> {
    let prompt = read_prompt(args.prompt)?;
    let client = QClient::from_env(query, refresh)?;
    let request =
        GenerateAssistantResponseRequest::prompt(&prompt, args.model, args.conversation_id);
    let mut stream = client.generate(request).await?;
    let mut stdout = std::io::stdout().lock();
    let mut conversation_id = None;
    let mut ends_with_newline = true;
    let result = async {
        while let Some(event) = stream.next_event().await? {
            if let ChatEvent::MessageMetadata(meta) = &event {
                conversation_id = meta.conversation_id.clone().or(conversation_id.take());
            }
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
    if !quiet && let Some(id) = &conversation_id {
        eprintln!("conversation: {id}");
    }
    result?;
    Ok(exit::OK)
}
