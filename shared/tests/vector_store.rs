//! The vector store checks, the same on every store: the SQLite file, a
//! Postgres schema (`WEIR_TEST_POSTGRES_URL`) and a real Chroma server
//! started by the test (`scripts/chroma run`, which installs chromadb from
//! PyPI into target/tools on first use). Outside CI a store whose server
//! is missing is skipped with a message; with CI=true it fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir_shared::broker::conformance::service_url;
use weir_shared::embed::{LOCAL_MODEL, embed_local};
use weir_shared::vector::{
    self, Generation, ReplaceDocument, Replaced, SearchRequest, Segment, SharedStore, VectorError,
};

/// A store and what must live as long as it.
struct TestStore {
    store: SharedStore,
    _guard: Box<dyn Send>,
}

async fn sqlite() -> Option<TestStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/vectors.db", dir.path().display());
    let store = vector::open(&url, 64 << 20).await.expect("SQLite store");
    Some(TestStore {
        store,
        _guard: Box::new(dir),
    })
}

async fn postgres() -> Option<TestStore> {
    let url = service_url(
        "WEIR_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
    )?;
    let schema = format!("weirvec_{}", uuid::Uuid::now_v7().simple());
    let store = vector::open(&format!("{url}&schema={schema}"), 64 << 20)
        .await
        .expect("Postgres store");
    Some(TestStore {
        store,
        _guard: Box::new(weir_shared::broker::postgres::SchemaCleanup { url, schema }),
    })
}

/// A `chroma run` child, killed when dropped.
struct ChromaServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs chromadb once per test run (the checks run in parallel and
/// must not build one venv together); true when `chroma` runs.
fn chroma_installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/chroma"))
            .arg("--help")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

async fn chroma() -> Option<TestStore> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let installed = tokio::task::spawn_blocking(chroma_installed)
        .await
        .unwrap_or(false);
    if !installed {
        assert!(
            !ci,
            "scripts/chroma could not install or run Chroma, and CI=true does not skip tests"
        );
        eprintln!("skipped: scripts/chroma could not install or run Chroma");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/chroma");
    let child = Command::new(script)
        .args(["run", "--path"])
        .arg(dir.path())
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if !ci => {
            eprintln!("skipped: cannot start scripts/chroma: {e}");
            return None;
        }
        Err(e) => panic!("scripts/chroma: {e}, and CI=true does not skip tests"),
    };
    let server = ChromaServer { child, _dir: dir };
    let url = format!("chroma://127.0.0.1:{port}");
    // The first run installs chromadb; later ones start in seconds.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match vector::open(&url, 0).await {
            Ok(store) => {
                return Some(TestStore {
                    store,
                    _guard: Box::new(server),
                });
            }
            Err(e) if Instant::now() > deadline => {
                assert!(
                    !ci,
                    "Chroma did not start: {e}, and CI=true does not skip tests"
                );
                eprintln!("skipped: Chroma did not start: {e}");
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn segments(texts: &[&str]) -> Vec<Segment> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Segment {
            seq: i as u32,
            text: (*t).to_owned(),
            tokens: t.split_whitespace().count() as u32,
            sha256: format!("{i:064x}"),
            vector: embed_local(t),
        })
        .collect()
}

fn doc(tenant: &str, dataset: &str, id: &str, at_ms: i64, texts: &[&str]) -> ReplaceDocument {
    ReplaceDocument {
        tenant: tenant.into(),
        dataset: dataset.into(),
        document_id: id.into(),
        generation: Generation {
            at_ms,
            id: format!("job-{id}-{at_ms}"),
        },
        model: LOCAL_MODEL.into(),
        segments: segments(texts),
    }
}

fn query(tenant: &str, dataset: &str, text: &str, top_k: usize) -> SearchRequest {
    SearchRequest {
        tenant: tenant.into(),
        dataset: dataset.into(),
        model: LOCAL_MODEL.into(),
        vector: embed_local(text),
        top_k,
    }
}

async fn replace_then_search(s: SharedStore) {
    let a = doc(
        "t1",
        "kb",
        "rust",
        10,
        &[
            "Rust ownership and borrowing rules",
            "Cargo builds Rust crates",
        ],
    );
    let b = doc(
        "t1",
        "kb",
        "cooking",
        10,
        &["Bake bread with flour, water and yeast"],
    );
    assert_eq!(s.replace_document(&a).await.expect("a"), Replaced::Written);
    assert_eq!(s.replace_document(&b).await.expect("b"), Replaced::Written);
    let hits = s
        .search(&query("t1", "kb", "how does cargo build crates", 2))
        .await
        .expect("search");
    assert_eq!(hits[0].document_id, "rust", "{hits:?}");
    assert_eq!(hits[0].segment, 1);
    assert_eq!(hits[0].text, "Cargo builds Rust crates");
    assert!(hits[0].score > 0.2 && hits[0].score <= 1.0001, "{hits:?}");
    let bread = s
        .search(&query("t1", "kb", "bread flour", 1))
        .await
        .expect("search");
    assert_eq!(bread.len(), 1);
    assert_eq!(bread[0].document_id, "cooking");
    let docs = s.documents("t1", "kb").await.expect("documents");
    assert_eq!(
        docs.iter()
            .map(|d| (d.document_id.as_str(), d.segments))
            .collect::<Vec<_>>(),
        vec![("cooking", 1), ("rust", 2)]
    );
    let sets = s.datasets("t1").await.expect("datasets");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].name, "kb");
    assert_eq!(sets[0].model, LOCAL_MODEL);
    assert_eq!((sets[0].documents, sets[0].segments), (2, 3));
    assert!(sets[0].tokens > 0);
}

