//! One SQL interface over the two engines control's state lives in: SQLite (embedded, the
//! default) and PostgreSQL (several control replicas). Queries are written once, with `?` or
//! `?N` placeholders (rewritten to `$N` for PostgreSQL), in the SQL both engines share; values
//! cross as [`Val`] (integers are 64-bit in both schemas, so every integer binds as one).
//! Writes run in a transaction that excludes every other writer: SQLite's `BEGIN IMMEDIATE`, and
//! on PostgreSQL a transaction-scoped advisory lock, so replicas serialize their writes as one
//! SQLite process does.

use std::cell::{Cell, RefCell};

use crate::error::StateError;

/// A value bound to or read from a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
}

macro_rules! int_val {
    ($($t:ty),*) => {$(
        impl From<$t> for Val {
            fn from(v: $t) -> Self {
                Val::Int(v as i64)
            }
        }
    )*};
}
int_val!(i64, i32, u16, u32, u64, usize);

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}
impl From<&&str> for Val {
    fn from(v: &&str) -> Self {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Val::Null)
    }
}

/// Builds the values of a query: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::db::Val::from($v)),*]
    };
}

/// What may be passed as a query's values.
pub trait Params {
    /// The values, in order.
    fn vals(self) -> Vec<Val>;
}
impl Params for Vec<Val> {
    fn vals(self) -> Vec<Val> {
        self
    }
}
impl Params for () {
    fn vals(self) -> Vec<Val> {
        vec![]
    }
}
impl<T: Into<Val>, const N: usize> Params for [T; N] {
    fn vals(self) -> Vec<Val> {
        self.into_iter().map(Into::into).collect()
    }
}

/// A read value converted to a Rust type.
pub trait FromVal: Sized {
    /// Converts, or says why not.
    fn from_val(v: &Val) -> Result<Self, String>;
}
macro_rules! int_from_val {
    ($($t:ty),*) => {$(
        impl FromVal for $t {
            fn from_val(v: &Val) -> Result<Self, String> {
                match v {
                    Val::Int(i) => <$t>::try_from(*i).map_err(|e| format!("{i}: {e}")),
                    other => Err(format!("expected an integer, got {other:?}")),
                }
            }
        }
    )*};
}
int_from_val!(i64, u16, u32, u64, usize);
impl FromVal for String {
    fn from_val(v: &Val) -> Result<Self, String> {
        match v {
            Val::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}
impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Result<Self, String> {
        match v {
            Val::Null => Ok(None),
            v => T::from_val(v).map(Some),
        }
    }
}
impl FromVal for () {
    fn from_val(_: &Val) -> Result<Self, String> {
        Ok(())
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Val>);

impl Row {
    /// The row's values, as read.
    pub fn vals(&self) -> &[Val] {
        &self.0
    }

    /// Column `i` as `T`.
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T, StateError> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| StateError::Internal(format!("no column {i} in the row")))?;
        T::from_val(v).map_err(|e| StateError::Internal(format!("column {i}: {e}")))
    }
}

/// The engine behind a [`Db`].
pub enum Engine {
    /// SQLite, one file.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL, one connection, made again when the server closed it.
    Postgres(Box<PgConn>),
}

/// A PostgreSQL connection and how to make it again. A server restart (or a failover behind
/// one address) closes it; the next transaction then connects anew instead of failing every
/// request until control restarts.
pub struct PgConn {
    client: Option<postgres::Client>,
    url: String,
}

impl PgConn {
    /// Connects to `url` (libpq's `sslmode`/`sslrootcert` taken, see [`crate::pg_tls`]).
    pub fn connect(url: &str) -> Result<Self, StateError> {
        let (cfg, tls) = crate::pg_tls::config(url)?;
        Ok(Self {
            client: Some(cfg.connect(tls)?),
            url: url.to_string(),
        })
    }

    fn client(&mut self) -> Result<&mut postgres::Client, StateError> {
        self.client
            .as_mut()
            .ok_or_else(|| StateError::Internal("no database connection".into()))
    }

    /// Whether the server has closed the connection (seen by the last call on it).
    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(postgres::Client::is_closed)
    }

    /// A new connection in place of the closed one.
    fn reconnect(&mut self) -> Result<(), StateError> {
        let mut fresh = Self::connect(&self.url)?;
        drop_client(self.client.take());
        self.client = fresh.client.take();
        tracing::info!("connected to the database again (the last connection was closed)");
        Ok(())
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        drop_client(self.client.take());
    }
}

