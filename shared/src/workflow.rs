//! Workflows as submitted: a DAG of steps, each an ordinary job with the
//! ids of the steps it `needs`, checked as a whole before anything is
//! enqueued. Plain data: every broker and the API use the same rules
//! (unique ids, known parents, no cycle, the limits below), and a refusal
//! names the step at fault.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Steps in one workflow at most: one atomic submit and cancel.
pub const MAX_STEPS: usize = 1000;
/// Parents of one step at most: bounds a join's hand-off and fan-in.
pub const MAX_NEEDS: usize = 100;
/// Edges in one workflow at most.
pub const MAX_EDGES: usize = 10_000;
/// The longest step id.
pub const MAX_STEP_ID_LEN: usize = 64;

/// What a step does when a parent ends `failed` or `cancelled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnParentFailure {
    /// It ends `cancelled` with the reason, and the same rule applies to
    /// its children.
    #[default]
    Cancel,
    /// It ends `cancelled` as skipped, and counts as done for its own
    /// children (they run, without its result).
    Skip,
    /// It runs anyway, and sees the failed parent's error.
    Run,
}

/// The shape of one step: its id and the ids of its parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepShape<'a> {
    /// Unique in the workflow.
    pub id: &'a str,
    /// Parent step ids.
    pub needs: &'a [String],
}

/// Why a workflow cannot be submitted; each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// No steps at all.
    #[error("a workflow needs at least one step")]
    Empty,
    /// Over [`MAX_STEPS`].
    #[error("a workflow has at most {MAX_STEPS} steps, this one has {0}")]
    TooManySteps(usize),
    /// Over [`MAX_EDGES`].
    #[error("a workflow has at most {MAX_EDGES} needs in all, this one has {0}")]
    TooManyEdges(usize),
    /// An id that is empty, too long or holds other characters.
    #[error("step id {0:?} must be 1 to {MAX_STEP_ID_LEN} letters, digits, `_`, `.` or `-`")]
    BadStepId(String),
    /// Two steps with one id.
    #[error("step id `{0}` is used twice")]
    DuplicateStep(String),
    /// A step that needs a step the workflow does not have.
    #[error("step `{step}` needs `{parent}`, which is not a step of this workflow")]
    UnknownParent {
        /// The step.
        step: String,
        /// The missing parent.
        parent: String,
    },
    /// A step that names a parent twice, or itself.
    #[error("step `{step}` needs `{parent}` more than once, or needs itself")]
    RepeatedParent {
        /// The step.
        step: String,
        /// The parent named twice (or the step itself).
        parent: String,
    },
    /// Over [`MAX_NEEDS`] parents.
    #[error("step `{0}` needs more than {MAX_NEEDS} steps")]
    TooManyNeeds(String),
    /// The needs form a cycle through this step.
    #[error("the needs form a cycle through step `{0}`")]
    Cycle(String),
}

impl WorkflowError {
    /// The step at fault, when one is.
    pub fn step(&self) -> Option<&str> {
        match self {
            WorkflowError::BadStepId(s)
            | WorkflowError::DuplicateStep(s)
            | WorkflowError::TooManyNeeds(s)
            | WorkflowError::Cycle(s) => Some(s),
            WorkflowError::UnknownParent { step, .. }
            | WorkflowError::RepeatedParent { step, .. } => Some(step),
            _ => None,
        }
    }
}

