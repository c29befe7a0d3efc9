//! What MariaDB and Redis did during a run: row writes, statements, fsyncs, PUBLISH commands (server-wide counters, read before and after).

use anyhow::Result;
use mysql_async::prelude::*;

use chat::config::ServiceUrls;

/// Connections to read the counters with.
pub struct DbStats {
    db: mysql_async::Pool,
    redis: redis::Client,
}

/// The counters, in this order: rows inserted, rows updated (MariaDB handler calls: every table,
/// every index's row), statements (`Questions`), fsyncs (`Innodb_data_fsyncs`), Redis `PUBLISH`
/// commands.
pub type Counters = [u64; 5];

impl DbStats {
    pub fn connect(urls: &ServiceUrls) -> Result<DbStats> {
        Ok(DbStats {
            db: mysql_async::Pool::new(urls.database_url.as_str()),
            redis: redis::Client::open(urls.redis_url.as_str())?,
        })
    }

    /// The counters now.
    pub async fn read(&self) -> Result<Counters> {
        let mut conn = self.db.get_conn().await?;
        let rows: Vec<(String, String)> = conn
            .query(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Handler_write', 'Handler_update', \
                 'Questions', 'Innodb_data_fsyncs')",
            )
            .await?;
        let get = |name: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut r = self.redis.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut r)
            .await?;
        // cmdstat_publish:calls=123,usec=...
        let publishes = info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0);
        Ok([
            get("Handler_write"),
            get("Handler_update"),
            get("Questions"),
            get("Innodb_data_fsyncs"),
            publishes,
        ])
    }

    pub async fn close(self) {
        let _ = self.db.disconnect().await;
    }
}

/// "per 1,000 messages: rows inserted a, updated b, c statements, d fsyncs, e PUBLISH".
pub fn per_thousand(before: &Counters, after: &Counters, messages: usize) -> String {
    let per = |i: usize| (after[i] - before[i]) as f64 * 1000.0 / messages.max(1) as f64;
    format!(
        "MySQL per 1,000 messages: {:.0} rows inserted, {:.0} rows updated, {:.0} statements, \
         {:.1} fsyncs; Redis {:.1} PUBLISH",
        per(0),
        per(1),
        per(2),
        per(3),
        per(4)
    )
}
