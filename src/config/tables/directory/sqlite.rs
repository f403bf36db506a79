//! `sqlite:/etc/sluice/file.cf` (sqlite_table(5)): `dbpath`, `query`,
//! `result_format`, `expansion_limit`, `domain`.
//!
//! Owns the SQLite side: the database is opened read-only (sluice never
//! writes it, and a missing file is a lookup error, not a new empty
//! database), queries run on the blocking thread pool (SQLite calls block)
//! and are interrupted when the lookup times out, and no value may be
//! longer than `sluice_table_reply_size_limit` (SQLite's own length
//! limit). Keys are escaped as Postfix's `%q` does (quotes doubled), and
//! the first column of every row is read as text as `sqlite3_column_text`
//! gives it (numbers formatted as SQLite formats them): unlike its pgsql
//! and mysql tables, Postfix's sqlite table reads only that column.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::cf::CfFile;
use super::pool::Pool;
use super::{Collect, Failure, Kind, Open, Source, SqlQuery};

#[derive(Debug)]
pub(crate) struct SqliteSource {
    db: PathBuf,
    servers: Vec<String>,
    query: Arc<SqlQuery>,
    pool: Pool<Connection>,
}

impl SqliteSource {
    pub fn from_cf(cf: &CfFile, o: &mut Open<'_, '_>) -> Option<SqliteSource> {
        let query = SqlQuery::from_cf(cf, Kind::Sqlite, o);
        let Some(dbpath) = cf.get("dbpath").filter(|p| !p.is_empty()) else {
            o.errors.push(cf.file_diag("dbpath is not set"));
            return None;
        };
        let db = super::super::resolve(o.dir, dbpath);
        if !db.is_file() {
            o.warnings.push(cf.diag(
                "dbpath",
                format!("{} does not exist (yet): lookups fail until it does", db.display()),
            ));
        }
        Some(SqliteSource {
            servers: vec![format!("sqlite:{}", db.display())],
            db,
            query: Arc::new(query?),
            pool: Pool::new(o.settings.connections, Duration::from_secs(60)),
        })
    }

    async fn lookup(&self, key: &str) -> Result<Option<String>, Failure> {
        let Some(sql) = self.query.expand(key, &|s, out| out.push_str(&s.replace('\'', "''"))) else {
            return Ok(None);
        };
        let mut slot = self.pool.slot().await;
        let conn = match slot.take() {
            Some(c) => c,
            None => open(&self.db, self.query.reply_limit)?,
        };
        // A lookup that times out is dropped here; the query it leaves
        // running on the blocking thread is interrupted.
        let interrupt = InterruptOnDrop(Some(conn.get_interrupt_handle()));
        let query = self.query.clone();
        let key = key.to_owned();
        let done = tokio::task::spawn_blocking(move || {
            let r = run(&conn, &sql, &query, &key);
            (conn, r)
        })
        .await;
        let (conn, result) = done.map_err(|e| Failure::Server(format!("query task failed: {e}")))?;
        interrupt.disarm();
        let answer = result?;
        slot.release(conn);
        Ok(answer)
    }
}

/// Interrupts the query of an abandoned lookup.
struct InterruptOnDrop(Option<rusqlite::InterruptHandle>);

impl InterruptOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.interrupt();
        }
    }
}

fn open(db: &std::path::Path, limit: usize) -> Result<Connection, Failure> {
    let conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| Failure::Server(format!("open {}: {e}", db.display())))?;
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, limit)
        .map_err(|e| Failure::Server(format!("set length limit: {e}")))?;
    Ok(conn)
}

/// Runs `sql` and collects the first column of every row.
fn run(conn: &Connection, sql: &str, q: &SqlQuery, key: &str) -> Result<Option<String>, Failure> {
    let failed = |e: rusqlite::Error| Failure::Answer(format!("query failed: {e}"));
    let mut stmt = conn.prepare(sql).map_err(failed)?;
    if stmt.column_count() == 0 {
        return Ok(None);
    }
    let mut rows = stmt.query([]).map_err(failed)?;
    let mut collect = Collect::new(&q.result, &q.needs, key, q.expansion_limit, q.reply_limit);
    while let Some(row) = rows.next().map_err(failed)? {
        let v = row.get_ref(0).map_err(failed)?;
        collect.push(text(v).as_deref())?;
    }
    Ok(collect.finish())
}

/// A value as `sqlite3_column_text` gives it: NULL is no text.
fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(real(f)),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// SQLite's `%!.15g`: 15 significant digits, always with a decimal point.
fn real(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            String::new()
        } else if f > 0.0 {
            "Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0.0".into();
    }
    let sci = format!("{f:.14e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            let t = s.trim_end_matches('0');
            if t.ends_with('.') { format!("{t}0") } else { t.to_owned() }
        } else {
            format!("{s}.0")
        }
    };
    if !(-4..15).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = usize::try_from(14 - exp).unwrap_or(0);
        trim(&format!("{f:.decimals$}"))
    }
}

impl Source for SqliteSource {
    fn servers(&self) -> &[String] {
        &self.servers
    }

    fn suppressed(&self, key: &str) -> bool {
        self.query.suppressed(key)
    }

    fn ask<'a>(&'a self, _server: usize, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Failure>> {
        Box::pin(self.lookup(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_print_as_sqlite_prints_them() {
        assert_eq!(real(1.0), "1.0");
        assert_eq!(real(0.5), "0.5");
        assert_eq!(real(-2.25), "-2.25");
        assert_eq!(real(1e20), "1.0e+20");
        assert_eq!(real(1.5e-7), "1.5e-07");
        assert_eq!(real(123456.789), "123456.789");
        assert_eq!(real(0.1 + 0.2), "0.3");
    }
}