async fn a_newer_version_replaces_an_older_never_does(s: SharedStore) {
    s.replace_document(&doc("t1", "kb", "d", 100, &["alpha beta gamma", "delta"]))
        .await
        .expect("v1");
    s.replace_document(&doc("t1", "kb", "d", 200, &["zebra giraffe"]))
        .await
        .expect("v2");
    let stale = doc("t1", "kb", "d", 150, &["alpha beta gamma"]);
    assert_eq!(
        s.replace_document(&stale).await.expect("stale"),
        Replaced::Superseded
    );
    let hits = s
        .search(&query("t1", "kb", "alpha beta gamma delta", 5))
        .await
        .expect("search");
    assert!(
        hits.iter().all(|h| h.text == "zebra giraffe"),
        "an old segment survived: {hits:?}"
    );
    let docs = s.documents("t1", "kb").await.expect("documents");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].segments, 1);
    assert_eq!(docs[0].job_id, "job-d-200");
}

async fn tenants_never_see_each_other(s: SharedStore) {
    s.replace_document(&doc("t1", "kb", "secret", 1, &["the launch code is 1234"]))
        .await
        .expect("t1");
    assert!(s.datasets("t2").await.expect("datasets").is_empty());
    assert!(s.documents("t2", "kb").await.expect("documents").is_empty());
    assert!(
        s.search(&query("t2", "kb", "launch code", 5))
            .await
            .expect("search")
            .is_empty()
    );
    assert!(
        !s.delete_document("t2", "kb", "secret")
            .await
            .expect("delete")
    );
    assert_eq!(s.documents("t1", "kb").await.expect("documents").len(), 1);
    // The same names in another tenant are another dataset.
    s.replace_document(&doc("t2", "kb", "secret", 1, &["nothing to see"]))
        .await
        .expect("t2");
    let hits = s
        .search(&query("t1", "kb", "launch code", 5))
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].text, "the launch code is 1234");
}

async fn delete_removes_segments_and_vectors(s: SharedStore) {
    s.replace_document(&doc("t1", "kb", "a", 1, &["apples and pears"]))
        .await
        .expect("a");
    s.replace_document(&doc("t1", "kb", "b", 1, &["apples and plums"]))
        .await
        .expect("b");
    assert!(s.delete_document("t1", "kb", "a").await.expect("delete"));
    assert!(!s.delete_document("t1", "kb", "a").await.expect("again"));
    let hits = s
        .search(&query("t1", "kb", "apples pears", 5))
        .await
        .expect("search");
    assert_eq!(
        hits.iter()
            .map(|h| h.document_id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    let sets = s.datasets("t1").await.expect("datasets");
    assert_eq!(sets[0].documents, 1);
}

/// The best hit of `text` in t1/kb, (document, text), when it is a close
/// match (the query shares most of its words).
async fn best(s: &SharedStore, text: &str) -> Option<(String, String)> {
    s.search(&query("t1", "kb", text, 1))
        .await
        .expect("search")
        .into_iter()
        .next()
        .filter(|h| h.score > 0.5)
        .map(|h| (h.document_id, h.text))
}

/// Searches see every write made after an earlier search: a document
/// replaced by a newer version, one written again at the same version, a
/// new one and a deleted one; and the documents not written since keep
/// being found.
async fn searches_follow_every_write(s: SharedStore) {
    for (id, text) in [
        ("a", "red apples grow on trees"),
        ("b", "blue whales swim in oceans"),
        ("c", "green grass covers the meadow"),
        ("z", "black cats nap indoors"),
    ] {
        s.replace_document(&doc("t1", "kb", id, 1, &[text]))
            .await
            .expect("write");
    }
    let found = |id: &str, text: &str| Some((id.to_owned(), text.to_owned()));
    assert_eq!(
        best(&s, "red apples trees").await,
        found("a", "red apples grow on trees")
    );

    s.replace_document(&doc("t1", "kb", "b", 2, &["yellow bananas ripen slowly"]))
        .await
        .expect("newer b");
    s.replace_document(&doc("t1", "kb", "c", 1, &["orange carrots sleep in soil"]))
        .await
        .expect("c again");
    s.replace_document(&doc("t1", "kb", "d", 1, &["purple grapes make wine"]))
        .await
        .expect("new d");
    assert!(s.delete_document("t1", "kb", "a").await.expect("delete a"));

    assert_eq!(
        best(&s, "yellow bananas ripen").await,
        found("b", "yellow bananas ripen slowly")
    );
    assert_eq!(
        best(&s, "orange carrots soil").await,
        found("c", "orange carrots sleep in soil")
    );
    assert_eq!(
        best(&s, "purple grapes wine").await,
        found("d", "purple grapes make wine")
    );
    assert_eq!(
        best(&s, "black cats nap").await,
        found("z", "black cats nap indoors")
    );
    let all = s
        .search(&query(
            "t1",
            "kb",
            "red apples trees blue whales green grass",
            10,
        ))
        .await
        .expect("search");
    let mut documents: Vec<&str> = all.iter().map(|h| h.document_id.as_str()).collect();
    documents.sort_unstable();
    assert_eq!(documents, vec!["b", "c", "d", "z"], "{all:?}");
    for gone in [
        "red apples grow on trees",
        "blue whales swim in oceans",
        "green grass covers the meadow",
    ] {
        assert!(all.iter().all(|h| h.text != gone), "{gone:?} in {all:?}");
        // Nor is what they said still found under another text.
        assert_eq!(best(&s, gone).await, None, "{gone:?}");
    }

    // One more write: the rows kept from the earlier matrices stay right.
    s.replace_document(&doc("t1", "kb", "e", 1, &["silver fish jump upstream"]))
        .await
        .expect("new e");
    assert_eq!(
        best(&s, "silver fish upstream").await,
        found("e", "silver fish jump upstream")
    );
    assert_eq!(
        best(&s, "purple grapes wine").await,
        found("d", "purple grapes make wine")
    );
    assert_eq!(
        best(&s, "yellow bananas ripen").await,
        found("b", "yellow bananas ripen slowly")
    );
    assert_eq!(
        best(&s, "black cats nap").await,
        found("z", "black cats nap indoors")
    );

    // Searches that arrive together after a write all see it.
    s.replace_document(&doc("t1", "kb", "f", 1, &["white swans glide north"]))
        .await
        .expect("new f");
    let together: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { best(&s, "white swans glide").await })
        })
        .collect();
    for search in together {
        assert_eq!(
            search.await.expect("search task"),
            found("f", "white swans glide north")
        );
    }
}

