//! Flow-control decisions shared by the SQL backends: given the permits in
//! use (running jobs per task and tenant) and the rates' state, which jobs
//! a claim may start. The backend reads the state and writes the outcome
//! inside its own atomic step (SQLite's write transaction, Postgres's
//! advisory locks); the rules live here once. The Redis backend keeps
//! them in Lua (`redis/lua/claim.lua`), checked against the same suite.

use crate::limit::{Holder, Limits, TaskLimit};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Permits in use and rate state, as read at the start of a claim.
#[derive(Debug)]
pub(crate) struct Permits {
    per_task: HashMap<String, i64>,
    per_tenant: HashMap<(String, String), i64>,
    /// GCRA theoretical arrival time per task, microseconds.
    tats: HashMap<String, i64>,
    /// Tasks whose tat moved in this claim.
    moved: BTreeSet<String>,
    now_us: i64,
}

/// What a claim under limits may do.
pub(crate) enum Plan {
    /// No limit can bind within this claim (room for all it wants under
    /// every cap and rate): take the best jobs as usual, then charge.
    Unbound,
    /// Look only at jobs outside these tasks (refused now) and these
    /// (task, tenant) pairs (the tenant is at its cap), and pick.
    Filter {
        /// Tasks no job of which may start now.
        blocked: Vec<String>,
        /// (task, tenant) pairs at the tenant cap.
        full: Vec<(String, String)>,
    },
}

impl Permits {
    /// The state read: `running` as (task, tenant, count) rows, the tats.
    pub(crate) fn new(
        running: Vec<(String, String, i64)>,
        tats: HashMap<String, i64>,
        now_us: i64,
    ) -> Self {
        let mut per_task: HashMap<String, i64> = HashMap::new();
        let mut per_tenant = HashMap::new();
        for (task, tenant, n) in running {
            *per_task.entry(task.clone()).or_default() += n;
            per_tenant.insert((task, tenant), n);
        }
        Permits {
            per_task,
            per_tenant,
            tats,
            moved: BTreeSet::new(),
            now_us,
        }
    }

    fn cap_full(limit: &TaskLimit, n: i64) -> bool {
        limit.concurrency.is_some_and(|c| n >= i64::from(c))
    }

    fn tenant_full(limit: &TaskLimit, n: i64) -> bool {
        limit.tenant_concurrency.is_some_and(|c| n >= i64::from(c))
    }

    /// The new theoretical arrival time if one more start is allowed now.
    fn rate_allows(&self, limit: &TaskLimit, task: &str) -> Option<i64> {
        let tat = self.tats.get(task).copied().unwrap_or(0);
        let step = limit.rate?.step(tat, self.now_us, 1);
        step.allowed.then_some(step.tat)
    }

    /// Whether `want` more starts fit under every limit, or which jobs to
    /// leave out.
    pub(crate) fn plan(&self, limits: &Limits, want: usize) -> Plan {
        let want = i64::try_from(want).unwrap_or(i64::MAX);
        let unbound = limits.iter().all(|(task, limit)| {
            let n = self.per_task.get(task).copied().unwrap_or(0);
            let cap_room = limit
                .concurrency
                .is_none_or(|c| n.saturating_add(want) <= i64::from(c));
            let tenant_room = limit.tenant_concurrency.is_none_or(|c| {
                self.per_tenant
                    .iter()
                    .filter(|((t, _), _)| t == task)
                    .map(|(_, m)| *m)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(want)
                    <= i64::from(c)
            });
            let rate_room = limit.rate.is_none_or(|r| {
                let t = r.interval_us();
                let tat = self.tats.get(task).copied().unwrap_or(0).max(self.now_us);
                // Starts allowed back to back from now: burst - (tat - now) / t.
                i64::from(r.burst.max(1)).saturating_sub((tat - self.now_us) / t) >= want
            });
            cap_room && tenant_room && rate_room
        });
        if unbound {
            return Plan::Unbound;
        }
        let blocked = limits
            .iter()
            .filter(|(task, limit)| {
                let n = self.per_task.get(*task).copied().unwrap_or(0);
                Self::cap_full(limit, n)
                    || limit.tenant_concurrency == Some(0)
                    || (limit.rate.is_some() && self.rate_allows(limit, task).is_none())
            })
            .map(|(task, _)| task.clone())
            .collect();
        let full = self
            .per_tenant
            .iter()
            .filter(|((task, _), n)| limits.get(task).is_some_and(|l| Self::tenant_full(l, **n)))
            .map(|(pair, _)| pair.clone())
            .collect();
        Plan::Filter { blocked, full }
    }

