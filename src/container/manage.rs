//! The qbox-managed containers on the engine: listing them for `qbox ps`
//! and stopping them for `qbox stop`. Only containers that carry qbox's
//! label are ever touched. What the engine says about them is cleaned of
//! control characters before anyone prints it.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use super::detached::{DETACHED_LABEL, KEEPER_CLI_LABEL, KEEPER_DB_LABEL, KEEPER_SCOPE_LABEL};
use super::run::{RunError, engine_error};
use super::runtime_dir::{self, Owner};
use super::{CREATOR_LABEL, MANAGED_LABEL, RUN_LABEL};
use crate::http::sanitize_remote;

/// A container `qbox run` started, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Managed {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `running`, `exited`, …
    pub state: String,
    /// The engine's words: "Up 3 minutes".
    pub status: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// The `qbox run` that keeps its login fresh (`PID-START`), if labelled.
    pub run: Option<String>,
    /// Started with `qbox run -d`: the key of its snapshot directory
    /// (`None` for a detached container without a snapshot, `--auth none`).
    #[serde(skip)]
    pub detached: Option<String>,
    /// The store and CLI its keeper reads (the run's snapshot settings).
    #[serde(skip)]
    pub keeper_db: Option<String>,
    #[serde(skip)]
    pub keeper_cli: Option<String>,
    pub keeper_scope: Option<String>,
    /// The qbox process that created it (`PID-START`), if labelled.
    #[serde(skip)]
    pub creator: Option<String>,
}

/// Every qbox-managed container, running or not, newest first.
pub async fn list(docker: &Docker) -> Result<Vec<Managed>, RunError> {
    let label = format!("{MANAGED_LABEL}=true");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = docker
        .list_containers(Some(options))
        .await
        .map_err(engine_error)?;
    // The engine's words are remote text: no escape sequence or line break
    // in a name or a status reaches a terminal, or `qbox ps`'s stdout.
    let clean = |text: String| sanitize_remote(&text);
    let mut managed: Vec<Managed> = summaries
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            Managed {
                id: clean(c.id.unwrap_or_default()),
                name: clean(
                    c.names
                        .and_then(|names| names.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                ),
                image: clean(c.image.unwrap_or_default()),
                state: clean(c.state.map(|s| s.to_string()).unwrap_or_default()),
                status: clean(c.status.unwrap_or_default()),
                created: c.created.unwrap_or_default(),
                run: labels.get(RUN_LABEL).cloned(),
                detached: labels.get(DETACHED_LABEL).cloned(),
                keeper_db: labels.get(KEEPER_DB_LABEL).cloned(),
                keeper_cli: labels.get(KEEPER_CLI_LABEL).cloned(),
                keeper_scope: labels.get(KEEPER_SCOPE_LABEL).cloned(),
                creator: labels.get(CREATOR_LABEL).cloned(),
            }
        })
        .collect();
    managed.sort_by_key(|c| std::cmp::Reverse(c.created));
    Ok(managed)
}

/// Removes the containers left `Created` by a qbox that died between the
/// engine's create and start (SIGKILL, a crash): the engine's `AutoRemove`
/// acts only on containers that exited, so nothing else would. Only a
/// container whose `qbox.creator` label names a process of this user on
/// this boot that is gone is touched ([`runtime_dir::creator_owner`]): not
/// another machine's on a shared engine, nor one whose image brought the
/// label. Returns the containers that are left.
pub async fn remove_abandoned(docker: &Docker, containers: Vec<Managed>) -> Vec<Managed> {
    let mut left = Vec::with_capacity(containers.len());
    for container in containers {
        let abandoned = container.state == "created"
            && container
                .creator
                .as_deref()
                .and_then(runtime_dir::creator_owner)
                == Some(Owner::Gone);
        if !abandoned {
            left.push(container);
            continue;
        }
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&container.id, Some(options)).await {
            Ok(()) => {
                tracing::info!(container = %container.id, "removed a container its creator left created and never started");
            }
            Err(err) => {
                tracing::warn!(container = %container.id, "could not remove a container left created: {err}");
                left.push(container);
            }
        }
    }
    left
}

/// The qbox-managed container `name_or_id` names (a name, an id, or an id
/// prefix of at least 4 characters), if there is exactly one.
pub fn find<'a>(containers: &'a [Managed], name_or_id: &str) -> Option<&'a Managed> {
    if let Some(by_name) = containers.iter().find(|c| c.name == name_or_id) {
        return Some(by_name);
    }
    if name_or_id.len() < 4 {
        return None;
    }
    let mut by_id = containers.iter().filter(|c| c.id.starts_with(name_or_id));
    match (by_id.next(), by_id.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Stops `id` as `docker stop -t TIMEOUT` does: its stop signal, then a
/// kill after `timeout` seconds. A container already gone is not an error.
pub async fn stop(docker: &Docker, id: &str, timeout: u32) -> Result<(), RunError> {
    let options = StopContainerOptionsBuilder::default()
        .t(i32::try_from(timeout).unwrap_or(i32::MAX))
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(DockerError::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => Ok(()),
        Err(err) => Err(engine_error(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(id: &str, name: &str) -> Managed {
        Managed {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            state: "running".into(),
            status: "Up".into(),
            created: 0,
            run: None,
            detached: None,
            keeper_db: None,
            keeper_cli: None,
            keeper_scope: None,
            creator: None,
        }
    }

    #[test]
    fn names_and_unique_id_prefixes_find_one_container() {
        let all = [managed("abcdef01", "web"), managed("abcd9999", "db")];
        assert_eq!(find(&all, "web").unwrap().id, "abcdef01");
        assert_eq!(find(&all, "abcdef").unwrap().name, "web");
        assert!(find(&all, "abcd").is_none(), "ambiguous");
        assert!(find(&all, "abc").is_none(), "too short");
        assert!(find(&all, "cache").is_none());
    }
}
