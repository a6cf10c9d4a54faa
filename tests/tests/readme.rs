//! The README, walked top to bottom as a newcomer would type it, so it
//! cannot drift from what weir does: every shell line of its tour (up to
//! "Built-in tasks") runs, in order, and must succeed.
//!
//! What the walker does for the reader: `cargo run --release -- dev` starts
//! the binary under test (on a free port, which replaces `localhost:8080`),
//! `alias weir=...` is not needed (`weir` is on the PATH), long-running
//! roles (`weir api`, `weir worker`, `weir scheduler`) start in the
//! background, and the ids the README elides are those of the jobs it
//! made: `01a21d78-...` the first job, `01a21d79-...` the newest failed
//! one, `01a21d7a-...` the newest scheduled one. A command that fails is
//! tried again for a while, as a reader would after a job reaches its
//! state. The Redis part runs when Redis is reachable (always in CI), on
//! a key prefix of its own.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use weir_shared::broker::conformance::service_url;
use weir_tests::{Dev, Proc, Sandbox, free_port, wait_until, weir_bin};

/// The shell lines of the README's sh blocks before "## Built-in tasks".
fn tour() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let start = readme.find("## A five-minute tour").expect("the tour");
    let end = readme
        .find("## Built-in tasks")
        .expect("a Built-in tasks section");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if in_block {
            let command = strip_comment(line);
            if !command.is_empty() {
                lines.push(command);
            }
        }
    }
    lines
}

/// The line without its trailing `# comment` (a `#` outside quotes after
/// a space, or at the start).
fn strip_comment(line: &str) -> String {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => {
                return line[..i].trim().to_owned();
            }
            _ => {}
        }
        prev = c;
    }
    line.trim().to_owned()
}

struct Walk {
    sandbox: Sandbox,
    bin_dir: tempfile::TempDir,
    base: String,
    first_job: Option<String>,
    background: Vec<Proc>,
    dev: Option<Dev>,
}

