//! The Lua scripts (in `lua/`), each sent with just the helpers of
//! `common.lua` it calls, and loaded once per broker.

use redis::Script;
use std::collections::HashSet;

pub(super) const COMMON: &str = include_str!("lua/common.lua");

pub(super) fn script(body: &str) -> Script {
    Script::new(&with_helpers(COMMON, body))
}

/// `body` after the helpers of `common` it uses. Each `local` definition
/// in `common` (with the comment lines just above it) is kept only when
/// the body, or a kept helper, names it: a script runs its whole text on
/// every call, and defining a helper it never calls costs Redis time on
/// each one. What comes before the first definition is always kept.
fn with_helpers(common: &str, body: &str) -> String {
    let lines: Vec<&str> = common.lines().collect();
    // Each helper's name and first line (its comment's, if it has one).
    let mut blocks: Vec<(&str, usize)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("local ") else {
            continue;
        };
        let rest = rest.strip_prefix("function ").unwrap_or(rest);
        let name = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        let mut start = i;
        while start > 0 && lines[start - 1].starts_with("--") {
            start -= 1;
        }
        blocks.push((name, start));
    }
    let header_end = blocks.first().map_or(lines.len(), |b| b.1);
    let text = |k: usize| {
        let end = blocks.get(k + 1).map_or(lines.len(), |b| b.1);
        lines[blocks[k].1..end].join("\n")
    };
    let names = |s: &str| -> HashSet<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut wanted = names(body);
    let mut keep = vec![false; blocks.len()];
    // Later helpers use earlier ones only, so one pass from the end
    // settles every dependency.
    for k in (0..blocks.len()).rev() {
        if wanted.contains(blocks[k].0) {
            keep[k] = true;
            wanted.extend(names(&text(k)));
        }
    }
    let mut out = lines[..header_end].join("\n");
    for (k, _) in blocks.iter().enumerate().filter(|(k, _)| keep[*k]) {
        out.push('\n');
        out.push_str(&text(k));
    }
    out.push('\n');
    out.push_str(body);
    out
}

pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) progress: Script,
    pub(super) cancel: Script,
    pub(super) retry: Script,
    pub(super) maintain: Script,
    pub(super) purge: Script,
    pub(super) delete: Script,
    pub(super) counts: Script,
    pub(super) usage: Script,
    pub(super) position: Script,
    pub(super) fire: Script,
    pub(super) admit: Script,
    pub(super) cool: Script,
    pub(super) wf_submit: Script,
    pub(super) wf_cancel: Script,
    pub(super) wf_retry: Script,
    pub(super) wf_spawn: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            claim: script(include_str!("lua/claim.lua")),
            renew: script(include_str!("lua/renew.lua")),
            complete: script(include_str!("lua/complete.lua")),
            progress: script(include_str!("lua/progress.lua")),
            cancel: script(include_str!("lua/cancel.lua")),
            retry: script(include_str!("lua/retry.lua")),
            maintain: script(include_str!("lua/maintain.lua")),
            purge: script(include_str!("lua/purge.lua")),
            delete: script(include_str!("lua/delete.lua")),
            counts: script(include_str!("lua/counts.lua")),
            usage: script(include_str!("lua/usage.lua")),
            position: script(include_str!("lua/position.lua")),
            admit: script(include_str!("lua/gcra.lua")),
            cool: script(include_str!("lua/cool.lua")),
            wf_submit: script(include_str!("lua/wf_submit.lua")),
            wf_cancel: script(include_str!("lua/wf_cancel.lua")),
            wf_retry: script(include_str!("lua/wf_retry.lua")),
            wf_spawn: script(include_str!("lua/wf_spawn.lua")),
            fire: script(&format!(
                "{}\n{}",
                include_str!("lua/fire.lua"),
                include_str!("lua/enqueue.lua")
            )),
        }
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn a_script_gets_the_helpers_it_uses_and_theirs() {
        let enqueue = with_helpers(COMMON, include_str!("lua/enqueue.lua"));
        // The helpers it calls, in their original order, and none else.
        for name in [
            "local function num",
            "local function qkey",
            "local function ukey",
            "local function jkey",
        ] {
            assert!(enqueue.contains(name), "{name} missing");
        }
        assert!(enqueue.contains("local P = ARGV[1]"));
        for unused in ["release_permit", "make_ready", "local function unhold"] {
            assert!(!enqueue.contains(unused), "{unused} kept");
        }
        assert!(enqueue.find("local function num") < enqueue.find("local function qkey"));
        // cancel.lua calls release_permit, which needs unhold, semkey, lenc.
        let cancel = with_helpers(COMMON, include_str!("lua/cancel.lua"));
        for name in [
            "local function release_permit",
            "local function unhold",
            "local function semkey",
            "local function lenc",
            "local function finish_with",
        ] {
            assert!(cancel.contains(name), "{name} missing");
        }
    }
}
