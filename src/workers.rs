//! A small ordered worker pool: `classify`, `eval` and `calibrate-crop` spread independent images
//! over threads, each thread with its own model state, and hand the results on in input order so
//! that output lines and confusion counts do not depend on which worker finished first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// A worker thread panicked; its job's result is lost, so the whole run fails.
#[derive(Debug, thiserror::Error)]
#[error("a worker thread panicked")]
pub struct WorkerPanicked;

/// The number of workers for `jobs` jobs: `requested`, or one per CPU core, never more than the
/// jobs and never fewer than one.
pub fn worker_count(requested: Option<usize>, jobs: usize) -> usize {
    requested
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.max(1))
}

/// Runs `work` on every job on `threads` workers, each with a state made by `make_state` (a model
/// session), and calls `sink` with the results in job order. Workers start on the next job as
/// soon as they finish one; a result that arrives early waits until the ones before it are
/// delivered. The first error (from a state, or from `sink`) ends the run and is returned.
pub fn map_in_order<J, T, S, E>(
    jobs: &[J],
    threads: usize,
    make_state: impl Fn() -> Result<S, E> + Sync,
    work: impl Fn(&mut S, &J) -> T + Sync,
    mut sink: impl FnMut(usize, T) -> Result<(), E>,
) -> Result<(), E>
where
    J: Sync,
    T: Send,
    E: Send + From<WorkerPanicked>,
{
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, T)>();
    std::thread::scope(|scope| -> Result<(), E> {
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, make_state, work) = (&next, &make_state, &work);
            workers.push(scope.spawn(move || -> Result<(), E> {
                let mut state = make_state()?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else {
                        return Ok(());
                    };
                    // The receiver is gone only when the sink failed; stop quietly then.
                    if tx.send((i, work(&mut state, job))).is_err() {
                        return Ok(());
                    }
                }
            }));
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut done = 0;
        let mut delivered = Ok(());
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&done) {
                delivered = sink(done, result);
                if delivered.is_err() {
                    break;
                }
                done += 1;
            }
            if delivered.is_err() {
                break;
            }
        }
        // Stop handing out jobs, so the workers end after their current one.
        next.store(jobs.len(), Ordering::Relaxed);
        let mut joined = Ok(());
        for worker in workers {
            match worker.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => joined = joined.and(Err(e)),
                Err(_) => joined = joined.and(Err(E::from(WorkerPanicked))),
            }
        }
        delivered.and(joined)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Panicked,
        Sink(usize),
        State,
    }

    impl From<WorkerPanicked> for TestError {
        fn from(_: WorkerPanicked) -> Self {
            TestError::Panicked
        }
    }

    #[test]
    fn results_arrive_in_job_order_whatever_finishes_first() {
        // Early jobs take longest, so later ones finish first on other workers.
        let jobs: Vec<u64> = (0..12).collect();
        let mut seen = Vec::new();
        map_in_order(
            &jobs,
            3,
            || Ok::<_, TestError>(()),
            |_, &j| {
                std::thread::sleep(Duration::from_millis(12 - j));
                j * 10
            },
            |i, r| {
                seen.push((i, r));
                Ok(())
            },
        )
        .expect("run");
        let expected: Vec<(usize, u64)> = (0..12).map(|j| (j as usize, j * 10)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn each_worker_has_its_own_state() {
        let jobs: Vec<u32> = (0..40).collect();
        let mut total = 0;
        map_in_order(
            &jobs,
            4,
            || Ok::<_, TestError>(0u32),
            |count, _| {
                *count += 1;
                *count
            },
            |_, per_worker_count| {
                assert!(per_worker_count >= 1);
                total += 1;
                Ok(())
            },
        )
        .expect("run");
        assert_eq!(total, 40);
    }

    #[test]
    fn a_sink_error_ends_the_run_and_is_returned() {
        let jobs: Vec<u32> = (0..100).collect();
        let mut delivered = 0;
        let result = map_in_order(
            &jobs,
            2,
            || Ok::<_, TestError>(()),
            |_, &j| j,
            |i, _| {
                delivered += 1;
                if i == 5 {
                    Err(TestError::Sink(i))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(result, Err(TestError::Sink(5)));
        assert_eq!(delivered, 6);
    }

    #[test]
    fn state_errors_and_panics_are_errors() {
        let jobs = [1u32, 2, 3];
        let failed = map_in_order(
            &jobs,
            2,
            || Err::<(), _>(TestError::State),
            |_, &j| j,
            |_, _| Ok(()),
        );
        assert_eq!(failed, Err(TestError::State));
        let panicked = map_in_order(
            &jobs,
            1,
            || Ok::<_, TestError>(()),
            |_, &j| {
                assert!(j != 2, "job 2 panics on purpose");
                j
            },
            |_, _| Ok(()),
        );
        assert_eq!(panicked, Err(TestError::Panicked));
    }

    #[test]
    fn worker_count_is_bounded_by_the_jobs() {
        assert_eq!(worker_count(Some(8), 3), 3);
        assert_eq!(worker_count(Some(0), 3), 1);
        assert_eq!(worker_count(Some(2), 0), 1);
        assert!(worker_count(None, 1000) >= 1);
    }
}
