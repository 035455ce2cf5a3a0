//! Reading while the CLI writes: no errors, no torn reads, no changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qbox::store::Flavor;
use qbox::store::db::read_auth_rows;

use crate::util::{TestHome, file_bytes, valid_login};

/// Commits the token and the registration together, both tagged with one
/// generation number, as fast as it can (like a CLI logging in over and
/// over). A reader that ever sees two different generations saw a torn
/// state.
fn start_writer(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut generation = 0u64;
        while !stop.load(Ordering::Relaxed) {
            generation += 1;
            let mut login = valid_login("w");
            login.access_token = format!("gen-{generation}");
            login.client_id = format!("gen-{generation}");
            let tx = conn.transaction().unwrap();
            tx.execute(
                "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
                [login.token_json(), Flavor::AmazonQ.token_key().to_owned()],
            )
            .unwrap();
            tx.execute(
                "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
                [
                    login.registration_json(),
                    Flavor::AmazonQ.registration_key().to_owned(),
                ],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        generation
    })
}

#[test]
fn concurrent_writer_never_causes_errors_or_torn_reads() {
    let home = TestHome::new();
    let mut first = valid_login("w");
    first.access_token = "gen-0".into();
    first.client_id = "gen-0".into();
    let path = home.login(Flavor::AmazonQ, &first);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(path.clone(), stop.clone());

    let mut generations_seen = std::collections::BTreeSet::new();
    for _ in 0..600 {
        let rows = read_auth_rows(&path).expect("reads succeed while the CLI writes");
        let login =
            qbox::store::login::Login::from_rows(path.clone(), Flavor::AmazonQ, &rows).unwrap();
        let token = login.token.unwrap().token.access_token.expose().to_owned();
        let client = login.registration.unwrap().client_id;
        assert_eq!(token, client, "token and registration from one commit");
        generations_seen.insert(token);
    }
    // The binary, too, under the same load.
    for _ in 0..30 {
        let run = home
            .qbox()
            .args(["export-token", "--field", "access"])
            .run();
        run.assert_code(0);
        assert!(run.stdout.starts_with("gen-"), "{}", run.stdout);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 100, "the writer really ran ({written} commits)");
    assert!(generations_seen.len() > 10, "reads interleaved with writes");
}

#[test]
fn reading_a_valid_login_changes_nothing() {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &valid_login("ro"));
    let before = file_bytes(&path);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    for args in [
        vec!["export-token"],
        vec!["doctor"],
        vec!["snapshot", home.path().join("snap").to_str().unwrap()],
    ] {
        home.qbox().args(args).run().assert_code(0);
    }
    assert_eq!(file_bytes(&path), before);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
    let siblings: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        siblings.len(),
        1,
        "no journal or temp files next to the store: {siblings:?}"
    );
}
