//! What AWS JSON of security groups leaves out, from the AWS outputs an operator can produce:
//!
//! - group members from `aws ec2 describe-network-interfaces`: every network interface's
//!   private IPv4 addresses, IPv6 addresses and delegated prefixes (Ipv4Prefixes,
//!   Ipv6Prefixes) are members of every group in its `Groups`. As AWS documents it, a rule
//!   that references a group matches the private addresses of the network interfaces the group
//!   is associated with, not their public or Elastic IP addresses (`Association` is ignored).
//! - prefix-list entries from `aws ec2 get-managed-prefix-list-entries` (which names no list:
//!   given as `pl-id=FILE`) or `aws ec2 describe-prefix-lists` (AWS-managed lists with their
//!   `Cidrs`). `describe-managed-prefix-lists` lists ids and names but no entries: refused, with
//!   the command that gives them.
//!
//! CIDRs that AWS returned with host bits set mean their network, with a warning.

use json_spanned_value::Spanned;
use serde::Deserialize;

use crate::{
    Diagnostic, LineIndex, Loc, RuleErrors,
    raw::{At, ProtoText},
};

/// One `--prefix-lists` input: `pl-id=FILE` or `FILE`, with the file's text.
#[derive(Clone, Debug, Default)]
pub struct PrefixListInput {
    /// The list the entries belong to (`pl-id=FILE`).
    pub id: Option<String>,
    /// The file's name, for messages.
    pub file: String,
    pub text: String,
}

/// A network interface's groups and member addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eni {
    pub groups: Vec<String>,
    pub addrs: Vec<At<String>>,
}

/// Locations in one input file.
pub(super) struct Cx<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub lines: LineIndex,
}

impl<'a> Cx<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Cx { file, text, lines: LineIndex::new(text) }
    }

    pub fn loc(&self, off: usize) -> Loc {
        self.lines.loc(self.file, self.text, off)
    }

    pub fn at(&self, s: &Spanned<String>) -> At<String> {
        At::new(s.get_ref().clone(), self.loc(s.start()))
    }

    /// Parses JSON into `T`; a syntax or type error is one diagnostic with its location.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, RuleErrors> {
        json_spanned_value::from_str(self.text).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or_default().to_string();
            RuleErrors::one(
                Loc { file: self.file.to_string(), line: e.line().max(1), col: e.column().max(1) },
                msg,
            )
        })
    }

    /// A CIDR as AWS returns it: with host bits set it means its network (AWS canonicalizes
    /// what it is given), which is used with a warning. Anything else is passed on as written
    /// (validation reports what is wrong with it).
    pub fn lenient_cidr(&self, s: &Spanned<String>, warnings: &mut Vec<Diagnostic>) -> At<String> {
        let at = self.at(s);
        match at.v.parse::<ipnet::IpNet>() {
            Ok(net) if net.trunc() != net => {
                warnings.push(Diagnostic {
                    loc: at.loc.clone(),
                    msg: format!(
                        "host bits set in {}: AWS stores and enforces its network {}, which is used",
                        at.v,
                        net.trunc()
                    ),
                });
                At::new(net.trunc().to_string(), at.loc)
            }
            _ => at,
        }
    }
}

/// A protocol as AWS writes it: a name or number as text ("tcp", "6", "-1"), or a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ProtoJ {
    Text(String),
    Number(i64),
}