async fn a_dataset_keeps_one_model(s: SharedStore) {
    s.replace_document(&doc("t1", "kb", "a", 1, &["one"]))
        .await
        .expect("a");
    let mut other = doc("t1", "kb", "b", 1, &["two"]);
    other.model = "openai/text-embedding-3-small/1536".into();
    assert!(matches!(
        s.replace_document(&other).await,
        Err(VectorError::ModelMismatch { .. })
    ));
    let mut q = query("t1", "kb", "one", 1);
    q.model = other.model.clone();
    assert!(matches!(
        s.search(&q).await,
        Err(VectorError::ModelMismatch { .. })
    ));
}

async fn the_cache_is_per_model_and_expires(s: SharedStore) {
    let v = embed_local("cached text");
    s.remember(LOCAL_MODEL, &[("h1".into(), v.clone())])
        .await
        .expect("remember");
    // Remembering twice is harmless.
    s.remember(LOCAL_MODEL, &[("h1".into(), v.clone())])
        .await
        .expect("again");
    let got = s
        .cached(LOCAL_MODEL, &["h1".into(), "h2".into()])
        .await
        .expect("cached");
    assert_eq!(got.len(), 1);
    assert_eq!(got["h1"], v);
    assert!(
        s.cached("other/model/8", &["h1".into()])
            .await
            .expect("other model")
            .is_empty()
    );
    let far = weir_shared::job::now_ms().0 + 60_000;
    assert_eq!(s.expire_cache(far).await.expect("expire"), 1);
    assert!(
        s.cached(LOCAL_MODEL, &["h1".into()])
            .await
            .expect("gone")
            .is_empty()
    );
}

macro_rules! store_checks {
    ($module:ident, $open:expr) => {
        mod $module {
            use super::*;

            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let Some(t) = $open.await else { return };
                        super::$name(t.store.clone()).await;
                    }
                };
            }

            check!(replace_then_search);
            check!(a_newer_version_replaces_an_older_never_does);
            check!(tenants_never_see_each_other);
            check!(delete_removes_segments_and_vectors);
            check!(searches_follow_every_write);
            check!(a_dataset_keeps_one_model);
            check!(the_cache_is_per_model_and_expires);
        }
    };
}

store_checks!(on_sqlite, sqlite());
store_checks!(on_postgres, postgres());
store_checks!(on_chroma, chroma());

#[tokio::test]
async fn an_unknown_scheme_is_refused_with_the_ones_known() {
    let Err(e) = vector::open("qdrant://localhost:6333", 0).await else {
        panic!("opened an unknown scheme");
    };
    let text = e.to_string();
    assert!(text.contains("chroma://"), "{text}");
}
