//! Smoke tests of the test support itself: private MariaDB and Redis start, survive kill/restart, and answer.

use std::time::Instant;

use crate::support::services::{free_port, shared_mariadb, shared_redis, MariaDb, Redis};

#[test]
fn services_smoke_mariadb_starts_and_answers() {
    let t0 = Instant::now();
    let db = MariaDb::start();
    eprintln!("MariaDb::start took {} ms", t0.elapsed().as_millis());
    let name = db.create_database("smoke");
    assert!(name.starts_with("smoke_"), "{name}");
    assert_eq!(db.query(&name, "select 1"), vec![vec!["1".to_string()]]);
    assert_eq!(
        db.query(&name, "select NULL, 'a\\tb', ''"),
        vec![vec!["NULL".to_string(), "a\tb".to_string(), String::new()]]
    );
    assert_eq!(
        db.query(&name, "select 1 from dual where 1 = 0"),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        db.url(&name),
        format!("mysql://root@127.0.0.1:{}/{name}", db.port())
    );
    let charset = db.query("", "select @@character_set_server");
    assert_eq!(charset, vec![vec!["utf8mb4".to_string()]]);
}

#[test]
fn services_smoke_mariadb_kill_and_restart_keep_data() {
    let mut db = MariaDb::start();
    let port = db.port();
    let name = db.create_database("smoke_kill");
    db.query(
        &name,
        "create table t (id int primary key, v varchar(20)) engine=InnoDB",
    );
    db.query(&name, "insert into t values (1, 'kept')");

    db.kill();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open after kill"
    );
    let t0 = Instant::now();
    db.restart();
    eprintln!(
        "MariaDb::restart after kill -9 took {} ms",
        t0.elapsed().as_millis()
    );
    assert_eq!(db.port(), port);
    assert_eq!(
        db.query(&name, "select id, v from t"),
        vec![vec!["1".to_string(), "kept".to_string()]]
    );

    // A clean stop and a restart keep data as well.
    db.query(&name, "insert into t values (2, 'also')");
    db.stop();
    db.restart();
    assert_eq!(
        db.query(&name, "select count(*) from t"),
        vec![vec!["2".to_string()]]
    );
}

#[test]
fn services_smoke_redis_set_get_kill_restart() {
    let mut redis = Redis::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis.cli(&["set", "k", "v"]), "OK");
    assert_eq!(redis.cli(&["get", "k"]), "v");
    redis.kill();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open after kill"
    );
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cli(&["ping"]), "PONG");
}

#[test]
fn services_smoke_shared_instances_are_shared() {
    let a = shared_mariadb();
    let b = shared_mariadb();
    assert!(std::ptr::eq(a, b));
    let d1 = a.create_database("shared");
    let d2 = a.create_database("shared");
    assert_ne!(d1, d2);
    assert_eq!(a.query(&d1, "select 1"), vec![vec!["1".to_string()]]);
    let r = shared_redis();
    assert!(std::ptr::eq(r, shared_redis()));
    assert_eq!(r.cli(&["ping"]), "PONG");
}

#[test]
fn services_smoke_free_ports_are_distinct() {
    let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
    for port in ports {
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("free port is bindable");
    }
}
