//! The submit script, assembled as aiida's `Scheduler.get_submit_script` does.

use serde_json::Value;

use super::{CodeRunMode, JobTemplate, JobTemplateCodeInfo, Scheduler};
use crate::transport::escape_for_bash;

/// The submit script for `template`: the shebang (`#!/bin/bash` when unset), the scheduler's
/// header, the environment variables, the prepend text, the run lines, the append text and the
/// scheduler's footer, each block followed by an empty line, joined by newlines (so the script
/// ends with one newline), byte for byte as aiida writes it.
pub fn submit_script(scheduler: &dyn Scheduler, template: &JobTemplate) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.push(template.shebang.clone().unwrap_or_else(|| "#!/bin/bash".to_owned()));
    lines.push(scheduler.script_header(template));
    lines.push(String::new());
    if !template.job_environment.is_empty() {
        lines.push(environment_variables(template));
        lines.push(String::new());
    }
    if let Some(text) = template.prepend_text.as_deref().filter(|t| !t.is_empty()) {
        lines.push(text.to_owned());
        lines.push(String::new());
    }
    lines.push(run_lines(&template.codes_info, template.codes_run_mode));
    lines.push(String::new());
    if let Some(text) = template.append_text.as_deref().filter(|t| !t.is_empty()) {
        lines.push(text.to_owned());
        lines.push(String::new());
    }
    let footer = scheduler.script_footer(template);
    if !footer.is_empty() {
        lines.push(footer);
        lines.push(String::new());
    }
    lines.join("\n")
}

/// `export KEY=<value quoted>` for each variable, between the BEGIN and END markers.
fn environment_variables(template: &JobTemplate) -> String {
    let mut lines = vec!["# ENVIRONMENT VARIABLES BEGIN ###".to_owned()];
    for (key, value) in &template.job_environment {
        let value = match value {
            // aiida's `escape_for_bash(None)` is empty, not quoted.
            Value::Null => String::new(),
            value => escape_for_bash(&python_str(value), template.environment_variables_double_quotes),
        };
        lines.push(format!("export {}={value}", key.trim()));
    }
    lines.push("# ENVIRONMENT VARIABLES END ###".to_owned());
    lines.join("\n")
}

/// A value as Python's `str` writes it (aiida expects strings; others are written as it would).
fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        other => other.to_string(),
    }
}

/// The line running each code (aiida's `_get_run_line`), serial ones separated by an empty line,
/// parallel ones each sent to the background, then `wait`.
fn run_lines(codes: &[JobTemplateCodeInfo], mode: CodeRunMode) -> String {
    let mut lines: Vec<String> = codes.iter().map(run_line).collect();
    match mode {
        CodeRunMode::Serial => lines.join("\n\n"),
        CodeRunMode::Parallel => {
            lines.push("wait\n".to_owned());
            lines.join(" &\n\n")
        }
    }
}

