//! `core.local`: this machine, as a transport.

/// An open `core.local` transport (to be written).
#[derive(Debug)]
pub struct LocalTransport;

/// The `core.local` plugin (to be written).
#[derive(Debug, Default)]
pub struct LocalTransportType;
