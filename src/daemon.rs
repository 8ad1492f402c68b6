//! The daemon fixtures: the test profile's daemon, whose workers are this test binary re-run (so
//! they link the plugins the tests link and see the entry points the test enabled), stopped when
//! the value drops and ended with the test process in any case.

use std::time::Duration;

use aiida::orm::Node;
use aiida_daemon::{AwaitError, DaemonClient, Submittable};

use crate::error::FixtureError;
use crate::profile::AiidaProfile;

/// The daemon of the test's profile (aiida's `daemon_client`): start, stop and look at its
/// workers. Its workers are stopped when this value drops.
#[derive(Debug)]
pub struct TestDaemon {
    client: DaemonClient,
    _profile: AiidaProfile,
}

impl TestDaemon {
    pub(crate) fn new(profile: AiidaProfile) -> TestDaemon {
        let client = DaemonClient::new(profile.storage(), profile.instance().dir()).tied_to_this_process();
        TestDaemon { client, _profile: profile }
    }

    /// Starts one worker unless one runs.
    pub(crate) fn started(self) -> Result<TestDaemon, FixtureError> {
        if !self.client.is_daemon_running() {
            self.client.start(1).map_err(|e| FixtureError::Daemon(e.to_string()))?;
        }
        Ok(self)
    }

    /// The client.
    pub fn client(&self) -> &DaemonClient {
        &self.client
    }

    /// Submits `submittable` (a builder, a calculation job's entry point with its inputs, or a
    /// stored process node: see [`Submittable`]) and waits, on state-change notifications, until
    /// its process is `finished`, for at most 20 s (aiida's `submit_and_await` defaults).
    pub fn submit_and_await(&self, submittable: impl Submittable) -> Result<Node, AwaitError> {
        self.submit_and_await_state(submittable, "finished", Duration::from_secs(20))
    }

    /// [`TestDaemon::submit_and_await`] for another state and timeout; fails at once when the
    /// process ends in another state, and after `timeout` with the process's report and the end
    /// of the daemon log.
    pub fn submit_and_await_state(
        &self,
        submittable: impl Submittable,
        state: &str,
        timeout: Duration,
    ) -> Result<Node, AwaitError> {
        self.client.submit_and_await(submittable, state, timeout)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.client.stop(Duration::from_secs(5));
    }
}
