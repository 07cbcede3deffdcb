//! Rate budgets: an application's published call limits (concurrent calls, calls per second,
//! minute and day), enforced on Ferry's side so a sync slows down instead of being refused.
//! One budget is shared by every job of a connection in this process.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of one tenant of an application. Unset limits are not enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default, deserialize_with = "at_least_one")]
    pub concurrent: Option<u32>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub per_second: Option<u32>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub per_minute: Option<u32>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub per_day: Option<u32>,
}

/// A limit of zero calls would hang every sync: refused where the config is read (with its
/// line), like every other out-of-range setting.
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<u32>::deserialize(d)? {
        Some(0) => Err(serde::de::Error::custom(
            "a rate limit must be at least 1 (leave it out for no limit)",
        )),
        v => Ok(v),
    }
}

impl RateLimits {
    /// `self` with every limit `over` sets replaced (a connection's override of its
    /// connector's defaults).
    pub fn overlay(self, over: Option<RateLimits>) -> RateLimits {
        let Some(o) = over else { return self };
        RateLimits {
            concurrent: o.concurrent.or(self.concurrent),
            per_second: o.per_second.or(self.per_second),
            per_minute: o.per_minute.or(self.per_minute),
            per_day: o.per_day.or(self.per_day),
        }
    }
}

/// The budget calls are taken from. Hold the [`Permit`] for the whole call.
pub struct RateBudget {
    limits: RateLimits,
    slots: Option<Arc<Semaphore>>,
    windows: Vec<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateBudget")
            .field("limits", &self.limits)
            .finish()
    }
}

/// A call's share of the budget: a concurrency slot, released on drop.
pub struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// A limiter that never lets more than `n` calls into any window of `window`: a burst of a
/// tenth of `n`, then evenly spaced calls, one cell kept back for arrival jitter.
/// (A plain `Quota::per_minute(n)` bursts `n` and then refills, which breaks a sliding window.)
fn window_limiter(n: u32, window: Duration) -> Option<DefaultDirectRateLimiter> {
    let n = n.max(1);
    let burst = (n / 10).max(1);
    let spaced = n.saturating_sub(burst + 1).max(1);
    let period = window / spaced;
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
    Some(RateLimiter::direct(quota))
}

impl RateBudget {
    pub fn new(limits: RateLimits) -> RateBudget {
        let windows = [
            (limits.per_second, Duration::from_secs(1)),
            (limits.per_minute, Duration::from_secs(60)),
            (limits.per_day, Duration::from_secs(86_400)),
        ]
        .into_iter()
        .filter_map(|(n, w)| window_limiter(n?, w))
        .collect();
        RateBudget {
            limits,
            slots: limits
                .concurrent
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            windows,
        }
    }

    /// The budget of one connection (`database` tells apart connections of different
    /// stores), shared by everything in this process that calls the application for it.
    /// Changed limits replace the budget.
    pub fn shared(database: &str, connection_id: i64, limits: RateLimits) -> Arc<RateBudget> {
        type Budgets = Mutex<HashMap<(String, i64), Arc<RateBudget>>>;
        static BUDGETS: OnceLock<Budgets> = OnceLock::new();
        let mut map = BUDGETS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry((database.to_string(), connection_id))
            .and_modify(|b| {
                if b.limits != limits {
                    *b = Arc::new(RateBudget::new(limits));
                }
            })
            .or_insert_with(|| Arc::new(RateBudget::new(limits)))
            .clone()
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Waits for a concurrency slot, then for every window to allow one more call.
    pub async fn acquire(&self) -> Permit {
        let slot = match &self.slots {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        for w in &self.windows {
            w.until_ready().await;
        }
        Permit(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_window_sees_more_than_its_limit() {
        let budget = RateBudget::new(RateLimits {
            per_second: Some(20),
            per_day: Some(10_000),
            concurrent: Some(2),
            ..Default::default()
        });
        let start = std::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..45 {
            let _p = budget.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 20, "{in_window} calls within 1 s of call {i}");
        }
    }
}
