//! `weir top`: a live terminal dashboard read from the broker directly (no
//! API needed): queues with their counts, consumers, how long the next job
//! has waited and the finish rate; worker nodes with their slots; the
//! latest failed jobs. Keys: `tab` switches between the queue and failure
//! panes, arrows or `j`/`k` select, `p` pauses or resumes the selected
//! queue, `r` retries the selected failed job, `q` (or `esc`, `ctrl-c`)
//! quits. A broker error shows in the status line; it does not exit. The
//! screen is laid out for 80x24 and uses what more it gets.

use crate::failure::{Failure, Outcome};
use crate::output;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use weir_shared::broker::{ListRequest, Scope, SharedBroker};
use weir_shared::config::Settings;
use weir_shared::inspect::{QueueView, queue_views};
use weir_shared::job::{Job, JobState, now_ms};
use weir_shared::node::WorkerInfo;

/// How often the screen reads the broker.
const REFRESH: Duration = Duration::from_secs(1);
/// Failed jobs shown.
const FAILED_SHOWN: usize = 20;

/// One queue's line.
#[derive(Debug, Clone)]
pub struct QueueLine {
    pub view: QueueView,
    /// Seconds the next job has been due; `None` with nothing queued.
    pub oldest: Option<f64>,
    /// Jobs finished per second since the previous read.
    pub rate: f64,
}

/// What one read of the broker gave.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub queues: Vec<QueueLine>,
    pub workers: Vec<WorkerInfo>,
    pub failed: Vec<Job>,
}

/// Which pane the keys act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Queues,
    Failed,
}

/// The screen's state between frames.
#[derive(Debug)]
pub struct Screen {
    pub pane: Pane,
    pub queue_row: TableState,
    pub failed_row: TableState,
    /// The status line: the last action or error.
    pub status: String,
    pub broker: String,
}

impl Screen {
    fn new(broker: String) -> Self {
        Screen {
            pane: Pane::Queues,
            queue_row: TableState::default().with_selected(Some(0)),
            failed_row: TableState::default().with_selected(Some(0)),
            status: "tab: pane  j/k: select  p: pause/resume  r: retry  q: quit".into(),
            broker,
        }
    }

    fn step(&mut self, by: i64, snapshot: &Snapshot) {
        let (state, len) = match self.pane {
            Pane::Queues => (&mut self.queue_row, snapshot.queues.len()),
            Pane::Failed => (&mut self.failed_row, snapshot.failed.len()),
        };
        if len == 0 {
            state.select(None);
            return;
        }
        let at = state.selected().unwrap_or(0) as i64 + by;
        state.select(Some(at.clamp(0, len as i64 - 1) as usize));
    }
}

fn finished(view: &QueueView) -> u64 {
    [JobState::Succeeded, JobState::Failed]
        .iter()
        .map(|s| view.counts.get(s).copied().unwrap_or(0))
        .sum()
}

/// Reads the broker once; `previous` (with when it was read) gives rates.
async fn read(
    broker: &SharedBroker,
    settings: &Settings,
    previous: Option<(&Snapshot, Instant)>,
) -> Result<Snapshot, weir_shared::broker::BrokerError> {
    let views = queue_views(broker, settings).await?;
    let before: HashMap<&str, u64> = previous
        .map(|(p, _)| {
            p.queues
                .iter()
                .map(|q| (q.view.name.as_str(), finished(&q.view)))
                .collect()
        })
        .unwrap_or_default();
    let elapsed = previous.map_or(0.0, |(_, at)| at.elapsed().as_secs_f64());
    let queues = views
        .into_iter()
        .map(|view| {
            let rate = match before.get(view.name.as_str()) {
                Some(was) if elapsed > 0.0 => finished(&view).saturating_sub(*was) as f64 / elapsed,
                _ => 0.0,
            };
            QueueLine {
                oldest: view.oldest_age_seconds,
                rate,
                view,
            }
        })
        .collect();
    let workers = broker.workers().await?;
    let failed = broker
        .list(ListRequest {
            scope: Scope::All,
            queue: None,
            state: Some(JobState::Failed),
            task: None,
            limit: FAILED_SHOWN,
            cursor: None,
        })
        .await?
        .data;
    Ok(Snapshot {
        queues,
        workers,
        failed,
    })
}

