//! The architecture's rules, checked by reading `src/` (as rust-analyzer's
//! `tidy` does): a rule that only a convention keeps is broken by the first
//! change that does not know it. Each failure names the file and the rule.
//!
//! - The modules' import graph (`crate::name` paths) has no cycle.
//! - Inside each module, its files' import graph has no cycle either, and
//!   no `qbox` command handler imports another.
//! - `rusqlite` is used only in `store`, `bollard` only in `container`,
//!   `rmcp` only in `mcp`.
//! - Process environment is read only where the command lines and the
//!   documented variables are defined ([`ENV_READERS`]).
//! - Every struct field that holds a token or a secret is a `Secret`.
//! - Every error type that implements `Diagnose` is known to
//!   `app::report` (else its exit code and hint would be lost).
//! - Warnings go through `app::report::warn`: no `eprintln!` elsewhere
//!   prints one by hand (one prefix, the text cleaned).
//! - Every MCP tool (a file in `src/mcp/tools/`) is a row of the one tool
//!   table, which is what a server with every tool enabled lists, and each
//!   tool is documented in `docs/mcp.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files that may read the process environment, and why.
const ENV_READERS: &[(&str, &str)] = &[
    (
        "src/app/",
        "logging (RUST_LOG), NO_COLOR, empty-means-unset for clap",
    ),
    ("src/cli/", "qbox's command line"),
    ("src/sidecar/", "qbox-sidecar's command line"),
    (
        "src/qapi/mod.rs",
        "the native client's documented variables",
    ),
    (
        "src/qapi/api_key.rs",
        "the Kiro CLI's KIRO_API_KEY and QBOX_API_KEY_FILE",
    ),
    (
        "src/agent/config.rs",
        "the agent tool's documented variables and the PATH its CLI is found on",
    ),
    (
        "src/agent/cgroup.rs",
        "QBOX_AGENT_CGROUP (off: the /proc walk instead of a cgroup per call)",
    ),
    (
        "src/agent/child_env.rs",
        "the allow-listed environment given to the CLI",
    ),
    ("src/mcp/limits.rs", "the HTTP server's documented limits"),
    ("src/mcp/token.rs", "QBOX_MCP_TOKEN and XDG_RUNTIME_DIR"),
    ("src/store/discovery.rs", "the platform's data directories"),
    ("src/store/db.rs", "QBOX_LOCK_TIMEOUT"),
    ("src/store/keeper.rs", "QBOX_CLI_WINDOW"),
    (
        "src/store/refresh.rs",
        "the token services' endpoint overrides",
    ),
    (
        "src/container/engine.rs",
        "docker's own DOCKER_HOST, DOCKER_CONFIG, DOCKER_CONTEXT",
    ),
    (
        "src/container/static_binary.rs",
        "cargo's environment for the static build",
    ),
];

/// Files whose token fields hold fake tokens on purpose, and why.
const FAKE_TOKENS: &[(&str, &str)] = &[
    (
        "src/standin/",
        "stand-in services check the fake tokens they were given",
    ),
    (
        "src/store/schema.rs",
        "FixtureLogin builds fake logins for tests and the demo",
    ),
];

/// A third-party crate and the one top-level module that may use it.
const CONFINED: &[(&str, &str)] = &[
    ("rusqlite", "store"),
    ("bollard", "container"),
    ("rmcp", "mcp"),
];

/// Files in `src/mcp/tools/` that are not tools: the table and what every
/// tool uses.
const TOOL_HELPERS: &[&str] = &["mod.rs", "params.rs", "progress.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, relative to the crate root, with its code
/// up to its unit tests (`#[cfg(test)]` at the start of a line), where
/// fixtures may do what the product must not.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files.sort();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("\n#[cfg(test)]") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            let name = path.strip_prefix(root).unwrap().display().to_string();
            (name, without_comments(&code))
        })
        .collect()
}

/// `code` without `//` comments (doc comments name other modules freely).
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("http://...") is kept.
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`src/store/db.rs` → `store`);
/// `None` for the crate root and the binaries.
fn top_module(file: &str) -> Option<String> {
    let rest = file.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

/// The top-level modules `code` refers to through `crate::`, including
/// grouped imports (`use crate::{a, b::c}`).
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(item.trim().split("::").next().unwrap().to_owned());
                        item.clear();
                    }
                    _ => item.push(c),
                }
            }
            found.insert(item.trim().split("::").next().unwrap().to_owned());
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found.retain(|name| !name.is_empty() && name != "self");
    found
}

fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in files {
        let Some(from) = top_module(file) else {
            continue;
        };
        let edges = graph.entry(from.clone()).or_default();
        for to in crate_references(code) {
            if to != from {
                edges.insert(to);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph(&sources());
    // The graph is read from the source: a sanity check that it was.
    assert!(graph["cli"].contains("store"), "{graph:?}");
    assert!(graph["mcp"].contains("agent"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other: {} (move what both need into a module below them)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // The checker itself must be able to fail.
    let files = vec![
        ("src/a/mod.rs".to_owned(), "use crate::b::X;".to_owned()),
        ("src/b.rs".to_owned(), "use crate::{c, exit};".to_owned()),
        (
            "src/c/x.rs".to_owned(),
            "fn f() { crate::a::g() }".to_owned(),
        ),
    ];
    let cycle = find_cycle(&module_graph(&files)).expect("a -> b -> c -> a");
    assert_eq!(cycle, ["a", "b", "c", "a"]);
}

/// The module a file is (`src/container/spec.rs` → `container::spec`,
/// `src/cli/mod.rs` → `cli`).
fn module_of(file: &str) -> Vec<String> {
    let rest = file.strip_prefix("src/").unwrap_or(file);
    let rest = rest.strip_suffix(".rs").unwrap_or(rest);
    let mut path: Vec<String> = rest.split('/').map(str::to_owned).collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// Every path `code` names from `crate::`, `super::` or `self::`, with
/// groups expanded (`use super::{a::{self, B}, c}` names `super::a`,
/// `super::a::B` and `super::c`). Inside an inline module (`mod platform
/// { ... }`), `super` is the file itself and is read as `self`.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }
    /// Reads one use-tree after `prefix`; returns how many bytes it took.
    fn tree(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let mut prefix = prefix;
        let mut at = 0;
        loop {
            at += text[at..].len() - text[at..].trim_start().len();
            let rest = &text[at..];
            if let Some(group) = rest.strip_prefix('{') {
                at += 1;
                let mut inner = 0;
                loop {
                    inner += group[inner..].len() - group[inner..].trim_start().len();
                    if inner >= group.len() || group[inner..].starts_with('}') {
                        return at + inner + 1;
                    }
                    let took = tree(&group[inner..], prefix.clone(), out);
                    inner += took;
                    inner += group[inner..].len() - group[inner..].trim_start().len();
                    if group[inner..].starts_with(',') || took == 0 {
                        // A comma, or something no path is made of.
                        inner += group[inner..].chars().next().map_or(0, char::len_utf8);
                    }
                }
            }
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if name.is_empty() {
                out.push(prefix);
                return at;
            }
            at += name.len();
            if name != "self" || prefix.is_empty() {
                prefix.push(name);
            }
            match text[at..].strip_prefix("::") {
                Some(_) => at += 2,
                None => {
                    out.push(prefix);
                    return at;
                }
            }
        }
    }
    // Inline modules: their `super` is this file.
    let mut code = code.to_owned();
    let mut from = 0;
    while let Some(found) = code[from..].find("mod ") {
        let start = from + found;
        from = start + 4;
        let head: String = code[from..]
            .chars()
            .take_while(|c| *c != ';' && *c != '{')
            .collect();
        if !code[from + head.len()..].starts_with('{')
            || !head.trim().chars().all(is_ident)
            || code[..start].chars().next_back().is_some_and(is_ident)
        {
            continue;
        }
        let body = from + head.len();
        let mut depth = 0;
        let end = code[body..]
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(code.len(), |(i, _)| body + i);
        let inside = code[body..end].replace("super::", "self::");
        code.replace_range(body..end, &inside);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|root| rest.starts_with(root))
            && !code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| is_ident(c) || c == ':');
        if starts {
            at += tree(rest, Vec::new(), &mut out).max(1);
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// The import graph between the files of each top-level module
/// (`container::options` → `container::spec`). A module's `mod.rs` is left
/// out: it declares the files and re-exports what others use, so a path
/// through it names the module, not a file; a constant that two files of a
/// module share goes there.
fn file_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(file, _)| module_of(file)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in files {
        let from = module_of(file);
        if top_module(file).is_none() || from.len() < 2 {
            continue;
        }
        let edges = graph.entry(from.join("::")).or_default();
        for path in named_paths(code) {
            let mut absolute = match path[0].as_str() {
                "crate" => Vec::new(),
                _ => from.clone(),
            };
            for segment in &path[usize::from(path[0] != "super")..] {
                if segment == "super" {
                    absolute.pop();
                } else {
                    absolute.push(segment.clone());
                }
            }
            if absolute.first() != from.first() {
                continue;
            }
            let target = (2..=absolute.len())
                .rev()
                .map(|len| absolute[..len].to_vec())
                .find(|prefix| modules.contains(prefix));
            if let Some(target) = target
                && target != from
            {
                edges.insert(target.join("::"));
            }
        }
    }
    graph
}

#[test]
fn no_two_files_of_a_module_import_each_other() {
    let graph = file_graph(&sources());
    // The graph is read from the source: a sanity check that it was.
    assert!(
        graph["store::keeper"].contains("store::watch")
            || graph["store::watch"].contains("store::keeper"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "files of one module import each other: {} (move what they share into a file both import, or into the module's mod.rs)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_file_graph_follows_every_spelling_of_a_path() {
    // The checker itself must be able to fail.
    let files = vec![
        ("src/r/mod.rs".to_owned(), "mod a; mod b; mod c;".to_owned()),
        (
            "src/r/a.rs".to_owned(),
            "use super::{b::{self, X}, Y};".to_owned(),
        ),
        (
            "src/r/b.rs".to_owned(),
            "fn f() { crate::r::c::g() }\nmod platform { use super::a::Z; }".to_owned(),
        ),
        ("src/r/c.rs".to_owned(), "use self::super::a;".to_owned()),
    ];
    let graph = file_graph(&files);
    assert_eq!(graph["r::a"], BTreeSet::from(["r::b".to_owned()]));
    // `super` in b's inline module is b itself.
    assert_eq!(graph["r::b"], BTreeSet::from(["r::c".to_owned()]));
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    assert_eq!(cycle, ["r::a", "r::b", "r::c", "r::a"]);
}

/// The `qbox` command handlers: the files of `src/cli/` that
/// `cli::dispatch` calls.
fn handlers(files: &[(String, String)]) -> BTreeSet<String> {
    let cli = &files
        .iter()
        .find(|(file, _)| file == "src/cli/mod.rs")
        .expect("src/cli/mod.rs")
        .1;
    let dispatch = &cli[cli.find("fn dispatch(").expect("cli::dispatch")..];
    let dispatch = &dispatch[..dispatch.find("\n}").unwrap_or(dispatch.len())];
    files
        .iter()
        .filter_map(|(file, _)| {
            let name = file.strip_prefix("src/cli/")?.strip_suffix(".rs")?;
            (name != "mod"
                && dispatch.match_indices(&format!("{name}::")).any(|(at, _)| {
                    !dispatch[..at]
                        .ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                }))
            .then(|| format!("cli::{name}"))
        })
        .collect()
}

#[test]
fn no_command_handler_imports_another() {
    let files = sources();
    let handlers = handlers(&files);
    assert!(
        handlers.contains("cli::run") && handlers.contains("cli::doctor"),
        "{handlers:?}"
    );
    let graph = file_graph(&files);
    let mut broken = Vec::new();
    for handler in &handlers {
        for used in graph.get(handler).into_iter().flatten() {
            if handlers.contains(used) {
                broken.push(format!(
                    "src/{}.rs uses {used}: handlers parse, call the library and print; what two of them need belongs below them",
                    handler.replace("::", "/")
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn third_party_crates_stay_in_their_module() {
    let mut broken = Vec::new();
    for (file, code) in sources() {
        for (krate, home) in CONFINED {
            let used =
                code.contains(&format!("{krate}::")) || code.contains(&format!("use {krate}"));
            if used && top_module(&file).as_deref() != Some(home) {
                broken.push(format!(
                    "{file} uses {krate}, which only src/{home}/ may use"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_environment_is_read_only_where_it_is_documented() {
    let readers = ["env::var(", "env::var_os(", "env::vars(", "env::vars_os("];
    let mut broken = Vec::new();
    for (file, code) in sources() {
        let allowed = ENV_READERS
            .iter()
            .any(|(prefix, _)| file.starts_with(prefix));
        if !allowed && readers.iter().any(|r| code.contains(r)) {
            broken.push(format!(
                "{file} reads the environment: take the value from the command line (a clap `env = ...` argument) and pass it down, or add the file to ENV_READERS with the variables it documents"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// `(file, struct, field, type)` for every named field of every struct.
fn struct_fields(files: &[(String, String)]) -> Vec<(String, String, String, String)> {
    let mut fields = Vec::new();
    for (file, code) in files {
        let mut rest = code.as_str();
        while let Some(at) = rest.find("struct ") {
            rest = &rest[at + "struct ".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let Some(open) = rest.find(['{', ';', '(']) else {
                break;
            };
            if !rest[open..].starts_with('{') {
                continue;
            }
            let body = &rest[open + 1..];
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(body.len(), |(i, _)| i);
            for line in body[..end].lines() {
                let line = line.trim();
                if line.starts_with("#[") || !line.contains(':') {
                    continue;
                }
                let line = line
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ");
                let (field, ty) = line.split_once(':').unwrap();
                if field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    fields.push((
                        file.clone(),
                        name.clone(),
                        field.to_owned(),
                        ty.trim().trim_end_matches(',').to_owned(),
                    ));
                }
            }
        }
    }
    fields
}

/// A field name that says it holds a token or secret. `raw` and `auth_kv`
/// hold a store's token JSON.
fn names_a_secret(field: &str) -> bool {
    ["token", "secret", "password"]
        .iter()
        .any(|word| field.contains(word))
        || field == "raw"
        || field == "auth_kv"
}

/// Types that can carry the secret text itself.
fn holds_text(ty: &str) -> bool {
    ty.contains("String") || ty.contains("&str") || ty.contains("&'a str") || ty.contains("Vec<u8>")
}

#[test]
fn token_fields_are_secrets() {
    let mut broken = Vec::new();
    for (file, name, field, ty) in struct_fields(&sources()) {
        if FAKE_TOKENS
            .iter()
            .any(|(prefix, _)| file.starts_with(prefix))
        {
            continue;
        }
        if names_a_secret(&field) && holds_text(&ty) && !ty.contains("Secret") {
            broken.push(format!(
                "{file}: {name}.{field} is `{ty}`: use crate::secret::Secret (it never prints its value)"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_field_reader_sees_fields() {
    let files = vec![(
        "src/x.rs".to_owned(),
        "pub struct A {\n    pub access_token: String,\n    other: u8,\n}\nstruct B;".to_owned(),
    )];
    let fields = struct_fields(&files);
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert_eq!(fields[0].2, "access_token");
    assert!(names_a_secret(&fields[0].2) && holds_text(&fields[0].3));
}

#[test]
fn every_diagnosed_error_is_known_to_the_report() {
    let files = sources();
    let report = &files
        .iter()
        .find(|(file, _)| file == "src/app/report.rs")
        .unwrap()
        .1;
    let known = &report[report.find("known!(").expect("the list in app::report")..];
    let known = &known[..known.find(')').unwrap()];
    let mut implemented = Vec::new();
    for (file, code) in &files {
        for (at, _) in code.match_indices("Diagnose for ") {
            let ty: String = code[at + "Diagnose for ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            implemented.push((file.clone(), ty));
        }
    }
    assert!(implemented.len() >= 8, "{implemented:?}");
    let missing: Vec<String> = implemented
        .iter()
        .filter(|(_, ty)| {
            !known
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| w == ty)
        })
        .map(|(file, ty)| {
            format!("{file}: {ty} implements Diagnose but app::report's `known!` list lacks it")
        })
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Whether `code` calls `print!` or `println!` (not `eprint!`/`eprintln!`).
fn prints_with_a_macro(code: &str) -> bool {
    ["print!(", "println!("].iter().any(|macro_call| {
        code.match_indices(macro_call).any(|(at, _)| {
            !code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

#[test]
fn stdout_is_written_only_through_the_writer_that_survives_a_closed_pipe() {
    assert!(prints_with_a_macro("    println!(\"x\");"));
    assert!(!prints_with_a_macro(
        "    eprintln!(\"x\"); eprint!(\"y\");"
    ));
    let broken: Vec<String> = sources()
        .into_iter()
        .filter(|(_, code)| prints_with_a_macro(code))
        .map(|(file, _)| {
            format!(
                "{file} prints with print!/println!, which panics when the reader has left: use app::output::print / println and `?`"
            )
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The stderr prints in `code` that print a warning by hand: an `eprint!`
/// or `eprintln!` whose arguments mention "warning".
fn hand_written_warnings(code: &str) -> usize {
    ["eprint!(", "eprintln!("]
        .iter()
        .map(|macro_call| {
            code.match_indices(macro_call)
                .filter(|(at, _)| {
                    // The arguments: up to the parenthesis that closes the call.
                    let rest = &code[at + macro_call.len()..];
                    let mut depth = 1;
                    let end = rest
                        .char_indices()
                        .find(|(_, c)| {
                            match c {
                                '(' => depth += 1,
                                ')' => depth -= 1,
                                _ => {}
                            }
                            depth == 0
                        })
                        .map_or(rest.len(), |(end, _)| end);
                    rest[..end].to_lowercase().contains("warning")
                })
                .count()
        })
        .sum()
}

#[test]
fn warnings_have_one_voice() {
    assert_eq!(
        hand_written_warnings(
            "eprintln!(\n    \"{} x\",\n    palette.warning(\"warning:\")\n);\neprintln!(\"fine\");"
        ),
        1
    );
    assert_eq!(
        hand_written_warnings("eprintln!(\"{}\", f(x)), other => warn(\"warning\")"),
        0
    );
    let broken: Vec<String> = sources()
        .into_iter()
        .filter(|(file, code)| file != "src/app/report.rs" && hand_written_warnings(code) > 0)
        .map(|(file, _)| {
            format!(
                "{file} prints a warning by hand: use app::report::warn (one prefix, cleaned text)"
            )
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Both executables hold secrets, so both keep the platform's address
/// randomisation of their own code: an ELF of type `ET_DYN` (a
/// position-independent executable), never `ET_EXEC` at a fixed address.
#[test]
fn the_executables_are_position_independent() {
    const ET_DYN: u16 = 3;
    for exe in [
        env!("CARGO_BIN_EXE_qbox"),
        env!("CARGO_BIN_EXE_qbox-sidecar"),
    ] {
        let mut header = [0u8; 18];
        std::io::Read::read_exact(&mut std::fs::File::open(exe).unwrap(), &mut header).unwrap();
        assert_eq!(&header[..4], b"\x7fELF", "{exe}");
        let kind = u16::from_le_bytes([header[16], header[17]]);
        assert_eq!(kind, ET_DYN, "{exe} is not position-independent");
    }
}

#[test]
fn every_mcp_tool_is_in_the_table() {
    let dir = src().join("mcp/tools");
    let table_file = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let start = table_file
        .find("pub static TOOLS")
        .expect("src/mcp/tools/mod.rs defines the table `pub static TOOLS`");
    let table = &table_file[start..start + table_file[start..].find("];").unwrap()];
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".rs") && !TOOL_HELPERS.contains(&name.as_str()) {
            files.push(name);
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no tool files in {}", dir.display());
    let mut broken = Vec::new();
    for file in &files {
        let module = file.trim_end_matches(".rs");
        let code = std::fs::read_to_string(dir.join(file)).unwrap();
        if !code.contains("pub const ROW: ToolRow") {
            broken.push(format!(
                "src/mcp/tools/{file} is a tool without its `pub const ROW: ToolRow` \
                 (or a helper missing from TOOL_HELPERS)"
            ));
        }
        if !table.contains(&format!("{module}::ROW")) {
            broken.push(format!(
                "src/mcp/tools/{file} is not in the table: add `{module}::ROW` to TOOLS in src/mcp/tools/mod.rs"
            ));
        }
    }
    let rows = table.matches("::ROW").count();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert_eq!(
        rows,
        files.len(),
        "TOOLS has a row without a file of its own in src/mcp/tools/: {table}"
    );

    // The table is what a server with every tool enabled lists.
    let names = qbox::mcp_tool_names();
    assert_eq!(names.len(), rows, "{names:?}");
    let home = crate::util::TestHome::new();
    let mut server = crate::mcp_client::StdioMcp::start(
        home.path(),
        &[("ENABLE_ADDITIONAL_TOOLS", names.join(","))],
    );
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(server.tool_names(), sorted);

    let documented = std::fs::read_to_string(src().join("../docs/mcp.md")).unwrap();
    for name in names {
        assert!(
            documented.contains(&format!("`{name}`")),
            "docs/mcp.md does not document the tool `{name}`"
        );
    }
}