/// A protocol field with its location, in the raw form.
pub(super) fn proto_at(cx: &Cx<'_>, p: Option<&Spanned<ProtoJ>>) -> Option<At<ProtoText>> {
    p.map(|s| {
        let v = match s.get_ref() {
            ProtoJ::Text(t) => ProtoText::Name(t.clone()),
            ProtoJ::Number(n) => ProtoText::Number(*n),
        };
        At::new(v, cx.loc(s.start()))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnisT {
    network_interfaces: Option<Vec<Spanned<EniT>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EniT {
    #[serde(default)]
    groups: Vec<GroupRefT>,
    private_ip_address: Option<Spanned<String>>,
    #[serde(default)]
    private_ip_addresses: Vec<PrivateIpT>,
    #[serde(default)]
    ipv6_addresses: Vec<Ipv6T>,
    #[serde(default)]
    ipv4_prefixes: Vec<Ipv4PrefixT>,
    #[serde(default)]
    ipv6_prefixes: Vec<Ipv6PrefixT>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupRefT {
    group_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrivateIpT {
    private_ip_address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipv6T {
    ipv6_address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipv4PrefixT {
    ipv4_prefix: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipv6PrefixT {
    ipv6_prefix: Option<Spanned<String>>,
}

/// The network interfaces of `describe-network-interfaces` output.
pub fn network_interfaces(
    file: &str,
    text: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<Eni>, RuleErrors> {
    let cx = Cx::new(file, text);
    let doc: EnisT = cx.json()?;
    let Some(enis) = doc.network_interfaces else {
        return Err(RuleErrors::one(
            cx.loc(0),
            "no NetworkInterfaces: not the output of `aws ec2 describe-network-interfaces`",
        ));
    };
    let mut out = Vec::new();
    for e in &enis {
        let e = e.get_ref();
        let mut addrs: Vec<At<String>> = Vec::new();
        let mut add = |a: At<String>| {
            if !addrs.iter().any(|x| x.v == a.v) {
                addrs.push(a);
            }
        };
        for s in e
            .private_ip_address
            .iter()
            .chain(e.private_ip_addresses.iter().filter_map(|p| p.private_ip_address.as_ref()))
        {
            add(cx.at(s));
        }
        for s in e.ipv6_addresses.iter().filter_map(|p| p.ipv6_address.as_ref()) {
            add(cx.at(s));
        }
        for s in e
            .ipv4_prefixes
            .iter()
            .filter_map(|p| p.ipv4_prefix.as_ref())
            .chain(e.ipv6_prefixes.iter().filter_map(|p| p.ipv6_prefix.as_ref()))
        {
            add(cx.lenient_cidr(s, warnings));
        }
        out.push(Eni { groups: e.groups.iter().filter_map(|g| g.group_id.clone()).collect(), addrs });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListsT {
    prefix_lists: Option<Vec<Spanned<ListT>>>,
    entries: Option<Vec<Spanned<EntryT>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListT {
    prefix_list_id: Option<Spanned<String>>,
    /// `describe-prefix-lists` (AWS-managed lists) gives the entries here.
    cidrs: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryT {
    cidr: Spanned<String>,
}

/// A list id and its entries.
pub type ListEntries = (String, Vec<At<String>>);

/// Prefix lists with their entries, from one `--prefix-lists` input: (list id, entries).
/// `describe-managed-prefix-lists` lists ids and names without entries: refused, with the
/// command that gives them (a list accepted without its entries would match nothing).
pub fn prefix_lists(
    input: &PrefixListInput,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<ListEntries>, RuleErrors> {
    let cx = Cx::new(&input.file, &input.text);
    let doc: ListsT = cx.json()?;
    match (&input.id, doc.entries, doc.prefix_lists) {
        (Some(id), Some(entries), _) => Ok(vec![(
            id.clone(),
            entries.iter().map(|e| cx.lenient_cidr(&e.get_ref().cidr, warnings)).collect(),
        )]),
        (None, Some(_), _) => Err(RuleErrors::one(
            cx.loc(0),
            "get-managed-prefix-list-entries output names no list: give it as --prefix-lists pl-ID=FILE",
        )),
        (Some(id), None, Some(_)) => Err(RuleErrors::one(
            cx.loc(0),
            format!(
                "`{id}=` goes with get-managed-prefix-list-entries output; this file lists prefix lists: give it without `{id}=`"
            ),
        )),
        (None, None, Some(lists)) => {
            let mut out = Vec::new();
            for l in &lists {
                let at = cx.loc(l.start());
                let l = l.get_ref();
                let Some(id) = &l.prefix_list_id else {
                    return Err(RuleErrors::one(at, "a prefix list without PrefixListId"));
                };
                let id = id.get_ref();
                let Some(cidrs) = &l.cidrs else {
                    return Err(RuleErrors::one(
                        at,
                        format!(
                            "prefix list {id} comes without its entries (describe-managed-prefix-lists lists only ids and names): give them with `aws ec2 get-managed-prefix-list-entries --prefix-list-id {id} > {id}.json` and --prefix-lists {id}={id}.json"
                        ),
                    ));
                };
                out.push((id.clone(), cidrs.iter().map(|c| cx.lenient_cidr(c, warnings)).collect()));
            }
            Ok(out)
        }
        (_, None, None) => Err(RuleErrors::one(
            cx.loc(0),
            "neither PrefixLists nor Entries: not the output of describe-prefix-lists, describe-managed-prefix-lists or get-managed-prefix-list-entries",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENIS: &str = r#"{"NetworkInterfaces": [
  {"NetworkInterfaceId": "eni-1", "Groups": [{"GroupId": "sg-web", "GroupName": "web"}, {"GroupId": "sg-all"}],
   "PrivateIpAddress": "192.0.2.5",
   "PrivateIpAddresses": [{"Primary": true, "PrivateIpAddress": "192.0.2.5", "Association": {"PublicIp": "198.51.100.7"}},
                          {"Primary": false, "PrivateIpAddress": "192.0.2.6"}],
   "Ipv6Addresses": [{"Ipv6Address": "2001:db8::5"}],
   "Ipv4Prefixes": [{"Ipv4Prefix": "192.0.2.17/28"}], "Ipv6Prefixes": [{"Ipv6Prefix": "2001:db8:1::/80"}]}
]}"#;

    #[test]
    fn interfaces_give_private_addresses_and_prefixes() {
        let mut w = Vec::new();
        let enis = network_interfaces("enis.json", ENIS, &mut w).unwrap();
        let addrs: Vec<&str> = enis[0].addrs.iter().map(|a| a.v.as_str()).collect();
        assert_eq!(addrs, ["192.0.2.5", "192.0.2.6", "2001:db8::5", "192.0.2.16/28", "2001:db8:1::/80"]);
        assert_eq!(enis[0].groups, ["sg-web", "sg-all"]);
        assert_eq!(w.len(), 1, "the prefix with host bits: {w:?}");
        assert_eq!(w[0].loc.line, 7, "the line of Ipv4Prefixes");
        let e = network_interfaces("x.json", "{\"SecurityGroups\": []}", &mut w).unwrap_err();
        assert!(e.to_string().contains("not the output of `aws ec2 describe-network-interfaces`"), "{e}");
    }

    #[test]
    fn prefix_list_shapes() {
        let mut w = Vec::new();
        let entries = PrefixListInput {
            id: Some("pl-1".into()),
            file: "e.json".into(),
            text:
                r#"{"Entries": [{"Cidr": "198.51.100.0/24"}, {"Cidr": "203.0.113.0/28", "Description": "x"}]}"#
                    .into(),
        };
        let got = prefix_lists(&entries, &mut w).unwrap();
        assert_eq!(got[0].0, "pl-1");
        assert_eq!(got[0].1.len(), 2);
        let no_id = PrefixListInput { id: None, ..entries.clone() };
        assert!(prefix_lists(&no_id, &mut w).unwrap_err().to_string().contains("--prefix-lists pl-ID=FILE"));
        let managed = PrefixListInput {
            id: None,
            file: "p.json".into(),
            text: r#"{"PrefixLists": [{"PrefixListId": "pl-63a5400a", "PrefixListName": "com.amazonaws.us-east-1.s3", "Cidrs": ["203.0.113.0/24"]},
                                     {"PrefixListId": "pl-2", "PrefixListName": "mine", "MaxEntries": 5}]}"#
                .into(),
        };
        let e = prefix_lists(&managed, &mut w).unwrap_err().to_string();
        assert!(e.starts_with("p.json:2:"), "at the list without entries: {e}");
        assert!(e.contains("get-managed-prefix-list-entries --prefix-list-id pl-2 > pl-2.json"), "{e}");
        let aws_managed = PrefixListInput {
            text: r#"{"PrefixLists": [{"PrefixListId": "pl-63a5400a", "Cidrs": ["203.0.113.0/24"]}]}"#.into(),
            ..managed
        };
        let got = prefix_lists(&aws_managed, &mut w).unwrap();
        assert_eq!(got[0].1.len(), 1);
    }
}
