//! The tool's parameters as a caller sends them ([`AgentParams`], whose
//! doc comments are the descriptions clients see), the checked
//! [`AgentArgs`] they become, and the argument vector those become.

use schemars::JsonSchema;
use serde::Deserialize;

/// The parameters of one `q-developer-agent` call, as named on the wire.
/// Their types and names are checked where the call arrives
/// (`mcp::tools::params`); [`AgentArgs::try_from`] does the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentParams {
    /// The task or question for Amazon Q Developer (required, non-empty).
    pub prompt: String,
    /// Continue the previous conversation of this working directory (--resume).
    pub resume: Option<bool>,
    /// Use this agent configuration (--agent).
    pub agent: Option<String>,
    /// Use this model instead of the default (--model).
    pub override_model: Option<String>,
    // One line each: a doc comment's line breaks would reach the description.
    /// Trust all tools without asking (--trust-all-tools). Q may then run commands and change files.
    pub yolo_mode: Option<bool>,
    /// Comma-separated tool names to trust (--trust-tools=a,b).
    pub trust_tools: Option<String>,
    /// Include the CLI's logs (-v).
    pub verbose: Option<bool>,
}

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

/// Why the parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("parameter `prompt` is empty; give the task for Amazon Q in words")]
    EmptyPrompt,
}

/// Non-empty trimmed value, or `None`.
fn nonempty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl TryFrom<AgentParams> for AgentArgs {
    type Error = ArgsError;

    /// The prompt must have words; a blank optional text is as good as
    /// absent; `trust-tools` is split at commas.
    fn try_from(params: AgentParams) -> Result<Self, ArgsError> {
        if params.prompt.trim().is_empty() {
            return Err(ArgsError::EmptyPrompt);
        }
        let trust_tools = nonempty(params.trust_tools).map(|list| {
            list.split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        });
        Ok(Self {
            prompt: params.prompt,
            resume: params.resume.unwrap_or(false),
            agent: nonempty(params.agent),
            model: nonempty(params.override_model),
            yolo: params.yolo_mode.unwrap_or(false),
            trust_tools: trust_tools.filter(|t| !t.is_empty()),
            verbose: params.verbose.unwrap_or(false),
        })
    }
}

impl AgentArgs {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: &serde_json::Value) -> Result<AgentArgs, ArgsError> {
        AgentArgs::try_from(serde_json::from_value::<AgentParams>(value.clone()).unwrap())
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
    fn a_blank_prompt_is_refused_and_blank_options_are_absent() {
        assert_eq!(
            parse(&json!({"prompt": "  \n"})),
            Err(ArgsError::EmptyPrompt)
        );
        assert_eq!(
            parse(
                &json!({"prompt": "x", "agent": " ", "override-model": "", "trust-tools": " , "})
            ),
            Ok(AgentArgs {
                prompt: "x".into(),
                ..AgentArgs::default()
            })
        );
    }

    #[test]
    fn unknown_and_mistyped_parameters_do_not_deserialize() {
        for refused in [
            json!({"prompt": "x", "promt": "y"}),
            json!({"prompt": "x", "resume": "yes"}),
            json!({"resume": true}),
        ] {
            assert!(
                serde_json::from_value::<AgentParams>(refused.clone()).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn finds_at_file_references() {
        let args = parse(&json!({"prompt": "review @src/main.rs and email a@b.c"})).unwrap();
        assert_eq!(args.at_file_references(), ["@src/main.rs"]);
    }
}
