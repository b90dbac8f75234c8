//! An ordered parallel map: items are processed on `workers` threads and handed to a sink in
//! input order, with at most `in_flight` items alive at once (bounded memory). Output does not
//! depend on the number of workers, which is how stages stay deterministic across `--threads`.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};

/// Runs `map` over `inputs` on `workers` threads; `sink` sees the results in input order on the
/// calling thread. The first error (from the source, a worker or the sink) stops everything.
pub fn ordered_map<I, T, U, M, S>(inputs: I, workers: usize, in_flight: usize, map: M, mut sink: S) -> Result<()>
where
    I: Iterator<Item = Result<T>> + Send,
    T: Send,
    U: Send,
    M: Fn(T) -> Result<U> + Sync,
    S: FnMut(U) -> Result<()>,
{
    let workers = workers.max(1);
    let in_flight = in_flight.max(workers);
    // Tokens bound the items alive between the source and the sink.
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        token_tx.send(()).map_err(|_| anyhow!("token channel closed"))?;
    }
    let (work_tx, work_rx) = sync_channel::<(usize, T)>(in_flight);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(usize, Result<U>)>(in_flight);
    let map = &map;

    std::thread::scope(|scope| -> Result<()> {
        let source = scope.spawn(move || -> Result<()> {
            for (seq, item) in inputs.enumerate() {
                if token_rx.recv().is_err() {
                    return Ok(()); // sink stopped
                }
                if work_tx.send((seq, item?)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let rx: Arc<Mutex<Receiver<(usize, T)>>> = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            scope.spawn(move || loop {
                let next = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                let Ok((seq, item)) = next else { return };
                if tx.send((seq, map(item))).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        drop(work_rx); // workers hold the only receivers now: if they stop, the source unblocks

        let mut pending = BTreeMap::new();
        let mut next = 0usize;
        let mut result = Ok(());
        'recv: for (seq, out) in done_rx.iter() {
            pending.insert(seq, out);
            while let Some(out) = pending.remove(&next) {
                next += 1;
                if let Err(e) = out.and_then(&mut sink) {
                    result = Err(e);
                    break 'recv;
                }
                let _ = token_tx.send(());
            }
        }
        drop(token_tx);
        drop(done_rx); // unblocks workers and the source on error
        let source = source.join().map_err(|_| anyhow!("input thread panicked"))?;
        result.and(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserves_order_for_any_worker_count() {
        for workers in [1, 2, 5] {
            let mut got = Vec::new();
            ordered_map(
                (0..500u64).map(Ok),
                workers,
                8,
                |x| Ok(x * x),
                |y| {
                    got.push(y);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(got, (0..500u64).map(|x| x * x).collect::<Vec<_>>());
        }
    }

    #[test]
    fn first_error_stops_the_run() {
        let mut seen = 0;
        let err = ordered_map(
            (0..10_000u64).map(Ok),
            3,
            4,
            |x| {
                if x == 50 {
                    Err(anyhow!("bad item {x}"))
                } else {
                    Ok(x)
                }
            },
            |_| {
                seen += 1;
                Ok(())
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad item 50"));
        assert_eq!(seen, 50);
        let err =
            ordered_map((0..10u64).map(|x| if x == 3 { Err(anyhow!("source")) } else { Ok(x) }), 2, 2, Ok, |_| Ok(()));
        assert!(err.unwrap_err().to_string().contains("source"));
    }
}
