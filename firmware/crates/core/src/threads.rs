//! The compute threads of the board: one process-wide setting (the board profile's `threads`, set by the daemon
//! and the host's device path) and one rayon pool of that size, shared by everything that runs in parallel (the
//! Fisher estimator's batches, large GEMMs).
//!
//! Every parallel computation in this crate splits its work so that each output value is computed by one thread
//! in a fixed order: results are bit-for-bit the same for any thread count (tested per user).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Compute threads (1 until [`set_threads`]; the board profile's `threads` on the device).
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// The shared pool and the thread count it was built for.
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Set the number of compute threads (0 is taken as 1). Results do not depend on it.
pub fn set_threads(threads: usize) {
    THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// The number of compute threads.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// The shared rayon pool with `threads` threads (built on first use for that count and kept; a new count
/// replaces it).
pub fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    let threads = threads.max(1);
    let mut slot = POOL.lock().map_err(|_| Error::Config("compute thread pool lock poisoned".into()))?;
    if let Some((n, pool)) = slot.as_ref()
        && *n == threads
    {
        return Ok(Arc::clone(pool));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("edgelearn-compute-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Config(format!("compute thread pool of {threads}: {e}")))?;
    *slot = Some((threads, Arc::clone(&pool)));
    Ok(pool)
}

/// `f(i, chunk)` for every `chunk`-long piece `i` of `data` (the last may be shorter), on the shared pool when
/// [`threads`] > 1. Each piece is written by exactly one call, so the result does not depend on the thread count;
/// the first error is returned.
pub fn for_each_chunk<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync + Send,
) -> Result<()> {
    let chunk = chunk.max(1);
    let t = threads();
    if t <= 1 || data.len() <= chunk {
        return data.chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c));
    }
    use rayon::prelude::*;
    pool(t)?.install(|| data.par_chunks_mut(chunk).enumerate().try_for_each(|(i, c)| f(i, c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_has_the_requested_size_and_is_reused() {
        let a = pool(3).unwrap();
        assert_eq!(a.current_num_threads(), 3);
        let b = pool(3).unwrap();
        assert!(Arc::ptr_eq(&a, &b) || b.current_num_threads() == 3);
        assert_eq!(pool(0).unwrap().current_num_threads(), 1);
    }

    #[test]
    fn every_chunk_is_visited_once_and_errors_come_back() {
        let mut v = vec![0usize; 103];
        for_each_chunk(&mut v, 10, |i, c| {
            c.iter_mut().for_each(|x| *x += i + 1);
            Ok(())
        })
        .unwrap();
        assert!(v.iter().enumerate().all(|(j, &x)| x == j / 10 + 1));
        let err = for_each_chunk(&mut v, 10, |i, _| if i == 3 { Err(Error::Config("x".into())) } else { Ok(()) });
        assert!(err.is_err());
    }
}
