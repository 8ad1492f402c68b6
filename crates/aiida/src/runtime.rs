//! The core's one Tokio runtime, and the bridge from synchronous callers to the async core; the
//! layers above (the engine) run their processes on it too.
//!
//! Every connection to PostgreSQL is driven by a task on this runtime, whoever asked for it: a
//! query's future only exchanges messages with that task, so it can be awaited on any executor
//! (the caller's own runtime, a daemon's, or [`block_on`] on a plain thread) and a connection never
//! dies with a caller's short-lived runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// The runtime that drives connections and blocking file work.
pub fn handle() -> &'static Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(16)
                .thread_name("aiida-io")
                .enable_all()
                .build()
                .expect("aiida: cannot start the I/O runtime")
        })
        .handle()
}

/// Runs `future` to completion on the calling thread: the synchronous surface over the async one.
///
/// It is not a runtime: it polls the future and parks the thread in between, so it works on a plain
/// thread and inside a caller's Tokio runtime alike (where it blocks that runtime's thread, as any
/// synchronous call does). The futures of this crate need no ambient runtime: their I/O runs on
/// [`handle`].
pub fn block_on<F: Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

/// Runs blocking work (file I/O) on the runtime's blocking threads, from any executor.
pub async fn spawn_blocking<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match handle().spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Runs `future` as a task on the runtime (so that what it creates, such as a connection's socket,
/// belongs to it) and waits for its output from any executor. Dropping the returned future before
/// it is ready cancels the task, as dropping any future cancels its work.
pub async fn on_runtime<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(handle().spawn(future));
    match (&mut task.0).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}
