//! Embeddings from any OpenAI-compatible endpoint (OpenAI, Azure-style
//! base URLs, Ollama, vLLM, TEI): `POST {base_url}/v1/embeddings` with
//! `{"model", "input": [...]}`, through the provider's key pool.

use crate::broker::SharedBroker;
use crate::provider::{Call, Provider, SendError, head};
use serde_json::{Value, json};
use std::time::Duration;

/// The vectors of `inputs`, in order, L2-normalised: one call.
pub async fn embed_remote(
    provider: &Provider,
    broker: &SharedBroker,
    model: &str,
    inputs: &[String],
    inline_wait: Duration,
) -> Result<Vec<Vec<f32>>, SendError> {
    let body = json!({"model": model, "input": inputs});
    let call = Call {
        path: "/v1/embeddings",
        method: "POST",
        headers: &[],
        body: Some(&body),
    };
    let response = provider.send(broker, call, inline_wait).await?;
    match response.status {
        200..=299 => {}
        408 | 429 | 500..=599 => {
            return Err(SendError::Retry(provider.scrub(&format!(
                "embeddings from `{}`: HTTP {}: {}",
                provider.name(),
                response.status,
                head(&response)
            ))));
        }
        status => {
            return Err(SendError::Fatal(provider.scrub(&format!(
                "embeddings from `{}`: HTTP {status}: {}",
                provider.name(),
                head(&response)
            ))));
        }
    }
    parse(&response.body, inputs.len())
        .map_err(|e| SendError::Retry(format!("embeddings from `{}`: {e}", provider.name())))
}

/// `data[].embedding` by `index`, checked to be one per input.
fn parse(body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, String> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let data = body["data"]
        .as_array()
        .ok_or("the answer has no `data` list")?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (i, item) in data.iter().enumerate() {
        let index = item["index"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(i);
        let vector: Vec<f32> = item["embedding"]
            .as_array()
            .ok_or("an item has no `embedding` list")?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or("an embedding holds something other than numbers")?;
        let slot = out
            .get_mut(index)
            .ok_or_else(|| format!("index {index} is past the {expected} inputs"))?;
        *slot = Some(crate::vector::normalise(vector));
    }
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| format!("no embedding for input {i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_by_index_and_checked() {
        let body = br#"{"data":[{"index":1,"embedding":[0,2]},{"index":0,"embedding":[3,4]}]}"#;
        let v = parse(body, 2).expect("parsed");
        assert_eq!(v[0], vec![0.6, 0.8]);
        assert_eq!(v[1], vec![0.0, 1.0]);
        assert!(
            parse(body, 3)
                .expect_err("a missing input")
                .contains("input 2")
        );
        assert!(parse(b"{}", 1).is_err());
        assert!(parse(br#"{"data":[{"embedding":["x"]}]}"#, 1).is_err());
    }
}
