//! `verdi code`: create, list and show codes.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use aiida::orm::data::{DataTypes, installed_code};
use aiida::orm::query::Op;
use aiida::orm::{Computer, Node, User};
use aiida::plugins;
use aiida::storage::Storage;

use crate::table::{Cell, Format, tabulate};
use crate::{CliError, Context, load, write_line};

/// The extra aiida uses to hide a code from `verdi code list`.
const HIDDEN_KEY: &str = "hidden";

#[derive(Debug, Subcommand)]
pub(crate) enum CodeCommand {
    /// Create a new code.
    #[command(subcommand)]
    Create(CreateCommand),
    /// List the available codes.
    List(ListArgs),
    /// Display detailed information for a code.
    Show {
        /// The code: its label, `label@computer`, pk or UUID.
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CreateCommand {
    /// Data plugin representing an executable code on a remote computer.
    #[command(name = "core.code.installed")]
    Installed(Box<InstalledArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct InstalledArgs {
    /// A unique label to identify the code by.
    #[arg(short = 'L', long)]
    label: String,
    /// Human-readable description, ideally including version and compilation environment.
    #[arg(short = 'D', long, default_value = "")]
    description: String,
    /// The label of the remote computer on which the executable resides.
    #[arg(short = 'Y', long)]
    computer: String,
    /// Filepath of the executable on the remote computer.
    #[arg(short = 'X', long)]
    filepath_executable: String,
    /// Entry point name of the default plugin (as listed in `verdi plugin list aiida.calculations`).
    #[arg(short = 'P', long)]
    default_calc_job_plugin: Option<String>,
    /// Escape the executable and arguments of the code in the submission script with double quotes.
    #[arg(long, overrides_with = "no_use_double_quotes")]
    use_double_quotes: bool,
    /// Escape them with single quotes (the default).
    #[arg(long)]
    no_use_double_quotes: bool,
    /// Run the executable as an MPI program (unset: the calculation job plugin or inputs decide).
    #[arg(long, overrides_with = "no_with_mpi")]
    with_mpi: bool,
    /// Do not run the executable as an MPI program.
    #[arg(long, overrides_with = "with_mpi")]
    no_with_mpi: bool,
    /// Wrap all command line parameters in double quotes to form a single argument (for Docker).
    #[arg(long, overrides_with = "no_wrap_cmdline_params")]
    wrap_cmdline_params: bool,
    /// Do not wrap them (the default).
    #[arg(long)]
    no_wrap_cmdline_params: bool,
    /// Bash commands that should be prepended to the run line in all submit scripts for this code.
    #[arg(long, default_value = "")]
    prepend_text: String,
    /// Bash commands that should be appended to the run line in all submit scripts for this code.
    #[arg(long, default_value = "")]
    append_text: String,
    /// Accepted for compatibility: this command never prompts.
    #[arg(short = 'n', long)]
    non_interactive: bool,
}

/// What `verdi code list` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum Projection {
    /// `label@computer`.
    FullLabel,
    /// The data plugin, e.g. `core.code.installed`.
    EntryPoint,
    /// The pk.
    Pk,
    /// The UUID.
    Uuid,
    /// The label.
    Label,
    /// The default calculation job plugin.
    DefaultCalcJobPlugin,
    /// The computer's label.
    Computer,
    /// The owner's email.
    User,
}

impl Projection {
    /// aiida's header: the name with spaces, capitalised.
    fn header(self) -> &'static str {
        match self {
            Projection::FullLabel => "Full label",
            Projection::EntryPoint => "Entry point",
            Projection::Pk => "Pk",
            Projection::Uuid => "Uuid",
            Projection::Label => "Label",
            Projection::DefaultCalcJobPlugin => "Default calc job plugin",
            Projection::Computer => "Computer",
            Projection::User => "User",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Filter codes by computer.
    #[arg(short = 'Y', long)]
    computer: Option<String>,
    /// Filter codes by their optional default calculation job plugin.
    #[arg(short = 'd', long)]
    default_calc_job_plugin: Option<String>,
    /// Include hidden codes.
    #[arg(short = 'a', long = "all")]
    all_entries: bool,
    /// Include codes from all users.
    #[arg(short = 'A', long)]
    all_users: bool,
    /// Select the list of entity attributes to project.
    #[arg(short = 'P', long, value_enum, num_args = 1.., default_values = ["full_label", "pk", "entry_point"])]
    project: Vec<Projection>,
    /// Display only raw query results, without any headers or footers.
    #[arg(short = 'r', long)]
    raw: bool,
}

/// Runs `verdi code ...`.
pub(crate) fn run(command: CodeCommand, context: &Context, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        CodeCommand::Create(CreateCommand::Installed(args)) => create_installed(&context.storage()?, *args, out),
        CodeCommand::List(args) => list(&context.storage()?, args, out),
        CodeCommand::Show { code } => show(&context.storage()?, &code, out),
    }
}

fn create_installed(storage: &Storage, args: InstalledArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let failed = |message: String| {
        CliError::Critical(format!(
            "Failed to create instance `<class 'aiida.orm.nodes.data.code.installed.InstalledCode'>`: {message}"
        ))
    };
    let computer = load::computer(storage, &args.computer, "-Y' / '--computer")?;
    if args.label.trim().is_empty() {
        return Err(failed("the label is empty".to_owned()));
    }
    if args.label.contains('@') {
        return Err(failed(format!(
            "the label `{}` contains `@`, which separates a code's label from its computer's",
            args.label
        )));
    }
    let taken = load::codes()
        .column("label", Op::Eq, args.label.as_str())
        .column("dbcomputer_id", Op::Eq, computer.pk().unwrap_or_default())
        .count(storage)?;
    if taken > 0 {
        return Err(failed(format!(
            "a code labelled `{}` exists already on computer `{}`: `{}@{}` would not name one code",
            args.label,
            computer.label(),
            args.label,
            computer.label()
        )));
    }
    if args.filepath_executable.trim().is_empty() {
        return Err(failed("the filepath of the executable is empty".to_owned()));
    }
    let mut code =
        installed_code(&computer, &args.filepath_executable, &args.label, args.default_calc_job_plugin.as_deref())?;
    code.set_description(&args.description)?;
    let with_mpi = match (args.with_mpi, args.no_with_mpi) {
        (true, _) => Value::Bool(true),
        (_, true) => Value::Bool(false),
        _ => Value::Null,
    };
    for (key, value) in [
        ("append_text", Value::from(args.append_text)),
        ("prepend_text", Value::from(args.prepend_text)),
        ("use_double_quotes", Value::Bool(args.use_double_quotes && !args.no_use_double_quotes)),
        ("with_mpi", with_mpi),
        ("wrap_cmdline_params", Value::Bool(args.wrap_cmdline_params && !args.no_wrap_cmdline_params)),
    ] {
        code.set_attribute(key, value)?;
    }
    code.set_extra(storage, HIDDEN_KEY, false)?;
    code.store(storage)?;
    if !args.filepath_executable.starts_with('/') {
        write_line(
            out,
            format!(
                "Warning: `{}` is not an absolute path: the engine runs only codes whose executable is one",
                args.filepath_executable
            ),
        );
    }
    write_line(out, format!("Success: Created InstalledCode<{}>", code.pk().unwrap_or_default()));
    Ok(())
}

/// The entry-point name of the data plugin of `node_type` (`core.code.installed`).
fn entry_point(node_type: &str) -> String {
    plugins::select("aiida.data", None)
        .iter()
        .find(|ep| plugins::typed::<DataTypes>(ep).is_ok_and(|t| t.node_type == node_type))
        .map_or_else(|| node_type.to_owned(), |ep| ep.name().to_owned())
}

fn list(storage: &Storage, args: ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut query = load::codes();
    if !args.all_entries {
        query = query.extra(HIDDEN_KEY, Op::Ne, true);
    }
    if !args.all_users {
        query = query.column("user_id", Op::Eq, User::default_user(storage)?.pk());
    }
    if let Some(computer) = &args.computer {
        let computer = load::computer(storage, computer, "-Y' / '--computer")?;
        query = query.column("dbcomputer_id", Op::Eq, computer.pk().unwrap_or_default());
    }
    if let Some(plugin) = &args.default_calc_job_plugin {
        let (_, name) = plugins::parse(plugin)?;
        query = query.attribute("input_plugin", Op::Eq, name);
    }
    let codes = query.order_by("pk", false).all(storage)?;
    if codes.is_empty() {
        write_line(out, "Report: No codes found matching the specified criteria.".to_owned());
        return Ok(());
    }
    let computers = Computer::list(storage)?;
    let users = User::list(storage)?;
    let computer_of = |code: &Node| {
        code.computer_pk().and_then(|pk| computers.iter().find(|c| c.pk() == Some(pk))).map(|c| c.label().to_owned())
    };
    let mut rows: Vec<Vec<Cell>> = codes
        .iter()
        .map(|code| {
            args.project
                .iter()
                .map(|projection| match projection {
                    Projection::FullLabel => match computer_of(code) {
                        Some(computer) => format!("{}@{computer}", code.label()).into(),
                        None => code.label().into(),
                    },
                    Projection::EntryPoint => entry_point(code.node_type()).into(),
                    Projection::Pk => code.pk().into(),
                    Projection::Uuid => code.uuid().to_string().into(),
                    Projection::Label => code.label().into(),
                    Projection::DefaultCalcJobPlugin => match code.attribute("input_plugin") {
                        Some(Value::String(plugin)) => plugin.clone().into(),
                        _ => "None".into(),
                    },
                    Projection::Computer => computer_of(code).unwrap_or_default().into(),
                    Projection::User => users
                        .iter()
                        .find(|u| Some(u.pk()) == code.user_pk())
                        .map_or_else(String::new, |u| u.email().to_owned())
                        .into(),
                })
                .collect()
        })
        .collect();
    // Sorted by full label, else by pk, as aiida sorts the table.
    let text = |cell: &Cell| match cell {
        Cell::Str(s) => s.clone(),
        _ => String::new(),
    };
    let pk = |cell: &Cell| match cell {
        Cell::Int(pk) => *pk,
        _ => 0,
    };
    if let Some(i) = args.project.iter().position(|p| *p == Projection::FullLabel) {
        rows.sort_by_key(|row| text(&row[i]));
    } else if let Some(i) = args.project.iter().position(|p| *p == Projection::Pk) {
        rows.sort_by_key(|row| pk(&row[i]));
    }
    if args.raw {
        write_line(out, tabulate(&rows, &[], Format::Plain, false));
        return Ok(());
    }
    let headers: Vec<&str> = args.project.iter().map(|p| p.header()).collect();
    write_line(out, tabulate(&rows, &headers, Format::Simple, false));
    write_line(out, "\nUse `verdi code show IDENTIFIER` to see details for a code".to_owned());
    Ok(())
}

fn show(storage: &Storage, code: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let code = load::code(storage, code, "CODE")?;
    let attribute = |key: &str| code.attribute(key).map_or(Cell::None, Cell::from);
    let mut rows: Vec<Vec<Cell>> = vec![
        vec!["PK".into(), code.pk().into()],
        vec!["UUID".into(), code.uuid().to_string().into()],
        vec!["Type".into(), entry_point(code.node_type()).into()],
        vec!["Label".into(), code.label().into()],
        vec!["Description".into(), code.description().into()],
    ];
    if let Some(pk) = code.computer_pk() {
        let computer = Computer::load(storage, pk)?;
        rows.push(vec!["Computer".into(), format!("{} ({}), pk: {pk}", computer.label(), computer.hostname()).into()]);
    }
    for (title, key) in [
        ("Default `CalcJob` plugin", "input_plugin"),
        ("Escape using double quotes", "use_double_quotes"),
        ("Run with MPI", "with_mpi"),
        ("Wrap command line parameters", "wrap_cmdline_params"),
        ("Prepend script", "prepend_text"),
        ("Append script", "append_text"),
        ("Filepath executable", "filepath_executable"),
    ] {
        rows.push(vec![title.into(), attribute(key)]);
    }
    write_line(out, tabulate(&rows, &[], Format::Simple, false));
    Ok(())
}
