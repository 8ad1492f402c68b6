//! Text as aiida-core's `verdi` writes it: tables as Python's `tabulate` 0.9 lays them out (the
//! `simple` and `plain` formats), relative times as `str_timedelta`, JSON as `json.dumps` and
//! numbers as Python's `str`.

use serde_json::Value;

/// A table cell, typed as Python's `tabulate` sees a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// `None`: printed empty, and it does not change the column's type.
    None,
    /// A bool (`True`/`False`).
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text (which `tabulate` still reads as a number, or a bool, when it is one).
    Str(String),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Str(s.to_owned())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Str(s)
    }
}

impl From<i32> for Cell {
    fn from(n: i32) -> Cell {
        Cell::Int(n.into())
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Cell {
        Cell::Int(n)
    }
}

impl From<bool> for Cell {
    fn from(b: bool) -> Cell {
        Cell::Bool(b)
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(value: Option<T>) -> Cell {
        value.map_or(Cell::None, Into::into)
    }
}

impl From<&Value> for Cell {
    /// A JSON value as the Python object aiida would hold (objects and arrays as Python prints them).
    fn from(value: &Value) -> Cell {
        match value {
            Value::Null => Cell::None,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Cell::Int(i),
                None => Cell::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => Cell::Str(s.clone()),
            other => Cell::Str(python_repr(other)),
        }
    }
}

/// `tabulate`'s column types, from the least to the most generic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    None,
    Bool,
    Int,
    Float,
    Str,
}

fn parses_as_int(s: &str) -> bool {
    let s = s.trim();
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parses_as_float(s: &str) -> bool {
    let t = s.trim();
    match t.parse::<f64>() {
        // Python's float() takes "inf" and "nan" but tabulate counts only these spellings.
        Ok(f) if f.is_infinite() || f.is_nan() => ["inf", "-inf", "nan"].contains(&t.to_lowercase().as_str()),
        Ok(_) => !t.is_empty(),
        Err(_) => false,
    }
}

impl Cell {
    fn kind(&self) -> Kind {
        match self {
            Cell::None => Kind::None,
            Cell::Bool(_) => Kind::Bool,
            Cell::Int(_) => Kind::Int,
            Cell::Float(_) => Kind::Float,
            Cell::Str(s) if s == "True" || s == "False" => Kind::Bool,
            Cell::Str(s) if parses_as_int(s) => Kind::Int,
            Cell::Str(s) if parses_as_float(s) => Kind::Float,
            Cell::Str(_) => Kind::Str,
        }
    }

    /// The text of the cell in a column of `kind` (tabulate's `_format`, `floatfmt="g"`).
    fn text(&self, kind: Kind) -> String {
        match (self, kind) {
            (Cell::None, _) => String::new(),
            (Cell::Bool(b), Kind::Float) => python_g(if *b { 1.0 } else { 0.0 }),
            (Cell::Bool(b), _) => if *b { "True" } else { "False" }.to_owned(),
            (Cell::Int(i), Kind::Float) => python_g(*i as f64),
            (Cell::Int(i), _) => i.to_string(),
            (Cell::Float(f), Kind::Float) => python_g(*f),
            (Cell::Float(f), _) => python_float(*f),
            (Cell::Str(s), Kind::Float) => s.trim().parse::<f64>().map(python_g).unwrap_or_else(|_| s.clone()),
            (Cell::Str(s), _) => s.clone(),
        }
    }
}

/// The table formats of `tabulate` that `verdi` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `simple`: a dashed line under the headers (around the rows when there are none).
    Simple,
    /// `plain`: no lines.
    Plain,
}

/// A table laid out as `tabulate(rows, headers=headers, tablefmt=format)`; `preserve_whitespace`
/// is `tabulate.PRESERVE_WHITESPACE` (cells are stripped unless it is set).
pub(crate) fn tabulate(rows: &[Vec<Cell>], headers: &[&str], format: Format, preserve_whitespace: bool) -> String {
    let columns = rows.iter().map(Vec::len).chain([headers.len()]).max().unwrap_or(0);
    if columns == 0 {
        return String::new();
    }
    let padding = if headers.is_empty() { 0 } else { 2 };
    let width = |s: &str| s.chars().count();
    let mut laid_out: Vec<Vec<String>> = vec![Vec::new(); rows.len()];
    let mut widths = Vec::with_capacity(columns);
    let mut numeric = Vec::with_capacity(columns);
    for c in 0..columns {
        let cells: Vec<&Cell> = rows.iter().map(|r| r.get(c).unwrap_or(&Cell::None)).collect();
        let kind = cells.iter().map(|cell| cell.kind()).max().unwrap_or(Kind::None);
        let mut texts: Vec<String> = cells.iter().map(|cell| cell.text(kind)).collect();
        if !preserve_whitespace {
            texts = texts.into_iter().map(|t| t.trim().to_owned()).collect();
        }
        let is_numeric = matches!(kind, Kind::Int | Kind::Float);
        if is_numeric {
            // tabulate's "decimal" alignment: pad on the right to line up the decimal points.
            let decimals: Vec<i64> = texts.iter().map(|t| after_point(t)).collect();
            let most = decimals.iter().copied().max().unwrap_or(-1);
            for (text, decimals) in texts.iter_mut().zip(decimals) {
                if !text.is_empty() {
                    text.push_str(&" ".repeat(usize::try_from(most - decimals).unwrap_or(0)));
                }
            }
        }
        let widest = texts.iter().flat_map(|t| t.split('\n')).map(width).max().unwrap_or(0);
        let header = headers.get(c).copied().unwrap_or("");
        widths.push(widest.max(width(header) + padding));
        numeric.push(is_numeric);
        for (row, text) in laid_out.iter_mut().zip(texts) {
            row.push(text);
        }
    }
    let pad = |text: &str, c: usize| {
        let fill = " ".repeat(widths[c].saturating_sub(width(text)));
        if numeric[c] { format!("{fill}{text}") } else { format!("{text}{fill}") }
    };
    let line = |cells: Vec<String>| cells.join("  ").trim_end().to_owned();
    let dashes = || line(widths.iter().map(|w| "-".repeat(*w)).collect());
    let mut lines = Vec::new();
    if !headers.is_empty() {
        lines.push(line((0..columns).map(|c| pad(headers.get(c).copied().unwrap_or(""), c)).collect()));
        if format == Format::Simple {
            lines.push(dashes());
        }
    } else if format == Format::Simple && !rows.is_empty() {
        lines.push(dashes());
    }
    for row in &laid_out {
        let height = row.iter().map(|t| t.split('\n').count()).max().unwrap_or(1);
        for i in 0..height {
            lines.push(line(row.iter().enumerate().map(|(c, t)| pad(t.split('\n').nth(i).unwrap_or(""), c)).collect()));
        }
    }
    if headers.is_empty() && format == Format::Simple && !rows.is_empty() {
        lines.push(dashes());
    }
    lines.join("\n")
}

/// How many characters follow the decimal point of a number (-1 for an integer): tabulate's
/// `_afterpoint`.
fn after_point(text: &str) -> i64 {
    if text.is_empty() || parses_as_int(text) || !parses_as_float(text) {
        return -1;
    }
    let len = text.chars().count() as i64;
    match text.rfind('.').or_else(|| text.to_lowercase().rfind('e')) {
        Some(pos) => len - pos as i64 - 1,
        None => -1,
    }
}

/// Python's `format(f, "g")`: six significant digits, trailing zeros dropped, exponent notation
/// below 1e-4 and from 1e6.
pub(crate) fn python_g(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let scientific = format!("{f:.5e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("exponent notation");
    let exponent: i32 = exponent.parse().expect("an exponent");
    let trim = |s: &str| {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s.to_owned() }
    };
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        let decimals = usize::try_from(5 - exponent).unwrap_or(0);
        trim(&format!("{f:.decimals$}"))
    }
}

