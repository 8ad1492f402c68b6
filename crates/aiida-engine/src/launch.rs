//! Running processes: [`run`] and [`run_get_node`] check a builder's inputs before anything is
//! stored, store the process node with its inputs, and drive a calculation job through its
//! life-cycle (upload, submit, update, retrieve, parse), recording its progress on the node as
//! aiida-core does, so that aiida-core reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aiida::orm::{AuthInfo, Computer, Log, Node, OrmError, User};
use aiida::plugins::{self, EntryPointScope, PluginError};
use aiida::storage::{Storage, StorageError};
use serde_json::{Map, Value, json};

use crate::builder::ProcessBuilder;
use crate::calcjob::{CalcInfo, CalcJobInputs, CalcJobSpec, ParseContext, Parser, default_options};
use crate::connections::{self, Connection};
use crate::exit_code::{ExitCode, PROCESS_EXIT_CODES};
use crate::groups::{Parsers, Schedulers, Transports};
use crate::scheduler::{
    CodeRunMode, JobState, JobTemplate, JobTemplateCodeInfo, Scheduler, SchedulerError, submit_script,
};
use crate::transport::TransportType;

/// The outputs of a process, by link label.
pub type Outputs = BTreeMap<String, Node>;

/// The aiida-core version whose formats the engine writes (the `version` attribute).
const CORE_VERSION: &str = "2.9.4";

/// Errors of launching and running processes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The inputs are not valid: nothing was stored.
    #[error("invalid inputs: {0}")]
    InvalidInputs(String),
    /// The storage failed.
    #[error(transparent)]
    Orm(#[from] OrmError),
    /// The process ended excepted: its node holds the exception and is sealed.
    #[error("process {pk} excepted: {exception}")]
    Excepted {
        /// The process node.
        pk: i32,
        /// What went wrong (the node's `exception` attribute).
        exception: String,
    },
    /// The process paused after a transport or scheduler task failed every attempt; it can be
    /// played again once the cause is fixed.
    #[error("process {pk} paused: {status}")]
    Paused {
        /// The process node.
        pk: i32,
        /// Why (the node's `process_status`).
        status: String,
    },
}

impl From<StorageError> for EngineError {
    fn from(error: StorageError) -> Self {
        EngineError::Orm(error.into())
    }
}

/// Runs the process `builder` describes to its end; returns its outputs. A calculation job that
/// finished with a non-zero exit status is no error (its node says so); one that excepted or
/// paused is.
pub fn run(storage: &Storage, builder: &ProcessBuilder) -> Result<Outputs, EngineError> {
    run_get_node(storage, builder).map(|(outputs, _)| outputs)
}

/// [`run`], also returning the process node.
///
/// The process sees the entry points of the scope entered on the calling thread (see
/// [`EntryPointScope`]), wherever its tasks run.
pub fn run_get_node(storage: &Storage, builder: &ProcessBuilder) -> Result<(Outputs, Node), EngineError> {
    aiida::runtime::block_on(run_get_node_async(storage, builder))
}

/// [`run_get_node`], async; the process runs on the core's runtime, in the entry-point scope
/// entered where this future was made.
pub fn run_get_node_async(
    storage: &Storage,
    builder: &ProcessBuilder,
) -> impl Future<Output = Result<(Outputs, Node), EngineError>> + Send + 'static {
    let scope = EntryPointScope::current().unwrap_or_default();
    let (storage, builder) = (storage.clone(), builder.clone());
    let process = scope.instrument(async move { CalcJobProcess::launch(&storage, &builder).await?.drive().await });
    aiida::runtime::on_runtime(process)
}

/// Continues the calculation job `pk` from what its node records (the last step it completed:
/// stored, uploaded, submitted, retrieved), to its end: what a daemon worker does with a process
/// another worker left, or that was submitted. A job already handed to the scheduler is followed,
/// never submitted again. A sealed process is returned as it is.
pub fn continue_process(storage: &Storage, pk: i32) -> Result<(Outputs, Node), EngineError> {
    aiida::runtime::block_on(continue_process_async(storage, pk))
}

/// [`continue_process`], async; the process runs on the core's runtime, in the entry-point scope
/// entered where this future was made.
pub fn continue_process_async(
    storage: &Storage,
    pk: i32,
) -> impl Future<Output = Result<(Outputs, Node), EngineError>> + Send + 'static {
    let scope = EntryPointScope::current().unwrap_or_default();
    let storage = storage.clone();
    let process = scope.instrument(async move {
        match CalcJobProcess::load(&storage, pk).await? {
            Loaded::Ended(ended) => Ok(*ended),
            Loaded::Running(process) => process.drive().await,
        }
    });
    aiida::runtime::on_runtime(process)
}

/// Stores the calculation job `builder` describes, checked as [`run`] checks it, without running
/// it: the node is left CREATED for [`continue_process`] (what `submit` hands to the daemon).
pub fn create_process(storage: &Storage, builder: &ProcessBuilder) -> Result<Node, EngineError> {
    aiida::runtime::block_on(create_process_async(storage, builder))
}

/// [`create_process`], async.
pub async fn create_process_async(storage: &Storage, builder: &ProcessBuilder) -> Result<Node, EngineError> {
    Ok(CalcJobProcess::launch(storage, builder).await?.node)
}

/// Kills the calculation job `pk`, which nobody runs at the moment (a daemon worker stops running
/// it first): its scheduler job, if it has one still running, is killed, and the process ends
/// KILLED with `message` as its status, sealed. A sealed process is left as it is.
pub async fn kill_process_async(storage: &Storage, pk: i32, message: &str) -> Result<Node, EngineError> {
    let (storage, message) = (storage.clone(), message.to_owned());
    aiida::runtime::on_runtime(async move {
        match CalcJobProcess::load(&storage, pk).await? {
            Loaded::Ended(ended) => Ok(ended.1),
            Loaded::Running(mut process) => {
                process.kill(&message).await?;
                Ok(process.node)
            }
        }
    })
    .await
}

