//! A small MCP client for the tests: newline-delimited JSON-RPC over the
//! sidecar's stdin/stdout, exactly what an MCP host writes and reads.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::Qbox;

/// A running `qbox-sidecar serve` over stdio.
pub struct StdioMcp {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    next_id: u64,
    /// Notifications received while waiting for responses.
    pub notifications: Vec<Value>,
    /// Responses that arrived while another one was awaited.
    early: std::collections::HashMap<u64, Value>,
}

impl StdioMcp {
    /// Starts the sidecar in `cwd` with `env` on top of a clean environment.
    pub fn start(cwd: &Path, env: &[(&str, String)]) -> Self {
        Self::start_with_stderr(cwd, env, Stdio::inherit())
    }

    /// Like [`StdioMcp::start`], with the sidecar's stderr (its log) sent
    /// to `stderr`.
    pub fn start_with_stderr(cwd: &Path, env: &[(&str, String)], stderr: Stdio) -> Self {
        let mut command = Qbox::sidecar(cwd)
            .args(["serve"])
            .current_dir(cwd)
            .env("XDG_DATA_HOME", cwd.join("no-data"))
            .envs(env.iter().map(|(key, value)| (key, value)))
            .command();
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("sidecar starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = Self {
            child,
            stdin,
            lines,
            next_id: 1,
            notifications: Vec::new(),
            early: std::collections::HashMap::new(),
        };
        let init = client.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "qbox-tests", "version": "1"}}),
        );
        assert!(
            init["result"]["serverInfo"]["name"] == "qbox-sidecar",
            "{init}"
        );
        client.notify("notifications/initialized", json!({}));
        client
    }

    pub fn send_raw(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send_raw(&json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string());
    }

    /// Sends a request and returns its id without waiting.
    pub fn send_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        id
    }

    /// Waits for the response with `id`, keeping notifications.
    pub fn wait_response(&mut self, id: u64, limit: Duration) -> Value {
        if let Some(response) = self.early.remove(&id) {
            return response;
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no response to request {id} within {limit:?}"));
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line}"));
            if message.get("method").is_none() {
                if message["id"] == json!(id) {
                    return message;
                }
                if let Some(other) = message["id"].as_u64() {
                    self.early.insert(other, message);
                    continue;
                }
            }
            if message.get("method").is_some() && message.get("id").is_none() {
                self.notifications.push(message);
            }
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        self.wait_response(id, Duration::from_secs(30))
    }

    /// Calls a tool; returns (text, is_error, whole result).
    pub fn call(&mut self, tool: &str, arguments: Value) -> (String, bool, Value) {
        let response = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        let result = response["result"].clone();
        assert!(
            !result.is_null(),
            "tools/call failed at the protocol level: {response}"
        );
        let text = result["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>()
            })
            .unwrap_or_default();
        (text, result["isError"] == json!(true), result)
    }

    /// The sidecar's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tool_names(&mut self) -> Vec<String> {
        let list = self.request("tools/list", json!({}));
        let mut names: Vec<String> = list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for StdioMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True while a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The names of the tools a sidecar offers, sorted (as the tests' clients
/// report them), read from the server's tool table: every tool, or all but
/// the agent tool, which only `ENABLE_ADDITIONAL_TOOLS` turns on.
pub fn offered_tools(agent_enabled: bool) -> Vec<&'static str> {
    let mut names = qbox::mcp_tool_names();
    names.retain(|name| agent_enabled || *name != qbox::AGENT_TOOL_NAME);
    names.sort_unstable();
    names
}

/// The fake CLI shipped with the tests.
pub fn fake_q() -> String {
    format!("{}/tests/fixtures/fake-q", env!("CARGO_MANIFEST_DIR"))
}