/// Python's `repr` (and `str`) of a float: the shortest text that reads back as the same number,
/// in exponent notation below 1e-4 and from 1e16.
pub(crate) fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let shortest = format!("{f:e}");
    let (mantissa, exponent) = shortest.split_once('e').expect("exponent notation");
    let exponent: i32 = exponent.parse().expect("an exponent");
    if (-4..16).contains(&exponent) {
        let text = f.to_string();
        if text.contains('.') { text } else { format!("{text}.0") }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// A JSON value as Python's `repr` of the object `json.loads` makes of it (`{'a': 1, 'b': None}`).
pub(crate) fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Value::Number(n) => match n.as_i64().map(|i| i.to_string()).or_else(|| n.as_u64().map(|u| u.to_string())) {
            Some(i) => i,
            None => python_float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            let mut out = String::from(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => out.extend(['\\', c]),
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(items) => format!("[{}]", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", python_repr(&Value::String(k.clone())), python_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `json.dumps(value, indent=4, sort_keys=True)`: what `verdi` prints for a dictionary by default
/// (`echo_dictionary`, format `json+date`).
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, 0, &mut out);
    out
}

fn write_json(value: &Value, depth: usize, out: &mut String) {
    let indent = |depth: usize| "    ".repeat(depth);
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64().map(|i| i.to_string()).or_else(|| n.as_u64().map(|u| u.to_string())) {
            Some(i) => out.push_str(&i),
            None => {
                let f = n.as_f64().unwrap_or_default();
                out.push_str(&match python_float(f).as_str() {
                    "inf" => "Infinity".to_owned(),
                    "-inf" => "-Infinity".to_owned(),
                    "nan" => "NaN".to_owned(),
                    text => text.to_owned(),
                });
            }
        },
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&indent(depth + 1));
                write_json(item, depth + 1, out);
            }
            out.push('\n');
            out.push_str(&indent(depth));
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&indent(depth + 1));
                write_json_string(key, out);
                out.push_str(": ");
                write_json(&map[key], depth + 1, out);
            }
            out.push('\n');
            out.push_str(&indent(depth));
            out.push('}');
        }
    }
}

