//! The tool's parameters, checked one by one so that every mistake gets its
//! own message, and the argument vector they become.

use serde_json::{Map, Value};

/// Validated parameters of one `q-developer-agent` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentArgs {
    pub prompt: String,
    pub resume: bool,
    pub agent: Option<String>,
    pub model: Option<String>,
    pub yolo: bool,
    pub trust_tools: Option<Vec<String>>,
    pub verbose: bool,
}

/// Why the arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("missing required parameter `prompt` (a non-empty string)")]
    MissingPrompt,
    #[error("parameter `prompt` is empty; give the task for Amazon Q in words")]
    EmptyPrompt,
    #[error("parameter `{name}` must be {expected}, got {got}")]
    WrongType {
        name: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error(
        "unknown parameter `{0}`; known: prompt, resume, agent, override-model, yolo-mode, trust-tools, verbose"
    )]
    Unknown(String),
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(args: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ArgsError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ArgsError::WrongType {
            name,
            expected: "a string",
            got: type_name(other),
        }),
    }
}

fn flag(args: &Map<String, Value>, name: &'static str) -> Result<bool, ArgsError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ArgsError::WrongType {
            name,
            expected: "a boolean",
            got: type_name(other),
        }),
    }
}

/// Non-empty trimmed value, or `None`.
fn nonempty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl AgentArgs {
    /// Checks the call's `arguments` object.
    pub fn parse(arguments: Option<&Map<String, Value>>) -> Result<Self, ArgsError> {
        let empty = Map::new();
        let args = arguments.unwrap_or(&empty);
        const KNOWN: [&str; 7] = [
            "prompt",
            "resume",
            "agent",
            "override-model",
            "yolo-mode",
            "trust-tools",
            "verbose",
        ];
        if let Some(unknown) = args.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ArgsError::Unknown(unknown.clone()));
        }
        let prompt = string(args, "prompt")?.ok_or(ArgsError::MissingPrompt)?;
        if prompt.trim().is_empty() {
            return Err(ArgsError::EmptyPrompt);
        }
        let trust_tools = nonempty(string(args, "trust-tools")?).map(|list| {
            list.split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        });
        Ok(Self {
            prompt,
            resume: flag(args, "resume")?,
            agent: nonempty(string(args, "agent")?),
            model: nonempty(string(args, "override-model")?),
            yolo: flag(args, "yolo-mode")?,
            trust_tools: trust_tools.filter(|t| !t.is_empty()),
            verbose: flag(args, "verbose")?,
        })
    }

    /// The arguments after the binary: `chat --no-interactive [...] -- PROMPT`.
    /// The prompt comes after `--`, so a prompt that starts with `-` is never
    /// taken for a flag.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec!["chat".to_owned(), "--no-interactive".to_owned()];
        if self.resume {
            argv.push("--resume".into());
        }
        if let Some(agent) = &self.agent {
            argv.push("--agent".into());
            argv.push(agent.clone());
        }
        if let Some(model) = &self.model {
            argv.push("--model".into());
            argv.push(model.clone());
        }
        if self.yolo {
            argv.push("--trust-all-tools".into());
        }
        if let Some(tools) = &self.trust_tools {
            argv.push(format!("--trust-tools={}", tools.join(",")));
        }
        if self.verbose {
            argv.push("-v".into());
        }
        argv.push("--".into());
        argv.push(self.prompt.clone());
        argv
    }

    /// Words of the prompt that use the `@file` syntax Q does not support.
    pub fn at_file_references(&self) -> Vec<&str> {
        self.prompt
            .split_whitespace()
            .filter(|w| w.len() > 1 && w.starts_with('@') && !w[1..].starts_with('@'))
            .collect()
    }
}

/// The JSON Schema of the parameters, as `tools/list` shows it.
pub fn input_schema() -> Map<String, Value> {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "The task or question for Amazon Q Developer (required, non-empty)."},
            "resume": {"type": "boolean", "description": "Continue the previous conversation of this working directory (--resume)."},
            "agent": {"type": "string", "description": "Use this agent configuration (--agent)."},
            "override-model": {"type": "string", "description": "Use this model instead of the default (--model)."},
            "yolo-mode": {"type": "boolean", "description": "Trust all tools without asking (--trust-all-tools). Q may then run commands and change files."},
            "trust-tools": {"type": "string", "description": "Comma-separated tool names to trust (--trust-tools=a,b)."},
            "verbose": {"type": "boolean", "description": "Include the CLI's logs (-v)."}
        },
        "required": ["prompt"],
        "additionalProperties": false
    });
    match schema {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: &Value) -> Result<AgentArgs, ArgsError> {
        AgentArgs::parse(value.as_object())
    }

    #[test]
    fn full_argument_vector() {
        let args = parse(&json!({
            "prompt": "-rf is not a flag here",
            "resume": true,
            "agent": "reviewer",
            "override-model": "claude-sonnet-4",
            "yolo-mode": true,
            "trust-tools": "fs_read, execute_bash",
            "verbose": true
        }))
        .unwrap();
        assert_eq!(
            args.argv(),
            [
                "chat",
                "--no-interactive",
                "--resume",
                "--agent",
                "reviewer",
                "--model",
                "claude-sonnet-4",
                "--trust-all-tools",
                "--trust-tools=fs_read,execute_bash",
                "-v",
                "--",
                "-rf is not a flag here"
            ]
        );
        assert_eq!(
            parse(&json!({"prompt": "hi"})).unwrap().argv(),
            ["chat", "--no-interactive", "--", "hi"]
        );
    }

    #[test]
    fn every_mistake_has_its_message() {
        assert_eq!(parse(&json!({})), Err(ArgsError::MissingPrompt));
        assert_eq!(
            parse(&json!({"prompt": "  \n"})),
            Err(ArgsError::EmptyPrompt)
        );
        assert!(matches!(
            parse(&json!({"prompt": 3})),
            Err(ArgsError::WrongType {
                name: "prompt",
                got: "a number",
                ..
            })
        ));
        assert!(matches!(
            parse(&json!({"prompt": "x", "resume": "yes"})),
            Err(ArgsError::WrongType { name: "resume", .. })
        ));
        assert_eq!(
            parse(&json!({"prompt": "x", "promt": "y"})),
            Err(ArgsError::Unknown("promt".into()))
        );
    }

    #[test]
    fn finds_at_file_references() {
        let args = parse(&json!({"prompt": "review @src/main.rs and email a@b.c"})).unwrap();
        assert_eq!(args.at_file_references(), ["@src/main.rs"]);
    }
}