    /// Admits candidates (id, task, tenant), best first, until `want`:
    /// each takes a permit and a rate start. Returns the admitted ids.
    pub(crate) fn pick<I>(
        &mut self,
        limits: &Limits,
        candidates: impl IntoIterator<Item = (I, String, String)>,
        want: usize,
    ) -> Vec<I> {
        let mut chosen = Vec::new();
        for (id, task, tenant) in candidates {
            if chosen.len() == want {
                break;
            }
            let Some(limit) = limits.get(&task) else {
                chosen.push(id);
                continue;
            };
            let n = self.per_task.get(&task).copied().unwrap_or(0);
            let pair = (task.clone(), tenant);
            let m = self.per_tenant.get(&pair).copied().unwrap_or(0);
            if Self::cap_full(limit, n) || Self::tenant_full(limit, m) {
                continue;
            }
            if limit.rate.is_some() {
                let Some(new_tat) = self.rate_allows(limit, &task) else {
                    continue;
                };
                self.tats.insert(task.clone(), new_tat);
                self.moved.insert(task.clone());
            }
            *self.per_task.entry(task).or_default() += 1;
            *self.per_tenant.entry(pair).or_default() += 1;
            chosen.push(id);
        }
        chosen
    }

    /// Charges one rate start per task in `tasks` (after an unbound claim).
    pub(crate) fn charge(&mut self, limits: &Limits, tasks: impl IntoIterator<Item = String>) {
        for task in tasks {
            let Some(rate) = limits.get(&task).and_then(|l| l.rate) else {
                continue;
            };
            let tat = self.tats.entry(task.clone()).or_insert(0);
            *tat = (*tat).max(self.now_us).saturating_add(rate.interval_us());
            self.moved.insert(task);
        }
    }

    /// The rate state to store: (task, tat) of every task whose tat
    /// moved, in task order.
    pub(crate) fn rates_to_store(&self) -> Vec<(String, i64)> {
        self.moved
            .iter()
            .map(|t| (t.clone(), self.tats.get(t).copied().unwrap_or(0)))
            .collect()
    }
}

/// Hands out fair-share numbers: `pairs` in order, given per pair the
/// `last` number reserved for it by a statement that reserved `counts`.
pub(crate) fn number_seqs(
    pairs: &[(String, String)],
    counts: &BTreeMap<(&str, &str), i64>,
    reserved: Vec<(String, String, i64)>,
) -> Vec<i64> {
    // The next number to hand out per pair: last - count + 1, upwards.
    let mut next: HashMap<(String, String), i64> = reserved
        .into_iter()
        .map(|(q, t, last)| {
            let n = counts.get(&(q.as_str(), t.as_str())).copied().unwrap_or(1);
            ((q, t), last - n + 1)
        })
        .collect();
    pairs
        .iter()
        .map(|pair| {
            let slot = next.entry(pair.clone()).or_insert(1);
            let seq = *slot;
            *slot += 1;
            seq
        })
        .collect()
}

/// How many of `pairs` each (queue, tenant) has.
pub(crate) fn count_pairs(pairs: &[(String, String)]) -> BTreeMap<(&str, &str), i64> {
    let mut counts = BTreeMap::new();
    for (q, t) in pairs {
        *counts.entry((q.as_str(), t.as_str())).or_default() += 1;
    }
    counts
}

/// Which of a task's queued jobs its limits hold back now.
pub(crate) enum HeldBack {
    /// Every one (the cap is full, the rate refuses, or tenants get none).
    All,
    /// Those of these tenants (each at its tenant cap).
    Tenants(Vec<String>),
    /// None.
    Nothing,
}

/// For `usage`: when the rate next allows a start (ms), if later than now
/// (`now_us`), and which queued jobs wait, from the running `holders` and
/// the rate's `tat`.
pub(crate) fn held_back(
    limit: &TaskLimit,
    holders: &[Holder],
    tat: i64,
    now_us: i64,
) -> (Option<i64>, HeldBack) {
    let throttled_until = limit
        .rate
        .map(|r| r.next_allowed_us(tat))
        .filter(|at| *at > now_us)
        .map(|at| at / 1000);
    let full = limit
        .concurrency
        .is_some_and(|c| holders.len() >= c as usize);
    let held = if full || throttled_until.is_some() || limit.tenant_concurrency == Some(0) {
        HeldBack::All
    } else if let Some(cap) = limit.tenant_concurrency {
        let mut per: HashMap<&str, u32> = HashMap::new();
        for h in holders {
            *per.entry(h.tenant.as_str()).or_default() += 1;
        }
        HeldBack::Tenants(
            per.into_iter()
                .filter(|(_, n)| *n >= cap)
                .map(|(t, _)| t.to_owned())
                .collect(),
        )
    } else {
        HeldBack::Nothing
    };
    (throttled_until, held)
}
