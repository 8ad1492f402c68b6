//! `verdi process`: list processes, and show, report and trace one.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use aiida::orm::query::Op;
use aiida::orm::{Computer, Group, Link, LinkType, Log, Node};
use aiida::storage::Storage;

use crate::table::{Cell, Format, relative_time, tabulate};
use crate::{CliError, Context, format_time, load, write_line};

/// The states of a process that has not terminated: what `verdi process list` shows by default.
const ACTIVE_STATES: [&str; 3] = ["created", "waiting", "running"];

#[derive(Debug, Subcommand)]
pub(crate) enum ProcessCommand {
    /// Show a list of processes (by default only those still running: `-a` for all).
    List(Box<ListArgs>),
    /// Show details of processes.
    Show {
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
        /// Select the most recently created node.
        #[arg(short = 'M', long)]
        most_recent_node: bool,
    },
    /// Show the log report of processes.
    Report {
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
        /// Select the most recently created node.
        #[arg(short = 'M', long)]
        most_recent_node: bool,
        /// Set the number of spaces to indent each level by.
        #[arg(short = 'i', long, default_value_t = 2)]
        indent_size: usize,
        /// Filter the results by name of the log level.
        #[arg(short = 'l', long, value_enum, default_value = "REPORT")]
        levelname: LogLevel,
        /// Limit the number of levels to be printed.
        #[arg(short = 'm', long)]
        max_depth: Option<usize>,
    },
    /// Show the status of processes.
    Status {
        /// Include the call link label if set.
        #[arg(short = 'c', long)]
        call_link_label: bool,
        /// Select the most recently created node.
        #[arg(short = 'M', long)]
        most_recent_node: bool,
        /// Limit the number of levels to be printed.
        #[arg(short = 'm', long)]
        max_depth: Option<usize>,
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
    },
    /// Pause running processes.
    Pause {
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
        /// Time in seconds to wait for a response before timing out.
        #[arg(short = 't', long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Play (unpause) paused processes.
    Play {
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
    },
    /// Kill running processes.
    Kill {
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
        /// Time in seconds to wait for a response before timing out.
        #[arg(short = 't', long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Watch the state transitions of processes, until they have ended.
    Watch {
        /// Processes: pk, UUID or label.
        processes: Vec<String>,
        /// Select the most recently created node.
        #[arg(short = 'M', long)]
        most_recent_node: bool,
    },
}

/// aiida's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
#[value(rename_all = "UPPER")]
pub(crate) enum LogLevel {
    /// 0.
    Notset,
    /// 10.
    Debug,
    /// 20.
    Info,
    /// 23: what processes report.
    Report,
    /// 30.
    Warning,
    /// 40.
    Error,
    /// 50.
    Critical,
}

impl LogLevel {
    fn number(name: &str) -> u32 {
        match name {
            "DEBUG" => 10,
            "INFO" => 20,
            "REPORT" => 23,
            "WARNING" => 30,
            "ERROR" => 40,
            "CRITICAL" => 50,
            _ => 0,
        }
    }

    fn value(self) -> u32 {
        match self {
            LogLevel::Notset => 0,
            LogLevel::Debug => 10,
            LogLevel::Info => 20,
            LogLevel::Report => 23,
            LogLevel::Warning => 30,
            LogLevel::Error => 40,
            LogLevel::Critical => 50,
        }
    }
}

/// The process states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProcessState {
    /// Created.
    Created,
    /// Running.
    Running,
    /// Waiting.
    Waiting,
    /// Finished.
    Finished,
    /// Excepted.
    Excepted,
    /// Killed.
    Killed,
}

impl ProcessState {
    fn as_str(self) -> &'static str {
        match self {
            ProcessState::Created => "created",
            ProcessState::Running => "running",
            ProcessState::Waiting => "waiting",
            ProcessState::Finished => "finished",
            ProcessState::Excepted => "excepted",
            ProcessState::Killed => "killed",
        }
    }
}

