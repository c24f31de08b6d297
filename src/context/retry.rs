//! The one way kbs waits for something on a host or the API: try, and try again at an interval
//! until it works or the time is up, then say what the last attempt found.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::ssh::HostProgress;

/// Calls `attempt` every `every` until it returns `Ok`, for at most `limit` (the last attempt
/// starts before the limit). `Err` carries why the attempt has not worked yet; after the limit,
/// the last such reason is returned.
pub async fn until<T, F, Fut>(limit: Duration, every: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(problem) if started.elapsed() + every > limit => return Err(problem),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// `until`, shown on `progress`: each failed attempt's reason as a line, the outcome at the end.
pub async fn until_shown<T, F, Fut>(
    progress: &HostProgress,
    limit: Duration,
    every: Duration,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let result = until(limit, every, || {
        let tried = attempt();
        async { tried.await.inspect_err(|p| progress.line(p)) }
    })
    .await;
    progress.finish(result.as_ref().err().map(String::as_str));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_success_or_the_last_problem() {
        let mut n = 0;
        let got = until(Duration::from_secs(10), Duration::from_secs(1), || {
            n += 1;
            let k = n;
            async move {
                if k < 3 {
                    Err(format!("try {k}"))
                } else {
                    Ok(k)
                }
            }
        })
        .await;
        assert_eq!(got, Ok(3));
        let mut n = 0;
        let got: Result<(), String> = until(Duration::from_secs(5), Duration::from_secs(2), || {
            n += 1;
            let k = n;
            async move { Err(format!("try {k}")) }
        })
        .await;
        assert_eq!(got, Err("try 3".into()));
    }
}
