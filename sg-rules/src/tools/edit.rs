//! Edits of a rules file's text that keep its formatting and comments (toml_edit), for
//! `sgctl rule add|remove`: append a rule to a group, remove the rule at an index. The result
//! is text to validate and apply like any rules file.

use toml_edit::{Array, DocumentMut, InlineTable, Item, Value};

use crate::Dir;
/// Why an edit could not be made (the rule set is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{what}: {detail}")]
    Usage { what: String, detail: String },
}

type Result<T> = std::result::Result<T, EditError>;

/// A rule to append, with its fields as the rules file spells them.
#[derive(Clone, Debug, Default)]
pub struct NewRule {
    pub proto: String,
    pub ports: Option<String>,
    pub icmp_type: Option<i64>,
    pub icmp_code: Option<i64>,
    /// Peer CIDRs.
    pub cidr: Vec<String>,
    pub peer_group: Option<String>,
    pub prefix_list: Option<String>,
    pub description: Option<String>,
}

/// One edit of one group's rules for one direction.
#[derive(Clone, Debug)]
pub enum Edit {
    Add(NewRule),
    /// The rule at this index of the group's list (as `sgctl stats` numbers it).
    Remove(usize),
}

fn usage(what: String, detail: &str) -> EditError {
    EditError::Usage { what, detail: detail.to_string() }
}

/// The group's rule list for `dir` (created; AWS's default allow-all egress is written out
/// first when the group relied on it, so adding an egress rule keeps it as AWS does).
fn rule_list<'a>(doc: &'a mut DocumentMut, group: &str, dir: Dir) -> Result<&'a mut Item> {
    let g = doc
        .get_mut("groups")
        .and_then(Item::as_table_like_mut)
        .and_then(|t| t.get_mut(group))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| usage(format!("no group '{group}' in the rule set"), "name one of its groups"))?;
    if g.get(dir.as_str()).is_none() {
        let mut arr = Array::new();
        if dir == Dir::Egress {
            let mut all = InlineTable::new();
            all.insert("proto", "all".into());
            let mut nets = Array::new();
            nets.push("0.0.0.0/0");
            nets.push("::/0");
            all.insert("to", Value::Array(nets));
            arr.push(Value::InlineTable(all));
        }
        g.insert(dir.as_str(), Item::Value(Value::Array(arr)));
    }
    g.get_mut(dir.as_str())
        .ok_or_else(|| usage(format!("cannot edit {group}.{}", dir.as_str()), "edit the file by hand"))
}

fn inline(r: &NewRule, dir: Dir) -> InlineTable {
    let mut t = InlineTable::new();
    t.insert("proto", r.proto.as_str().into());
    if let Some(p) = &r.ports {
        t.insert("ports", p.as_str().into());
    }
    if let Some(v) = r.icmp_type {
        t.insert("icmp_type", v.into());
    }
    if let Some(v) = r.icmp_code {
        t.insert("icmp_code", v.into());
    }
    let (cidr_key, group_key, list_key) = match dir {
        Dir::Ingress => ("from", "from_group", "from_prefix_list"),
        Dir::Egress => ("to", "to_group", "to_prefix_list"),
    };
    if !r.cidr.is_empty() {
        let mut arr = Array::new();
        for c in &r.cidr {
            arr.push(c.as_str());
        }
        t.insert(cidr_key, Value::Array(arr));
    }
    if let Some(g) = &r.peer_group {
        t.insert(group_key, g.as_str().into());
    }
    if let Some(l) = &r.prefix_list {
        t.insert(list_key, l.as_str().into());
    }
    if let Some(d) = &r.description {
        t.insert("description", d.as_str().into());
    }
    t
}

/// Appends `v` to `arr` laid out as its last element is: on a line of its own in a list
/// written one rule per line, after a space in a list written on one line.
fn append(arr: &mut Array, mut v: Value) {
    let text = |d: Option<&toml_edit::RawString>| d.and_then(|r| r.as_str()).unwrap_or_default().to_string();
    if let Some(last) = arr.iter_mut().last() {
        let prefix = text(last.decor().prefix());
        let suffix = text(last.decor().suffix());
        // What stood between the last element and `]` (or its comma) now follows the new one.
        last.decor_mut().set_suffix("");
        v.decor_mut().set_suffix(suffix);
        v.decor_mut().set_prefix(if prefix.contains('\n') { prefix } else { " ".to_string() });
    } else {
        v.decor_mut().set_prefix("");
        v.decor_mut().set_suffix("");
    }
    arr.push_formatted(v);
}