/// What `verdi process list` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum Projection {
    /// The pk.
    Pk,
    /// The UUID.
    Uuid,
    /// When it was created, relative to now.
    Ctime,
    /// When it was last changed, relative to now.
    Mtime,
    /// Symbol, state and exit status.
    State,
    /// The process state.
    ProcessState,
    /// The process status.
    ProcessStatus,
    /// The exit status.
    ExitStatus,
    /// The exit message.
    ExitMessage,
    /// Whether it is sealed.
    Sealed,
    /// The process label.
    ProcessLabel,
    /// The node label.
    Label,
    /// The description.
    Description,
    /// The node type.
    NodeType,
    /// Whether it is paused.
    Paused,
    /// The process type.
    ProcessType,
    /// A calculation job's state.
    JobState,
    /// A calculation job's scheduler state.
    SchedulerState,
    /// The exception.
    Exception,
    /// Whether it was taken from the cache.
    Cached,
    /// The UUID of the node it was taken from.
    CachedFrom,
}

impl Projection {
    /// aiida's header (`CalculationProjectionMapper`).
    fn header(self) -> &'static str {
        match self {
            Projection::Pk => "PK",
            Projection::Uuid => "UUID",
            Projection::Ctime => "Created",
            Projection::Mtime => "Modified",
            Projection::State => "Process State",
            Projection::ProcessState => "Process state",
            Projection::ProcessStatus => "Process status",
            Projection::ExitStatus => "Exit status",
            Projection::ExitMessage => "Exit message",
            Projection::Sealed => "Sealed",
            Projection::ProcessLabel => "Process label",
            Projection::Label => "Label",
            Projection::Description => "Description",
            Projection::NodeType => "Node type",
            Projection::Paused => "Paused",
            Projection::ProcessType => "Process type",
            Projection::JobState => "Job state",
            Projection::SchedulerState => "Scheduler state",
            Projection::Exception => "Exception",
            Projection::Cached => "\u{267b}",
            Projection::CachedFrom => "Cached from",
        }
    }

    fn cell(self, node: &Node) -> Cell {
        let attribute = |key: &str| node.attribute(key).map_or(Cell::None, Cell::from);
        match self {
            Projection::Pk => node.pk().into(),
            Projection::Uuid => node.uuid().to_string().into(),
            Projection::Ctime => relative_time(node.ctime()).into(),
            Projection::Mtime => relative_time(node.mtime()).into(),
            Projection::State => format_state(node).into(),
            Projection::ProcessState => capitalize(node.attribute("process_state").and_then(Value::as_str)).into(),
            Projection::ProcessStatus => attribute("process_status"),
            Projection::ExitStatus => attribute("exit_status"),
            Projection::ExitMessage => attribute("exit_message"),
            Projection::Sealed => if node.is_sealed() { "True" } else { "False" }.into(),
            Projection::ProcessLabel => attribute("process_label"),
            Projection::Label => node.label().into(),
            Projection::Description => node.description().into(),
            Projection::NodeType => node.node_type().into(),
            Projection::Paused => attribute("paused"),
            Projection::ProcessType => node.process_type().into(),
            Projection::JobState => attribute("state"),
            Projection::SchedulerState => attribute("scheduler_state"),
            Projection::Exception => attribute("exception"),
            Projection::Cached => if cached_from(node).is_some() { "\u{2714}" } else { "" }.into(),
            Projection::CachedFrom => cached_from(node).map(str::to_owned).into(),
        }
    }
}

fn cached_from(node: &Node) -> Option<&str> {
    node.extras().get("_aiida_cached_from").and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Python's `str.capitalize()` of a process state, `None` without one.
fn capitalize(state: Option<&str>) -> String {
    let Some(state) = state else { return "None".to_owned() };
    let mut chars = state.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
        None => "None".to_owned(),
    }
}

