//! A harness for black-box tests: it starts the real `weir` binary in a
//! temporary directory (its own SQLite file), on a free port, and talks to
//! it over HTTP and through the CLI, as a user would.

pub mod mock_openai;
pub mod smtp_sink;

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `weir` binary under test: `WEIR_BIN`, or the one cargo built next to
/// this test executable.
pub fn weir_bin() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/weir
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = profile_dir.join("weir");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (it builds the binary) or set WEIR_BIN",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A directory with its own broker file and environment for `weir` processes.
pub struct Sandbox {
    /// The temporary directory; removed on drop.
    pub dir: tempfile::TempDir,
    /// Extra environment for every process started here.
    pub env: Vec<(String, String)>,
}

impl Sandbox {
    /// A fresh sandbox with quiet logs.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("weir.db");
        Sandbox {
            env: vec![
                (
                    "WEIR_BROKER_URL".into(),
                    format!("sqlite://{}", db.display()),
                ),
                ("WEIR_LOG".into(), "info".into()),
            ],
            dir,
        }
    }

    /// Adds an environment variable for processes started from now on.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes a `WEIR_CONFIG` file and points the environment at it.
    pub fn config(&mut self, toml: &str) -> &mut Self {
        let path = self.dir.path().join("weir.toml");
        std::fs::write(&path, toml).expect("write config");
        let path = path.display().to_string();
        self.set("WEIR_CONFIG", &path)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(weir_bin());
        cmd.args(args).current_dir(self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run weir")
    }

    /// Runs a CLI command that must succeed and print JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "weir {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "weir {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `weir workers --json`'s nodes; none while no role has created the
    /// database yet (a worker just spawned).
    pub fn nodes(&self) -> Vec<Value> {
        let out = self.cli(&["workers", "--json"]);
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("no weir database")
        {
            return Vec::new();
        }
        self.cli_json(&["workers", "--json"])["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every job, read with `weir jobs list` page by page (newest first).
    pub fn all_jobs(&self) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut args = vec!["jobs", "list", "--limit", "500", "--json"];
            if let Some(c) = &cursor {
                args.extend(["--cursor", c.as_str()]);
            }
            let page = self.cli_json(&args);
            jobs.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) if page["has_more"] != false => cursor = Some(c.to_owned()),
                _ => return jobs,
            }
        }
    }

    /// Starts a long-running role; its log goes to `<name>.log` in the sandbox.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn weir");
        Proc { child, log_path }
    }

    /// Starts `weir dev` on a free port and waits until it answers.
    pub async fn dev(&self) -> Dev {
        self.serve("dev").await
    }

    /// Starts `weir api` on a free port and waits until it answers.
    pub async fn api(&self) -> Dev {
        self.serve("api").await
    }

    async fn serve(&self, role: &str) -> Dev {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let proc = self.spawn(role, &[role, "--addr", &addr]);
        let dev = Dev {
            proc,
            base: format!("http://{addr}"),
            http: http_client(),
        };
        let ready = wait_until(Duration::from_secs(20), || async {
            dev.http
                .get(format!("{}/readyz", dev.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            ready,
            "weir {role} did not become ready: {}",
            dev.proc.log()
        );
        dev
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `weir` process.
pub struct Proc {
    /// The process.
    pub child: Child,
    log_path: PathBuf,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal (`TERM`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends signal `name` to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A running `weir dev` and an HTTP client for it.
pub struct Dev {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client.
    pub http: reqwest::Client,
}

impl Dev {
    /// POSTs JSON; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Reads a job's whole event stream; `None` if it does not end within `timeout`.
    pub async fn events(&self, id: &str, timeout: Duration) -> Option<String> {
        let read = async {
            self.http
                .get(format!("{}/v1/jobs/{id}/events", self.base))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        };
        tokio::time::timeout(timeout, read).await.ok().flatten()
    }

    /// Waits until job `id` is in `state`; returns it.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if job["state"] == state {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {state}: {job}\nlog:\n{}",
                self.proc.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` until it is true or `timeout` passes; returns the last answer.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private `redis-server` on a free port, with its data in `dir`, for
/// tests that kill and restart Redis (never the shared one on 6379).
pub struct PrivateRedis {
    /// The server process.
    pub child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    /// Starts a server that appends every write to its AOF before answering
    /// (`appendfsync always`: nothing acknowledged is lost on kill -9).
    pub fn start(dir: &Path) -> Self {
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills a worker node with SIGKILL: its supervisor and every child.
pub fn kill_node(node: &Proc) {
    let children = Command::new("pgrep")
        .args(["-P", &node.pid().to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    signal(node.pid(), "KILL");
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// A sandbox on the Redis at `url` under a key prefix of its own (auth off,
/// 2 s leases), and the guard that deletes the prefix's keys at the end.
pub fn redis_sandbox(url: &str) -> (Sandbox, weir_shared::broker::redis::PrefixCleanup) {
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_BROKER_URL", url)
        .set("WEIR_REDIS_PREFIX", &prefix)
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_LEASE", "2s");
    (
        sandbox,
        weir_shared::broker::redis::PrefixCleanup {
            url: url.to_owned(),
            prefix,
        },
    )
}

/// Every job of `task`, read page by page.
pub async fn jobs_of(api: &Dev, task: &str) -> Vec<weir_shared::job::Job> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api
            .get(&format!("/v1/jobs?task={task}&limit=500{cursor}"))
            .await;
        assert_eq!(status, 200, "{page}");
        for j in page["data"].as_array().cloned().unwrap_or_default() {
            out.push(serde_json::from_value(j).expect("a job"));
        }
        match page["next_cursor"].as_str() {
            Some(next) if page["has_more"] == true => cursor = format!("&cursor={next}"),
            _ => return out,
        }
    }
}

/// The most jobs running at one moment, from their start and finish times
/// (a job that starts the millisecond another finishes does not overlap it).
pub fn max_overlap(jobs: &[weir_shared::job::Job]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for j in jobs {
        if let (Some(s), Some(f)) = (j.started_at, j.finished_at) {
            edges.push((s.0, 1));
            edges.push((f.0, -1));
        }
    }
    // Ends sort before starts at the same instant.
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Waits until `n` worker nodes are listed.
pub async fn wait_workers(api: &Dev, n: usize) {
    assert!(
        wait_until(Duration::from_secs(20), || async {
            api.get("/v1/workers").await.1["data"]
                .as_array()
                .is_some_and(|w| w.len() == n)
        })
        .await,
        "{n} worker nodes register"
    );
}

/// A sandbox on the Postgres at `url` in a schema of its own (auth off,
/// 2 s leases), and the guard that drops the schema at the end.
pub fn postgres_sandbox(url: &str) -> (Sandbox, weir_shared::broker::postgres::SchemaCleanup) {
    let schema = format!("weirtest_{}", uuid::Uuid::now_v7().simple());
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_BROKER_URL", url)
        .set("WEIR_POSTGRES_SCHEMA", &schema)
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_LEASE", "2s");
    (
        sandbox,
        weir_shared::broker::postgres::SchemaCleanup {
            url: url.to_owned(),
            schema,
        },
    )
}

/// The test Postgres (`WEIR_TEST_POSTGRES_URL`), if reachable (see
/// [`weir_shared::broker::conformance::service_url`]).
pub fn postgres_url() -> Option<String> {
    weir_shared::broker::conformance::service_url(
        "WEIR_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
    )
}

/// An HTTP client for tests (the TLS crypto provider installed first: the
/// workspace's reqwest is built without a default one).
pub fn http_client() -> reqwest::Client {
    weir_shared::outbound::install_crypto_provider();
    reqwest::Client::new()
}

/// A builder of [`http_client`]'s kind.
pub fn http_builder() -> reqwest::ClientBuilder {
    weir_shared::outbound::install_crypto_provider();
    reqwest::Client::builder()
}

/// The counts of queue `default`, as `GET /v1/queues/default` gives them.
pub async fn default_counts(api: &Dev) -> Value {
    let (_, q) = api.get("/v1/queues/default").await;
    q["counts"].clone()
}

/// An API and two worker nodes on `sandbox`'s broker; 5,000 `weir.sleep`
/// jobs; one node killed with kill -9 once 1,000 have run: every job
/// succeeds, none fails or stays running, and the killed node stops being
/// listed once its heartbeat expires.
pub async fn two_nodes_finish_every_job_when_one_is_killed(sandbox: &Sandbox) {
    let api = sandbox.api().await;
    let a = sandbox.spawn("worker-a", &["worker", "--processes", "2", "-c", "40"]);
    let _b = sandbox.spawn("worker-b", &["worker", "--processes", "2", "-c", "40"]);
    wait_workers(&api, 2).await;
    let total = 5000;
    for _ in 0..total / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|_| serde_json::json!({"task": "weir.sleep", "payload": {"ms": 20}}))
            .collect();
        let (status, body) = api
            .post("/v1/jobs/batch", &serde_json::json!({"jobs": jobs}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    assert!(
        wait_until(Duration::from_secs(60), || async {
            default_counts(&api).await["succeeded"].as_u64() >= Some(1000)
        })
        .await,
        "work starts"
    );
    kill_node(&a);
    let done = wait_until(Duration::from_secs(120), || async {
        default_counts(&api).await["succeeded"].as_u64() == Some(total)
    })
    .await;
    let last = default_counts(&api).await;
    assert!(done, "not every job succeeded: {last}\n{}", a.log());
    assert_eq!(last["failed"], 0);
    assert_eq!(last["running"], 0);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            api.get("/v1/workers").await.1["data"]
                .as_array()
                .is_some_and(|w| w.len() == 1)
        })
        .await,
        "the killed node stops being listed once its heartbeat expires"
    );
}

/// Posts one short `weir.sleep` job to `url` (`/v1/jobs`) while the broker
/// may be down: `Some(id)` when the API acknowledged it (201), `None` when
/// it answered 503 with `Retry-After`; the API must answer, and nothing
/// else is accepted.
pub async fn post_through_outage(http: &reqwest::Client, url: &str) -> Option<String> {
    let response = match http
        .post(url)
        .json(&serde_json::json!({"task": "weir.sleep", "payload": {"ms": 5}}))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("the API answers while the broker is down: {e}"),
    };
    match response.status().as_u16() {
        201 => {
            let job: Value = response.json().await.expect("job");
            Some(job["id"].as_str().expect("id").to_owned())
        }
        503 => {
            assert!(response.headers().contains_key("retry-after"));
            None
        }
        other => panic!(
            "unexpected status {other}: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

/// Waits (up to 60 s) until every job of `ids` has succeeded.
pub async fn all_succeed(api: &Dev, ids: &[String]) -> bool {
    wait_until(Duration::from_secs(60), || async {
        let mut done = 0;
        for id in ids {
            if api.get(&format!("/v1/jobs/{id}")).await.1["state"] == "succeeded" {
                done += 1;
            }
        }
        done == ids.len()
    })
    .await
}

/// Serves `files` (path, content type, bytes) on a free port of 127.0.0.1
/// until the test's runtime ends; returns `http://127.0.0.1:PORT`.
pub async fn serve_files(files: Vec<(&'static str, &'static str, Vec<u8>)>) -> String {
    use axum::http::header::CONTENT_TYPE;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the file server");
    let port = listener.local_addr().expect("addr").port();
    let mut app = axum::Router::new();
    for (path, content_type, bytes) in files {
        app = app.route(
            path,
            axum::routing::get(move || {
                let bytes = bytes.clone();
                async move { ([(CONTENT_TYPE, content_type)], bytes) }
            }),
        );
    }
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://127.0.0.1:{port}")
}