/// A JSON string as `json.dumps` writes it (`ensure_ascii`: anything beyond ASCII as `\uXXXX`).
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// aiida's `str_timedelta(delta, negative_to_zero=True, max_num_fields=1)`: the largest non-zero
/// unit of the time since `time`, e.g. `7s ago`, `3m ago`, `2h ago`, `1D ago`.
pub(crate) fn relative_time(time: chrono::DateTime<chrono::Utc>) -> String {
    let seconds = (chrono::Utc::now() - time).num_seconds().max(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let (minutes, seconds) = (rest / 60, rest % 60);
    let (value, unit) = [(days, 'D'), (hours, 'h'), (minutes, 'm')]
        .into_iter()
        .find(|(value, _)| *value != 0)
        .unwrap_or((seconds, 's'));
    format!("{value}{unit} ago")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(rows: Vec<Vec<Cell>>, headers: &[&str], format: Format) -> String {
        tabulate(&rows, headers, format, false)
    }

    /// Expected texts from Python's tabulate 0.9.0 on the same values.
    #[test]
    fn tables_are_laid_out_as_pythons_tabulate() {
        use Cell::*;
        let s = |t: &str| Str(t.to_owned());
        assert_eq!(
            table(vec![vec![s("a"), Int(1)], vec![s("bb"), None]], &["X", "PK"], Format::Simple),
            "X      PK\n---  ----\na       1\nbb"
        );
        assert_eq!(
            table(
                vec![vec![s("a"), Float(1.5)], vec![s("b"), Int(10)], vec![s("c"), None]],
                &["K", "V"],
                Format::Simple
            ),
            "K       V\n---  ----\na     1.5\nb    10\nc"
        );
        assert_eq!(
            table(
                vec![vec![s("use_login_shell"), Bool(false)], vec![s("safe_interval"), Float(2.0)]],
                &[],
                Format::Plain
            ),
            "use_login_shell  0\nsafe_interval    2"
        );
        assert_eq!(
            table(
                vec![vec![s("p"), s("a\nbbb")], vec![s("Append"), s("  x  ")], vec![s("n"), s("")]],
                &[],
                Format::Simple
            ),
            "------  ---\np       a\n        bbb\nAppend  x\nn\n------  ---"
        );
        assert_eq!(table(vec![], &["A", "B"], Format::Simple), "A    B\n---  ---");
        assert_eq!(
            table(vec![vec![s("x"), Bool(true)], vec![s("y"), Int(3)]], &["K", "V"], Format::Simple),
            "K       V\n---  ----\nx    True\ny       3"
        );
        assert_eq!(
            table(vec![vec![s("x"), s("True")], vec![s("y"), s("False")]], &["K", "V"], Format::Simple),
            "K    V\n---  -----\nx    True\ny    False"
        );
        assert_eq!(
            table(
                vec![vec![s("x"), Float(1.23456789)], vec![s("y"), Float(1e-7)], vec![s("z"), Float(123456789.0)]],
                &["K", "V"],
                Format::Simple
            ),
            "K              V\n---  -----------\nx    1.23457\ny    1e-07\nz    1.23457e+08"
        );
        assert_eq!(
            table(vec![vec![s("x"), s("007")], vec![s("y"), Int(10)]], &["K", "V"], Format::Plain),
            "K      V\nx    007\ny     10"
        );
    }

    #[test]
    fn numbers_and_json_read_as_pythons() {
        assert_eq!(python_float(3.0), "3.0");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(1.5e16), "1.5e+16");
        assert_eq!(python_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(python_g(2.0), "2");
        assert_eq!(python_g(0.5), "0.5");
        assert_eq!(python_g(1234567.0), "1.23457e+06");
        assert_eq!(
            python_repr(&json!({"a": [1, 2.5, null, true], "b": "it's"})),
            "{'a': [1, 2.5, None, True], 'b': \"it's\"}"
        );
        assert_eq!(
            python_json(&json!({"z": 1, "a": {"é": [1.0, "x"]}, "e": {}})),
            "{\n    \"a\": {\n        \"\\u00e9\": [\n            1.0,\n            \"x\"\n        ]\n    },\n    \
             \"e\": {},\n    \"z\": 1\n}"
        );
    }

    #[test]
    fn relative_times_show_their_largest_unit() {
        let ago = |s: i64| relative_time(chrono::Utc::now() - chrono::Duration::seconds(s));
        assert_eq!(ago(7), "7s ago");
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(185), "3m ago");
        assert_eq!(ago(7300), "2h ago");
        assert_eq!(ago(3 * 86_400 + 5), "3D ago");
        assert_eq!(relative_time(chrono::Utc::now() + chrono::Duration::seconds(30)), "0s ago");
    }
}