/// aiida's `format_state`: a symbol, the state, and the exit status of a finished process, e.g.
/// `⏹ Finished [0]`, `⏵ Running`, `⏸ Waiting` (paused), `⨯ Excepted`, `☠ Killed`.
pub(crate) fn format_state(node: &Node) -> String {
    let state = node.attribute("process_state").and_then(Value::as_str);
    let paused = node.attribute("paused") == Some(&Value::Bool(true));
    let symbol = match state {
        Some("excepted") => '\u{2a2f}',
        Some("killed") => '\u{2620}',
        Some("created" | "finished") => '\u{23f9}',
        Some("running" | "waiting") if paused => '\u{23f8}',
        Some("running" | "waiting") => '\u{23f5}',
        _ => '\u{b7}',
    };
    let text = capitalize(state);
    match node.attribute("exit_status") {
        Some(status) if state == Some("finished") && !status.is_null() => {
            format!("{symbol} {text} [{}]", crate::table::python_repr(status))
        }
        _ => format!("{symbol} {text}"),
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Select the list of entity attributes to project.
    #[arg(
        short = 'P',
        long,
        value_enum,
        num_args = 1..,
        default_values = ["pk", "ctime", "process_label", "cached", "state", "process_status"]
    )]
    project: Vec<Projection>,
    /// Order the entries by this attribute.
    #[arg(short = 'O', long, value_parser = ["id", "ctime"], default_value = "ctime")]
    order_by: String,
    /// List the entries in ascending or descending order.
    #[arg(short = 'D', long = "order-direction", value_parser = ["asc", "desc"], default_value = "asc")]
    order_dir: String,
    /// Only include entries that are a member of this group.
    #[arg(short = 'G', long)]
    group: Option<String>,
    /// Show all entries, regardless of their process state.
    #[arg(short = 'a', long = "all")]
    all_entries: bool,
    /// Only include entries with this process state.
    #[arg(short = 'S', long, value_enum, num_args = 1..)]
    process_state: Vec<ProcessState>,
    /// Only include entries whose process label matches this filter (`%` and `_` are wildcards).
    #[arg(short = 'L', long)]
    process_label: Option<String>,
    /// Only include entries that are paused.
    #[arg(long)]
    paused: bool,
    /// Only include entries with this exit status.
    #[arg(short = 'E', long)]
    exit_status: Option<i64>,
    /// Only include entries that have failed.
    #[arg(short = 'X', long)]
    failed: bool,
    /// Only include entries created in the last PAST_DAYS number of days.
    #[arg(short = 'p', long, value_name = "PAST_DAYS")]
    past_days: Option<i64>,
    /// Limit the number of entries to display.
    #[arg(short = 'l', long)]
    limit: Option<i64>,
    /// Display only raw query results, without any headers or footers.
    #[arg(short = 'r', long)]
    raw: bool,
}

/// Runs `verdi process ...`.
pub(crate) fn run(command: ProcessCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ProcessCommand::Pause { processes, timeout } => control(context, &processes, "pause", out, |storage, pk| {
            aiida_daemon::pause(storage, pk, aiida_daemon::PAUSED_BY_VERDI, seconds(timeout))
        }),
        ProcessCommand::Play { processes } => control(context, &processes, "play", out, aiida_daemon::play),
        ProcessCommand::Kill { processes, timeout } => control(context, &processes, "kill", out, |storage, pk| {
            aiida_daemon::kill(storage, pk, aiida_daemon::KILLED_BY_VERDI, seconds(timeout))
        }),
        ProcessCommand::Watch { processes, most_recent_node } => watch(context, &processes, most_recent_node, out),
        ProcessCommand::List(args) => list(&context.storage()?, context, *args, out),
        ProcessCommand::Show { processes, most_recent_node } => {
            let storage = context.storage()?;
            for process in selected(&storage, &processes, most_recent_node)? {
                write_line(out, node_info(&storage, &process)?);
                // A process of a plugin this verdi does not link: which plugin it is.
                if let Some(process_type) = process.process_type()
                    && let Some((group, name)) = process_type.split_once(':')
                    && aiida::plugins::get(group, name).is_err()
                    && let Some(hint) = crate::plugin::provider_hint(context, process_type)
                {
                    write_line(out, format!("Warning: entry point `{process_type}`: {hint}"));
                }
            }
            Ok(())
        }
        ProcessCommand::Report { processes, most_recent_node, indent_size, levelname, max_depth } => {
            let storage = context.storage()?;
            for process in selected(&storage, &processes, most_recent_node)? {
                let report = match process.node_type() {
                    t if t.starts_with("process.calculation.calcjob.") => calcjob_report(&storage, &process)?,
                    t if t.starts_with("process.workflow.workchain.") => {
                        workchain_report(&storage, &process, levelname, indent_size, max_depth)?
                    }
                    t if t.starts_with("process.calculation.calcfunction.")
                        || t.starts_with("process.workflow.workfunction.") =>
                    {
                        function_report(&storage, &process)?
                    }
                    t => format!("Nothing to show for node type {}", load::class_name(t)),
                };
                write_line(out, report);
            }
            Ok(())
        }
        ProcessCommand::Status { call_link_label, most_recent_node, max_depth, processes } => {
            let storage = context.storage()?;
            for process in selected(&storage, &processes, most_recent_node)? {
                write_line(out, call_graph(&storage, &process, max_depth, call_link_label)?);
            }
            Ok(())
        }
    }
}