/// Drops a connection where it may be: postgres' blocking client closes itself by blocking
/// on a runtime of its own, which panics on a thread that drives tokio tasks (control's last
/// handle on the state may go with a task), so there it is closed on a thread of its own.
fn drop_client(c: Option<postgres::Client>) {
    if let Some(c) = c {
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(c));
        } else {
            drop(c);
        }
    }
}

/// A connection to the state's database.
pub struct Db {
    engine: RefCell<Engine>,
    /// A transaction is open: a closed connection is then the transaction's failure, never
    /// silently replaced mid-way.
    in_tx: Cell<bool>,
}

/// `.optional()` on a single-row answer, as rusqlite's.
pub trait OptionalExt<T> {
    /// `Ok(None)` when the query returned no row.
    fn optional(self) -> Result<Option<T>, StateError>;
}
impl<T> OptionalExt<T> for Result<T, StateError> {
    fn optional(self) -> Result<Option<T>, StateError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StateError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `?` and `?N` to `$N`.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            n += 1;
            digits = n.to_string();
        }
        out.push('$');
        out.push_str(&digits);
    }
    out
}

/// SQL NULL for a parameter of any type: `None::<String>` is refused where PostgreSQL expects
/// an integer (a NULL copied into a BIGINT column by `control migrate`).
#[derive(Debug)]
struct AnyNull;

impl postgres::types::ToSql for AnyNull {
    fn to_sql(
        &self,
        _ty: &postgres::types::Type,
        _out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(postgres::types::IsNull::Yes)
    }

    fn accepts(_ty: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_params(vals: &[Val]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    vals.iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Val::Null => Box::new(AnyNull),
                Val::Int(i) => Box::new(*i),
                Val::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row, StateError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.get::<_, Option<i64>>(i).map(Val::Int),
            Type::INT4 => r.get::<_, Option<i32>>(i).map(|v| Val::Int(v.into())),
            Type::INT2 => r.get::<_, Option<i16>>(i).map(|v| Val::Int(v.into())),
            Type::BOOL => r.get::<_, Option<bool>>(i).map(|v| Val::Int(v.into())),
            _ => r
                .try_get::<_, Option<String>>(i)
                .map_err(|e| StateError::Internal(format!("column {}: {e}", c.name())))?
                .map(Val::Text),
        };
        out.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(out))
}

fn sqlite_row(r: &rusqlite::Row, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    (0..n)
        .map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Val::Null,
                ValueRef::Integer(v) => Val::Int(v),
                ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Real(f) => Val::Int(f as i64),
                ValueRef::Blob(b) => Val::Text(String::from_utf8_lossy(b).into_owned()),
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()
        .map(Row)
}

impl Db {
    /// Wraps a connection.
    pub fn new(engine: Engine) -> Self {
        Db {
            engine: RefCell::new(engine),
            in_tx: Cell::new(false),
        }
    }

    /// Outside a transaction, a PostgreSQL connection the server closed is made again.
    fn revive(&self) -> Result<(), StateError> {
        if self.in_tx.get() {
            return Ok(());
        }
        match &mut *self.engine.borrow_mut() {
            Engine::Postgres(pg) if pg.is_closed() => pg.reconnect(),
            _ => Ok(()),
        }
    }

