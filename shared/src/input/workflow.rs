//! A workflow as a client writes it (the JSON of `POST /v1/workflows`, or
//! the file of `weir workflows submit`): `name` and `steps`, each step a
//! job request plus `id`, `needs` and `on_parent_failure`, checked step by
//! step and then as a whole. A refusal names the step.

use super::{Catalog, InputError, job_request, shown};
use crate::workflow::{OnParentFailure, StepRequest, WorkflowRequest};
use serde_json::{Map, Value};

/// Fields a step may carry.
pub const STEP_FIELDS: [&str; 10] = [
    "id",
    "needs",
    "on_parent_failure",
    "task",
    "queue",
    "payload",
    "priority",
    "max_retries",
    "timeout_ms",
    "serial_key",
];

/// The longest workflow name.
const MAX_NAME_LEN: usize = 200;

fn invalid(message: String) -> InputError {
    InputError::Invalid {
        code: "invalid_workflow",
        message,
    }
}

/// One workflow request, checked against the configuration: every step as
/// a job, then the DAG (unique ids, known parents, no cycle, the limits).
pub fn workflow_request(
    catalog: Catalog<'_>,
    tenant: &str,
    value: Value,
) -> Result<WorkflowRequest, InputError> {
    let Value::Object(mut map) = value else {
        return Err(InputError::Malformed(
            "a workflow must be a JSON object: {\"name\": ..., \"steps\": [...]}".into(),
        ));
    };
    if let Some(field) = map.keys().find(|k| !matches!(k.as_str(), "name" | "steps")) {
        return Err(invalid(format!(
            "unknown field `{}`; a workflow takes name and steps",
            shown(field)
        )));
    }
    let name = match map.remove("name") {
        None | Some(Value::Null) => "workflow".to_owned(),
        Some(Value::String(name)) if name.len() <= MAX_NAME_LEN => name,
        Some(Value::String(_)) => {
            return Err(invalid(format!(
                "name must be at most {MAX_NAME_LEN} bytes"
            )));
        }
        Some(_) => return Err(InputError::Malformed("name must be a string".into())),
    };
    let Some(Value::Array(raw)) = map.remove("steps") else {
        return Err(InputError::Malformed(
            "steps must be an array of step objects".into(),
        ));
    };
    if raw.len() > crate::workflow::MAX_STEPS {
        return Err(invalid(format!(
            "a workflow has at most {} steps, this one has {}",
            crate::workflow::MAX_STEPS,
            raw.len()
        )));
    }
    let mut steps = Vec::with_capacity(raw.len());
    for (i, step) in raw.into_iter().enumerate() {
        steps.push(step_request(catalog, tenant, step, i)?);
    }
    let request = WorkflowRequest {
        tenant: tenant.to_owned(),
        name,
        steps,
    };
    request.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(request)
}

fn step_request(
    catalog: Catalog<'_>,
    tenant: &str,
    value: Value,
    i: usize,
) -> Result<StepRequest, InputError> {
    let Value::Object(mut map) = value else {
        return Err(InputError::Malformed(format!(
            "steps[{i}]: a step must be a JSON object"
        )));
    };
    let id = match map.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => {
            return Err(InputError::Malformed(format!(
                "steps[{i}]: id must be a string"
            )));
        }
        None => return Err(invalid(format!("steps[{i}]: a step needs an id"))),
    };
    let at = format!("step `{}`: ", shown(&id));
    if let Some(field) = map.keys().find(|k| !STEP_FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "{at}unknown field `{}`; a step takes {}",
            shown(field),
            STEP_FIELDS.join(", ")
        )));
    }
    let needs = match map.remove("needs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(InputError::Malformed(format!(
                    "{at}needs must be an array of step ids"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(InputError::Malformed(format!(
                "{at}needs must be an array of step ids"
            )));
        }
    };
    let on_parent_failure = match map.remove("on_parent_failure") {
        None | Some(Value::Null) => OnParentFailure::default(),
        Some(Value::String(s)) => match s.as_str() {
            "cancel" => OnParentFailure::Cancel,
            "skip" => OnParentFailure::Skip,
            "run" => OnParentFailure::Run,
            other => {
                return Err(invalid(format!(
                    "{at}on_parent_failure `{}` is not cancel, skip or run",
                    shown(other)
                )));
            }
        },
        Some(_) => {
            return Err(InputError::Malformed(format!(
                "{at}on_parent_failure must be a string"
            )));
        }
    };
    let job = job_request(catalog, tenant, Value::Object(Map::from_iter(map)), &at)?;
    Ok(StepRequest {
        id,
        needs,
        on_parent_failure,
        job,
    })
}