/// The processes named on the command line, or the most recent one with `-M`.
/// `verdi process pause|play|kill`: `request` for each process that has not ended, with aiida's
/// texts.
fn control(
    context: &Context,
    processes: &[String],
    verb: &str,
    out: &mut dyn Write,
    request: impl Fn(&Storage, i32) -> Result<Node, aiida_daemon::AwaitError>,
) -> Result<(), CliError> {
    let storage = context.storage()?;
    for process in selected(&storage, processes, false)? {
        let pk = process.pk().unwrap_or_default();
        if process.is_sealed() {
            write_line(out, format!("Error: Process<{pk}> is already terminated."));
            continue;
        }
        match request(&storage, pk) {
            Ok(_) => write_line(out, format!("Success: Request to {verb} Process<{pk}> processed.")),
            Err(aiida_daemon::AwaitError::Timeout { seconds, .. }) => {
                write_line(out, format!("Error: Call to {verb} Process<{pk}> timed out after {seconds}s."))
            }
            Err(e) => write_line(out, format!("Error: Problem with the request to {verb} Process<{pk}>: {e}")),
        }
    }
    Ok(())
}

/// `verdi process watch`: each state change of the processes as aiida prints the broadcasts it
/// watches, until every one has ended (aiida's runs until interrupted).
fn watch(context: &Context, processes: &[String], most_recent_node: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let storage = context.storage()?;
    let (ended, followed): (Vec<Node>, Vec<Node>) =
        selected(&storage, processes, most_recent_node)?.into_iter().partition(Node::is_sealed);
    let critical = |e: aiida_daemon::AwaitError| CliError::Critical(aiida::report::Chain(&e).to_string());
    let followed: Vec<i32> = followed.iter().filter_map(Node::pk).collect();
    // Listening before saying so: a change from now on is shown.
    let changes = aiida_daemon::watch(&storage, &followed).map_err(critical)?;
    write_line(out, "Report: watching for broadcasted messages, press CTRL+C to stop...".to_owned());
    for process in ended {
        write_line(out, format!("Error: Process<{}> is already terminated", process.pk().unwrap_or_default()));
    }
    let _ = out.flush();
    for change in changes {
        let change = change.map_err(critical)?;
        write_line(
            out,
            format!("Process<{}> [state_changed.{}.{}|--]: No message specified", change.pk, change.from, change.to),
        );
        let _ = out.flush();
    }
    Ok(())
}

fn seconds(timeout: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(timeout.max(0.0))
}

fn selected(storage: &Storage, processes: &[String], most_recent_node: bool) -> Result<Vec<Node>, CliError> {
    match (processes.is_empty(), most_recent_node) {
        (true, false) => Err(CliError::Usage(
            "Error: Please specify one or multiple processes by their identifier (PK, UUID or label) or use an option."
                .to_owned(),
        )),
        (false, true) => Err(CliError::Usage(
            "Error: cannot specify individual processes and the `-M/--most-recent-node` flag at the same time."
                .to_owned(),
        )),
        (true, true) => Ok(load::processes().order_by("ctime", true).first(storage)?.into_iter().collect()),
        (false, false) => processes
            .iter()
            .map(|p| load::node(storage, load::processes(), p, "ProcessNode", "[PROCESSES]..."))
            .collect(),
    }
}