fn count(view: &QueueView, state: JobState) -> String {
    view.counts.get(&state).copied().unwrap_or(0).to_string()
}

fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 60.0 => format!("{s:.0}s"),
        Some(s) if s < 3600.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// Draws one frame of `snapshot`.
pub fn draw(frame: &mut Frame, snapshot: &Snapshot, screen: &mut Screen) {
    let workers_height = (snapshot.workers.len().clamp(1, 4) + 3) as u16;
    let [title, queues, workers, failed, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(workers_height),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let total_rate: f64 = snapshot.queues.iter().map(|q| q.rate).sum();
    frame.render_widget(
        Paragraph::new(format!(
            "weir top  {}  {} queues  {} nodes  {:.1} jobs/s",
            screen.broker,
            snapshot.queues.len(),
            snapshot.workers.len(),
            total_rate
        ))
        .style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );
    let focused = |pane: Pane, name: &str| {
        let block = Block::new().borders(Borders::TOP).title(name.to_owned());
        if screen.pane == pane {
            block.title_style(Style::new().add_modifier(Modifier::REVERSED))
        } else {
            block
        }
    };
    let highlight = Style::new().add_modifier(Modifier::REVERSED);

    let rows = snapshot.queues.iter().map(|q| {
        let v = &q.view;
        let waiting = v.counts.get(&JobState::Scheduled).copied().unwrap_or(0)
            + v.counts.get(&JobState::Retrying).copied().unwrap_or(0);
        let mut flags = Vec::new();
        if v.paused {
            flags.push("paused");
        }
        if v.unconsumed {
            flags.push("UNCONSUMED");
        }
        Row::new(vec![
            output::clip(&v.name, 15),
            count(v, JobState::Queued),
            count(v, JobState::Running),
            waiting.to_string(),
            count(v, JobState::Failed),
            v.consumers.to_string(),
            age(q.oldest),
            format!("{:.1}", q.rate),
            flags.join(" "),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(15),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Min(6),
        ],
    )
    .header(
        Row::new(vec![
            "QUEUE", "QUEUED", "RUNNING", "LATER", "FAILED", "CONS", "OLDEST", "/S", "",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(highlight)
    .block(focused(Pane::Queues, " queues "));
    frame.render_stateful_widget(table, queues, &mut screen.queue_row);

    let now = now_ms().0;
    let rows = snapshot.workers.iter().map(|w| {
        Row::new(vec![
            output::clip(&w.id, 24),
            format!(
                "{}/{}/{}/{}",
                w.slots.busy, w.slots.current, w.slots.min, w.slots.max
            ),
            w.processed.to_string(),
            w.recycles.to_string(),
            output::ago(now - w.last_heartbeat.0),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(24),
            Constraint::Length(16),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Min(8),
        ],
    )
    .header(
        Row::new(vec![
            "NODE",
            "SLOTS B/C/MIN/MAX",
            "DONE",
            "RECYCLED",
            "SEEN",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::new().borders(Borders::TOP).title(" workers "));
    frame.render_widget(table, workers);

    let rows = snapshot.failed.iter().map(|j| {
        Row::new(vec![
            j.id.to_string()[..8].to_owned(),
            output::clip(&j.task, 16),
            output::clip(&j.queue, 12),
            output::clip(
                j.error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or(""),
                60,
            ),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec!["JOB", "TASK", "QUEUE", "ERROR"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(highlight)
    .block(focused(Pane::Failed, " failed "));
    frame.render_stateful_widget(table, failed, &mut screen.failed_row);
    frame.render_widget(Paragraph::new(screen.status.clone()), status);
}

/// Restores the terminal when dropped, on every exit path.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard until `q`.
pub async fn run(settings: Settings) -> Outcome {
    let broker = super::connect(&settings).await?;
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    // Terminal events are read on a thread of their own (they block).
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if keys_tx.send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {
                    if keys_tx.is_closed() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut terminal = ratatui::try_init()
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("weir top needs a terminal: {e}")))?;
    let _restore = Restore;
    let mut screen = Screen::new(settings.broker.display_url());
    let mut snapshot = Snapshot::default();
    let mut read_at: Option<Instant> = None;
    loop {
        if read_at.is_none_or(|at| at.elapsed() >= REFRESH) {
            let previous = read_at.map(|at| (&snapshot, at));
            match read(&broker, &settings, previous).await {
                Ok(fresh) => {
                    snapshot = fresh;
                    read_at = Some(Instant::now());
                }
                Err(e) => {
                    screen.status = format!("broker: {e}");
                    read_at = Some(Instant::now());
                }
            }
            screen.step(0, &snapshot);
        }
        terminal
            .draw(|f| draw(f, &snapshot, &mut screen))
            .map_err(|e| Failure::Runtime(e.into()))?;
        let key = tokio::select! {
            e = keys.recv() => e,
            () = tokio::time::sleep(Duration::from_millis(250)) => continue,
        };
        let Some(Event::Key(key)) = key else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Tab => {
                screen.pane = match screen.pane {
                    Pane::Queues => Pane::Failed,
                    Pane::Failed => Pane::Queues,
                };
            }
            KeyCode::Down | KeyCode::Char('j') => screen.step(1, &snapshot),
            KeyCode::Up | KeyCode::Char('k') => screen.step(-1, &snapshot),
            KeyCode::Char('p') if screen.pane == Pane::Queues => {
                if let Some(q) = screen
                    .queue_row
                    .selected()
                    .and_then(|i| snapshot.queues.get(i))
                {
                    let (name, pause) = (q.view.name.clone(), !q.view.paused);
                    screen.status = match broker.set_paused(&name, pause).await {
                        Ok(()) => format!("{} {name}", if pause { "paused" } else { "resumed" }),
                        Err(e) => format!("{name}: {e}"),
                    };
                    read_at = None;
                }
            }
            KeyCode::Char('r') if screen.pane == Pane::Failed => {
                if let Some(job) = screen
                    .failed_row
                    .selected()
                    .and_then(|i| snapshot.failed.get(i))
                {
                    screen.status = match broker.retry(&Scope::All, job.id).await {
                        Ok(j) => format!("retried {} ({})", j.id, j.state.as_str()),
                        Err(e) => format!("{}: {e}", job.id),
                    };
                    read_at = None;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::collections::BTreeMap;

    fn view(name: &str, queued: u64, paused: bool) -> QueueView {
        let mut counts: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        counts.insert(JobState::Queued, queued);
        counts.insert(JobState::Failed, 2);
        QueueView {
            name: name.into(),
            paused,
            declared: true,
            counts,
            consumers: 0,
            unconsumed: queued > 0,
            oldest_age_seconds: None,
        }
    }

    #[test]
    fn the_screen_fits_80_by_24_and_shows_each_queue_on_a_line() {
        let snapshot = Snapshot {
            queues: vec![
                QueueLine {
                    view: view("priority_pipeline", 0, false),
                    oldest: None,
                    rate: 0.0,
                },
                QueueLine {
                    view: view("dataset", 1234, true),
                    oldest: Some(95.0),
                    rate: 12.5,
                },
            ],
            workers: Vec::new(),
            failed: Vec::new(),
        };
        let mut screen = Screen::new("sqlite://weir.db".into());
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal
            .draw(|f| draw(f, &snapshot, &mut screen))
            .expect("draw");
        let text: Vec<String> = (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| terminal.backend().buffer()[(x, y)].symbol().to_owned())
                    .collect()
            })
            .collect();
        let row = text
            .iter()
            .find(|l| l.starts_with("dataset"))
            .unwrap_or_else(|| panic!("a dataset row: {text:#?}"));
        for cell in ["1234", "2m", "12.5", "paused", "UNCONSUMED"] {
            assert!(row.contains(cell), "{cell} in {row:?}");
        }
        assert!(text[0].contains("2 queues"), "{:?}", text[0]);
        assert!(
            text.iter()
                .any(|l| l.contains("QUEUE") && l.contains("QUEUED"))
        );
        assert!(text[23].contains("q: quit"), "{:?}", text[23]);
    }
}