/// Pauses process `pk`, which nobody runs at the moment (a daemon worker stops running it first):
/// it keeps its state (a job with the scheduler runs on) and records `paused` and `message` as its
/// status, as aiida does; [`play_process_async`] undoes it. A sealed process is left as it is.
pub async fn pause_process_async(storage: &Storage, pk: i32, message: &str) -> Result<Node, EngineError> {
    let mut node = Node::load_async(storage, pk).await?;
    if !node.is_sealed() {
        let mut set = Map::new();
        set.insert("paused".into(), json!(true));
        set.insert("process_status".into(), json!(message));
        node.update_process_async(storage, set, &[]).await?;
    }
    Ok(node)
}

/// Undoes [`pause_process_async`]: `paused` and the status removed (the process then needs
/// continuing, which a daemon does when it is queued again).
pub async fn play_process_async(storage: &Storage, pk: i32) -> Result<Node, EngineError> {
    let mut node = Node::load_async(storage, pk).await?;
    if !node.is_sealed() {
        node.update_process_async(storage, Map::new(), &["paused", "process_status"]).await?;
    }
    Ok(node)
}

/// A process node loaded to be continued.
enum Loaded {
    Ended(Box<(Outputs, Node)>),
    Running(Box<CalcJobProcess>),
}

/// How a step ended when it did not succeed.
enum Failure {
    /// Try again later (a transport or scheduler failed).
    Transient(String),
    /// Stop and wait for a person: paused with this status.
    Pause(String),
    /// The process excepts with this message.
    Except(String),
    /// The storage failed.
    Engine(EngineError),
}

impl From<OrmError> for Failure {
    fn from(error: OrmError) -> Self {
        Failure::Engine(error.into())
    }
}

/// What the retry of a transport task allows (profile options `transport.task_retry_initial_interval`
/// and `transport.task_maximum_attempts`, 20 s and 5 by default, as aiida-core's).
struct Retry {
    initial: Duration,
    attempts: u32,
}

impl Retry {
    fn of(storage: &Storage) -> Retry {
        let options = storage.profile().options();
        let initial = options.get("transport.task_retry_initial_interval").and_then(Value::as_f64).unwrap_or(20.0);
        let attempts = options.get("transport.task_maximum_attempts").and_then(Value::as_u64).unwrap_or(5);
        Retry {
            initial: Duration::from_secs_f64(initial.max(0.0)),
            attempts: u32::try_from(attempts).unwrap_or(5).max(1),
        }
    }
}

/// Runs `$step` (an expression awaiting a `Result<T, Failure>`) as the transport task `$task`,
/// retried with exponential back-off; after the last attempt the process pauses.
macro_rules! transport_task {
    ($self:ident, $task:literal, [$($key:literal => $value:expr),*], $step:expr) => {{
        // The status, with what else changes on the node at this point: one round trip.
        $self.set_state(&[("process_status", json!(concat!("Waiting for transport task: ", $task))), $(($key, $value)),*], &[]).await?;
        let mut attempt = 0;
        loop {
            match $step {
                Ok(value) => break value,
                Err(Failure::Transient(message)) => {
                    attempt += 1;
                    $self.log("WARNING", &format!("{}_calculation failed (attempt {attempt}): {message}", $task)).await;
                    $self.forget_connection().await;
                    if attempt >= $self.retry.attempts {
                        return Err(Failure::Transient(format!(
                            "Pausing after failed transport task: {}_calculation failed {attempt} times consecutively",
                            $task
                        )));
                    }
                    tokio::time::sleep($self.retry.initial * 2u32.pow(attempt - 1)).await;
                }
                Err(other) => return Err(other),
            }
        }
    }};
}

/// A calculation job being run.
struct CalcJobProcess {
    storage: Storage,
    node: Node,
    spec: CalcJobSpec,
    calcjob: Arc<dyn crate::calcjob::CalcJob>,
    inputs: CalcJobInputs,
    options: Map<String, Value>,
    code: Node,
    computer: Computer,
    authinfo: AuthInfo,
    scheduler: Arc<dyn Scheduler>,
    transport_type: Arc<dyn TransportType>,
    parser: Option<Arc<dyn Parser>>,
    retry: Retry,
    outputs: Outputs,
    connection: Option<connections::Lease>,
    /// When the last life-cycle step ended (see [`CalcJobProcess::lap`]).
    lap: std::time::Instant,
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidInputs(message.into())
}

impl CalcJobProcess {
    /// Checks the inputs (nothing is stored when they are wrong), then stores the inputs and the
    /// process node with its input links.
    async fn launch(storage: &Storage, builder: &ProcessBuilder) -> Result<CalcJobProcess, EngineError> {
        let start = std::time::Instant::now();
        let process = CalcJobProcess::check_and_store(storage, builder).await?;
        tracing::debug!(target: "aiida_engine::steps", step = "launch", micros = start.elapsed().as_micros() as u64);
        Ok(process)
    }

    /// Says how long the life-cycle step `step` took (a debug event of target
    /// `aiida_engine::steps`, with `step` and `micros`).
    fn lap(&mut self, step: &'static str) {
        let micros = self.lap.elapsed().as_micros() as u64;
        tracing::debug!(target: "aiida_engine::steps", step, micros);
        self.lap = std::time::Instant::now();
    }