fn list(storage: &Storage, context: &Context, args: ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut query = load::processes();
    let states: Vec<&str> = if args.process_state.is_empty() {
        ACTIVE_STATES.to_vec()
    } else {
        args.process_state.iter().map(|s| s.as_str()).collect()
    };
    if args.failed || args.exit_status.is_some() {
        query = query.attribute("process_state", Op::Eq, "finished");
    } else if !args.all_entries {
        query = query.attribute("process_state", Op::In, Value::from(states));
    }
    if let Some(label) = &args.process_label {
        let op = if label.contains(['%', '_']) { Op::Like } else { Op::Eq };
        query = query.attribute("process_label", op, label.as_str());
    }
    if args.paused {
        query = query.attribute("paused", Op::Eq, true);
    }
    if let Some(status) = args.exit_status {
        query = query.attribute("exit_status", Op::Eq, status);
    } else if args.failed {
        query = query.attribute("exit_status", Op::Gt, 0);
    }
    if let Some(days) = args.past_days {
        let since = chrono::Utc::now() - chrono::Duration::days(days);
        query = query.column("ctime", Op::Gt, since.to_rfc3339());
    }
    if let Some(group) = &args.group {
        let group = Group::load_label(storage, group)?;
        query = query.column("pk", Op::In, Value::from(group.node_pks(storage)?));
    }
    query = query.order_by(if args.order_by == "id" { "pk" } else { "ctime" }, args.order_dir == "desc");
    if let Some(limit) = args.limit {
        query = query.limit(limit);
    }
    let nodes = query.all(storage)?;
    let rows: Vec<Vec<Cell>> = nodes.iter().map(|n| args.project.iter().map(|p| p.cell(n)).collect()).collect();
    if args.raw {
        write_line(out, tabulate(&rows, &[], Format::Plain, false));
        return Ok(());
    }
    let headers: Vec<&str> = args.project.iter().map(|p| p.header()).collect();
    write_line(out, tabulate(&rows, &headers, Format::Simple, false));
    write_line(out, format!("\nTotal results: {}\n", rows.len()));
    if args.project.contains(&Projection::Cached) {
        write_line(
            out,
            "Report: \u{267b} Processes marked with check-mark were not run but taken from the cache.".into(),
        );
        write_line(out, "Report: Add the option `-P pk cached_from` to the command to display cache source.".into());
    }
    write_line(out, last_state_change(storage)?);
    crate::daemon::load_report(storage, context, out)
}

/// `Last time an entry changed state: 3s ago (at 02:02:15 on 2026-12-06)`, from the settings the
/// engine writes on every state change.
fn last_state_change(storage: &Storage) -> Result<String, CliError> {
    let mut latest: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    for kind in ["calculation", "work"] {
        if let Some(Value::String(time)) = storage.setting(&format!("process|state_change|{kind}"))?
            && let Ok(time) = chrono::DateTime::parse_from_rfc3339(&time)
            && latest.is_none_or(|l| time > l)
        {
            latest = Some(time);
        }
    }
    Ok(match latest {
        None => "Report: Last time an entry changed state: never".to_owned(),
        Some(time) => format!(
            "Report: Last time an entry changed state: {} ({})",
            relative_time(time.to_utc()),
            time.with_timezone(&chrono::Local).format("at %H:%M:%S on %Y-%m-%d")
        ),
    })
}

