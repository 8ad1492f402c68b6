use super::{Node, OrmError};
use crate::runtime::block_on;
use crate::storage::Storage;

/// The kinds of provenance links, with aiida's `type` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// A calculation created a data node (its output).
    Create,
    /// A workflow returned a data node.
    Return,
    /// A data node is an input of a calculation.
    InputCalc,
    /// A data node is an input of a workflow.
    InputWork,
    /// A workflow called a calculation.
    CallCalc,
    /// A workflow called a workflow.
    CallWork,
}

/// What a node is, as far as links care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Calculation,
    Workflow,
    Other,
}

fn kind(node: &Node) -> Kind {
    let t = node.node_type();
    if t.starts_with("data.") {
        Kind::Data
    } else if t.starts_with("process.calculation.") {
        Kind::Calculation
    } else if t.starts_with("process.workflow.") {
        Kind::Workflow
    } else {
        Kind::Other
    }
}

impl LinkType {
    /// The `type` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkType::Create => "create",
            LinkType::Return => "return",
            LinkType::InputCalc => "input_calc",
            LinkType::InputWork => "input_work",
            LinkType::CallCalc => "call_calc",
            LinkType::CallWork => "call_work",
        }
    }

    /// The link type of a `type` value.
    pub fn parse(s: &str) -> Option<LinkType> {
        [
            LinkType::Create,
            LinkType::Return,
            LinkType::InputCalc,
            LinkType::InputWork,
            LinkType::CallCalc,
            LinkType::CallWork,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    fn endpoints(self) -> (Kind, Kind) {
        match self {
            LinkType::Create => (Kind::Calculation, Kind::Data),
            LinkType::Return => (Kind::Workflow, Kind::Data),
            LinkType::InputCalc => (Kind::Data, Kind::Calculation),
            LinkType::InputWork => (Kind::Data, Kind::Workflow),
            LinkType::CallCalc => (Kind::Workflow, Kind::Calculation),
            LinkType::CallWork => (Kind::Workflow, Kind::Workflow),
        }
    }
}

/// A link seen from one of its ends: the node at the other end, the type and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The node at the other end.
    pub node: Node,
    /// The link type.
    pub link_type: LinkType,
    /// The label.
    pub label: String,
}

/// Refuses a label that is not a link label: a non-empty identifier of letters, digits and
/// underscores.
pub(super) fn check_label(link_type: LinkType, label: &str) -> Result<(), OrmError> {
    if label.is_empty() || !label.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(OrmError::InvalidLink {
            link_type: link_type.as_str(),
            label: label.to_owned(),
            reason: "a label is a non-empty identifier of letters, digits and underscores".to_owned(),
        });
    }
    Ok(())
}

/// Links `source` to `target` (both stored), enforcing aiida's rules: the right kinds of node at
/// each end; a data node has at most one creator; a process is called by at most one workflow;
/// a process has one input per label and one created or returned output per label; no link twice.
pub fn add_link(
    storage: &Storage,
    source: &Node,
    target: &Node,
    link_type: LinkType,
    label: &str,
) -> Result<(), OrmError> {
    block_on(add_link_async(storage, source, target, link_type, label))
}

/// [`add_link`], async.
pub async fn add_link_async(
    storage: &Storage,
    source: &Node,
    target: &Node,
    link_type: LinkType,
    label: &str,
) -> Result<(), OrmError> {
    let (src, tgt) = (source.pk().ok_or(OrmError::NotStored)?, target.pk().ok_or(OrmError::NotStored)?);
    let invalid =
        |reason: String| OrmError::InvalidLink { link_type: link_type.as_str(), label: label.to_owned(), reason };
    let (want_source, want_target) = link_type.endpoints();
    if kind(source) != want_source || kind(target) != want_target {
        return Err(invalid(format!(
            "it must go from a {want_source:?} node to a {want_target:?} node, not from `{}` to `{}`",
            source.node_type(),
            target.node_type()
        )));
    }
    check_label(link_type, label)?;
    let type_string = link_type.as_str();
    let tx = storage.db().begin().await?;
    let one_parent = matches!(link_type, LinkType::Create | LinkType::CallCalc | LinkType::CallWork);
    let parent_types: &[&str] = if link_type == LinkType::Create { &["create"] } else { &["call_calc", "call_work"] };
    if one_parent
        && !tx
            .query("SELECT 1 FROM db_dblink WHERE output_id = $1 AND type = ANY($2)", &[&tgt, &parent_types])
            .await?
            .is_empty()
    {
        let what = if link_type == LinkType::Create { "creator" } else { "caller" };
        return Err(invalid(format!("node {tgt} already has a {what}")));
    }
    // aiida's degree rules: a process has one input per label; a process has one output
    // (create/return) per label; no link may exist twice.
    let unique_label = match link_type {
        LinkType::InputCalc | LinkType::InputWork => {
            Some(("SELECT 1 FROM db_dblink WHERE output_id = $1 AND label = $2 AND type = $3", tgt, "input"))
        }
        LinkType::Create | LinkType::Return => {
            Some(("SELECT 1 FROM db_dblink WHERE input_id = $1 AND label = $2 AND type = $3", src, "output"))
        }
        LinkType::CallCalc | LinkType::CallWork => None,
    };
    if let Some((sql, pk, what)) = unique_label
        && !tx.query(sql, &[&pk, &label, &type_string]).await?.is_empty()
    {
        return Err(invalid(format!("node {pk} already has an {what} labelled `{label}`")));
    }
    let duplicate = "SELECT 1 FROM db_dblink WHERE input_id = $1 AND output_id = $2 AND label = $3 AND type = $4";
    if !tx.query(duplicate, &[&src, &tgt, &label, &type_string]).await?.is_empty() {
        return Err(invalid("this link exists already".to_owned()));
    }
    tx.query(
        "INSERT INTO db_dblink (input_id, output_id, label, type) VALUES ($1, $2, $3, $4)",
        &[&src, &tgt, &label, &type_string],
    )
    .await?;
    Ok(tx.commit().await?)
}

async fn links(storage: &Storage, node: &Node, incoming: bool) -> Result<Vec<Link>, OrmError> {
    let pk = node.pk().ok_or(OrmError::NotStored)?;
    let (this, other) = if incoming { ("output_id", "input_id") } else { ("input_id", "output_id") };
    let rows = storage
        .db()
        .query(
            &format!(
                "SELECT n.*, l.type AS link_type, l.label AS link_label FROM db_dblink l JOIN db_dbnode n ON n.id = l.{other}
                 WHERE l.{this} = $1 ORDER BY l.id"
            ),
            &[&pk],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Link {
            link_type: LinkType::parse(row.get("link_type")).unwrap_or(LinkType::Create),
            label: row.get("link_label"),
            node: Node::from_row(row),
        })
        .collect())
}

impl Node {
    /// The links into this node, oldest first.
    pub fn incoming(&self, storage: &Storage) -> Result<Vec<Link>, OrmError> {
        block_on(links(storage, self, true))
    }

    /// [`Node::incoming`], async.
    pub async fn incoming_async(&self, storage: &Storage) -> Result<Vec<Link>, OrmError> {
        links(storage, self, true).await
    }

    /// The links out of this node, oldest first.
    pub fn outgoing(&self, storage: &Storage) -> Result<Vec<Link>, OrmError> {
        block_on(links(storage, self, false))
    }

    /// [`Node::outgoing`], async.
    pub async fn outgoing_async(&self, storage: &Storage) -> Result<Vec<Link>, OrmError> {
        links(storage, self, false).await
    }
}
