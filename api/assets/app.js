// weir's dashboard: a page over the same JSON API as every client. The key
// lives in sessionStorage (this tab only) and goes in the Authorization
// header of each request; no cookie, so no request can be forged from
// another site. Every value from the API is put into the page as text
// (textContent), never as markup. Views refresh every 2 seconds.
"use strict";

const state = { key: null, admin: false, view: "queues", job: null, filters: {} };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(method, path, body, extra) {
  const headers = Object.assign({ Authorization: "Bearer " + state.key }, extra || {});
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let json = null;
  try { json = await r.json(); } catch (_) { json = null; }
  return { status: r.status, json };
}

function status(text) { document.getElementById("status").textContent = text; }

function table(headers, rows, onclick) {
  const head = el("tr", {}, ...headers.map(h => el("th", h.num ? { class: "num" } : {}, h.label || h)));
  const body = rows.map(cells => {
    const tr = el("tr", onclick ? { class: "click", onclick: () => onclick(cells) } : {},
      ...cells.cells.map((c, i) => el("td", headers[i].num ? { class: "num" } : {}, c)));
    if (cells.id) tr.dataset.id = cells.id;
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

const STATES = ["queued", "running", "scheduled", "retrying", "succeeded", "failed", "cancelled"];

// Finished counts per queue over the last minute, from this page's reads:
// the throughput column costs the broker nothing more.
const history = [];
function throughput(queues) {
  const now = Date.now();
  const finished = {};
  for (const q of queues) finished[q.name] = ((q.counts || {}).succeeded || 0) + ((q.counts || {}).failed || 0);
  history.push({ at: now, finished });
  while (history.length > 1 && now - history[0].at > 60000) history.shift();
  const first = history[0];
  const seconds = (now - first.at) / 1000;
  const rates = {};
  for (const name of Object.keys(finished)) {
    const was = first.finished[name];
    rates[name] = seconds > 0 && was !== undefined ? Math.max(0, finished[name] - was) / seconds : 0;
  }
  return rates;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return Math.round(seconds) + "s";
  if (seconds < 3600) return Math.round(seconds / 60) + "m";
  return (seconds / 3600).toFixed(1) + "h";
}

async function showQueues(view) {
  // Counts up to a second old will do: open pages share one count a second.
  const { status: s, json } = await api("GET", "/v1/queues", undefined, { "Cache-Control": "max-age=1" });
  if (s !== 200) return status("queues: " + s);
  const rates = throughput(json.data);
  const headers = ["queue", ...STATES.map(x => ({ label: x, num: true })), { label: "consumers", num: true },
    { label: "oldest", num: true }, { label: "jobs/s (1 min)", num: true }, "", ""];
  const rows = json.data.map(q => {
    const flags = [q.paused ? "paused" : "", q.unconsumed ? "no consumer" : ""].filter(Boolean).join(" ");
    const act = state.admin
      ? el("button", { onclick: async (e) => {
          e.stopPropagation();
          const r = await api("POST", `/v1/queues/${encodeURIComponent(q.name)}/${q.paused ? "resume" : "pause"}`);
          status(`${q.paused ? "resume" : "pause"} ${q.name}: ${r.status}`);
          render();
        } }, q.paused ? "Resume" : "Pause")
      : "";
    return { id: q.name, cells: [q.name, ...STATES.map(x => (q.counts || {})[x] || 0), q.consumers,
      age(q.oldest_age_seconds), (rates[q.name] || 0).toFixed(1), el("span", { class: "flag" }, flags), act] };
  });
  view.append(el("h2", {}, "Queues"), table(headers, rows, r => { state.filters = { queue: r.id }; go("jobs"); }));
}

function jobRows(jobs) {
  return jobs.map(j => ({ id: j.id, cells: [j.id, j.task, j.queue, j.tenant, j.state, j.attempts, j.created_at, (j.error || "").slice(0, 80)] }));
}
const JOB_HEADERS = ["id", "task", "queue", "tenant", "state", { label: "attempts", num: true }, "created", "error"];

async function showJobs(view, fixedState) {
  const f = state.filters;
  const q = new URLSearchParams();
  for (const k of ["queue", "state", "task"]) if (f[k]) q.set(k, f[k]);
  if (fixedState) q.set("state", fixedState);
  q.set("limit", "50");
  const { status: s, json } = await api("GET", "/v1/jobs?" + q);
  if (s !== 200) return status("jobs: " + (json && json.error ? json.error.message : s));
  const form = el("form", { class: "filters" },
    el("input", { name: "queue", placeholder: "queue", value: f.queue || "" }),
    fixedState ? "" : el("input", { name: "state", placeholder: "state", value: f.state || "" }),
    el("input", { name: "task", placeholder: "task", value: f.task || "" }),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", e => {
    e.preventDefault();
    const data = new FormData(form);
    state.filters = { queue: data.get("queue") || "", state: data.get("state") || "", task: data.get("task") || "" };
    render();
  });
  view.append(el("h2", {}, fixedState ? "Failed jobs" : "Jobs"), form,
    table(JOB_HEADERS, jobRows(json.data), r => { state.job = r.id; go("job"); }));
}

async function showJob(view) {
  const id = state.job;
  const { status: s, json: job } = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  if (s !== 200) return status("job: " + s);
  const explain = await api("GET", `/v1/jobs/${encodeURIComponent(id)}/explain`);
  const actions = el("div", { class: "actions" });
  if (state.admin) {
    if (job.state === "failed" || job.state === "cancelled") {
      actions.append(el("button", { id: "retry", onclick: async () => {
        const r = await api("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`);
        status(`retry: ${r.status}${r.json && r.json.state ? " (" + r.json.state + ")" : ""}`);
        render();
      } }, "Retry"));
    }
    if (!["succeeded", "failed", "cancelled"].includes(job.state)) {
      actions.append(el("button", { id: "cancel", onclick: async () => {
        const r = await api("DELETE", `/v1/jobs/${encodeURIComponent(id)}`);
        status(`cancel: ${r.status}`);
        render();
      } }, "Cancel"));
    }
  }
  const field = (name, value) => [el("dt", {}, name), el("dd", {}, value === null || value === undefined ? "" : String(value))];
  const history = (job.history || []).map(a => ({ cells: [a.attempt, a.worker, a.outcome, a.started_at || "", a.finished_at, a.error || ""] }));
  view.append(
    el("h2", {}, "Job ", el("code", { id: "job-id" }, job.id)),
    el("dl", {}, ...field("task", job.task), ...field("queue", job.queue), ...field("tenant", job.tenant),
      ...field("state", job.state), ...field("attempts", `${job.attempts} (max retries ${job.max_retries})`),
      ...field("error", job.error), ...field("created", job.created_at), ...field("run at", job.run_at)),
    actions,
    el("h3", {}, "Payload"), el("pre", { id: "payload" }, JSON.stringify(job.payload, null, 2)),
    el("h3", {}, "Result"), el("pre", {}, JSON.stringify(job.result, null, 2)),
    el("h3", {}, "Progress"), el("pre", {}, JSON.stringify(job.progress, null, 2)),
    el("h3", {}, "Why it is where it is"), el("pre", {}, JSON.stringify(explain.json, null, 2)),
    el("h3", {}, "Attempts"), table(["attempt", "worker", "outcome", "started", "finished", "error"], history));
}

async function showWorkers(view) {
  const { status: s, json } = await api("GET", "/v1/workers");
  if (s !== 200) return status("workers: " + s);
  const rows = json.data.map(w => ({ cells: [w.id, (w.queues || []).join(","), `${w.slots.busy}/${w.slots.current}/${w.slots.min}/${w.slots.max}`, w.processed, w.recycles, w.restarts, w.last_heartbeat] }));
  view.append(el("h2", {}, "Worker nodes"),
    table(["node", "queues", "slots b/c/min/max", { label: "done", num: true }, { label: "recycled", num: true }, { label: "restarts", num: true }, "last heartbeat"], rows));
}

async function showSchedules(view) {
  const { status: s, json } = await api("GET", "/v1/schedules");
  if (s !== 200) return status("schedules: " + s);
  const act = (name, verb) => el("button", { onclick: async () => {
    const r = await api("POST", `/v1/schedules/${encodeURIComponent(name)}/${verb}`);
    status(`${verb} ${name}: ${r.status}`);
    render();
  } }, verb);
  const rows = json.data.map(x => ({ cells: [x.name, x.cron, x.task, x.last_fire || "", x.next_fire || "", x.paused ? "paused" : "",
    el("span", { class: "actions" }, act(x.name, "trigger"), act(x.name, x.paused ? "resume" : "pause"))] }));
  view.append(el("h2", {}, "Schedules"), table(["name", "cron", "task", "last fire", "next fire", "", ""], rows));
}

async function showWorkflows(view) {
  const { status: s, json } = await api("GET", "/v1/workflows?limit=50");
  if (s !== 200) return status("workflows: " + (json && json.error ? json.error.message : s));
  const rows = json.data.map(w => ({ id: w.id, cells: [w.id, w.name, w.tenant, w.state,
    `${w.steps.filter(x => ["succeeded", "failed", "cancelled"].includes(x.state)).length}/${w.steps.length}`, w.created_at] }));
  view.append(el("h2", {}, "Workflows"),
    table(["id", "name", "tenant", "state", "steps ended", "created"], rows, r => { state.workflow = r.id; go("workflow"); }));
}

// Each step's depth in the DAG: 0 for roots, else one more than its
// deepest parent; the picture lays the steps out in columns by depth.
function depths(steps) {
  const byId = new Map(steps.map(x => [x.id, x]));
  const memo = new Map();
  const depth = (id, seen) => {
    if (memo.has(id)) return memo.get(id);
    const step = byId.get(id);
    if (!step || seen.has(id)) return 0;
    seen.add(id);
    const d = (step.needs || []).reduce((m, p) => Math.max(m, depth(p, seen) + 1), 0);
    memo.set(id, d);
    return d;
  };
  for (const x of steps) depth(x.id, new Set());
  return memo;
}

async function showWorkflow(view) {
  const id = state.workflow;
  const { status: s, json: w } = await api("GET", `/v1/workflows/${encodeURIComponent(id)}`);
  if (s !== 200) return status("workflow: " + s);
  const actions = el("div", { class: "actions" });
  if (state.admin) {
    const act = (label, method, path) => actions.append(el("button", { onclick: async () => {
      const r = await api(method, `/v1/workflows/${encodeURIComponent(id)}${path}`);
      status(`${label.toLowerCase()}: ${r.status}${r.json && r.json.error ? " " + r.json.error.message : ""}`);
      render();
    } }, label));
    if (w.state === "running") act("Cancel", "DELETE", "");
    else if (w.steps.some(x => x.state === "failed" || x.state === "cancelled")) act("Retry", "POST", "/retry");
  }
  const levels = depths(w.steps);
  const columns = [];
  for (const x of w.steps) {
    const d = levels.get(x.id) || 0;
    (columns[d] = columns[d] || []).push(x);
  }
  const box = x => el("button", { class: `step state-${x.skipped ? "skipped" : x.state}`, title: x.error || x.state,
    onclick: () => { state.job = x.job_id; go("job"); } }, x.id, el("small", {}, x.skipped ? "skipped" : x.state));
  const dag = el("div", { class: "dag", id: "dag" }, ...columns.map(c => el("div", { class: "level" }, ...(c || []).map(box))));
  const rows = w.steps.map(x => ({ id: x.job_id, cells: [x.id, x.skipped ? "skipped" : x.state, (x.needs || []).join(", "), x.on_parent_failure, x.job_id, (x.error || "").slice(0, 80)] }));
  view.append(
    el("h2", {}, "Workflow ", el("code", { id: "workflow-id" }, w.id)),
    el("p", {}, `${w.name}: ${w.state}`), actions, dag,
    table(["step", "state", "needs", "on parent failure", "job", "error"], rows, r => { state.job = r.id; go("job"); }));
}

const VIEWS = {
  queues: showQueues,
  jobs: v => showJobs(v, null),
  failed: v => showJobs(v, "failed"),
  job: showJob,
  workers: showWorkers,
  schedules: showSchedules,
  workflows: showWorkflows,
  workflow: showWorkflow,
};

let rendering = false;
async function render() {
  if (!state.key || rendering) return;
  rendering = true;
  try {
    const next = el("section", { id: "view" });
    await VIEWS[state.view](next);
    document.getElementById("view").replaceWith(next);
    for (const b of document.querySelectorAll("nav button[data-view]")) {
      b.classList.toggle("active", b.dataset.view === state.view);
    }
  } catch (e) {
    status("error: " + e);
  } finally {
    rendering = false;
  }
}

function go(view) { state.view = view; render(); }

async function signIn(key) {
  state.key = key;
  const probe = await api("GET", "/v1/queues");
  if (probe.status === 401 || probe.status === 429) {
    state.key = null;
    sessionStorage.removeItem("weir-key");
    document.getElementById("signin-error").textContent =
      probe.status === 401 ? "This key is refused." : "Too many attempts; wait a minute.";
    return;
  }
  sessionStorage.setItem("weir-key", key);
  state.admin = (await api("GET", "/v1/workers")).status === 200;
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = state.admin ? "admin key" : "tenant key (read only)";
  for (const b of document.querySelectorAll("nav .admin")) b.hidden = !state.admin;
  render();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signin").addEventListener("submit", e => {
    e.preventDefault();
    signIn(document.getElementById("key").value.trim());
  });
  for (const b of document.querySelectorAll("nav button[data-view]")) {
    b.addEventListener("click", () => go(b.dataset.view));
  }
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem("weir-key");
    location.reload();
  });
  const saved = sessionStorage.getItem("weir-key");
  if (saved) signIn(saved); else document.getElementById("signin").hidden = false;
  setInterval(render, 2000);
});