/// aiida's `get_node_info`: the summary, the inputs and outputs, the caller and the called
/// processes, and how many log messages there are.
pub(crate) fn node_info(storage: &Storage, node: &Node) -> Result<String, CliError> {
    let mut rows: Vec<Vec<Cell>> =
        vec![vec!["type".into(), node.attribute("process_label").map_or(Cell::None, Cell::from)]];
    let state = node.attribute("process_state").and_then(Value::as_str);
    if let Some(state) =
        state.filter(|s| ["created", "running", "waiting", "finished", "excepted", "killed"].contains(s))
    {
        let text = capitalize(Some(state));
        let exit_status = node.attribute("exit_status").map(crate::table::python_repr).unwrap_or("None".into());
        let message = node.attribute("exit_message").and_then(Value::as_str).filter(|m| !m.is_empty());
        let exception = node.attribute("exception").and_then(Value::as_str).unwrap_or("None");
        let value = match (state, message) {
            ("finished", Some(message)) => format!("{text} [{exit_status}] {message}"),
            ("finished", None) => format!("{text} [{exit_status}]"),
            ("excepted", _) => format!("{text} <{exception}>"),
            _ => text,
        };
        rows.push(vec!["state".into(), value.into()]);
    }
    rows.extend([
        vec!["pk".into(), node.pk().unwrap_or_default().to_string().into()],
        vec!["uuid".into(), node.uuid().to_string().into()],
        vec!["label".into(), node.label().into()],
        vec!["description".into(), node.description().into()],
        vec!["ctime".into(), format_time(node.ctime()).into()],
        vec!["mtime".into(), format_time(node.mtime()).into()],
    ]);
    if let Some(pk) = node.computer_pk() {
        rows.push(vec!["computer".into(), format!("[{pk}] {}", Computer::load(storage, pk)?.label()).into()]);
    }
    let mut result = tabulate(&rows, &["Property", "Value"], Format::Simple, false);

    let incoming = node.incoming(storage)?;
    let outgoing = node.outgoing(storage)?;
    let of_type = |links: &[Link], types: &[LinkType]| -> Vec<Link> {
        links.iter().filter(|l| types.contains(&l.link_type)).cloned().collect()
    };
    let inputs = of_type(&incoming, &[LinkType::InputCalc, LinkType::InputWork]);
    let outputs = of_type(&outgoing, &[LinkType::Create, LinkType::Return]);
    let mut callers = of_type(&incoming, &[LinkType::CallCalc, LinkType::CallWork]);
    let mut called = of_type(&outgoing, &[LinkType::CallCalc, LinkType::CallWork]);
    if !inputs.is_empty() {
        result.push_str(&format!("\n\n{}", nested_links(&inputs, ["Inputs", "PK", "Type"])));
    }
    if !outputs.is_empty() {
        result.push_str(&format!("\n\n{}", nested_links(&outputs, ["Outputs", "PK", "Type"])));
    }
    for (links, header) in [(&mut callers, "Caller"), (&mut called, "Called")] {
        if links.is_empty() {
            continue;
        }
        links.sort_by_key(|l| l.node.ctime());
        let rows: Vec<Vec<Cell>> = links
            .iter()
            .map(|l| {
                let label = l.node.attribute("process_label").and_then(Value::as_str).unwrap_or_default();
                vec![l.label.as_str().into(), l.node.pk().into(), label.into()]
            })
            .collect();
        result.push_str(&format!("\n\n{}", tabulate(&rows, &[header, "PK", "Type"], Format::Simple, false)));
    }
    let logs = Log::of(storage, node)?;
    if !logs.is_empty() {
        let rows = vec![
            vec![Cell::from(format!("There are {} log messages for this calculation", logs.len()))],
            vec![Cell::from(format!("Run 'verdi process report {}' to see them", node.pk().unwrap_or_default()))],
        ];
        result.push_str(&format!("\n\n{}", tabulate(&rows, &["Log messages"], Format::Simple, false)));
    }
    Ok(result)
}