/// `<prepend params> <params> < stdin > stdout 2> stderr`, each parameter quoted (the prepend
/// parameters and file names with the computer's quotes, the parameters with the code's); absent
/// redirections leave their separating spaces, as in aiida.
fn run_line(code: &JobTemplateCodeInfo) -> String {
    let (computer_double_quotes, code_double_quotes) = code.use_double_quotes;
    let quote = |name: &str| escape_for_bash(name, computer_double_quotes);
    let given = |name: &Option<String>| name.as_deref().filter(|n| !n.is_empty()).map(quote);
    let prepend: Vec<String> = code.prepend_cmdline_params.iter().map(|p| quote(p)).collect();
    let mut params: Vec<String> = code.cmdline_params.iter().map(|p| escape_for_bash(p, code_double_quotes)).collect();
    params.push(given(&code.stdin_name).map(|n| format!("< {n}")).unwrap_or_default());
    params.push(given(&code.stdout_name).map(|n| format!("> {n}")).unwrap_or_default());
    params.push(if code.join_files {
        "2>&1".to_owned()
    } else {
        given(&code.stderr_name).map(|n| format!("2> {n}")).unwrap_or_default()
    });
    let mut params = params.join(" ");
    if code.wrap_cmdline_params {
        params = escape_for_bash(&params, true);
    }
    format!("{} {params}", prepend.join(" ")).trim().to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduler::DirectScheduler;

    fn code(params: &[&str]) -> JobTemplateCodeInfo {
        JobTemplateCodeInfo { cmdline_params: params.iter().map(|p| p.to_string()).collect(), ..Default::default() }
    }

    /// The arithmetic-add job: `/bin/bash < aiida.in > aiida.out`, scheduler files apart.
    pub(crate) fn arithmetic_template() -> JobTemplate {
        JobTemplate {
            sched_output_path: Some("_scheduler-stdout.txt".to_owned()),
            sched_error_path: Some("_scheduler-stderr.txt".to_owned()),
            import_sys_environment: true,
            codes_info: vec![JobTemplateCodeInfo {
                stdin_name: Some("aiida.in".to_owned()),
                stdout_name: Some("aiida.out".to_owned()),
                ..code(&["/bin/bash"])
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_arithmetic_script_is_aiidas() {
        let script = submit_script(&DirectScheduler, &arithmetic_template());
        assert_eq!(
            script,
            "#!/bin/bash\nexec > _scheduler-stdout.txt\nexec 2> _scheduler-stderr.txt\n\n\n\
             '/bin/bash' < 'aiida.in' > 'aiida.out'\n"
        );
        let template = JobTemplate { prepend_text: Some("sleep 5".to_owned()), ..arithmetic_template() };
        assert_eq!(
            submit_script(&DirectScheduler, &template),
            "#!/bin/bash\nexec > _scheduler-stdout.txt\nexec 2> _scheduler-stderr.txt\n\n\nsleep 5\n\n\
             '/bin/bash' < 'aiida.in' > 'aiida.out'\n",
            "the real script with the sleep option, as observed"
        );
    }

    #[test]
    fn the_parallel_example_is_aiidas() {
        let mut environment = serde_json::Map::new();
        environment.insert("A".to_owned(), json!("x y"));
        environment.insert(" B ".to_owned(), json!("it's"));
        let template = JobTemplate {
            sched_output_path: Some("_scheduler-stdout.txt".to_owned()),
            sched_error_path: Some("_scheduler-stderr.txt".to_owned()),
            sched_join_files: true,
            import_sys_environment: false,
            custom_scheduler_commands: Some("#CUSTOM line".to_owned()),
            job_resource: crate::scheduler::NodeNumberJobResource {
                num_machines: 1,
                num_mpiprocs_per_machine: 2,
                tot_num_mpiprocs: 2,
                num_cores_per_mpiproc: Some(3),
                num_cores_per_machine: None,
            },
            job_environment: environment,
            prepend_text: Some("module load foo".to_owned()),
            append_text: Some("echo done".to_owned()),
            codes_run_mode: CodeRunMode::Parallel,
            codes_info: vec![
                JobTemplateCodeInfo {
                    prepend_cmdline_params: vec!["mpirun".to_owned(), "-np".to_owned(), "2".to_owned()],
                    stdin_name: Some("in".to_owned()),
                    stdout_name: Some("out".to_owned()),
                    stderr_name: Some("err".to_owned()),
                    ..code(&["/bin/a.x", "-in", "my file"])
                },
                JobTemplateCodeInfo {
                    use_double_quotes: (true, true),
                    stdout_name: Some("out2".to_owned()),
                    join_files: true,
                    ..code(&["/bin/b.x"])
                },
            ],
            ..Default::default()
        };
        let expected = [
            "#!/bin/bash",
            "exec > _scheduler-stdout.txt",
            "env --ignore-environment \\",
            "#CUSTOM line",
            "export OMP_NUM_THREADS=3",
            "",
            "",
            "# ENVIRONMENT VARIABLES BEGIN ###",
            "export A='x y'",
            "export B='it'\"'\"'s'",
            "# ENVIRONMENT VARIABLES END ###",
            "",
            "module load foo",
            "",
            "'mpirun' '-np' '2' '/bin/a.x' '-in' 'my file' < 'in' > 'out' 2> 'err' &",
            "",
            "\"/bin/b.x\"  > \"out2\" 2>&1 &",
            "",
            "wait",
            "",
            "",
            "echo done",
            "",
        ];
        assert_eq!(submit_script(&DirectScheduler, &template), expected.join("\n"));
    }

    #[test]
    fn run_lines_quote_wrap_and_follow_the_run_mode() {
        let wrapped = JobTemplateCodeInfo {
            prepend_cmdline_params: vec!["srun".to_owned()],
            wrap_cmdline_params: true,
            stdout_name: Some("o".to_owned()),
            ..code(&["sh", "-c"])
        };
        assert_eq!(run_line(&wrapped), r#"'srun' "'sh' '-c'  > 'o' ""#);
        let bare = code(&["/bin/true"]);
        assert_eq!(run_line(&bare), "'/bin/true'", "empty redirections leave only trailing spaces, stripped");
        let errors = JobTemplateCodeInfo { stderr_name: Some("e".to_owned()), ..bare.clone() };
        assert_eq!(run_line(&errors), "'/bin/true'   2> 'e'");
        assert_eq!(run_lines(&[bare.clone(), bare.clone()], CodeRunMode::Serial), "'/bin/true'\n\n'/bin/true'");
        assert_eq!(run_lines(&[bare], CodeRunMode::Parallel), "'/bin/true' &\n\nwait\n");
    }

    #[test]
    fn the_shebang_and_environment_values_follow_aiida() {
        let mut environment = serde_json::Map::new();
        environment.insert("PATH".to_owned(), json!("$HOME/bin:\"$PATH\""));
        environment.insert("N".to_owned(), json!(4));
        environment.insert("EMPTY".to_owned(), Value::Null);
        let template = JobTemplate {
            shebang: Some(String::new()),
            job_environment: environment,
            environment_variables_double_quotes: true,
            ..arithmetic_template()
        };
        let script = submit_script(&DirectScheduler, &template);
        assert!(script.starts_with("\nexec > _scheduler-stdout.txt\n"), "an empty shebang is an empty line");
        assert!(script.contains("\nexport PATH=\"$HOME/bin:\"'\"'\"$PATH\"'\"'\"\"\n"), "{script}");
        assert!(script.contains("\nexport N=\"4\"\nexport EMPTY=\n"), "{script}");
        let template = JobTemplate { shebang: Some("#!/bin/zsh".to_owned()), ..arithmetic_template() };
        assert!(submit_script(&DirectScheduler, &template).starts_with("#!/bin/zsh\nexec > "));
    }
}
