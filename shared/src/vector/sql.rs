//! The embedded SQL store: segments, vectors (f32 little-endian blobs),
//! documents, datasets and the embedding cache in four tables of a SQLite
//! file or a Postgres schema. A document is replaced in one transaction;
//! search scans the dataset's matrix, loaded once per dataset version and
//! kept in memory (least recently used first out past the budget).

use super::scan::{Matrix, top_k};
use super::{
    DatasetInfo, DocumentInfo, Generation, ReplaceDocument, Replaced, SearchHit, SearchRequest,
    VectorError, VectorResult, VectorStore, from_bytes, rfc3339, to_bytes,
};
use crate::job::now_ms;
use async_trait::async_trait;
use sqlx::QueryBuilder;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Segment rows per INSERT statement.
const INSERT_ROWS: usize = 200;
/// Values per `IN (...)` list: hashes of a cache lookup, documents of a
/// matrix refresh.
const IN_LIST: usize = 500;
/// The Postgres schema when the URL names none.
pub const DEFAULT_SCHEMA: &str = "weir_vectors";

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS datasets (
    tenant TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL,
    version BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS documents (
    tenant TEXT NOT NULL, dataset TEXT NOT NULL, document_id TEXT NOT NULL,
    gen_at BIGINT NOT NULL, gen_id TEXT NOT NULL,
    segments BIGINT NOT NULL, tokens BIGINT NOT NULL, indexed_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, dataset, document_id));
CREATE TABLE IF NOT EXISTS segments (
    tenant TEXT NOT NULL, dataset TEXT NOT NULL, document_id TEXT NOT NULL,
    seq BIGINT NOT NULL, text TEXT NOT NULL, tokens BIGINT NOT NULL,
    sha256 TEXT NOT NULL, vector BLOBTYPE NOT NULL,
    PRIMARY KEY (tenant, dataset, document_id, seq));
CREATE TABLE IF NOT EXISTS embedding_cache (
    model TEXT NOT NULL, sha256 TEXT NOT NULL, vector BLOBTYPE NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (model, sha256));
CREATE INDEX IF NOT EXISTS embedding_cache_age ON embedding_cache (created_at);
";

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on either pool: the statements are written once, in
/// the SQL both databases speak (`$N` parameters, `ON CONFLICT`,
/// `RETURNING`).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

type CacheKey = (String, String);

/// What a document's rows in a cached matrix were read from: any rewrite
/// of the document changes it (a newer generation, or the same one written
/// again later).
#[derive(Clone, PartialEq)]
struct Stamp {
    gen_at: i64,
    gen_id: String,
    indexed_at: i64,
}

/// A dataset's matrix as read at a dataset version, with the stamp of
/// each document in it.
struct Loaded {
    version: i64,
    matrix: Arc<Matrix>,
    stamps: Arc<HashMap<String, Stamp>>,
    used: Instant,
}

/// Matrices of searched datasets, by (tenant, dataset).
#[derive(Default)]
struct Matrices {
    entries: HashMap<CacheKey, Loaded>,
    bytes: usize,
}