/// aiida's `format_nested_links`: link labels with `__` are namespaces, shown nested.
fn nested_links(links: &[Link], headers: [&str; 3]) -> String {
    #[derive(Default)]
    struct Namespace<'a> {
        entries: Vec<(String, Entry<'a>)>,
    }
    enum Entry<'a> {
        Node(&'a Node),
        Namespace(Namespace<'a>),
    }
    let mut root = Namespace::default();
    for link in links {
        let parts: Vec<&str> = link.label.split("__").collect();
        let (leaf, spaces) = parts.split_last().expect("split yields one part at least");
        let mut namespace = &mut root;
        for space in spaces {
            let position = namespace.entries.iter().position(|(k, e)| k == space && matches!(e, Entry::Namespace(_)));
            let index = position.unwrap_or_else(|| {
                namespace.entries.push(((*space).to_owned(), Entry::Namespace(Namespace::default())));
                namespace.entries.len() - 1
            });
            let Entry::Namespace(inner) = &mut namespace.entries[index].1 else { unreachable!("a namespace") };
            namespace = inner;
        }
        namespace.entries.push(((*leaf).to_owned(), Entry::Node(&link.node)));
    }
    // The top level: namespaces first, then by label.
    root.entries.sort_by(|(a, x), (b, y)| {
        (matches!(x, Entry::Node(_)), a.as_str()).cmp(&(matches!(y, Entry::Node(_)), b.as_str()))
    });
    fn rows(namespace: &Namespace<'_>, depth: usize, out: &mut Vec<Vec<Cell>>) {
        for (label, entry) in &namespace.entries {
            let label = format!("{}{label}", " ".repeat(depth * 4));
            match entry {
                Entry::Node(node) => {
                    out.push(vec![label.into(), node.pk().into(), load::class_name(node.node_type()).into()])
                }
                Entry::Namespace(inner) => {
                    out.push(vec![label.into(), "".into(), "".into()]);
                    rows(inner, depth + 1, out);
                }
            }
        }
    }
    let mut table = Vec::new();
    rows(&root, 0, &mut table);
    tabulate(&table, &headers, Format::Simple, true)
}

/// The output of `process` labelled `label`.
pub(crate) fn output(storage: &Storage, process: &Node, label: &str) -> Result<Option<Node>, CliError> {
    Ok(process
        .outgoing(storage)?
        .into_iter()
        .find(|l| l.label == label && matches!(l.link_type, LinkType::Create | LinkType::Return))
        .map(|l| l.node))
}

/// aiida's `get_calcjob_report`: the job's state, the scheduler's output and errors, the log.
fn calcjob_report(storage: &Storage, calcjob: &Node) -> Result<String, CliError> {
    let mut report = Vec::new();
    let state = match calcjob.attribute("state").and_then(Value::as_str) {
        Some(state) => format!("CalcJobState.{}", state.to_uppercase()),
        None => "None".to_owned(),
    };
    let state = if state == "CalcJobState.WITHSCHEDULER" {
        let scheduler = match calcjob.attribute("scheduler_state").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => format!("JobState.{}", s.replace(' ', "_").to_uppercase()),
            _ => "(unknown)".to_owned(),
        };
        format!("{state}, scheduler state: {scheduler}")
    } else {
        state
    };
    let label = if calcjob.label().is_empty() { String::new() } else { format!(" [{}]", calcjob.label()) };
    report.push(format!("*** {}{label}: {state}", calcjob.pk().unwrap_or_default()));
    let retrieved = output(storage, calcjob, "retrieved")?;
    for (option, title, empty) in [
        ("scheduler_stdout", "Scheduler output", "empty scheduler output file"),
        ("scheduler_stderr", "Scheduler errors", "empty scheduler errors file"),
    ] {
        let content = match (calcjob.attribute(option).and_then(Value::as_str), &retrieved) {
            (Some(name), Some(retrieved)) => retrieved.file(storage, name).ok(),
            _ => None,
        };
        report.push(match content {
            None => format!("*** {title}: N/A"),
            Some(content) if content.is_empty() => format!("*** ({empty})"),
            Some(content) => format!("*** {title}:\n{}", String::from_utf8_lossy(&content)),
        });
    }
    let logs = Log::of(storage, calcjob)?;
    report.push(if logs.is_empty() {
        "*** 0 LOG MESSAGES".to_owned()
    } else {
        format!("*** {} LOG MESSAGES:", logs.len())
    });
    for log in logs {
        report.push(format!("+-> {} at {}", log.levelname, format_time(log.time)));
        for line in log.message.lines() {
            report.push(format!(" | {line}"));
        }
    }
    Ok(report.join("\n"))
}