    /// Runs `f` outside a transaction; if it failed because the server had closed the
    /// connection (which the client learns only by using it), once more on a new one. Only for
    /// what may run twice: `BEGIN`, a read, or a statement that never left (`unsent`).
    fn again_if_closed<T>(
        &self,
        unsent_only: bool,
        f: impl Fn() -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.revive()?;
        match f() {
            Err(e) if !self.in_tx.get() => {
                let unsent = matches!(&e, StateError::Pg(pe) if pe.is_closed());
                let closed =
                    matches!(&*self.engine.borrow(), Engine::Postgres(pg) if pg.is_closed());
                if closed && (unsent || !unsent_only) {
                    self.revive()?;
                    f()
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    /// `BEGIN...`, once more on a new connection if the server had closed the old one
    /// (nothing was done on it yet, so nothing is done twice).
    fn begin(&self, sql: &str) -> Result<(), StateError> {
        let r = self.again_if_closed(false, || self.execute_batch(sql));
        if r.is_ok() {
            self.in_tx.set(true);
        }
        r
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(*self.engine.borrow(), Engine::Postgres(_))
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, StateError> {
        let vals = params.vals();
        self.again_if_closed(true, || self.execute_vals(sql, &vals))
    }

    fn execute_vals(&self, sql: &str, vals: &[Val]) -> Result<usize, StateError> {
        match &mut *self.engine.borrow_mut() {
            Engine::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(vals.iter().map(sqlite_val)))?),
            Engine::Postgres(pg) => {
                let p = pg_params(vals);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    p.iter().map(|b| b.as_ref()).collect();
                Ok(pg.client()?.execute(pg_sql(sql).as_str(), &refs)? as usize)
            }
        }
    }

    /// Runs statements with no values (schema changes).
    pub fn execute_batch(&self, sql: &str) -> Result<(), StateError> {
        match &mut *self.engine.borrow_mut() {
            Engine::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Engine::Postgres(pg) => Ok(pg.client()?.batch_execute(sql)?),
        }
    }

    /// Every row of a query.
    pub fn rows(&self, sql: &str, params: impl Params) -> Result<Vec<Row>, StateError> {
        let vals = params.vals();
        // A read outside a transaction may run twice; inside one, never.
        self.again_if_closed(false, || self.rows_vals(sql, &vals))
    }

    fn rows_vals(&self, sql: &str, vals: &[Val]) -> Result<Vec<Row>, StateError> {
        match &mut *self.engine.borrow_mut() {
            Engine::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let rows = st
                    .query_map(
                        rusqlite::params_from_iter(vals.iter().map(sqlite_val)),
                        |r| sqlite_row(r, n),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            }
            Engine::Postgres(pg) => {
                let p = pg_params(vals);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    p.iter().map(|b| b.as_ref()).collect();
                pg.client()?
                    .query(pg_sql(sql).as_str(), &refs)?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// Every row of a query, each mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnMut(&Row) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        self.rows(sql, params)?.iter().map(f).collect()
    }

    /// The first row, mapped by `f`; an error when there is none (see [`OptionalExt`]).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        match self.rows(sql, params)?.first() {
            Some(r) => f(r),
            None => Err(StateError::NoRows),
        }
    }

    /// A statement to run later (rusqlite's shape: `prepare(sql)?.query_map(params, f)?`).
    pub fn prepare<'a>(&'a self, sql: &'a str) -> Result<Stmt<'a>, StateError> {
        Ok(Stmt { db: self, sql })
    }

    /// [`Db::prepare`] (SQLite caches every statement anyway).
    pub fn prepare_cached<'a>(&'a self, sql: &'a str) -> Result<Stmt<'a>, StateError> {
        self.prepare(sql)
    }

    /// Starts a read-only transaction: every query in it sees one snapshot (on PostgreSQL,
    /// also while other replicas write).
    pub fn begin_read(&self) -> Result<Tx<'_>, StateError> {
        if self.is_postgres() {
            self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        } else {
            self.begin("BEGIN")?;
        }
        Ok(Tx {
            db: self,
            done: false,
        })
    }

    /// Starts a transaction that excludes every other writer until it ends.
    pub fn begin_write(&self) -> Result<Tx<'_>, StateError> {
        if self.is_postgres() {
            self.begin("BEGIN")?;
            // One lock for every writer of every replica: writes are serialized as in SQLite.
            if let Err(e) = self.execute_batch("SELECT pg_advisory_xact_lock(7252)") {
                let _ = self.execute_batch("ROLLBACK");
                self.in_tx.set(false);
                return Err(e);
            }
        } else {
            self.begin("BEGIN IMMEDIATE")?;
        }
        Ok(Tx {
            db: self,
            done: false,
        })
    }
}

/// A prepared statement.
pub struct Stmt<'a> {
    db: &'a Db,
    sql: &'a str,
}

impl Stmt<'_> {
    /// Every row, mapped by `f`.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        f: impl FnMut(&Row) -> Result<T, StateError>,
    ) -> Result<std::vec::IntoIter<Result<T, StateError>>, StateError> {
        let rows = self.db.rows(self.sql, params)?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    /// The first row, mapped by `f`.
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.db.query_row(self.sql, params, f)
    }
}

fn sqlite_val(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::Null => rusqlite::types::Value::Null,
        Val::Int(i) => rusqlite::types::Value::Integer(*i),
        Val::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

/// A write transaction: committed by [`Tx::commit`], rolled back when dropped without.
pub struct Tx<'a> {
    db: &'a Db,
    done: bool,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Tx<'_> {
    /// Commits.
    pub fn commit(mut self) -> Result<(), StateError> {
        self.done = true;
        let r = self.db.execute_batch("COMMIT");
        self.db.in_tx.set(false);
        r
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.db.execute_batch("ROLLBACK");
            self.db.in_tx.set(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pg_sql;

    #[test]
    fn placeholders_become_numbered() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ? AND c = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(
            pg_sql("x = ?1 OR y = ?1 AND z = ?2"),
            "x = $1 OR y = $1 AND z = $2"
        );
    }
}