/// The SQL store.
pub struct SqlStore {
    pool: Pool,
    kind: &'static str,
    budget: usize,
    matrices: Mutex<Matrices>,
    /// One refresh at a time per dataset: searches that arrive while its
    /// matrix is read wait for that read instead of reading it too.
    refreshing: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

fn unavailable(e: sqlx::Error) -> VectorError {
    VectorError::Unavailable(e.to_string())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Segment rows as read for a matrix: document, segment, vector bytes.
type SegmentRow = (String, i64, Vec<u8>);

/// Appends `rows` (grouped by document) to `matrix`, a block per
/// document.
fn append(matrix: &mut Matrix, rows: Vec<SegmentRow>) {
    let mut last: Option<String> = None;
    for (document_id, seq, vector) in rows {
        if last.as_ref() != Some(&document_id) {
            matrix.start_block(document_id.clone());
            last = Some(document_id);
        }
        matrix.push(u32::try_from(seq).unwrap_or(0), &from_bytes(&vector));
    }
}

impl SqlStore {
    /// Opens `sqlite://PATH` (the file and its folder made if missing) or
    /// `postgres://...?schema=NAME` and creates the tables.
    pub async fn open(url: &str, search_cache_bytes: usize) -> VectorResult<Self> {
        let (pool, kind) = if let Some(path) = url.strip_prefix("sqlite://") {
            (Pool::Sqlite(open_sqlite(path).await?), "sqlite")
        } else {
            (Pool::Postgres(open_postgres(url).await?), "postgres")
        };
        Ok(SqlStore {
            pool,
            kind,
            budget: search_cache_bytes,
            matrices: Mutex::default(),
            refreshing: Mutex::default(),
        })
    }

    fn matrices(&self) -> std::sync::MutexGuard<'_, Matrices> {
        self.matrices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stamp of each document of the dataset.
    async fn stamps(&self, tenant: &str, dataset: &str) -> VectorResult<HashMap<String, Stamp>> {
        let rows: Vec<(String, i64, String, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT document_id, gen_at, gen_id, indexed_at FROM documents
             WHERE tenant = $1 AND dataset = $2",
        )
        .bind(tenant)
        .bind(dataset)
        .fetch_all(p)
        .await
        .map_err(unavailable)?);
        Ok(rows
            .into_iter()
            .map(|(document_id, gen_at, gen_id, indexed_at)| {
                (
                    document_id,
                    Stamp {
                        gen_at,
                        gen_id,
                        indexed_at,
                    },
                )
            })
            .collect())
    }

    /// The segments of `documents` (all of the dataset's when `None`),
    /// grouped by document.
    async fn segments_of(
        &self,
        tenant: &str,
        dataset: &str,
        documents: Option<&[&str]>,
    ) -> VectorResult<Vec<SegmentRow>> {
        let Some(documents) = documents else {
            return on_pool!(&self.pool, p => {
                let rows: Vec<SegmentRow> = sqlx::query_as(
                    "SELECT document_id, seq, vector FROM segments
                     WHERE tenant = $1 AND dataset = $2 ORDER BY document_id, seq",
                )
                .bind(tenant)
                .bind(dataset)
                .fetch_all(p)
                .await
                .map_err(unavailable)?;
                Ok(rows)
            });
        };
        let mut out = Vec::new();
        for chunk in documents.chunks(IN_LIST) {
            let rows: Vec<SegmentRow> = on_pool!(&self.pool, p => {
                let mut q = QueryBuilder::new(
                    "SELECT document_id, seq, vector FROM segments WHERE tenant = ",
                );
                q.push_bind(tenant)
                    .push(" AND dataset = ")
                    .push_bind(dataset)
                    .push(" AND document_id IN (");
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind(*id);
                }
                q.push(") ORDER BY document_id, seq");
                q.build_query_as().fetch_all(p).await.map_err(unavailable)?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// The cached matrix of `key` when it was read at `version` or later
    /// (a later one is as good: it holds every write `version` counts).
    fn cached_matrix(&self, key: &CacheKey, version: i64) -> Option<Arc<Matrix>> {
        let mut cache = self.matrices();
        let loaded = cache.entries.get_mut(key)?;
        if loaded.version < version {
            return None;
        }
        loaded.used = Instant::now();
        Some(loaded.matrix.clone())
    }

    /// The dataset's matrix at `version`, from memory, brought up to date,
    /// or loaded. Bringing it up to date reads only the documents written
    /// since it was read and keeps the other documents' blocks, so a search
    /// after a write to a large dataset neither reads nor copies the whole
    /// dataset again.
    async fn matrix(&self, tenant: &str, dataset: &str, version: i64) -> VectorResult<Arc<Matrix>> {
        let key = (tenant.to_owned(), dataset.to_owned());
        if let Some(current) = self.cached_matrix(&key, version) {
            return Ok(current);
        }
        let gate = self
            .refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _refreshing = gate.lock().await;
        // Whoever held the gate may have read it already.
        if let Some(current) = self.cached_matrix(&key, version) {
            return Ok(current);
        }
        let previous = self
            .matrices()
            .entries
            .get(&key)
            .map(|loaded| (loaded.matrix.clone(), loaded.stamps.clone()));
        // The stamps are read before the segments: a document written in
        // between is read newer than its stamp says, and the next refresh
        // reads it again.
        let stamps = self.stamps(tenant, dataset).await?;
        let kept = |document_id: &str| {
            previous
                .as_ref()
                .and_then(|(_, old)| old.get(document_id))
                .is_some_and(|stamp| stamps.get(document_id) == Some(stamp))
        };
        // The blocks of documents not written since are shared with the
        // previous matrix, not copied.
        let base = previous
            .as_ref()
            .map(|(old, _)| Matrix {
                dims: old.dims,
                blocks: old
                    .blocks
                    .iter()
                    .filter(|b| kept(&b.document))
                    .cloned()
                    .collect(),
            })
            .filter(|m| !m.blocks.is_empty());
        let matrix = match base {
            Some(mut matrix) => {
                let mut fresh: Vec<&str> = stamps
                    .keys()
                    .map(String::as_str)
                    .filter(|d| !kept(d))
                    .collect();
                fresh.sort_unstable();
                let rows = self.segments_of(tenant, dataset, Some(&fresh)).await?;
                append(&mut matrix, rows);
                matrix
            }
            None => {
                let rows = self.segments_of(tenant, dataset, None).await?;
                let mut matrix = Matrix::new(rows.first().map_or(0, |r| r.2.len() / 4));
                append(&mut matrix, rows);
                matrix
            }
        };
        let matrix = Arc::new(matrix);
        let mut cache = self.matrices();
        let size = matrix.bytes();
        let loaded = Loaded {
            version,
            matrix: matrix.clone(),
            stamps: Arc::new(stamps),
            used: Instant::now(),
        };
        if let Some(old) = cache.entries.insert(key, loaded) {
            cache.bytes -= old.matrix.bytes();
        }
        cache.bytes += size;
        while cache.bytes > self.budget && cache.entries.len() > 1 {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = cache.entries.remove(&oldest) {
                cache.bytes -= gone.matrix.bytes();
            }
        }
        Ok(matrix)
    }
}

async fn open_sqlite(path: &str) -> VectorResult<SqlitePool> {
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            VectorError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .map_err(|e| VectorError::Invalid(format!("bad SQLite path `{path}`: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(unavailable)?;
    let ddl = TABLES.replace("BLOBTYPE", "BLOB");
    let mut tries = 0;
    loop {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.clone()))
            .execute(&pool)
            .await
        {
            Ok(_) => return Ok(pool),
            // Processes creating a new file at once (a worker's children).
            Err(e) if tries < 50 => {
                tracing::debug!(error = %e, "Vector store setup raced another process; retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
}

async fn open_postgres(url: &str) -> VectorResult<PgPool> {
    let mut parsed = url::Url::parse(url).map_err(|e| {
        VectorError::Invalid(format!(
            "bad vector_store URL `{}`: {e}",
            crate::secret::redact_url(url)
        ))
    })?;
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "schema" {
                schema = v.into_owned();
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(VectorError::Invalid(format!(
            "vector_store schema `{schema}`: use letters, digits and _"
        )));
    }
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    let options = PgConnectOptions::from_str(parsed.as_str())
        .map_err(|e| {
            VectorError::Invalid(format!(
                "bad vector_store URL `{}`: {e}",
                crate::secret::redact_url(url)
            ))
        })?
        .application_name("weir-vectors");
    let set = format!("SET search_path TO {schema}");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            let set = set.clone();
            Box::pin(async move {
                sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(set)).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| VectorError::Unavailable(crate::secret::scrub(&e.to_string(), &[url])))?;
    let mut tx = pool.begin().await.map_err(unavailable)?;
    // One process at a time creates the schema and tables.
    sqlx::query("SELECT pg_advisory_xact_lock(7765697276656374)")
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    let ddl = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};{}",
        TABLES.replace("BLOBTYPE", "BYTEA")
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(pool)
}

#[async_trait]
impl VectorStore for SqlStore {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn cached(
        &self,
        model: &str,
        hashes: &[String],
    ) -> VectorResult<HashMap<String, Vec<f32>>> {
        let mut out = HashMap::new();
        for chunk in hashes.chunks(IN_LIST) {
            let rows: Vec<(String, Vec<u8>)> = on_pool!(&self.pool, p => {
                let mut q = QueryBuilder::new("SELECT sha256, vector FROM embedding_cache WHERE model = ");
                q.push_bind(model).push(" AND sha256 IN (");
                let mut list = q.separated(", ");
                for h in chunk {
                    list.push_bind(h);
                }
                q.push(")");
                q.build_query_as().fetch_all(p).await.map_err(unavailable)?
            });
            out.extend(rows.into_iter().map(|(h, v)| (h, from_bytes(&v))));
        }
        Ok(out)
    }

    async fn remember(&self, model: &str, entries: &[(String, Vec<f32>)]) -> VectorResult<()> {
        let now = now_ms().0;
        for chunk in entries.chunks(INSERT_ROWS) {
            on_pool!(&self.pool, p => {
                let mut q = QueryBuilder::new("INSERT INTO embedding_cache (model, sha256, vector, created_at) ");
                q.push_values(chunk, |mut row, (hash, vector)| {
                    row.push_bind(model).push_bind(hash).push_bind(to_bytes(vector)).push_bind(now);
                });
                q.push(" ON CONFLICT (model, sha256) DO NOTHING");
                q.build().execute(p).await.map_err(unavailable)?;
            });
        }
        Ok(())
    }

    async fn replace_document(&self, doc: &ReplaceDocument) -> VectorResult<Replaced> {
        let now = now_ms().0;
        let segments = i64::try_from(doc.segments.len()).unwrap_or(i64::MAX);
        let tokens: i64 = doc.segments.iter().map(|s| i64::from(s.tokens)).sum();
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(unavailable)?;
            // The dataset row first: it orders concurrent writers of one
            // dataset, and its version tells searchers their matrix is old.
            let stored: String = sqlx::query_scalar(
                "INSERT INTO datasets (tenant, name, model, version, updated_at)
                 VALUES ($1, $2, $3, 1, $4)
                 ON CONFLICT (tenant, name) DO UPDATE
                 SET version = datasets.version + 1, updated_at = excluded.updated_at
                 RETURNING model",
            )
            .bind(&doc.tenant)
            .bind(&doc.dataset)
            .bind(&doc.model)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            if stored != doc.model {
                let others: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM documents
                     WHERE tenant = $1 AND dataset = $2 AND document_id <> $3",
                )
                .bind(&doc.tenant)
                .bind(&doc.dataset)
                .bind(&doc.document_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                if others > 0 {
                    tx.rollback().await.map_err(unavailable)?;
                    return Err(VectorError::ModelMismatch {
                        dataset: doc.dataset.clone(),
                        stored,
                        given: doc.model.clone(),
                    });
                }
                sqlx::query("UPDATE datasets SET model = $3 WHERE tenant = $1 AND name = $2")
                    .bind(&doc.tenant)
                    .bind(&doc.dataset)
                    .bind(&doc.model)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            let current: Option<(i64, String)> = sqlx::query_as(
                "SELECT gen_at, gen_id FROM documents
                 WHERE tenant = $1 AND dataset = $2 AND document_id = $3",
            )
            .bind(&doc.tenant)
            .bind(&doc.dataset)
            .bind(&doc.document_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if let Some((at_ms, id)) = current
                && (Generation { at_ms, id }) > doc.generation
            {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(Replaced::Superseded);
            }
            sqlx::query("DELETE FROM segments WHERE tenant = $1 AND dataset = $2 AND document_id = $3")
                .bind(&doc.tenant)
                .bind(&doc.dataset)
                .bind(&doc.document_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            for chunk in doc.segments.chunks(INSERT_ROWS) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO segments (tenant, dataset, document_id, seq, text, tokens, sha256, vector) ",
                );
                q.push_values(chunk, |mut row, s| {
                    row.push_bind(&doc.tenant)
                        .push_bind(&doc.dataset)
                        .push_bind(&doc.document_id)
                        .push_bind(i64::from(s.seq))
                        .push_bind(&s.text)
                        .push_bind(i64::from(s.tokens))
                        .push_bind(&s.sha256)
                        .push_bind(to_bytes(&s.vector));
                });
                q.build().execute(&mut *tx).await.map_err(unavailable)?;
            }
            sqlx::query(
                "INSERT INTO documents
                 (tenant, dataset, document_id, gen_at, gen_id, segments, tokens, indexed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant, dataset, document_id) DO UPDATE
                 SET gen_at = excluded.gen_at, gen_id = excluded.gen_id,
                     segments = excluded.segments, tokens = excluded.tokens,
                     indexed_at = excluded.indexed_at",
            )
            .bind(&doc.tenant)
            .bind(&doc.dataset)
            .bind(&doc.document_id)
            .bind(doc.generation.at_ms)
            .bind(&doc.generation.id)
            .bind(segments)
            .bind(tokens)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
        });
        Ok(Replaced::Written)
    }

    async fn delete_document(
        &self,
        tenant: &str,
        dataset: &str,
        document_id: &str,
    ) -> VectorResult<bool> {
        let now = now_ms().0;
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(unavailable)?;
            let bumped = sqlx::query(
                "UPDATE datasets SET version = version + 1, updated_at = $3
                 WHERE tenant = $1 AND name = $2",
            )
            .bind(tenant)
            .bind(dataset)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            if bumped.rows_affected() == 0 {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(false);
            }
            sqlx::query("DELETE FROM segments WHERE tenant = $1 AND dataset = $2 AND document_id = $3")
                .bind(tenant)
                .bind(dataset)
                .bind(document_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let gone = sqlx::query("DELETE FROM documents WHERE tenant = $1 AND dataset = $2 AND document_id = $3")
                .bind(tenant)
                .bind(dataset)
                .bind(document_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(gone.rows_affected() > 0)
        })
    }

    async fn search(&self, request: &SearchRequest) -> VectorResult<Vec<SearchHit>> {
        let found: Option<(String, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT model, version FROM datasets WHERE tenant = $1 AND name = $2",
        )
        .bind(&request.tenant)
        .bind(&request.dataset)
        .fetch_optional(p)
        .await
        .map_err(unavailable)?);
        let Some((model, version)) = found else {
            return Ok(Vec::new());
        };
        if model != request.model {
            return Err(VectorError::ModelMismatch {
                dataset: request.dataset.clone(),
                stored: model,
                given: request.model.clone(),
            });
        }
        let matrix = self
            .matrix(&request.tenant, &request.dataset, version)
            .await?;
        let query = super::normalise(request.vector.clone());
        let mut hits = Vec::new();
        for (at, score) in top_k(&matrix, &query, request.top_k) {
            let Some((document_id, seq)) = matrix.row(at) else {
                continue;
            };
            let text: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
                "SELECT text FROM segments
                 WHERE tenant = $1 AND dataset = $2 AND document_id = $3 AND seq = $4",
            )
            .bind(&request.tenant)
            .bind(&request.dataset)
            .bind(document_id)
            .bind(i64::from(seq))
            .fetch_optional(p)
            .await
            .map_err(unavailable)?);
            // A row replaced since the matrix was read is left out.
            if let Some(text) = text {
                hits.push(SearchHit {
                    document_id: document_id.to_owned(),
                    segment: seq,
                    text,
                    score,
                });
            }
        }
        Ok(hits)
    }

    async fn datasets(&self, tenant: &str) -> VectorResult<Vec<DatasetInfo>> {
        let rows: Vec<(String, String, i64, i64, i64, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT d.name, d.model, d.updated_at, COUNT(o.document_id),
                    CAST(COALESCE(SUM(o.segments), 0) AS BIGINT),
                    CAST(COALESCE(SUM(o.tokens), 0) AS BIGINT)
             FROM datasets d
             LEFT JOIN documents o ON o.tenant = d.tenant AND o.dataset = d.name
             WHERE d.tenant = $1
             GROUP BY d.name, d.model, d.updated_at
             ORDER BY d.name",
        )
        .bind(tenant)
        .fetch_all(p)
        .await
        .map_err(unavailable)?);
        Ok(rows
            .into_iter()
            .map(
                |(name, model, updated_at, documents, segments, tokens)| DatasetInfo {
                    name,
                    model,
                    documents: count(documents),
                    segments: count(segments),
                    tokens: count(tokens),
                    updated_at: rfc3339(updated_at),
                },
            )
            .collect())
    }

    async fn documents(&self, tenant: &str, dataset: &str) -> VectorResult<Vec<DocumentInfo>> {
        let rows: Vec<(String, i64, i64, i64, String)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT document_id, segments, tokens, indexed_at, gen_id FROM documents
             WHERE tenant = $1 AND dataset = $2 ORDER BY document_id",
        )
        .bind(tenant)
        .bind(dataset)
        .fetch_all(p)
        .await
        .map_err(unavailable)?);
        Ok(rows
            .into_iter()
            .map(
                |(document_id, segments, tokens, indexed_at, job_id)| DocumentInfo {
                    document_id,
                    segments: count(segments),
                    tokens: count(tokens),
                    indexed_at: rfc3339(indexed_at),
                    job_id,
                },
            )
            .collect())
    }

    async fn expire_cache(&self, before_ms: i64) -> VectorResult<u64> {
        let done = on_pool!(&self.pool, p => sqlx::query("DELETE FROM embedding_cache WHERE created_at < $1")
            .bind(before_ms)
            .execute(p)
            .await
            .map_err(unavailable)?
            .rows_affected());
        Ok(done)
    }
}