fn local(time: chrono::DateTime<chrono::Utc>) -> String {
    time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// aiida's `get_process_function_report`.
fn function_report(storage: &Storage, node: &Node) -> Result<String, CliError> {
    let logs = Log::of(storage, node)?;
    Ok(logs.iter().map(|l| format!("{} [{}]: {}", local(l.time), l.pk, l.message)).collect::<Vec<_>>().join("\n"))
}

/// aiida's `get_workchain_report`: the log of the work chain and of the work chains it called,
/// indented by depth, at `levelname` and above.
fn workchain_report(
    storage: &Storage,
    node: &Node,
    levelname: LogLevel,
    indent_size: usize,
    max_depth: Option<usize>,
) -> Result<String, CliError> {
    let mut tree = vec![(node.clone(), 0usize)];
    let mut i = 0;
    while i < tree.len() {
        let (current, depth) = tree[i].clone();
        let children: Vec<(Node, usize)> = current
            .outgoing(storage)?
            .into_iter()
            .filter(|l| l.node.node_type().starts_with("process.workflow.workchain."))
            .map(|l| (l.node, depth + 1))
            .collect();
        tree.splice(i + 1..i + 1, children);
        i += 1;
    }
    let mut entries = Vec::new();
    for (node, depth) in tree {
        if max_depth.is_some_and(|max| max > 0 && depth >= max) {
            continue;
        }
        for log in Log::of(storage, &node)? {
            if LogLevel::number(&log.levelname) >= levelname.value() {
                entries.push((log, depth));
            }
        }
    }
    if entries.is_empty() {
        return Ok("No log messages recorded for this entry".to_owned());
    }
    entries.sort_by_key(|(log, _)| log.time);
    let width_id = entries.iter().map(|(l, _)| l.pk.to_string().len()).max().unwrap_or(1);
    let width_level = entries.iter().map(|(l, _)| l.levelname.len()).max().unwrap_or(1);
    Ok(entries
        .iter()
        .map(|(log, depth)| {
            format!(
                "{} [{:<width_id$} | {:>width_level$}]:{} {}",
                local(log.time),
                log.pk,
                log.levelname,
                " ".repeat(depth * indent_size),
                log.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// aiida's `calc_info`: `ArithmeticAddCalculation<15> Finished [410]`.
fn calc_info(node: &Node, call_link: Option<&str>) -> String {
    let label = node.attribute("process_label").and_then(Value::as_str).unwrap_or("None");
    let state = capitalize(node.attribute("process_state").and_then(Value::as_str));
    let pk = node.pk().unwrap_or_default();
    let mut text = match call_link {
        Some(link) if link != "CALL" => format!("{label}<{pk} | {link}> {state}"),
        _ => format!("{label}<{pk}> {state}"),
    };
    if let Some(status) = node.attribute("exit_status").filter(|s| !s.is_null()) {
        text.push_str(&format!(" [{}]", crate::table::python_repr(status)));
    }
    if node.node_type().starts_with("process.workflow.workchain.")
        && let Some(info) = node.attribute("stepper_state_info").and_then(Value::as_str).filter(|s| !s.is_empty())
    {
        text.push_str(&format!(" [{info}]"));
    }
    text
}

/// aiida's `format_call_graph`: the process and those it called, as a tree.
fn call_graph(
    storage: &Storage,
    node: &Node,
    max_depth: Option<usize>,
    call_link_label: bool,
) -> Result<String, CliError> {
    if max_depth == Some(0) {
        return Ok(String::new());
    }
    let link = if call_link_label {
        node.incoming(storage)?
            .into_iter()
            .find(|l| matches!(l.link_type, LinkType::CallCalc | LinkType::CallWork))
            .map(|l| l.label)
    } else {
        None
    };
    let mut lines = vec![calc_info(node, link.as_deref())];
    descend(storage, node, max_depth, call_link_label, "    ", &mut lines)?;
    Ok(lines.join("\n"))
}

fn descend(
    storage: &Storage,
    node: &Node,
    max_depth: Option<usize>,
    call_link_label: bool,
    prefix: &str,
    lines: &mut Vec<String>,
) -> Result<(), CliError> {
    if max_depth == Some(1) {
        return Ok(());
    }
    let mut called: Vec<Link> = node
        .outgoing(storage)?
        .into_iter()
        .filter(|l| matches!(l.link_type, LinkType::CallCalc | LinkType::CallWork))
        .collect();
    called.sort_by_key(|l| l.node.ctime());
    let count = called.len();
    for (i, link) in called.iter().enumerate() {
        let last = i + 1 == count;
        let branch = if last { "\u{2514}\u{2500}\u{2500} " } else { "\u{251c}\u{2500}\u{2500} " };
        let info = calc_info(&link.node, call_link_label.then_some(link.label.as_str()));
        lines.push(format!("{prefix}{branch}{info}"));
        let inner = format!("{prefix}{}", if last { "    " } else { "\u{2502}   " });
        descend(storage, &link.node, max_depth.map(|d| d - 1), call_link_label, &inner, lines)?;
    }
    Ok(())
}
