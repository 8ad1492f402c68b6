//! `core.arithmetic.add`: aiida's test calculation, which adds two numbers with bash, and its
//! parser; the same inputs, files, exit codes and outputs as aiida-core's.

use std::path::Path;

use aiida::orm::data::{self, FLOAT, INT};
use serde_json::{Value, json};

use crate::calcjob::{
    CalcInfo, CalcJob, CalcJobInputs, CalcJobSpec, CodeInfo, OptionType, ParseContext, Parser, PluginFailure, Port,
};
use crate::exit_code::ExitCode;
use crate::groups::{Calculations, Parsers};

/// The output file could not be read.
pub const ERROR_READING_OUTPUT_FILE: ExitCode =
    ExitCode::new(310, "ERROR_READING_OUTPUT_FILE", "The output file could not be read.").invalidating_cache();
/// The output file holds no whole number.
pub const ERROR_INVALID_OUTPUT: ExitCode =
    ExitCode::new(320, "ERROR_INVALID_OUTPUT", "The output file contains invalid output.").invalidating_cache();
/// The sum is negative (`sum` is attached all the same).
pub const ERROR_NEGATIVE_NUMBER: ExitCode =
    ExitCode::new(410, "ERROR_NEGATIVE_NUMBER", "The sum of the operands is a negative number.");

/// aiida's `ArithmeticAddCalculation`: writes `echo $((x + y))` (after `sleep n` with the option
/// `sleep`) into `aiida.in`, runs the code with it on stdin and stdout to `aiida.out`.
#[derive(Debug, Default)]
pub struct ArithmeticAddCalculation;

/// aiida's `ArithmeticAddParser`: reads `aiida.out` into the output `sum`.
#[derive(Debug, Default)]
pub struct ArithmeticAddParser;

aiida::entry_point!(Calculations: "core.arithmetic.add", ArithmeticAddCalculation);
aiida::entry_point!(Parsers: "core.arithmetic.add", ArithmeticAddParser);

const NUMBERS: [&str; 2] = [INT.node_type, FLOAT.node_type];

/// A number as Python's `str()` writes it (aiida puts `str(x.value)` into the file).
fn python_str(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e16 { format!("{f:.1}") } else { f.to_string() }
        }
        other => other.to_string(),
    }
}

impl CalcJob for ArithmeticAddCalculation {
    fn process_label(&self) -> &'static str {
        "ArithmeticAddCalculation"
    }

    fn spec(&self) -> CalcJobSpec {
        let mut option_defaults = serde_json::Map::new();
        option_defaults.insert("parser_name".into(), json!("core.arithmetic.add"));
        option_defaults.insert("input_filename".into(), json!("aiida.in"));
        option_defaults.insert("output_filename".into(), json!("aiida.out"));
        option_defaults.insert("resources".into(), json!({"num_machines": 1, "num_mpiprocs_per_machine": 1}));
        CalcJobSpec {
            inputs: vec![
                Port::required("x", &NUMBERS, "The left operand."),
                Port::required("y", &NUMBERS, "The right operand."),
            ],
            outputs: vec![Port::required("sum", &NUMBERS, "The sum of the left and right operand.")],
            exit_codes: vec![ERROR_READING_OUTPUT_FILE, ERROR_INVALID_OUTPUT, ERROR_NEGATIVE_NUMBER],
            option_defaults,
            extra_options: vec![("sleep", OptionType::Int)],
        }
    }

    fn prepare_for_submission(&self, inputs: &CalcJobInputs, folder: &Path) -> Result<CalcInfo, PluginFailure> {
        let value = |name: &str| {
            inputs
                .get(name)
                .and_then(|n| n.attribute("value"))
                .map(python_str)
                .ok_or_else(|| PluginFailure::new(format!("input `{name}` has no value")))
        };
        let (x, y) = (value("x")?, value("y")?);
        let input_filename = inputs.option_str("input_filename").unwrap_or("aiida.in");
        let output_filename = inputs.option_str("output_filename").unwrap_or("aiida.out");
        let mut text = String::new();
        if let Some(sleep) = inputs.option("sleep") {
            text.push_str(&format!("sleep {sleep}\n"));
        }
        text.push_str(&format!("echo $(({x} + {y}))\n"));
        std::fs::write(folder.join(input_filename), text)
            .map_err(|e| PluginFailure::new(format!("cannot write {input_filename}: {e}")))?;
        Ok(CalcInfo {
            codes_info: vec![CodeInfo {
                stdin_name: Some(input_filename.to_owned()),
                stdout_name: Some(output_filename.to_owned()),
                code_uuid: inputs.code().uuid().to_string(),
                ..CodeInfo::default()
            }],
            retrieve_list: vec![output_filename.to_owned()],
            ..CalcInfo::default()
        })
    }
}

impl Parser for ArithmeticAddParser {
    fn parse(&self, context: &mut ParseContext) -> Result<Option<ExitCode>, PluginFailure> {
        let name = context.inputs().option_str("output_filename").unwrap_or("aiida.out").to_owned();
        let Some(content) = context.retrieved_file(&name) else {
            return Ok(Some(ERROR_READING_OUTPUT_FILE));
        };
        let Ok(sum) = String::from_utf8_lossy(content).trim().parse::<i64>() else {
            return Ok(Some(ERROR_INVALID_OUTPUT));
        };
        context.out("sum", data::int(sum));
        Ok((sum < 0).then_some(ERROR_NEGATIVE_NUMBER))
    }
}