/// `text` (named `name` in errors) with `edit` made to `group`'s `dir` rules.
pub fn edit(name: &str, text: &str, group: &str, dir: Dir, edit: &Edit) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| usage(format!("{name}: not valid TOML"), &e.to_string()))?;
    let list = rule_list(&mut doc, group, dir)?;
    let not_a_list =
        || usage(format!("{group}.{} is not a list of rules", dir.as_str()), "edit the file by hand");
    match edit {
        Edit::Add(r) => match list {
            Item::Value(Value::Array(arr)) => append(arr, Value::InlineTable(inline(r, dir))),
            Item::ArrayOfTables(aot) => aot.push(inline(r, dir).into_table()),
            _ => return Err(not_a_list()),
        },
        Edit::Remove(index) => {
            let n = match list {
                Item::Value(Value::Array(arr)) => {
                    let n = arr.len();
                    if *index < n {
                        arr.remove(*index);
                    }
                    n
                }
                Item::ArrayOfTables(aot) => {
                    let n = aot.len();
                    if *index < n {
                        aot.remove(*index);
                    }
                    n
                }
                _ => return Err(not_a_list()),
            };
            if *index >= n {
                return Err(usage(
                    format!("group {group} has {n} {} rules; no index {index}", dir.as_str()),
                    "see `sgctl stats` for the indexes",
                ));
            }
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# web servers\n[groups.web]\ningress = [\n  { proto = \"tcp\", ports = \"443\", from = \"0.0.0.0/0\" },\n]\n";

    #[test]
    fn add_keeps_comments_and_writes_the_default_egress_first() {
        let r = NewRule {
            proto: "tcp".into(),
            ports: Some("80".into()),
            cidr: vec!["192.0.2.0/24".into()],
            ..NewRule::default()
        };
        let out = edit("f", FILE, "web", Dir::Ingress, &Edit::Add(r.clone())).unwrap();
        assert!(out.starts_with("# web servers\n"), "{out}");
        assert!(out.contains("ports = \"80\", from = [\"192.0.2.0/24\"]"), "{out}");
        let out = edit("f", FILE, "web", Dir::Egress, &Edit::Add(r)).unwrap();
        assert!(out.contains("proto = \"all\", to = [\"0.0.0.0/0\", \"::/0\"]"), "{out}");
        assert!(out.contains("to = [\"192.0.2.0/24\"]"), "{out}");
    }

    /// A rule appended to a list written one rule per line gets a line of its own (with or
    /// without a trailing comma); one written on one line stays on one line.
    #[test]
    fn an_added_rule_is_laid_out_as_its_list() {
        let f = "[groups.web]\ningress = [\n  { proto = \"tcp\", ports = \"443\", from = \"0.0.0.0/0\" },\n]\negress = [ { proto = \"tcp\", ports = \"1\", to = \"0.0.0.0/0\" } ]\n[groups.db]\ningress = [\n    { proto = \"tcp\", ports = \"443\", from = \"0.0.0.0/0\" }\n]\n";
        let r = NewRule {
            proto: "tcp".into(),
            ports: Some("80".into()),
            cidr: vec!["192.0.2.0/24".into()],
            ..NewRule::default()
        };
        let mut out = f.to_string();
        for (g, d) in [("web", Dir::Ingress), ("web", Dir::Egress), ("db", Dir::Ingress), ("db", Dir::Egress)]
        {
            out = edit("f", &out, g, d, &Edit::Add(r.clone())).unwrap();
        }
        let want = "[groups.web]
ingress = [
  { proto = \"tcp\", ports = \"443\", from = \"0.0.0.0/0\" },
  { proto = \"tcp\", ports = \"80\", from = [\"192.0.2.0/24\"] },
]
egress = [ { proto = \"tcp\", ports = \"1\", to = \"0.0.0.0/0\" }, { proto = \"tcp\", ports = \"80\", to = [\"192.0.2.0/24\"] } ]
[groups.db]
ingress = [
    { proto = \"tcp\", ports = \"443\", from = \"0.0.0.0/0\" },
    { proto = \"tcp\", ports = \"80\", from = [\"192.0.2.0/24\"] }
]
egress = [{ proto = \"all\", to = [\"0.0.0.0/0\", \"::/0\"] }, { proto = \"tcp\", ports = \"80\", to = [\"192.0.2.0/24\"] }]
";
        assert_eq!(out, want);
    }

    #[test]
    fn remove_by_index_and_errors_name_what() {
        let out = edit("f", FILE, "web", Dir::Ingress, &Edit::Remove(0)).unwrap();
        assert!(!out.contains("443"), "{out}");
        let e = edit("f", FILE, "web", Dir::Ingress, &Edit::Remove(3)).unwrap_err().to_string();
        assert!(e.contains("group web has 1 ingress rules; no index 3"), "{e}");
        let e = edit("f", FILE, "db", Dir::Ingress, &Edit::Remove(0)).unwrap_err().to_string();
        assert!(e.contains("no group 'db'"), "{e}");
        let e = edit("f", "[groups", "web", Dir::Ingress, &Edit::Remove(0)).unwrap_err().to_string();
        assert!(e.starts_with("f: not valid TOML"), "{e}");
    }
}
