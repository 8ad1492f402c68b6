//! Queries over nodes, in the spirit of aiida's `QueryBuilder`.
//!
//! ```no_run
//! # use aiida::orm::{data, query::{Op, QueryBuilder}};
//! # fn f(storage: &aiida::storage::Storage) -> Result<(), aiida::orm::OrmError> {
//! let big_ints = QueryBuilder::nodes()
//!     .of_type(&data::INT)
//!     .attribute("value", Op::Gt, 10)
//!     .order_by("ctime", true)
//!     .limit(5)
//!     .all(storage)?;
//! # Ok(()) }
//! ```

use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::data::DataType;
use super::{LinkType, Node, OrmError};
use crate::runtime::block_on;
use crate::storage::{Storage, args};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// SQL `LIKE` (`%` and `_` wildcards), on text.
    Like,
    /// Equal to one of a JSON array's items.
    In,
    /// The attribute or extra exists (the value is ignored).
    Exists,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq | Op::In => "=",
            Op::Ne => "IS DISTINCT FROM",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::Exists => "IS NOT NULL",
        }
    }
}

/// Columns of `db_dbnode` that can be filtered and ordered on, with their SQL types.
const COLUMNS: &[(&str, &str)] = &[
    ("id", "integer"),
    ("pk", "integer"),
    ("uuid", "uuid"),
    ("label", "text"),
    ("description", "text"),
    ("node_type", "text"),
    ("process_type", "text"),
    ("ctime", "timestamptz"),
    ("mtime", "timestamptz"),
    ("user_id", "integer"),
    ("dbcomputer_id", "integer"),
];

/// A query over nodes; build it, then run it with [`all`](QueryBuilder::all),
/// [`first`](QueryBuilder::first) or [`count`](QueryBuilder::count).
#[derive(Debug, Clone, Default)]
pub struct QueryBuilder {
    wheres: Vec<(String, Vec<Param>)>,
    joins: Vec<(String, Vec<Param>)>,
    order: Vec<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    error: Option<String>,
}

/// A parameter before it is numbered.
#[derive(Debug, Clone)]
enum Param {
    Text(String),
    TextArray(Vec<String>),
    Json(Value),
    JsonArray(Vec<Value>),
    Int(i32),
}

impl QueryBuilder {
    /// All nodes.
    pub fn nodes() -> QueryBuilder {
        QueryBuilder::default()
    }

    /// Nodes of `data_type` and its subclasses (as aiida's `append(orm.Int)`).
    pub fn of_type(self, data_type: &DataType) -> QueryBuilder {
        self.node_type(data_type.node_type, true)
    }

