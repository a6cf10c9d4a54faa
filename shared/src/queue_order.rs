//! The order in which a worker asks for work across its queues.
//!
//! `-Q a,b,c` is strict: every claim drains `a` before looking at `b`. With
//! weights (`-Q a=6,b=3,c=1`) each claim draws a fresh order, where a queue's
//! chance of coming first is its share of the total weight (Sidekiq's
//! weighted fetch). A busy low-weight queue then still gets served, and an
//! empty high-weight queue costs nothing because the claim falls through to
//! the next queue in the drawn order.

use rand::Rng;

/// A worker's queues with their weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOrder {
    entries: Vec<(String, u32)>,
    weighted: bool,
}

impl QueueOrder {
    /// Parses `a,b,c` (strict) or `a=6,b=3,c=1` (weighted). A list with any
    /// weight is weighted; queues without one get weight 1.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut weighted = false;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((name, weight)) => {
                    weighted = true;
                    let weight: u32 = weight.trim().parse().map_err(|_| {
                        format!("queue `{name}`: weight `{weight}` is not a whole number")
                    })?;
                    if weight == 0 {
                        return Err(format!("queue `{name}`: weight must be at least 1"));
                    }
                    (name.trim(), weight)
                }
                None => (part, 1),
            };
            crate::job::validate_queue_name(name)?;
            if entries.iter().any(|(n, _)| n == name) {
                return Err(format!("queue `{name}` is listed twice"));
            }
            entries.push((name.to_owned(), weight));
        }
        if entries.is_empty() {
            return Err("no queues given".to_owned());
        }
        Ok(QueueOrder { entries, weighted })
    }

    /// Strict order over the given queues.
    pub fn strict(queues: impl IntoIterator<Item = String>) -> Self {
        QueueOrder {
            entries: queues.into_iter().map(|q| (q, 1)).collect(),
            weighted: false,
        }
    }

    /// The queue names, as listed.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// True when weights were given.
    pub fn is_weighted(&self) -> bool {
        self.weighted
    }

    /// The order for one claim: the listed order when strict, a weighted draw
    /// without replacement otherwise.
    pub fn draw(&self, rng: &mut impl Rng) -> Vec<String> {
        if !self.weighted {
            return self.names().map(str::to_owned).collect();
        }
        let mut pool = self.entries.clone();
        let mut order = Vec::with_capacity(pool.len());
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|(_, w)| w).sum();
            let mut pick = rng.random_range(0..total);
            let index = pool
                .iter()
                .position(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            order.push(pool.remove(index).0);
        }
        order
    }

    /// `a,b` or `a=6,b=3`, as parsed.
    pub fn to_spec(&self) -> String {
        self.entries
            .iter()
            .map(|(name, weight)| {
                if self.weighted {
                    format!("{name}={weight}")
                } else {
                    name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn strict_order_is_the_listed_order() {
        let order = QueueOrder::parse("a, b,c").expect("valid");
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..10 {
            assert_eq!(order.draw(&mut rng), ["a", "b", "c"]);
        }
    }

    #[test]
    fn weighted_order_follows_the_weights() {
        let order = QueueOrder::parse("a=6,b=3,c=1").expect("valid");
        let mut rng = StdRng::seed_from_u64(7);
        let mut first = std::collections::HashMap::new();
        for _ in 0..10_000 {
            *first.entry(order.draw(&mut rng)[0].clone()).or_insert(0) += 1;
        }
        // Expected shares 60/30/10 %; allow sampling noise.
        assert!((5_600..6_400).contains(&first["a"]), "{first:?}");
        assert!((2_600..3_400).contains(&first["b"]), "{first:?}");
        assert!((700..1_300).contains(&first["c"]), "{first:?}");
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(QueueOrder::parse("").is_err());
        assert!(QueueOrder::parse("a=0").is_err());
        assert!(QueueOrder::parse("a=x").is_err());
        assert!(QueueOrder::parse("a,a").is_err());
        assert!(QueueOrder::parse("A").is_err());
    }
}
