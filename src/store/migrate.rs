//! Schema migrations: `sql/NNNN_name.sql`, compiled in, applied in order, once each, under a named lock.

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder};

use super::{with_timeout, StoreError};

/// Migrations compiled into the binaries, applied in order, once each (`sql/NNNN_name.sql`).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "0001_init", include_str!("../../sql/0001_init.sql")),
    (2, "0002_holder", include_str!("../../sql/0002_holder.sql")),
    (
        3,
        "0003_cursors",
        include_str!("../../sql/0003_cursors.sql"),
    ),
    (
        4,
        "0004_producer",
        include_str!("../../sql/0004_producer.sql"),
    ),
    (5, "0005_bans", include_str!("../../sql/0005_bans.sql")),
    (
        6,
        "0006_holders",
        include_str!("../../sql/0006_holders.sql"),
    ),
    (7, "0007_chat", include_str!("../../sql/0007_chat.sql")),
    (
        8,
        "0008_public_ids",
        include_str!("../../sql/0008_public_ids.sql"),
    ),
    (
        9,
        "0009_collapse_keys",
        include_str!("../../sql/0009_collapse_keys.sql"),
    ),
];

/// Creates the database if needed, then applies pending migrations under a named lock,
/// so nodes that start together apply each migration exactly once.
pub async fn run(url: &str) -> Result<Vec<&'static str>, StoreError> {
    let opts = Opts::from_url(url).map_err(|e| StoreError::Url(e.to_string()))?;
    let db = opts
        .db_name()
        .ok_or_else(|| {
            StoreError::Url("the URL names no database (mysql://user@host:port/DATABASE)".into())
        })?
        .to_string();
    if db.contains('`') {
        return Err(StoreError::Url(format!("unusable database name {db:?}")));
    }
    let server = OptsBuilder::from_opts(opts.clone()).db_name(None::<String>);
    with_timeout(Duration::from_secs(120), async {
        let mut conn = mysql_async::Conn::new(server).await?;
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"
        ))
        .await?;
        conn.query_drop(format!("USE `{db}`")).await?;
        // The reads use a table value constructor and the SEQUENCE engine (MariaDB only): say so
        // now, not on the first delivery.
        match conn
            .query_drop(
                "WITH v(n) AS (VALUES (1)) SELECT v.n FROM v JOIN seq_1_to_1 s ON s.seq = v.n",
            )
            .await
        {
            Err(mysql_async::Error::Server(e)) => {
                return Err(StoreError::Unsupported(e.message));
            }
            other => other?,
        }
        let locked: Option<Option<i64>> = conn
            .query_first("SELECT GET_LOCK(CONCAT('chat-migrations:', DATABASE()), 60)")
            .await?;
        if locked.flatten() != Some(1) {
            return Err(StoreError::MigrationLock);
        }
        let result = apply_migrations(&mut conn).await;
        conn.query_drop("DO RELEASE_LOCK(CONCAT('chat-migrations:', DATABASE()))")
            .await?;
        conn.disconnect().await?;
        result
    })
    .await?
}

async fn apply_migrations(conn: &mut mysql_async::Conn) -> Result<Vec<&'static str>, StoreError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version INT UNSIGNED NOT NULL PRIMARY KEY, \
         name VARCHAR(255) NOT NULL, \
         applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB",
    )
    .await?;
    let done: Vec<u32> = conn.query("SELECT version FROM schema_migrations").await?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        for statement in statements(sql) {
            conn.query_drop(statement).await?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (version, name),
        )
        .await?;
        applied.push(name);
    }
    Ok(applied)
}

/// Splits a migration file into statements: `--` comment lines dropped, `;` at a line's end ends one.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_split_into_statements() {
        let sql = "-- comment\nCREATE TABLE a (\n  x INT\n);\n\nCREATE TABLE b (y INT);\n";
        assert_eq!(
            statements(sql),
            vec!["CREATE TABLE a (\n  x INT\n)", "CREATE TABLE b (y INT)"]
        );
        assert_eq!(statements(MIGRATIONS[0].2).len(), 2);
        assert_eq!(statements(MIGRATIONS[1].2).len(), 1);
        assert_eq!(statements(MIGRATIONS[2].2).len(), 3);
        assert_eq!(statements(MIGRATIONS[3].2).len(), 3);
    }
}