    async fn check_and_store(storage: &Storage, builder: &ProcessBuilder) -> Result<CalcJobProcess, EngineError> {
        let spec = builder.calcjob.spec();
        for port in &spec.inputs {
            match builder.inputs.get(port.name) {
                None if port.required => {
                    return Err(invalid(format!("required value was not provided for '{}'", port.name)));
                }
                Some(node) if !port.accepts(node) => {
                    return Err(invalid(format!(
                        "value '{}' is not of the right type. Got '{}', expected {}",
                        port.name,
                        node.node_type(),
                        port.valid_types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(" or ")
                    )));
                }
                _ => {}
            }
        }
        let unexpected: Vec<&str> = builder
            .inputs
            .keys()
            .map(String::as_str)
            .filter(|name| *name != "code" && !spec.inputs.iter().any(|p| p.name == *name))
            .collect();
        if !unexpected.is_empty() {
            return Err(invalid(format!("unexpected inputs {unexpected:?}: the calculation job takes no such ports")));
        }
        let code = builder.inputs.get("code").ok_or_else(|| invalid("required value was not provided for 'code'"))?;
        if !code.node_type().starts_with("data.core.code.") {
            return Err(invalid(format!("input 'code' must be a code, not a '{}'", code.node_type())));
        }
        let executable = code.attribute("filepath_executable").and_then(Value::as_str).unwrap_or_default();
        if !executable.starts_with('/') {
            return Err(invalid(format!("code `{}` has no absolute executable (`{executable}`)", code.label())));
        }
        let computer_pk =
            code.computer_pk().ok_or_else(|| invalid(format!("code `{}` is on no stored computer", code.label())))?;
        let computer = Computer::load_async(storage, computer_pk).await?;
        let user = User::default_user_async(storage).await?;
        let authinfo = computer.authinfo_async(storage, &user).await?;
        let scheduler = plugins::factory::<Schedulers>(computer.scheduler_type())?;
        let transport_type = plugins::factory::<Transports>(computer.transport_type())?;

        let mut options = default_options();
        options.extend(spec.option_defaults.clone());
        options.extend(builder.options.clone());
        spec.check_options(&options).map_err(invalid)?;
        let resources = options["resources"].as_object().cloned().unwrap_or_default();
        let default_mpiprocs = computer
            .metadata()
            .get("default_mpiprocs_per_machine")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        scheduler.job_resource(&resources, default_mpiprocs).map_err(|e| invalid(e.to_string()))?;
        let parser = match options.get("parser_name").and_then(Value::as_str) {
            Some(name) => Some(plugins::factory::<Parsers>(name)?),
            None => None,
        };

        // Valid: store what is not stored yet, then the process node with its input links.
        let mut nodes = builder.inputs.clone();
        for node in nodes.values_mut() {
            match node.store_async(storage).await {
                Ok(_) => {}
                // The builder launched again: its nodes are stored since the first launch (aiida's
                // builder holds the very nodes, which its first launch stored).
                Err(OrmError::Storage(e)) if e.is_unique_violation() => {
                    *node = Node::load_uuid_async(storage, node.uuid()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut node = Node::new("process.calculation.calcjob.CalcJobNode.");
        node.set_process_type(format!("aiida.calculations:{}", builder.entry_point))?;
        node.set_computer(&computer)?;
        if let Some(label) = &builder.label {
            node.set_label(label.clone())?;
        }
        if let Some(description) = &builder.description {
            node.set_description(description.clone())?;
        }
        node.set_attribute("process_label", builder.calcjob.process_label())?;
        node.set_attribute("process_state", "created")?;
        node.set_attribute("version", json!({"core": CORE_VERSION, "plugin": CORE_VERSION}))?;
        let metadata_inputs = if builder.options.is_empty() {
            Value::Null
        } else {
            json!({"metadata": {"options": builder.options.clone()}})
        };
        node.set_attribute("metadata_inputs", metadata_inputs)?;
        for (key, value) in &options {
            if !value.is_null() {
                node.set_attribute(key.clone(), value.clone())?;
            }
        }
        let links: Vec<(&str, &Node)> = nodes.iter().map(|(label, node)| (label.as_str(), node)).collect();
        node.store_process_async(storage, &links).await?;
        let inputs = CalcJobInputs { nodes: nodes.clone(), options: options.clone(), computer: computer.clone() };
        Ok(CalcJobProcess {
            storage: storage.clone(),
            node,
            spec,
            calcjob: builder.calcjob.clone(),
            inputs,
            options,
            code: nodes["code"].clone(),
            computer,
            authinfo,
            scheduler,
            transport_type,
            parser,
            retry: Retry::of(storage),
            outputs: Outputs::new(),
            connection: None,
            lap: std::time::Instant::now(),
        })
    }

    /// The calculation job of node `pk`, rebuilt from what is stored: its plugin (from the process
    /// type), inputs (from the links), options (from the attributes), computer and outputs so far.
    async fn load(storage: &Storage, pk: i32) -> Result<Loaded, EngineError> {
        let node = Node::load_async(storage, pk).await?;
        let outputs: Outputs = node
            .outgoing_async(storage)
            .await?
            .into_iter()
            .filter(|l| l.link_type == aiida::orm::LinkType::Create)
            .map(|l| (l.label, l.node))
            .collect();
        if node.is_sealed() {
            return Ok(Loaded::Ended(Box::new((outputs, node))));
        }
        let entry_point = node
            .process_type()
            .and_then(|t| t.strip_prefix("aiida.calculations:"))
            .ok_or_else(|| invalid(format!("node {pk} is not a calculation job of a registered plugin")))?
            .to_owned();
        let calcjob = plugins::factory::<crate::groups::Calculations>(&entry_point)?;
        let spec = calcjob.spec();
        let nodes: BTreeMap<String, Node> = node
            .incoming_async(storage)
            .await?
            .into_iter()
            .filter(|l| l.link_type == aiida::orm::LinkType::InputCalc)
            .map(|l| (l.label, l.node))
            .collect();
        let mut options = Map::new();
        for (name, _) in crate::calcjob::OPTIONS.iter().chain(spec.extra_options.iter()) {
            if let Some(value) = node.attribute(name) {
                options.insert((*name).to_owned(), value.clone());
            }
        }
        let code = nodes.get("code").cloned().ok_or_else(|| invalid(format!("calculation {pk} has no code")))?;
        let computer_pk = node.computer_pk().ok_or_else(|| invalid(format!("calculation {pk} has no computer")))?;
        let computer = Computer::load_async(storage, computer_pk).await?;
        let user = User::default_user_async(storage).await?;
        let authinfo = computer.authinfo_async(storage, &user).await?;
        let scheduler = plugins::factory::<Schedulers>(computer.scheduler_type())?;
        let transport_type = plugins::factory::<Transports>(computer.transport_type())?;
        let parser = match options.get("parser_name").and_then(Value::as_str) {
            Some(name) => Some(plugins::factory::<Parsers>(name)?),
            None => None,
        };
        let inputs = CalcJobInputs { nodes, options: options.clone(), computer: computer.clone() };
        Ok(Loaded::Running(Box::new(CalcJobProcess {
            storage: storage.clone(),
            node,
            spec,
            calcjob,
            inputs,
            options,
            code,
            computer,
            authinfo,
            scheduler,
            transport_type,
            parser,
            retry: Retry::of(storage),
            outputs,
            connection: None,
            lap: std::time::Instant::now(),
        })))
    }

    /// Runs the job to its end and records how it ended.
    async fn drive(mut self) -> Result<(Outputs, Node), EngineError> {
        let pk = self.node.pk().unwrap_or_default();
        match self.life_cycle().await {
            Ok(exit_code) => {
                self.finish(&exit_code).await?;
                self.lap("finish");
                Ok((self.outputs, self.node))
            }
            Err(Failure::Transient(status) | Failure::Pause(status)) => {
                let mut set = Map::new();
                set.insert("paused".into(), Value::Bool(true));
                set.insert("process_status".into(), Value::String(status.clone()));
                self.node.update_process_async(&self.storage, set, &[]).await?;
                Err(EngineError::Paused { pk, status })
            }
            Err(Failure::Except(exception)) => {
                self.except(&exception).await?;
                Err(EngineError::Excepted { pk, exception })
            }
            Err(Failure::Engine(error)) => {
                let exception = format!("{}", aiida::report::Chain(&error));
                let _ = self.except(&exception).await;
                Err(error)
            }
        }
    }

    /// The life-cycle from where the node says the job is: each step whose result is recorded
    /// (the `remote_folder` output, the `job_id`, the scheduler's `done`, the `retrieved` output)
    /// is not done again.
    async fn life_cycle(&mut self) -> Result<ExitCode, Failure> {
        self.lap = std::time::Instant::now();
        let skip_submit = if self.outputs.contains_key("remote_folder") {
            self.recorded_skip_submit().await?
        } else {
            // Created, then waiting for the upload (aiida passes through `running` for the instant
            // of its `run()` call in between, which nobody sees).
            let info = transport_task!(self, "upload", ["process_state" => json!("waiting")], self.upload().await);
            self.lap("upload");
            info.skip_submit
        };
        if !skip_submit {
            let job_id = match self.node.attribute("job_id").and_then(Value::as_str) {
                Some(job_id) => job_id.to_owned(),
                None => {
                    // `submitting` recorded with nothing after it: the run that recorded it stopped
                    // while handing the job to the scheduler, which may have it already.
                    let submitted = if self.node.attribute("state").and_then(Value::as_str) == Some("submitting") {
                        transport_task!(self, "submit", [], self.submitted_job().await)
                    } else {
                        None
                    };
                    let job_id = match submitted {
                        Some(job_id) => job_id,
                        // The intent first, so that a run that stops after the scheduler's answer
                        // leaves `submitting` behind.
                        None => transport_task!(self, "submit", ["state" => json!("submitting")], self.submit().await),
                    };
                    self.set_state(
                        &[("job_id", json!(job_id)), ("state", json!("withscheduler"))],
                        &["process_status"],
                    )
                    .await?;
                    self.lap("submit");
                    job_id
                }
            };
            if self.node.attribute("scheduler_state").and_then(Value::as_str) != Some(JobState::Done.as_str()) {
                self.update(&job_id).await?;
                self.lap("update");
            }
        }
        let retrieved = match self.outputs.get("retrieved").cloned() {
            Some(retrieved) => self.recorded_files(&retrieved).await?,
            None => transport_task!(self, "retrieve", ["state" => json!("stashing")], self.retrieve().await),
        };
        self.set_state(&[("state", json!("parsing")), ("process_state", json!("running"))], &["process_status"])
            .await?;
        self.lap("retrieve");
        let exit_code = self.parse(retrieved).await;
        self.lap("parse");
        exit_code
    }

    /// Whether the uploaded job is not to be submitted (`skip_submit` of the calc info kept in the
    /// node's repository at upload).
    async fn recorded_skip_submit(&self) -> Result<bool, Failure> {
        let calcinfo = self.node.file_async(&self.storage, ".aiida/calcinfo.json").await?;
        let calcinfo: Value = serde_json::from_slice(&calcinfo).unwrap_or_default();
        Ok(calcinfo.get("skip_submit").and_then(Value::as_bool).unwrap_or(false))
    }

    /// The files at the top of a stored folder node, for the parser.
    async fn recorded_files(&self, folder: &Node) -> Result<BTreeMap<String, Vec<u8>>, Failure> {
        let names: Vec<String> = folder
            .repository_metadata()
            .get("o")
            .and_then(Value::as_object)
            .map(|entries| entries.iter().filter(|(_, e)| e.get("k").is_some()).map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let mut files = BTreeMap::new();
        for name in names {
            let content = folder.file_async(&self.storage, &name).await?;
            files.insert(name, content);
        }
        Ok(files)
    }

    async fn set_state(&mut self, set: &[(&str, Value)], remove: &[&str]) -> Result<(), Failure> {
        let set: Map<String, Value> = set.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        self.node.update_process_async(&self.storage, set, remove).await?;
        Ok(())
    }

    async fn log(&self, level: &str, message: &str) {
        let logger = "aiida.orm.nodes.process.calculation.calcjob.CalcJobNode";
        if let Err(e) = Log::add_async(&self.storage, &self.node, logger, level, message).await {
            tracing::warn!(
                "cannot record a log message for process {:?}: {}",
                self.node.pk(),
                aiida::report::Chain(&e)
            );
        }
    }

    /// The shared connection to the computer, opened (or joined) when first needed.
    async fn connection(&mut self) -> Result<Arc<Connection>, Failure> {
        if let Some(lease) = &self.connection {
            return Ok(lease.connection().clone());
        }
        let params = self.authinfo.auth_params().clone();
        let safe_interval = params
            .get("safe_interval")
            .and_then(Value::as_f64)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| self.transport_type.default_safe_interval());
        let key = format!("{}|{}|{}", self.storage.profile().uuid(), self.computer.uuid(), self.authinfo.user_pk());
        let lease = connections::connect(key, &*self.transport_type, self.computer.hostname(), &params, safe_interval)
            .await
            .map_err(|e| Failure::Transient(aiida::report::Chain(&e).to_string()))?;
        let connection = lease.connection().clone();
        self.connection = Some(lease);
        Ok(connection)
    }

    /// After a failed transport task: the connection may be what failed, so the next attempt
    /// asks for one again (a new one if nobody else made one meanwhile).
    async fn forget_connection(&mut self) {
        if let Some(lease) = self.connection.take() {
            lease.forget().await;
        }
    }

    fn option_str(&self, name: &str) -> Option<&str> {
        self.options.get(name).and_then(Value::as_str)
    }

    /// The job template aiida's `presubmit` builds from the calc info, the code, the computer
    /// and the options.
    fn job_template(&self, info: &CalcInfo) -> Result<JobTemplate, Failure> {
        let metadata = self.computer.metadata();
        let computer_quotes = metadata.get("use_double_quotes").and_then(Value::as_bool).unwrap_or(false);
        let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let code = &self.code;
        let prepend: Vec<String> = [
            text(metadata.get("prepend_text")),
            text(code.attribute("prepend_text")),
            info.prepend_text.clone().filter(|s| !s.is_empty()),
            text(self.options.get("prepend_text")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let append: Vec<String> = [
            text(self.options.get("append_text")),
            info.append_text.clone().filter(|s| !s.is_empty()),
            text(code.attribute("append_text")),
            text(metadata.get("append_text")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let resources = self.options["resources"].as_object().cloned().unwrap_or_default();
        let default_mpiprocs =
            metadata.get("default_mpiprocs_per_machine").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
        let job_resource =
            self.scheduler.job_resource(&resources, default_mpiprocs).map_err(|e| Failure::Except(e.to_string()))?;
        let mut codes_info = Vec::new();
        for code_info in &info.codes_info {
            let sources = [
                self.options.get("withmpi").and_then(Value::as_bool),
                code_info.withmpi,
                code.attribute("with_mpi").and_then(Value::as_bool),
            ];
            let set: Vec<bool> = sources.iter().flatten().copied().collect();
            if set.windows(2).any(|w| w[0] != w[1]) {
                return Err(Failure::Except(format!(
                    "Inconsistent requirements on whether the code should run with MPI: option withmpi {:?}, calc info {:?}, code {:?}",
                    sources[0], sources[1], sources[2]
                )));
            }
            let withmpi = set.first().copied().unwrap_or(false);
            let mut prepend_cmdline_params = Vec::new();
            if withmpi {
                let mpirun = metadata
                    .get("mpirun_command")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_else(|| vec![json!("mpirun"), json!("-np"), json!("{tot_num_mpiprocs}")]);
                for part in mpirun {
                    let part = part.as_str().unwrap_or_default();
                    prepend_cmdline_params.push(
                        part.replace("{tot_num_mpiprocs}", &job_resource.tot_num_mpiprocs.to_string())
                            .replace("{num_machines}", &job_resource.num_machines.to_string())
                            .replace("{num_mpiprocs_per_machine}", &job_resource.num_mpiprocs_per_machine.to_string()),
                    );
                }
                for extra in self.options.get("mpirun_extra_params").and_then(Value::as_array).into_iter().flatten() {
                    prepend_cmdline_params.push(extra.as_str().map(str::to_owned).unwrap_or_else(|| extra.to_string()));
                }
            }
            let executable = code.attribute("filepath_executable").and_then(Value::as_str).unwrap_or_default();
            let mut cmdline_params = vec![executable.to_owned()];
            cmdline_params.extend(code_info.cmdline_params.iter().cloned());
            codes_info.push(JobTemplateCodeInfo {
                prepend_cmdline_params,
                cmdline_params,
                use_double_quotes: (
                    computer_quotes,
                    code.attribute("use_double_quotes").and_then(Value::as_bool).unwrap_or(false),
                ),
                wrap_cmdline_params: code.attribute("wrap_cmdline_params").and_then(Value::as_bool).unwrap_or(false),
                stdin_name: code_info.stdin_name.clone(),
                stdout_name: code_info.stdout_name.clone(),
                stderr_name: code_info.stderr_name.clone(),
                join_files: code_info.join_files,
            });
        }
        let stdout = self.option_str("scheduler_stdout").map(str::to_owned);
        let stderr = self.option_str("scheduler_stderr").map(str::to_owned);
        let join = stdout.is_some() && stdout == stderr;
        Ok(JobTemplate {
            shebang: metadata.get("shebang").and_then(Value::as_str).map(str::to_owned),
            submit_as_hold: false,
            rerunnable: self.options.get("rerunnable").and_then(Value::as_bool).unwrap_or(false),
            job_environment: self
                .options
                .get("environment_variables")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            environment_variables_double_quotes: self
                .options
                .get("environment_variables_double_quotes")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            job_name: Some(format!("aiida-{}", self.node.pk().unwrap_or_default())),
            sched_output_path: stdout,
            sched_error_path: if join { None } else { stderr },
            sched_join_files: join,
            queue_name: self.option_str("queue_name").map(str::to_owned),
            account: self.option_str("account").map(str::to_owned),
            qos: self.option_str("qos").map(str::to_owned),
            job_resource,
            priority: self.option_str("priority").map(str::to_owned),
            max_memory_kb: self
                .options
                .get("max_memory_kb")
                .and_then(Value::as_u64)
                .or_else(|| metadata.get("default_memory_per_machine").and_then(Value::as_u64)),
            max_wallclock_seconds: self.options.get("max_wallclock_seconds").and_then(Value::as_u64),
            custom_scheduler_commands: text(self.options.get("custom_scheduler_commands")),
            prepend_text: (!prepend.is_empty()).then(|| prepend.join("\n\n")),
            append_text: (!append.is_empty()).then(|| append.join("\n\n")),
            import_sys_environment: self.options.get("import_sys_environment").and_then(Value::as_bool).unwrap_or(true),
            codes_run_mode: CodeRunMode::Serial,
            codes_info,
        })
    }

    /// Prepares the job in a sandbox, uploads it to its working folder and keeps its input files
    /// in the node's repository; emits `remote_folder`.
    async fn upload(&mut self) -> Result<CalcInfo, Failure> {
        let sandbox =
            Sandbox::new(&self.storage).map_err(|e| Failure::Except(format!("cannot make a sandbox folder: {e}")))?;
        let (calcjob, inputs, folder) = (self.calcjob.clone(), self.inputs.clone(), sandbox.path().to_owned());
        let prepared = tokio::task::spawn_blocking(move || calcjob.prepare_for_submission(&inputs, &folder))
            .await
            .map_err(|e| Failure::Except(panic_message(e)))?;
        let mut info = prepared.map_err(|e| Failure::Except(format!("prepare_for_submission failed: {e}")))?;
        let uuid = self.node.uuid().to_string();
        info.uuid = uuid.clone();
        let template = self.job_template(&info)?;
        let ignored = self.scheduler.ignored_options(&template);
        if !ignored.is_empty() {
            let message = format!(
                "the scheduler `{}` does not honour these options, which are set: {}",
                self.computer.scheduler_type(),
                ignored.join(", ")
            );
            self.log("WARNING", &message).await;
        }
        let script = submit_script(&*self.scheduler, &template);
        let script_name = self.option_str("submit_script_filename").unwrap_or("_aiidasubmit.sh").to_owned();
        let mut retrieve_list = info.retrieve_list.clone();
        for name in [template.sched_output_path.clone(), template.sched_error_path.clone()].into_iter().flatten() {
            if !retrieve_list.contains(&name) {
                retrieve_list.push(name);
            }
        }
        for extra in self.options.get("additional_retrieve_list").and_then(Value::as_array).into_iter().flatten() {
            if let Some(extra) = extra.as_str() {
                retrieve_list.push(extra.to_owned());
            }
        }
        let folder = sandbox.path().to_owned();
        let (job_tmpl, calcinfo) = (
            serde_json::to_vec_pretty(&template).unwrap_or_default(),
            serde_json::to_vec_pretty(&info).unwrap_or_default(),
        );
        tokio::task::spawn_blocking({
            let folder = folder.clone();
            move || -> std::io::Result<()> {
                std::fs::write(folder.join(&script_name), script)?;
                std::fs::create_dir_all(folder.join(".aiida"))?;
                std::fs::write(folder.join(".aiida/job_tmpl.json"), job_tmpl)?;
                std::fs::write(folder.join(".aiida/calcinfo.json"), calcinfo)
            }
        })
        .await
        .map_err(|e| Failure::Except(panic_message(e)))?
        .map_err(|e| Failure::Except(format!("cannot write the submit script into the sandbox: {e}")))?;

        let connection = self.connection().await?;
        let transport = &connection.transport;
        let transient = |e: crate::transport::TransportError| Failure::Transient(aiida::report::Chain(&e).to_string());
        let user = connection.whoami().await.map_err(transient)?.to_owned();
        let base = self.computer.workdir().unwrap_or("/tmp/{username}/aiida_run/").replace("{username}", &user);
        let parent = Path::new(&base).join(&uuid[0..2]).join(&uuid[2..4]);
        let workdir = parent.join(&uuid[4..]);
        let executable = self.code.attribute("filepath_executable").and_then(Value::as_str).unwrap_or_default();
        if !transport.path_exists(Path::new(executable)).await.map_err(transient)? {
            return Err(Failure::Except(format!(
                "the executable {executable} of code `{}` does not exist on computer `{}`; fix the code's \
                 filepath_executable or install it there",
                self.code.label(),
                self.computer.label()
            )));
        }
        transport.makedirs(&parent, true).await.map_err(transient)?;
        if transport.path_exists(&workdir).await.map_err(transient)? {
            let lost = Path::new(&base).join("lost+found");
            transport.makedirs(&lost, true).await.map_err(transient)?;
            let mut target = lost.join(&uuid);
            if transport.path_exists(&target).await.map_err(transient)? {
                target = lost.join(format!("{uuid}-{}", uuid::Uuid::new_v4()));
            }
            transport.rename(&workdir, &target).await.map_err(transient)?;
        }
        transport.mkdir(&workdir, false).await.map_err(transient)?;
        self.set_state(&[("remote_workdir", json!(workdir.to_string_lossy()))], &[]).await?;
        for entry in std::fs::read_dir(&folder).map_err(|e| Failure::Except(format!("cannot read the sandbox: {e}")))? {
            let entry = entry.map_err(|e| Failure::Except(format!("cannot read the sandbox: {e}")))?;
            transport.put(&entry.path(), &workdir).await.map_err(transient)?;
        }
        // The sandbox's files, less those excluded, into the node's repository.
        let exclude = info.provenance_exclude_list.clone();
        let files = tokio::task::spawn_blocking(move || sandbox_files(&folder, &exclude))
            .await
            .map_err(|e| Failure::Except(panic_message(e)))?
            .map_err(|e| Failure::Except(format!("cannot read the sandbox: {e}")))?;
        drop(sandbox);
        self.node.put_process_files_async(&self.storage, files).await?;
        let mut remote = aiida::orm::data::remote(&self.computer, &workdir.to_string_lossy())?;
        self.node.add_output_async(&self.storage, &mut remote, "remote_folder").await?;
        self.outputs.insert("remote_folder".into(), remote);
        self.set_state(
            &[
                ("state", json!("unstashing")),
                ("retrieve_list", json!(retrieve_list)),
                ("retrieve_temporary_list", json!(info.retrieve_temporary_list)),
            ],
            &["process_status"],
        )
        .await?;
        Ok(info)
    }

    fn workdir(&self) -> PathBuf {
        PathBuf::from(self.node.attribute("remote_workdir").and_then(Value::as_str).unwrap_or_default())
    }

    async fn submit(&mut self) -> Result<String, Failure> {
        let connection = self.connection().await?;
        let script = self.option_str("submit_script_filename").unwrap_or("_aiidasubmit.sh").to_owned();
        self.scheduler
            .submit(&*connection.transport, &self.workdir(), &script)
            .await
            .map_err(|e| Failure::Transient(aiida::report::Chain(&e).to_string()))
    }

    /// The job an earlier run of this process handed to the scheduler without recording its id,
    /// as the scheduler finds it in the job's folder; `None` when it never reached the scheduler.
    async fn submitted_job(&mut self) -> Result<Option<String>, Failure> {
        let connection = self.connection().await?;
        match self.scheduler.submitted_job(&*connection.transport, &self.workdir()).await {
            Ok(Some(job_id)) => {
                let report = format!("job {job_id} was submitted before the process stopped: following it");
                self.log("REPORT", &report).await;
                Ok(Some(job_id))
            }
            Ok(None) => Ok(None),
            Err(SchedulerError::CannotTell) => {
                // What a person decides: play submits it (the state says nothing was submitted).
                self.set_state(&[("state", json!("uploading"))], &[]).await?;
                Err(Failure::Pause(format!(
                    "The process stopped while submitting its job, and scheduler `{}` cannot tell whether the \
                     job reached it: if the scheduler has a job from {}, kill the process; if not, play it to \
                     submit the job",
                    self.computer.scheduler_type(),
                    self.workdir().display()
                )))
            }
            Err(e) => Err(Failure::Transient(aiida::report::Chain(&e).to_string())),
        }
    }

    /// Follows the job until the scheduler says it is done, no more often than the computer's
    /// minimum poll interval.
    async fn update(&mut self, job_id: &str) -> Result<(), Failure> {
        let interval = self
            .computer
            .metadata()
            .get("minimum_scheduler_poll_interval")
            .and_then(Value::as_f64)
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
            .unwrap_or_else(|| self.transport_type.default_minimum_job_poll_interval());
        let mut shown = None;
        let mut failures = 0;
        // Between two questions about this job, a little longer each time (the scheduler's
        // interval bounds it from below for all jobs at once).
        let mut pause = Duration::from_millis(1);
        loop {
            let connection = self.connection().await?;
            match connection.job_info(job_id, self.scheduler.clone(), interval).await {
                Ok(info) => {
                    failures = 0;
                    let state = info.job_state;
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
                    let mut changes = vec![
                        ("scheduler_state", json!(state.as_str())),
                        ("scheduler_lastchecktime", json!(now)),
                        ("last_job_info", serde_json::to_value(&info).unwrap_or_default()),
                    ];
                    if shown != Some(state) {
                        changes.push((
                            "process_status",
                            json!(format!("Monitoring scheduler: job state {}", state.status_name())),
                        ));
                        shown = Some(state);
                    }
                    self.set_state(&changes, &[]).await?;
                    if state == JobState::Done {
                        return Ok(());
                    }
                }
                Err(message) => {
                    failures += 1;
                    self.log("WARNING", &format!("update_calculation failed (attempt {failures}): {message}")).await;
                    self.forget_connection().await;
                    if failures >= self.retry.attempts {
                        return Err(Failure::Transient(format!(
                            "Pausing after failed transport task: update_calculation failed {failures} times consecutively"
                        )));
                    }
                    tokio::time::sleep(self.retry.initial * 2u32.pow(failures - 1)).await;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Retrieves the files of `retrieve_list` into the output `retrieved`; returns their
    /// contents for the parser.
    async fn retrieve(&mut self) -> Result<BTreeMap<String, Vec<u8>>, Failure> {
        let connection = self.connection().await?;
        let transport = &connection.transport;
        let transient = |e: crate::transport::TransportError| Failure::Transient(aiida::report::Chain(&e).to_string());
        let workdir = self.workdir();
        let sandbox =
            Sandbox::new(&self.storage).map_err(|e| Failure::Except(format!("cannot make a sandbox folder: {e}")))?;
        let list: Vec<String> = self
            .node
            .attribute("retrieve_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        for entry in list {
            let remote = if entry.starts_with('/') { PathBuf::from(&entry) } else { workdir.join(&entry) };
            let matches = if entry.contains(['*', '?', '[']) {
                transport.glob(&remote).await.map_err(transient)?
            } else {
                vec![remote]
            };
            for path in matches {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                transport.get(&path, &sandbox.path().join(&name), true).await.map_err(transient)?;
            }
        }
        let folder = sandbox.path().to_owned();
        let files = tokio::task::spawn_blocking(move || sandbox_files(&folder, &[]))
            .await
            .map_err(|e| Failure::Except(panic_message(e)))?
            .map_err(|e| Failure::Except(format!("cannot read the retrieved files: {e}")))?;
        let mut retrieved = aiida::orm::data::folder(files.iter().map(|(p, c)| (p.clone(), c.clone())));
        self.node.add_output_async(&self.storage, &mut retrieved, "retrieved").await?;
        self.outputs.insert("retrieved".into(), retrieved);
        Ok(files.into_iter().collect())
    }

    /// Runs the parser on the retrieved files; attaches its outputs; returns the exit code.
    async fn parse(&mut self, retrieved: BTreeMap<String, Vec<u8>>) -> Result<ExitCode, Failure> {
        let Some(parser) = self.parser.clone() else { return Ok(ExitCode::SUCCESS) };
        let context = ParseContext { retrieved, inputs: self.inputs.clone(), outputs: Vec::new(), logs: Vec::new() };
        let (result, context) = tokio::task::spawn_blocking(move || {
            let mut context = context;
            let result = parser.parse(&mut context);
            (result, context)
        })
        .await
        .map_err(|e| Failure::Except(panic_message(e)))?;
        for (level, message) in &context.logs {
            self.log(level, message).await;
        }
        let exit_code = result.map_err(|e| Failure::Except(format!("the parser failed: {e}")))?;
        for (name, mut node) in context.outputs {
            if self.outputs.contains_key(&name) {
                // Linked by an earlier attempt at parsing, which a stopped worker left unfinished.
                continue;
            }
            let valid = self.spec.outputs.iter().any(|p| p.name == name && p.accepts(&node));
            if !valid {
                self.log("ERROR", &format!("the parser returned an invalid output `{name}` ({})", node.node_type()))
                    .await;
                return Ok(PROCESS_EXIT_CODES[2].clone());
            }
            self.node.add_output_async(&self.storage, &mut node, &name).await?;
            self.outputs.insert(name, node);
        }
        let exit_code = exit_code.unwrap_or(ExitCode::SUCCESS);
        if exit_code.status != 0 {
            self.log(
                "WARNING",
                &format!("output parser returned exit code<{}>: {}", exit_code.status, exit_code.message),
            )
            .await;
        }
        Ok(exit_code)
    }

    async fn finish(&mut self, exit_code: &ExitCode) -> Result<(), EngineError> {
        let mut set = Map::new();
        set.insert("exit_status".into(), json!(exit_code.status));
        if exit_code.status != 0 && !exit_code.message.is_empty() {
            set.insert("exit_message".into(), json!(exit_code.message));
        }
        set.insert("process_state".into(), json!("finished"));
        set.insert("sealed".into(), json!(true));
        self.node.update_process_async(&self.storage, set, &["state", "checkpoints", "process_status"]).await?;
        Ok(())
    }

    /// Kills the job (when it is with the scheduler) and ends the process KILLED, sealed.
    async fn kill(&mut self, message: &str) -> Result<(), EngineError> {
        let job = self.node.attribute("job_id").and_then(Value::as_str).map(str::to_owned);
        let done = self.node.attribute("scheduler_state").and_then(Value::as_str) == Some(JobState::Done.as_str());
        if let Some(job_id) = job.filter(|_| !done) {
            match self.connection().await {
                Ok(connection) => {
                    if let Err(e) = self.scheduler.kill(&*connection.transport, &job_id).await {
                        self.log("WARNING", &format!("could not kill job {job_id}: {}", aiida::report::Chain(&e)))
                            .await;
                    }
                }
                Err(_) => self.log("WARNING", &format!("could not reach the computer to kill job {job_id}")).await,
            }
        }
        let mut set = Map::new();
        set.insert("process_state".into(), json!("killed"));
        set.insert("process_status".into(), json!(message));
        set.insert("sealed".into(), json!(true));
        self.node.update_process_async(&self.storage, set, &["state", "checkpoints"]).await?;
        Ok(())
    }

    async fn except(&mut self, exception: &str) -> Result<(), EngineError> {
        self.log("REPORT", exception).await;
        let mut set = Map::new();
        set.insert("exception".into(), json!(exception));
        set.insert("process_state".into(), json!("excepted"));
        set.insert("sealed".into(), json!(true));
        self.node.update_process_async(&self.storage, set, &["state", "checkpoints", "process_status"]).await?;
        Ok(())
    }
}

/// A panic in a plugin, as the process's exception.
fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            format!("panic: {text}")
        }
        Err(error) => format!("cancelled: {error}"),
    }
}

/// Every file below `folder` (relative path, content), less those under an excluded path.
fn sandbox_files(folder: &Path, exclude: &[String]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut stack = vec![folder.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let relative = path.strip_prefix(folder).unwrap_or(&path).to_string_lossy().into_owned();
            if exclude.iter().any(|x| relative == *x || relative.starts_with(&format!("{}/", x.trim_end_matches('/'))))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((relative, std::fs::read(&path)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A scratch folder of this machine, removed when dropped: in `sandbox/` beside the profile's
/// repository container, on the file system the job's files are kept on anyway.
struct Sandbox(PathBuf);

impl Sandbox {
    fn new(storage: &Storage) -> std::io::Result<Sandbox> {
        use std::os::unix::fs::DirBuilderExt;
        let container = storage.repository().path();
        let base = container.parent().map(|p| p.join("sandbox")).unwrap_or_else(std::env::temp_dir);
        let path = base.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&path)?;
        Ok(Sandbox(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