fn good_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STEP_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks a workflow's steps as a whole and returns them in an order where
/// every step comes after its parents (Kahn's algorithm): indexes into
/// `steps`.
pub fn validate(steps: &[StepShape<'_>]) -> Result<Vec<usize>, WorkflowError> {
    if steps.is_empty() {
        return Err(WorkflowError::Empty);
    }
    if steps.len() > MAX_STEPS {
        return Err(WorkflowError::TooManySteps(steps.len()));
    }
    let edges: usize = steps.iter().map(|s| s.needs.len()).sum();
    if edges > MAX_EDGES {
        return Err(WorkflowError::TooManyEdges(edges));
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        if !good_id(s.id) {
            return Err(WorkflowError::BadStepId(s.id.to_owned()));
        }
        if index.insert(s.id, i).is_some() {
            return Err(WorkflowError::DuplicateStep(s.id.to_owned()));
        }
    }
    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    for s in steps {
        if s.needs.len() > MAX_NEEDS {
            return Err(WorkflowError::TooManyNeeds(s.id.to_owned()));
        }
        let mut mine = Vec::with_capacity(s.needs.len());
        for parent in s.needs {
            let Some(&p) = index.get(parent.as_str()) else {
                return Err(WorkflowError::UnknownParent {
                    step: s.id.to_owned(),
                    parent: parent.clone(),
                });
            };
            if p == index[s.id] || mine.contains(&p) {
                return Err(WorkflowError::RepeatedParent {
                    step: s.id.to_owned(),
                    parent: parent.clone(),
                });
            }
            mine.push(p);
        }
        parents.push(mine);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut pending: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (child, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(child);
        }
    }
    let mut order: Vec<usize> = (0..steps.len()).filter(|&i| pending[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let done = order[next];
        next += 1;
        for &c in &children[done] {
            pending[c] -= 1;
            if pending[c] == 0 {
                order.push(c);
            }
        }
    }
    if order.len() < steps.len() {
        // Walk up unfinished parents from any step left: the walk must
        // come back to a step it saw, and that step is on a cycle.
        let mut at = (0..steps.len())
            .find(|&i| pending[i] > 0)
            .unwrap_or_default();
        let mut seen = vec![false; steps.len()];
        while !seen[at] {
            seen[at] = true;
            at = parents[at]
                .iter()
                .copied()
                .find(|&p| pending[p] > 0)
                .unwrap_or(at);
        }
        return Err(WorkflowError::Cycle(steps[at].id.to_owned()));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &[(&str, &[&str])]) -> Result<Vec<usize>, WorkflowError> {
        let needs: Vec<Vec<String>> = spec
            .iter()
            .map(|(_, n)| n.iter().map(|s| s.to_string()).collect())
            .collect();
        let shapes: Vec<StepShape<'_>> = spec
            .iter()
            .zip(&needs)
            .map(|((id, _), needs)| StepShape { id, needs })
            .collect();
        validate(&shapes)
    }

    #[test]
    fn a_diamond_comes_back_parents_first() {
        let order = check(&[
            ("write", &["embed-0", "embed-1"]),
            ("embed-1", &["split"]),
            ("split", &[]),
            ("embed-0", &["split"]),
        ])
        .expect("valid");
        let pos = |i: usize| order.iter().position(|&x| x == i).expect("in order");
        assert_eq!(order.len(), 4);
        assert!(pos(2) < pos(1) && pos(2) < pos(3), "split first");
        assert!(pos(1) < pos(0) && pos(3) < pos(0), "write last");
    }

    #[test]
    fn each_refusal_names_the_step() {
        assert_eq!(
            check(&[("a", &[]), ("a", &[])]),
            Err(WorkflowError::DuplicateStep("a".into()))
        );
        assert_eq!(
            check(&[("a", &["ghost"])]),
            Err(WorkflowError::UnknownParent {
                step: "a".into(),
                parent: "ghost".into()
            })
        );
        assert_eq!(
            check(&[("a", &["a"])]),
            Err(WorkflowError::RepeatedParent {
                step: "a".into(),
                parent: "a".into()
            })
        );
        assert_eq!(
            check(&[("a b", &[])]),
            Err(WorkflowError::BadStepId("a b".into()))
        );
        assert_eq!(check(&[]), Err(WorkflowError::Empty));
    }

    #[test]
    fn a_cycle_is_named_by_a_step_on_it_not_one_below_it() {
        // root -> x -> y -> z -> x (cycle x, y, z), and w below z.
        let err = check(&[
            ("root", &[]),
            ("w", &["z"]),
            ("x", &["root", "z"]),
            ("y", &["x"]),
            ("z", &["y"]),
        ])
        .expect_err("a cycle");
        let WorkflowError::Cycle(step) = &err else {
            panic!("{err:?}");
        };
        assert!(["x", "y", "z"].contains(&step.as_str()), "{step}");
        assert!(err.to_string().contains(step.as_str()));
    }

    #[test]
    fn limits_hold() {
        let ids: Vec<String> = (0..=MAX_STEPS).map(|i| format!("s{i}")).collect();
        let none: Vec<String> = Vec::new();
        let shapes: Vec<StepShape<'_>> = ids
            .iter()
            .map(|id| StepShape { id, needs: &none })
            .collect();
        assert_eq!(
            validate(&shapes),
            Err(WorkflowError::TooManySteps(MAX_STEPS + 1))
        );
        assert!(validate(&shapes[..MAX_STEPS]).is_ok());
        let many: Vec<String> = ids[1..=MAX_NEEDS + 1].to_vec();
        let mut shapes: Vec<StepShape<'_>> = ids[1..=MAX_NEEDS + 1]
            .iter()
            .map(|id| StepShape { id, needs: &none })
            .collect();
        shapes.push(StepShape {
            id: "join",
            needs: &many,
        });
        assert_eq!(
            validate(&shapes),
            Err(WorkflowError::TooManyNeeds("join".into()))
        );
    }
}