impl Walk {
    /// Runs one line with the shell; its output, or why it failed.
    fn shell(&self, line: &str) -> Result<String, String> {
        let mut command = Command::new("bash");
        command
            .args(["-c", line])
            .current_dir(self.sandbox.dir.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin_dir.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        for (k, v) in &self.sandbox.env {
            command.env(k, v);
        }
        let out = command.output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("exit {:?}: {stderr}{stdout}", out.status.code()));
        }
        let answer: Option<Value> = serde_json::from_str(&stdout).ok();
        if line.starts_with("curl") && answer.is_some_and(|a| a["error"]["code"].is_string()) {
            return Err(format!("error answer: {stdout}"));
        }
        Ok(stdout)
    }

    /// The newest job in `state`, read with the CLI (following cursors: a
    /// listing step examines a bounded number of jobs).
    fn newest(&self, state: &str) -> Option<String> {
        let mut cursor = String::new();
        for _ in 0..100 {
            let out = self
                .shell(&format!(
                    "weir jobs list --state {state} --limit 1 --json {cursor}"
                ))
                .ok()?;
            let page: Value = serde_json::from_str(&out).ok()?;
            if let Some(id) = page["data"][0]["id"].as_str() {
                return Some(id.to_owned());
            }
            cursor = format!("--cursor {}", page["next_cursor"].as_str()?);
        }
        None
    }

    fn expand(&self, line: &str) -> String {
        let mut line = line.replace("localhost:8080", &self.base);
        if line.contains("01a21d78-...") {
            line = line.replace("01a21d78-...", self.first_job.as_deref().unwrap_or("none"));
        }
        if line.contains("01a21d79-...") {
            line = line.replace("01a21d79-...", &self.newest("failed").unwrap_or_default());
        }
        if line.contains("01a21d7a-...") {
            line = line.replace(
                "01a21d7a-...",
                &self.newest("scheduled").unwrap_or_default(),
            );
        }
        line
    }

    async fn step(&mut self, line: &str) {
        if line.starts_with("alias weir=") {
            return;
        }
        if line == "cargo run --release -- dev" {
            let dev = self.sandbox.dev().await;
            self.base = dev.base.trim_start_matches("http://").to_owned();
            self.dev = Some(dev);
            return;
        }
        if let Some(assignment) = line.strip_prefix("export ") {
            let (k, v) = assignment.split_once('=').expect("export K=V");
            let v = v.replace("$PWD", &self.sandbox.dir.path().display().to_string());
            self.sandbox.set(k, &v);
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["weir", role @ ("api" | "worker" | "scheduler"), ..] = words.as_slice() {
            let name = format!("{role}-{}", self.background.len());
            let proc = self.sandbox.spawn(&name, &words[1..]);
            if *role == "api" {
                let url = format!("http://{}/readyz", self.base);
                assert!(
                    wait_until(Duration::from_secs(20), || async {
                        reqwest::get(&url)
                            .await
                            .is_ok_and(|r| r.status().is_success())
                    })
                    .await,
                    "weir api did not come up: {}",
                    proc.log()
                );
            }
            self.background.push(proc);
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let expanded = self.expand(line);
            match self.shell(&expanded) {
                Ok(out) => {
                    if self.first_job.is_none()
                        && let Ok(job) = serde_json::from_str::<Value>(&out)
                        && let Some(id) = job["id"].as_str()
                    {
                        self.first_job = Some(id.to_owned());
                    }
                    return;
                }
                Err(why) => {
                    assert!(
                        Instant::now() < deadline,
                        "README line `{line}` ({expanded}) failed: {why}"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

#[tokio::test]
async fn the_readme_tour_runs_as_written() {
    let redis = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15");
    let bin_dir = tempfile::tempdir().expect("dir");
    std::os::unix::fs::symlink(weir_bin(), bin_dir.path().join("weir")).expect("link weir");
    let mut sandbox = Sandbox::new();
    // The tour uses the default database path, relative to where it runs.
    sandbox.env.retain(|(k, _)| k != "WEIR_BROKER_URL");
    let mut walk = Walk {
        sandbox,
        bin_dir,
        base: String::new(),
        first_job: None,
        background: Vec::new(),
        dev: None,
    };
    let lines = tour();
    assert!(lines.len() > 20, "the tour was found: {lines:?}");
    let roles_start = lines
        .iter()
        .position(|l| l.starts_with("export WEIR_BROKER_URL=redis"))
        .expect("the roles part");
    for line in &lines[..roles_start] {
        walk.step(line).await;
    }
    let Some(url) = redis else { return };
    // The roles part: on Redis, under a prefix of its own, with the API
    // on a free port.
    drop(walk.dev.take());
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let _cleanup = weir_shared::broker::redis::PrefixCleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let port = free_port();
    walk.base = format!("127.0.0.1:{port}");
    let base = walk.base.clone();
    walk.sandbox.set("WEIR_HTTP_ADDR", &base);
    walk.sandbox.set("WEIR_REDIS_PREFIX", &prefix);
    for line in &lines[roles_start..] {
        let line = line.replace("redis://127.0.0.1:6379/0", &url);
        walk.step(&line).await;
    }
    // The last line enqueued a job on `pipeline`; a worker runs it.
    let key = std::fs::read_to_string(walk.sandbox.dir.path().join("acme.key"))
        .expect("acme.key")
        .lines()
        .next()
        .expect("key line")
        .to_owned();
    let client = weir_tests::http_client();
    let done = wait_until(Duration::from_secs(20), || async {
        let Ok(r) = client
            .get(format!("http://{}/v1/jobs?state=succeeded", walk.base))
            .bearer_auth(&key)
            .send()
            .await
        else {
            return false;
        };
        r.json::<Value>()
            .await
            .is_ok_and(|page| page["data"].as_array().is_some_and(|d| !d.is_empty()))
    })
    .await;
    let logs: Vec<String> = walk.background.iter().map(Proc::log).collect();
    assert!(done, "the job of the last line ran: {logs:#?}");
}
