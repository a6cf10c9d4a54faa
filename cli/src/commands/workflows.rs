//! `weir workflows`: submit, list, show, cancel, retry.

use crate::args::{WorkflowAction, WorkflowsArgs};
use crate::failure::{Failure, Outcome};
use crate::output;
use std::io::Read as _;
use std::str::FromStr;
use weir_shared::broker::Scope;
use weir_shared::config::Settings;
use weir_shared::input::{Catalog, parse_json, workflow_request};
use weir_shared::job::JobId;
use weir_shared::workflow::{Workflow, WorkflowListRequest, WorkflowState};

fn parse_id(text: &str) -> Result<JobId, Failure> {
    JobId::from_str(text)
        .map_err(|_| Failure::usage(format!("`{text}` is not a workflow id (a UUID)")))
}

/// `weir workflows ACTION`.
pub async fn run(settings: Settings, args: WorkflowsArgs) -> Outcome {
    let json = args.output.json;
    match args.action {
        WorkflowAction::Submit { file, tenant } => {
            let mut text = Vec::new();
            let read = if file.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut text)
            } else {
                std::fs::File::open(&file).and_then(|mut f| f.read_to_end(&mut text))
            };
            read.map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
            let value = parse_json(&text)
                .map_err(|e| Failure::usage(format!("{} is not JSON: {e}", file.display())))?;
            let catalog = Catalog {
                settings: &settings,
                extra_tasks: &[],
            };
            let request = workflow_request(catalog, &tenant, value)
                .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
            let broker = super::open_role(&settings).await?;
            let workflow = broker.submit_workflow(request).await?;
            if json {
                output::json(&workflow);
            } else {
                println!("{}", workflow.id);
            }
            Ok(())
        }
        WorkflowAction::List {
            state,
            limit,
            cursor,
        } => {
            let state = state
                .map(|s| WorkflowState::from_str(&s))
                .transpose()
                .map_err(Failure::usage)?;
            if !(1..=100).contains(&limit) {
                return Err(Failure::usage("--limit must be 1 to 100"));
            }
            let broker = super::connect(&settings).await?;
            let page = broker
                .list_workflows(WorkflowListRequest {
                    scope: Scope::All,
                    state,
                    limit,
                    cursor: cursor.as_deref().map(parse_id).transpose()?,
                })
                .await?;
            if json {
                output::json(&page);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = page
                .data
                .iter()
                .map(|w| {
                    let done = w.steps.iter().filter(|s| s.state.is_terminal()).count();
                    vec![
                        w.id.to_string(),
                        w.name.clone(),
                        w.tenant.clone(),
                        w.state.to_string(),
                        format!("{done}/{}", w.steps.len()),
                        w.created_at.to_rfc3339(),
                    ]
                })
                .collect();
            output::table(
                &["ID", "NAME", "TENANT", "STATE", "STEPS ENDED", "CREATED"],
                &rows,
            );
            if let Some(next) = page.next_cursor {
                eprintln!("more: weir workflows list --cursor {next}");
            }
            Ok(())
        }
        WorkflowAction::Show { id } => {
            let broker = super::connect(&settings).await?;
            let workflow = broker.get_workflow(&Scope::All, parse_id(&id)?).await?;
            show(&workflow, json);
            Ok(())
        }
        WorkflowAction::Cancel { id } => {
            let broker = super::connect(&settings).await?;
            let workflow = broker.cancel_workflow(&Scope::All, parse_id(&id)?).await?;
            show(&workflow, json);
            Ok(())
        }
        WorkflowAction::Retry { id } => {
            let broker = super::connect(&settings).await?;
            let workflow = broker.retry_workflow(&Scope::All, parse_id(&id)?).await?;
            show(&workflow, json);
            Ok(())
        }
    }
}

/// The workflow and its DAG: each step with its state, what it needs and
/// why it ended, parents before children.
fn show(workflow: &Workflow, json: bool) {
    if json {
        output::json(workflow);
        return;
    }
    println!(
        "workflow {} `{}` ({}): {}",
        workflow.id, workflow.name, workflow.tenant, workflow.state
    );
    let rows: Vec<Vec<String>> = workflow
        .steps
        .iter()
        .map(|s| {
            let state = if s.skipped {
                "skipped".to_owned()
            } else {
                s.state.to_string()
            };
            vec![
                s.id.clone(),
                state,
                if s.needs.is_empty() {
                    "-".into()
                } else {
                    s.needs.join(", ")
                },
                s.job_id.to_string(),
                s.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["STEP", "STATE", "NEEDS", "JOB", "ERROR"], &rows);
}