    /// Nodes whose `node_type` is `node_type` or, with `subclasses`, any type in its module
    /// (`data.core.int.%` for `data.core.int.Int.`; a bare prefix such as `data.` matches all data).
    pub fn node_type(mut self, node_type: &str, subclasses: bool) -> QueryBuilder {
        if !subclasses {
            self.wheres.push(("n.node_type = $?".to_owned(), vec![Param::Text(node_type.to_owned())]));
            return self;
        }
        let trimmed = node_type.trim_end_matches('.');
        let module = match trimmed.rsplit_once('.') {
            Some((module, class)) if class.starts_with(|c: char| c.is_uppercase()) => format!("{module}."),
            _ => node_type.to_owned(),
        };
        let pattern = format!("{}%", module.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        self.wheres.push(("n.node_type LIKE $?".to_owned(), vec![Param::Text(pattern)]));
        self
    }

    /// Filters on a column (`pk`/`id`, `uuid`, `label`, `description`, `node_type`,
    /// `process_type`, `ctime`, `mtime`, `user_id`, `dbcomputer_id`).
    pub fn column(mut self, column: &str, op: Op, value: impl Into<Value>) -> QueryBuilder {
        let Some((_, sql_type)) = COLUMNS.iter().find(|(c, _)| *c == column) else {
            self.error = Some(format!("cannot filter on unknown column `{column}`"));
            return self;
        };
        let name = if column == "pk" { "id" } else { column };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let value = value.into();
        let clause = match op {
            Op::Exists => (format!("n.{name} IS NOT NULL"), vec![]),
            Op::In => {
                let items = value.as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
                (format!("n.{name} = ANY(CAST($?::text[] AS {sql_type}[]))"), vec![Param::TextArray(items)])
            }
            Op::Like => (format!("n.{name}::text LIKE $?"), vec![Param::Text(text(&value))]),
            _ => (format!("n.{name} {} CAST($?::text AS {sql_type})", op.sql()), vec![Param::Text(text(&value))]),
        };
        self.wheres.push(clause);
        self
    }

    /// Filters on an attribute; `path` is dot-separated (`a.b` is `attributes["a"]["b"]`).
    pub fn attribute(self, path: &str, op: Op, value: impl Into<Value>) -> QueryBuilder {
        self.json_filter("attributes", path, op, value.into())
    }

    /// Filters on an extra; `path` is dot-separated.
    pub fn extra(self, path: &str, op: Op, value: impl Into<Value>) -> QueryBuilder {
        self.json_filter("extras", path, op, value.into())
    }

    fn json_filter(mut self, field: &str, path: &str, op: Op, value: Value) -> QueryBuilder {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        let clause = match op {
            Op::Exists => (format!("n.{field} #> $? IS NOT NULL"), vec![Param::TextArray(path)]),
            Op::Like => {
                let pattern = value.as_str().unwrap_or_default().to_owned();
                (format!("n.{field} #>> $? LIKE $?"), vec![Param::TextArray(path), Param::Text(pattern)])
            }
            Op::In => {
                let items = value.as_array().cloned().unwrap_or_default();
                (format!("n.{field} #> $? = ANY($?)"), vec![Param::TextArray(path), Param::JsonArray(items)])
            }
            // jsonb orders values of different types too (a bool "exceeds" any number): compare
            // only values of the filter value's type, as aiida does.
            Op::Gt | Op::Ge | Op::Lt | Op::Le => (
                format!("n.{field} #> $? {} $? AND jsonb_typeof(n.{field} #> $?) = jsonb_typeof($?)", op.sql()),
                vec![
                    Param::TextArray(path.clone()),
                    Param::Json(value.clone()),
                    Param::TextArray(path),
                    Param::Json(value),
                ],
            ),
            _ => (format!("n.{field} #> $? {} $?", op.sql()), vec![Param::TextArray(path), Param::Json(value)]),
        };
        self.wheres.push(clause);
        self
    }

    /// Only nodes linked *from* `node` (its outputs or called processes), optionally of one type.
    pub fn outgoing_of(self, node: &Node, link_type: Option<LinkType>) -> QueryBuilder {
        self.linked(node, link_type, "input_id", "output_id")
    }

    /// Only nodes linked *to* `node` (its inputs, creator or caller), optionally of one type.
    pub fn incoming_of(self, node: &Node, link_type: Option<LinkType>) -> QueryBuilder {
        self.linked(node, link_type, "output_id", "input_id")
    }

    fn linked(mut self, node: &Node, link_type: Option<LinkType>, anchor: &str, other: &str) -> QueryBuilder {
        let Some(pk) = node.pk() else {
            self.error = Some("a query can only follow the links of a stored node".to_owned());
            return self;
        };
        let alias = format!("l{}", self.joins.len());
        let mut sql = format!("JOIN db_dblink {alias} ON {alias}.{other} = n.id AND {alias}.{anchor} = $?");
        let mut params = vec![Param::Int(pk)];
        if let Some(t) = link_type {
            sql.push_str(&format!(" AND {alias}.type = $?"));
            params.push(Param::Text(t.as_str().to_owned()));
        }
        self.joins.push((sql, params));
        self
    }

    /// Orders by a column (see [`column`](QueryBuilder::column)), descending if `desc`.
    pub fn order_by(mut self, column: &str, desc: bool) -> QueryBuilder {
        match COLUMNS.iter().find(|(c, _)| *c == column) {
            Some(_) => {
                let name = if column == "pk" { "id" } else { column };
                self.order.push(format!("n.{name} {}", if desc { "DESC" } else { "ASC" }));
            }
            None => self.error = Some(format!("cannot order by unknown column `{column}`")),
        }
        self
    }

    /// At most `n` results.
    pub fn limit(mut self, n: i64) -> QueryBuilder {
        self.limit = Some(n);
        self
    }

    /// Skips the first `n` results.
    pub fn offset(mut self, n: i64) -> QueryBuilder {
        self.offset = Some(n);
        self
    }

    fn sql(&self, select: &str) -> Result<(String, crate::storage::Params), OrmError> {
        if let Some(e) = &self.error {
            return Err(OrmError::Query(e.clone()));
        }
        let mut params: crate::storage::Params = Vec::new();
        let mut number = |clause: &str, values: &[Param]| -> String {
            let mut out = String::new();
            let mut values = values.iter();
            for (i, piece) in clause.split("$?").enumerate() {
                if i > 0 {
                    let value = values.next().expect("one value per placeholder");
                    params.push(match value {
                        Param::Text(s) => Box::new(s.clone()) as Box<dyn ToSql + Send + Sync>,
                        Param::TextArray(v) => Box::new(v.clone()),
                        Param::Json(v) => Box::new(v.clone()),
                        Param::JsonArray(v) => Box::new(v.clone()),
                        Param::Int(v) => Box::new(*v),
                    });
                    out.push_str(&format!("${}", params.len()));
                }
                out.push_str(piece);
            }
            out
        };
        let mut sql = format!("SELECT {select} FROM db_dbnode n");
        for (join, values) in &self.joins {
            sql.push(' ');
            sql.push_str(&number(join, values));
        }
        let wheres: Vec<String> = self.wheres.iter().map(|(c, v)| number(c, v)).collect();
        if !wheres.is_empty() {
            sql.push_str(&format!(" WHERE {}", wheres.join(" AND ")));
        }
        Ok((sql, params))
    }

    /// The matching nodes (by pk unless ordered otherwise).
    pub fn all(&self, storage: &Storage) -> Result<Vec<Node>, OrmError> {
        block_on(self.all_async(storage))
    }

    /// [`QueryBuilder::all`], async.
    pub async fn all_async(&self, storage: &Storage) -> Result<Vec<Node>, OrmError> {
        let (mut sql, params) = self.sql("DISTINCT n.*")?;
        let order = if self.order.is_empty() { "n.id ASC".to_owned() } else { self.order.join(", ") };
        sql.push_str(&format!(" ORDER BY {order}"));
        if let Some(n) = self.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        if let Some(n) = self.offset {
            sql.push_str(&format!(" OFFSET {n}"));
        }
        Ok(storage.db().query(&sql, &args(&params)).await?.iter().map(Node::from_row).collect())
    }

    /// The first matching node, if any.
    pub fn first(&self, storage: &Storage) -> Result<Option<Node>, OrmError> {
        block_on(self.first_async(storage))
    }

    /// [`QueryBuilder::first`], async.
    pub async fn first_async(&self, storage: &Storage) -> Result<Option<Node>, OrmError> {
        Ok(self.clone().limit(1).all_async(storage).await?.into_iter().next())
    }

    /// How many nodes match.
    pub fn count(&self, storage: &Storage) -> Result<i64, OrmError> {
        block_on(self.count_async(storage))
    }

    /// [`QueryBuilder::count`], async.
    pub async fn count_async(&self, storage: &Storage) -> Result<i64, OrmError> {
        let (sql, params) = self.sql("count(DISTINCT n.id)")?;
        Ok(storage.db().query(&sql, &args(&params)).await?[0].get(0))
    }
}
