//! AWS JSON as operators have it. `tests/fixtures/aws/quirks/` holds our own files of what
//! real outputs taught ([`OWN_ROWS`]); `../shared/fixtures/real/`, beside the repository when
//! present, holds describe-* output written by others (recorded AWS responses, published
//! samples; provenance in its SOURCES.md), an extra check ([`ROWS`]; absent under CI=true: a
//! failure). Every file has a row saying what it must give (groups, rules, warnings) or the
//! exact error, so that adding a file means adding a row. Each importable row must also
//! survive `export aws` -> `import aws` unchanged and compile; the privileged test applies
//! each one to an interface in a namespace and checks `export nft` with `nft -c -f`.
//!
//! `tests/fixtures/aws/` holds inputs written from AWS's documented formats: network
//! interfaces (members), prefix-list entries, and the rule-centred
//! `describe-security-group-rules` shape of `describe-security-groups.json`.

use std::path::PathBuf;

use sg_common::Direction::Ingress;
use sg_tests::{
    netns::{NetnsPair, Side},
    packet::Pkt,
    policy::{apply, recording_instance},
    require_bpf,
    verdict::{Row as Verdict, run_table},
    write_temp,
};
use sg_userspace::rules::{
    AwsContext, Format, Loaded, RuleErrors, RuleSet, aws, aws_export, check_diagnostics, compile,
    parse_with_warnings,
};

fn real_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/real")
}

fn own(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/aws").join(name)
}

/// Inputs beside the rules file (paths relative to the real fixtures, `own:` for ours).
#[derive(Clone, Copy, Default)]
struct Inputs {
    members: Option<&'static str>,
    network_interfaces: &'static [&'static str],
    /// `[pl-id=]FILE`.
    prefix_lists: &'static [&'static str],
    /// The group token bound to the interface (`--bind IF=TOKEN`).
    bind: &'static str,
    /// `describe-network-acls` outputs (`--network-acls`).
    network_acls: &'static [&'static str],
}

enum Expect {
    Imports {
        groups: usize,
        rules: usize,
        warnings: &'static [&'static str],
    },
    /// The first line of the error, exactly, and how many lines it has.
    Rejected(&'static str, usize),
}

struct Row {
    file: &'static str,
    inputs: Inputs,
    expect: Expect,
}

const NO_MEMBERS: &str = "is referenced but no input lists its members: it matches nothing until they come from --network-interfaces or --members";

const ROWS: &[Row] = &[
    Row {
        file: "awsdocs-elb-describe-security-groups-fragment-1.json",
        inputs: Inputs { bind: "unnamed-1", ..NONE },
        expect: Expect::Rejected(
            "awsdocs-elb-describe-security-groups-fragment-1.json:11:25: group sg-5a9c116a of another account (UserId amazon-elb) is referenced: AWS does not list its members to this account; give them with --members FILE ([groups.\"sg-5a9c116a\"] members = [...])",
            1,
        ),
    },
    Row {
        file: "awsdocs-elb-describe-security-groups-fragment-1.json",
        inputs: Inputs {
            members: Some("[groups.sg-5a9c116a]\nmembers = [\"203.0.113.0/26\"]\n"),
            bind: "unnamed-1",
            ..NONE
        },
        // 3 permissions; no IpPermissionsEgress: AWS's default egress (v4 and v6 allow-all).
        expect: Expect::Imports {
            groups: 2,
            rules: 5,
            warnings: &["security group without GroupId or GroupName: named unnamed-1"],
        },
    },
    Row {
        file: "awsdocs-vpc-peering-describe-stale-security-groups-1.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "awsdocs-vpc-peering-describe-stale-security-groups-1.json:1:1: describe-stale-security-groups output lists only a group's stale rules, not the group: import describe-security-groups output",
            1,
        ),
    },
    Row {
        file: "custodian-test_appelb_add_security_group-1.json",
        inputs: Inputs { bind: "sg-01a19f602ecaf25f4", ..NONE },
        expect: Expect::Imports {
            groups: 3,
            rules: 8,
            warnings: &[
                ":12:39: host bits set in 192.168.0.1/31: AWS stores and enforces its network 192.168.0.0/31, which is used",
                "group sg_controllers is referenced but no input",
                "prefix list pl-63a5400b has no known entries",
            ],
        },
    },
    Row {
        file: "custodian-test_appelb_add_security_group-1.json",
        inputs: Inputs {
            prefix_lists: &[
                "pl-63a5400b=custodian-test_prefix_list_entry-get-managed-prefix-list-entries-1.json",
            ],
            bind: "sg-01a19f602ecaf25f4",
            ..NONE
        },
        expect: Expect::Imports {
            groups: 3,
            rules: 8,
            warnings: &["host bits set in 192.168.0.1/31", "group sg_controllers is referenced but no input"],
        },
    },
    // describe-managed-prefix-lists names lists without their entries: accepted, they would
    // match nothing without a word, so the file is refused with the command that gives them.
    Row {
        file: "custodian-test_appelb_add_security_group-1.json",
        inputs: Inputs {
            prefix_lists: &[
                "pl-63a5400b=custodian-test_prefix_list_entry-get-managed-prefix-list-entries-1.json",
                "custodian-test_prefix_list_entry-describe-managed-prefix-lists-1.json",
            ],
            bind: "sg-01a19f602ecaf25f4",
            ..NONE
        },
        expect: Expect::Rejected(
            "custodian-test_prefix_list_entry-describe-managed-prefix-lists-1.json:3:9: prefix list pl-02d12d37020480a5f comes without its entries (describe-managed-prefix-lists lists only ids and names): give them with `aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-02d12d37020480a5f > pl-02d12d37020480a5f.json` and --prefix-lists pl-02d12d37020480a5f=pl-02d12d37020480a5f.json",
            1,
        ),
    },
    Row {
        file: "custodian-test_network_acl_s3_missing-describe-network-acls-2.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "custodian-test_network_acl_s3_missing-describe-network-acls-2.json:1:1: describe-network-acls output: give it with --network-acls FILE beside the security groups (and bind with --bind IFACE=GROUPS,acl-ID)",
            1,
        ),
    },
    Row {
        file: "custodian-test_prefix_list_entry-describe-managed-prefix-lists-1.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "custodian-test_prefix_list_entry-describe-managed-prefix-lists-1.json:1:1: prefix-list output: give it with --prefix-lists FILE beside the security groups",
            1,
        ),
    },
    Row {
        file: "custodian-test_prefix_list_entry-get-managed-prefix-list-entries-1.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "custodian-test_prefix_list_entry-get-managed-prefix-list-entries-1.json:1:1: get-managed-prefix-list-entries output: give it with --prefix-lists PL-ID=FILE beside the security groups",
            1,
        ),
    },
    Row {
        file: "custodian-test_security_group_self_reference-2.json",
        inputs: Inputs { bind: "sg-4b9ada34", ..NONE },
        // 3 VPCs, several groups named `default`: those are named by their GroupId.
        expect: Expect::Imports {
            groups: 42,
            rules: 81,
            warnings: &["group sg1 ", "group sg-4b9ada34 ", "group sg-6c7fa917 ", "group sg-d89b2ea9 "],
        },
    },
    Row {
        file: "custodian-test_security_group_self_reference-2.json",
        inputs: Inputs { bind: "default", ..NONE },
        expect: Expect::Rejected(
            "--bind:1:1: --bind veth=default: group name 'default' is ambiguous: it names sg-4b9ada34 in vpc-f1516b97, sg-6c7fa917 in vpc-d2d616b5, sg-d89b2ea9 in vpc-b2c27acb (use the GroupId)",
            1,
        ),
    },
    Row {
        file: "custodian-test_security_group_stale-1.json",
        inputs: Inputs { bind: "sg-dd8134ac", ..NONE },
        expect: Expect::Rejected(
            "custodian-test_security_group_stale-1.json:26:25: group sg-e9843198 is referenced but not described: add its describe-security-groups output, or give them with --members FILE ([groups.\"sg-e9843198\"] members = [...]) or --network-interfaces FILE",
            1,
        ),
    },
    Row {
        file: "custodian-test_security_group_stale-1.json",
        inputs: Inputs {
            members: Some("[groups.sg-e9843198]\nmembers = [\"198.51.100.64/26\"]\n"),
            bind: "sg-dd8134ac",
            ..NONE
        },
        expect: Expect::Imports { groups: 2, rules: 2, warnings: &[] },
    },
    Row {
        file: "custodian-test_security_group_used-1.json",
        inputs: Inputs { bind: "sg-13de8f75", ..NONE },
        expect: Expect::Imports {
            groups: 7,
            rules: 12,
            warnings: &["group sg-13de8f75 ", "group sg-ce548cb7 "],
        },
    },
    Row {
        file: "custodian-test_sg_config_patch_pitr-1.json",
        inputs: Inputs { bind: "sg-10eeb66d", ..NONE },
        expect: Expect::Imports {
            groups: 10,
            rules: 25,
            warnings: &[
                "group allow-access ",
                "group sg-10eeb66d ",
                "group sg-6c7fa917 ",
                "group sg-a08ed1dd ",
            ],
        },
    },
    Row {
        file: "custodian-test_timestream_influxdb_cluster_subnet_sg-1.json",
        inputs: Inputs { bind: "default", ..NONE },
        expect: Expect::Imports { groups: 1, rules: 21, warnings: &["group default "] },
    },
    Row {
        file: "sgviz-describe-security-groups-sample.json",
        inputs: Inputs { bind: "test-sg-1", ..NONE },
        expect: Expect::Imports {
            groups: 4,
            rules: 10,
            warnings: &[
                "group test-sg-1 ",
                "group default ",
                "prefix list pl-00ee65e523c87193e has no known entries",
            ],
        },
    },
    Row {
        file: "sgviz-describe-security-groups-skeleton.json",
        inputs: Inputs { bind: "GroupId", ..NONE },
        expect: Expect::Rejected(
            "sgviz-describe-security-groups-skeleton.json:9:35: unknown protocol 'IpProtocol' (tcp, udp, icmp, icmpv6, all, -1 or 0-255)",
            6,
        ),
    },
];

const NONE: Inputs =
    Inputs { members: None, network_interfaces: &[], prefix_lists: &[], bind: "", network_acls: &[] };

fn input_path(name: &str) -> PathBuf {
    match name.strip_prefix("own:") {
        Some(n) => own(n),
        None => real_dir().join(name),
    }
}

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn context(inputs: &Inputs, iface: &str) -> AwsContext {
    AwsContext {
        bindings: if inputs.bind.is_empty() {
            Vec::new()
        } else {
            vec![format!("{iface}={}", inputs.bind).parse().expect("a binding")]
        },
        members: inputs.members.map(|m| ("members.toml".to_string(), m.to_string())),
        network_interfaces: inputs
            .network_interfaces
            .iter()
            .map(|n| {
                let p = input_path(n);
                (n.to_string(), read(&p))
            })
            .collect(),
        prefix_lists: inputs
            .prefix_lists
            .iter()
            .map(|arg| {
                let (id, n) = match arg.split_once('=') {
                    Some((id, n)) => (Some(id.to_string()), n),
                    None => (None, *arg),
                };
                aws::PrefixListInput { id, file: n.to_string(), text: read(&input_path(n)) }
            })
            .collect(),
        network_acls: inputs.network_acls.iter().map(|n| (n.to_string(), read(&input_path(n)))).collect(),
    }
}

fn import(name: &str, text: &str, ctx: &AwsContext) -> Result<Loaded, RuleErrors> {
    parse_with_warnings(name, text, Format::Aws, ctx)
}

fn rule_count(rs: &RuleSet) -> usize {
    rs.groups.iter().map(|g| g.ingress.len() + g.egress.len()).sum()
}

/// A rule set compared across a round trip: AWS JSON always lists egress, so a group with
/// AWS's default egress comes back with the same rules written out.
fn comparable(rs: &RuleSet) -> RuleSet {
    let mut rs = rs.without_locations();
    for g in &mut rs.groups {
        if g.default_egress {
            // One implicit line: both rules count as its index 0.
            for (i, r) in g.egress.iter_mut().enumerate() {
                r.index = i;
            }
        }
        g.default_egress = false;
    }
    rs
}

/// The real directory: present beside the repository; with `CI=true` its absence fails.
fn real_files() -> Option<Vec<String>> {
    let dir = real_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{} missing (CI=true)", dir.display());
        eprintln!("SKIP: {} missing", dir.display());
        return None;
    };
    let mut files: Vec<String> = entries
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| std::path::Path::new(n).extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Some(files)
}

/// The path of a row's file: `own:` in `tests/fixtures/aws/`, else in the real directory.
fn row_path(row: &Row) -> PathBuf {
    input_path(row.file)
}

/// What `row` says its file gives, checked: the groups, rules and warnings of an import (which
/// also compiles and survives `export aws` -> `import aws`), or the exact error.
fn check_row(row: &Row) {
    let text = read(&row_path(row));
    let name = row.file.strip_prefix("own:quirks/").unwrap_or(row.file);
    let ctx = context(&row.inputs, "veth");
    let got = import(name, &text, &ctx);
    match (&row.expect, got) {
        (Expect::Imports { groups, rules, warnings }, Ok(l)) => {
            assert_eq!(l.rules.groups.len(), *groups, "{}: groups", row.file);
            assert_eq!(rule_count(&l.rules), *rules, "{}: rules", row.file);
            let said: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
            assert_eq!(said.len(), warnings.len(), "{}: warnings {said:#?}", row.file);
            for (w, want) in said.iter().zip(warnings.iter()) {
                assert!(w.contains(want), "{}: warning `{w}` should contain `{want}`", row.file);
                assert!(w.starts_with(&format!("{name}:")), "a warning names file:line: {w}");
            }
            if warnings.iter().any(|w| w.contains("is referenced but no input")) {
                assert!(said.iter().any(|w| w.contains(NO_MEMBERS)), "{said:?}");
            }
            compile::compile(&l.rules).unwrap_or_else(|e| panic!("{}: does not compile: {e}", row.file));
            // export aws -> import aws: the same rule set.
            let exported = serde_json::to_string_pretty(&aws_export::export(&l.rules)).unwrap();
            let again = import("exported.json", &exported, &ctx)
                .unwrap_or_else(|e| panic!("{}: export does not import: {e}\n{exported}", row.file));
            assert_eq!(comparable(&again.rules), comparable(&l.rules), "{}: round trip differs", row.file);
        }
        (Expect::Rejected(first, lines), Err(e)) => {
            check_diagnostics(&e);
            let msg = e.to_string();
            assert_eq!(msg.lines().next().unwrap(), *first, "{}", row.file);
            assert_eq!(msg.lines().count(), *lines, "{}: {msg}", row.file);
        }
        (Expect::Imports { .. }, Err(e)) => panic!("{} must import: {e}", row.file),
        (Expect::Rejected(..), Ok(_)) => panic!("{} must be rejected", row.file),
    }
}

#[test]
fn every_real_file_gives_what_its_row_says() {
    let Some(files) = real_files() else { return };
    for f in &files {
        assert!(ROWS.iter().any(|r| r.file == f), "{f} has no row in ROWS: add what it must give");
    }
    for row in ROWS {
        assert!(files.iter().any(|f| f == row.file), "row for {} but no such file", row.file);
        check_row(row);
    }
}

/// Our own files of what the real ones taught (`tests/fixtures/aws/quirks/`, written with
/// documentation addresses and made-up ids), so that a clone tests every quirk without the
/// third-party files: several VPCs whose groups are all named `default`, self references, a
/// top-level `ResponseMetadata`, unknown keys (`SecurityGroupArn`, `Tags`, `NextToken`), host
/// bits set, a referenced group without members, a prefix list without entries, active and
/// deleted peering pairs, a group without GroupId and GroupName or IpPermissionsEgress,
/// another account's group (`amazon-elb`), the CLI's `--generate-cli-skeleton` placeholders,
/// and the outputs that are not a rules file.
const OWN_ROWS: &[Row] = &[
    Row {
        file: "own:quirks/several-vpcs.json",
        inputs: Inputs { bind: "sg-0def000000000000a", ..NONE },
        // Three groups named `default` (one per VPC): each named by its GroupId.
        expect: Expect::Imports {
            groups: 4,
            rules: 8,
            warnings: &["group sg-0def000000000000a ", "group sg-0def000000000000b "],
        },
    },
    Row {
        file: "own:quirks/several-vpcs.json",
        inputs: Inputs { bind: "default", ..NONE },
        expect: Expect::Rejected(
            "--bind:1:1: --bind veth=default: group name 'default' is ambiguous: it names sg-0def000000000000a in vpc-0aaaaaaaaaaaaaaaa, sg-0def000000000000b in vpc-0bbbbbbbbbbbbbbbb, sg-0def000000000000c in vpc-0cccccccccccccccc (use the GroupId)",
            1,
        ),
    },
    Row {
        file: "own:quirks/host-bits.json",
        inputs: Inputs { bind: "web-tier", ..NONE },
        expect: Expect::Imports {
            groups: 2,
            rules: 4,
            warnings: &[
                ":10:47: host bits set in 192.0.2.1/31: AWS stores and enforces its network 192.0.2.0/31, which is used",
                "group controllers is referenced but no input",
                "prefix list pl-0aaaaaaaaaaaaaaaa has no known entries",
            ],
        },
    },
    Row {
        file: "own:quirks/host-bits.json",
        inputs: Inputs {
            prefix_lists: &["pl-0aaaaaaaaaaaaaaaa=own:quirks/pl-offices-entries.json"],
            bind: "web-tier",
            ..NONE
        },
        expect: Expect::Imports {
            groups: 2,
            rules: 4,
            warnings: &["host bits set in 192.0.2.1/31", "group controllers is referenced but no input"],
        },
    },
    Row {
        file: "own:quirks/host-bits.json",
        inputs: Inputs {
            prefix_lists: &["own:quirks/describe-managed-prefix-lists.json"],
            bind: "web-tier",
            ..NONE
        },
        expect: Expect::Rejected(
            "own:quirks/describe-managed-prefix-lists.json:3:9: prefix list pl-0aaaaaaaaaaaaaaaa comes without its entries (describe-managed-prefix-lists lists only ids and names): give them with `aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-0aaaaaaaaaaaaaaaa > pl-0aaaaaaaaaaaaaaaa.json` and --prefix-lists pl-0aaaaaaaaaaaaaaaa=pl-0aaaaaaaaaaaaaaaa.json",
            1,
        ),
    },
    Row {
        file: "own:quirks/stale-pairs.json",
        inputs: Inputs { bind: "apps", ..NONE },
        expect: Expect::Rejected(
            "stale-pairs.json:15:25: group sg-0peered000000001 is referenced but not described: add its describe-security-groups output, or give them with --members FILE ([groups.\"sg-0peered000000001\"] members = [...]) or --network-interfaces FILE",
            1,
        ),
    },
    Row {
        file: "own:quirks/stale-pairs.json",
        inputs: Inputs {
            members: Some("[groups.sg-0peered000000001]\nmembers = [\"198.51.100.64/26\"]\n"),
            bind: "apps",
            ..NONE
        },
        // The deleted peering's pair allows nothing (as in AWS): warned and skipped.
        expect: Expect::Imports {
            groups: 2,
            rules: 3,
            warnings: &[
                "stale reference to group sg-0gone00000000001: its VPC peering connection is deleted",
            ],
        },
    },
    Row {
        file: "own:quirks/no-ids-foreign-account.json",
        inputs: Inputs { bind: "unnamed-1", ..NONE },
        expect: Expect::Rejected(
            "no-ids-foreign-account.json:11:25: group sg-0e1b000000000001 of another account (UserId amazon-elb) is referenced: AWS does not list its members to this account; give them with --members FILE ([groups.\"sg-0e1b000000000001\"] members = [...])",
            1,
        ),
    },
    Row {
        file: "own:quirks/no-ids-foreign-account.json",
        inputs: Inputs {
            members: Some("[groups.sg-0e1b000000000001]\nmembers = [\"203.0.113.0/26\"]\n"),
            bind: "unnamed-1",
            ..NONE
        },
        // No IpPermissionsEgress: AWS's default egress (v4 and v6 allow-all).
        expect: Expect::Imports {
            groups: 2,
            rules: 4,
            warnings: &["security group without GroupId or GroupName: named unnamed-1"],
        },
    },
    Row {
        file: "own:quirks/skeleton.json",
        inputs: Inputs { bind: "GroupId", ..NONE },
        expect: Expect::Rejected(
            "skeleton.json:9:35: unknown protocol 'IpProtocol' (tcp, udp, icmp, icmpv6, all, -1 or 0-255)",
            3,
        ),
    },
    Row {
        file: "own:quirks/describe-stale-security-groups.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "describe-stale-security-groups.json:1:1: describe-stale-security-groups output lists only a group's stale rules, not the group: import describe-security-groups output",
            1,
        ),
    },
    Row {
        file: "own:quirks/describe-managed-prefix-lists.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "describe-managed-prefix-lists.json:1:1: prefix-list output: give it with --prefix-lists FILE beside the security groups",
            1,
        ),
    },
    Row {
        file: "own:quirks/pl-offices-entries.json",
        inputs: NONE,
        expect: Expect::Rejected(
            "pl-offices-entries.json:1:1: get-managed-prefix-list-entries output: give it with --prefix-lists PL-ID=FILE beside the security groups",
            1,
        ),
    },
    Row {
        file: "own:quirks/authorize-security-group-ingress.json",
        inputs: Inputs { bind: "sg-0webtier000000001", ..NONE },
        expect: Expect::Rejected(
            "authorize-security-group-ingress.json:1:1: output of authorize- or revoke-security-group-ingress/-egress: a change to a group (the rules it added or removed), not the group; import `aws ec2 describe-security-groups --group-ids ID` or `aws ec2 describe-security-group-rules --filters Name=group-id,Values=ID` instead",
            1,
        ),
    },
];

#[test]
fn every_own_quirk_file_gives_what_its_row_says() {
    let dir = own("quirks");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for f in &files {
        let file = format!("own:quirks/{f}");
        assert!(OWN_ROWS.iter().any(|r| r.file == file), "{f} has no row in OWN_ROWS: add what it must give");
    }
    for row in OWN_ROWS {
        check_row(row);
    }
}

#[test]
fn stale_pairs_are_warned_and_allow_nothing() {
    // The stale pair of describe-stale-security-groups, inside a describe-security-groups group.
    let text = r#"{"SecurityGroups": [{"GroupId": "sg-aaaa1111", "GroupName": "Access1", "VpcId": "vpc-aaaaaaaa",
      "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [
        {"VpcId": "vpc-bbbbbbbb", "PeeringStatus": "deleted", "UserId": "123456789101", "GroupName": "Prod1",
         "VpcPeeringConnectionId": "pcx-b04deed9", "GroupId": "sg-bbbb2222"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}],
      "IpPermissionsEgress": []}]}"#;
    let l = import("stale.json", text, &AwsContext::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0].to_string().starts_with("stale.json:3:9: stale reference to group sg-bbbb2222"),
        "{}",
        l.warnings[0]
    );
    let g = l.rules.group("Access1").unwrap();
    assert_eq!(g.ingress.len(), 1, "only the CIDR rule remains");
    assert!(l.rules.group("sg-bbbb2222").is_none(), "the stale group is not added");
}

/// Our own fixtures' members and prefix-list entries, with group web bound.
const OWN_INPUTS: Inputs = Inputs {
    network_interfaces: &[
        "own:describe-network-interfaces.json",
        "own:describe-network-interfaces-bastion.json",
    ],
    prefix_lists: &["pl-0office00000001=own:get-managed-prefix-list-entries.json"],
    bind: "web",
    ..NONE
};

#[test]
fn members_come_from_network_interfaces_and_entries_from_prefix_lists() {
    let text = read(&own("describe-security-groups.json"));
    let l = import("sg.json", &text, &context(&OWN_INPUTS, "eth0")).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let members = |g: &str| -> Vec<String> {
        l.rules.group(g).unwrap().members.iter().map(ToString::to_string).collect()
    };
    // Private addresses, IPv6 addresses and delegated prefixes; never the public address
    // (198.51.100.200) of the association.
    assert_eq!(
        members("web"),
        [
            "192.0.2.1/32",
            "192.0.2.2/32",
            "192.0.2.16/28",
            "198.51.100.10/32",
            "2001:db8::1/128",
            "2001:db8:0:1::/80"
        ]
    );
    assert_eq!(members("db"), ["198.51.100.10/32", "2001:db8:0:1::/80"]);
    assert_eq!(members("bastion"), ["203.0.113.7/32"]);
    let office = l.rules.prefix_lists.iter().find(|p| p.name == "pl-0office00000001").unwrap();
    assert_eq!(
        office.entries.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["203.0.113.0/28", "2001:db8:ffff::/48"]
    );
    // describe-prefix-lists (AWS-managed lists with Cidrs) names its lists itself.
    let with_s3 = text.replace("pl-0office00000001", "pl-63a5400a");
    let ctx = context(&Inputs { prefix_lists: &["own:describe-prefix-lists.json"], ..NONE }, "eth0");
    let l = import("sg.json", &with_s3, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let s3 = l.rules.prefix_lists.iter().find(|p| p.name == "pl-63a5400a").unwrap();
    assert_eq!(s3.entries.len(), 2);
    // A group on none of the given interfaces has no members, without a warning.
    let only_bastion = context(
        &Inputs { network_interfaces: &["own:describe-network-interfaces-bastion.json"], ..NONE },
        "eth0",
    );
    let l = import("sg.json", &text, &only_bastion).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.rules.group("web").unwrap().members.is_empty());
    assert_eq!(l.warnings.len(), 1, "only the prefix list: {:?}", l.warnings);
}

/// The README's operator path, from the three aws CLI outputs to verdicts of the real
/// programs: group references match the private addresses and delegated prefixes of the
/// interfaces in the group (never an association's public address), prefix-list entries
/// come from `get-managed-prefix-list-entries` given as `PL-ID=FILE`.
#[test]
fn three_aws_outputs_give_an_enforcing_host() {
    if !require_bpf("three_aws_outputs_give_an_enforcing_host") {
        return;
    }
    let text = read(&own("describe-security-groups.json"));
    let l = import("sg.json", &text, &context(&OWN_INPUTS, "eth0")).unwrap_or_else(|e| panic!("{e}"));
    let rules = l.rules.iface_rules("eth0");
    let id = |desc: &str| -> u32 {
        let i = rules.iter().position(|r| r.rule.description.as_deref() == Some(desc));
        u32::try_from(i.unwrap_or_else(|| panic!("no rule '{desc}'"))).unwrap()
    };
    let mut inst = recording_instance();
    apply(&mut inst, &l.rules, "eth0", 1);
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let tcp = |src: &str, dport: u16| {
        let src = ip(src);
        let dst = if src.is_ipv6() { ip("2001:db8::1") } else { ip("192.0.2.1") };
        Pkt::tcp(src, dst, 40000, dport).syn().build()
    };
    let (a, d) = (Verdict::allow, Verdict::deny);
    let rows = [
        a(
            "ssh from the bastion's private address",
            Ingress,
            tcp("203.0.113.7", 22),
            id("SSH from the bastion"),
        ),
        d("ssh from a neighbour of the bastion", Ingress, tcp("203.0.113.8", 22)),
        a(
            "any port from a web member (private v4)",
            Ingress,
            tcp("192.0.2.2", 5000),
            id("members talk to each other"),
        ),
        a(
            "from a web member's delegated prefix",
            Ingress,
            tcp("192.0.2.30", 5000),
            id("members talk to each other"),
        ),
        a(
            "from a web member's v6 delegated prefix",
            Ingress,
            tcp("2001:db8:0:1::9", 5000),
            id("members talk to each other"),
        ),
        d("from a web member's public address (not a member)", Ingress, tcp("198.51.100.200", 5000)),
        a(
            "metrics from the office prefix list (v4)",
            Ingress,
            tcp("203.0.113.5", 9100),
            id("metrics from the office"),
        ),
        a(
            "metrics from the office prefix list (v6)",
            Ingress,
            tcp("2001:db8:ffff::5", 9100),
            id("metrics from the office"),
        ),
        d("metrics from outside the office", Ingress, tcp("203.0.113.20", 9100)),
    ];
    assert_eq!(run_table(&mut inst, "three aws outputs", &rows), rows.len());
}

#[test]
fn describe_security_group_rules_means_the_same_as_describe_security_groups() {
    let ctx =
        AwsContext { members: Some(("m.toml".into(), read(&own("members.toml")))), ..AwsContext::default() };
    let by_groups = import("sg.json", &read(&own("describe-security-groups.json")), &ctx)
        .unwrap_or_else(|e| panic!("{e}"));
    let by_rules = import("rules.json", &read(&own("describe-security-group-rules.json")), &ctx)
        .unwrap_or_else(|e| panic!("{e}"));
    // The rules shape has no GroupName or Description: compare everything else.
    let meaning = |rs: &RuleSet| {
        let v = serde_json::to_value(aws_export::export(rs)).unwrap();
        aws_export::meaning(&v).into_iter().filter(|m| !m.contains(" name=")).collect::<Vec<_>>()
    };
    assert_eq!(meaning(&by_rules.rules), meaning(&by_groups.rules));
    assert_eq!(rule_count(&by_rules.rules), rule_count(&by_groups.rules));
    assert_eq!(by_rules.rules.group("sg-0web000000000001").unwrap().ingress.len(), 8);
}

#[test]
fn bad_input_is_one_line_with_its_location() {
    let good = read(&own("describe-security-groups.json"));
    let ctx =
        AwsContext { members: Some(("m.toml".into(), read(&own("members.toml")))), ..AwsContext::default() };
    let cases: [(&str, String, &str); 4] = [
        ("truncated", good[..good.len() / 2].to_string(), "EOF while parsing"),
        (
            "a port as a string",
            good.replacen("\"FromPort\": 443", "\"FromPort\": \"443\"", 1),
            "invalid type",
        ),
        (
            "ports with protocol -1",
            good.replacen("\"IpProtocol\": \"tcp\"", "\"IpProtocol\": \"-1\"", 1),
            "given for protocol -1",
        ),
        ("not JSON", "SecurityGroups:\n  - GroupId: sg-1\n".to_string(), "expected value"),
    ];
    for (what, text, want) in cases {
        let e = import("bad.json", &text, &ctx).err().unwrap_or_else(|| panic!("{what}: accepted"));
        check_diagnostics(&e);
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "{what}: {msg}");
        assert!(msg.starts_with("bad.json:") && msg.contains(want), "{what}: {msg}");
    }
}

/// Every importable row applied to an interface in a namespace (through the CLI, with its
/// input files), and its `export nft` checked by nftables itself.
#[test]
fn every_importable_file_applies_and_exports_to_nftables() {
    if !require_bpf("every_importable_file_applies_and_exports_to_nftables") {
        return;
    }
    // Our own quirk files always; the real ones when present (their absence fails under CI).
    let real: &[Row] = if real_files().is_some() { ROWS } else { &[] };
    let rows: Vec<&Row> = OWN_ROWS.iter().chain(real).collect();
    let pair = NetnsPair::new();
    let mut applied = 0;
    for (i, row) in rows.iter().enumerate() {
        if !matches!(row.expect, Expect::Imports { .. }) {
            continue;
        }
        let file = row_path(row).display().to_string();
        let bind = format!("{}={}", pair.if_a, row.inputs.bind);
        let mut args: Vec<String> = vec!["--format".into(), "aws".into(), file, "--bind".into(), bind];
        if let Some(m) = row.inputs.members {
            args.extend([
                "--members".into(),
                write_temp(&format!("members-{i}.toml"), m).display().to_string(),
            ]);
        }
        for n in row.inputs.network_interfaces {
            args.extend(["--network-interfaces".into(), input_path(n).display().to_string()]);
        }
        for p in row.inputs.prefix_lists {
            let arg = match p.split_once('=') {
                Some((id, n)) => format!("{id}={}", input_path(n).display()),
                None => input_path(p).display().to_string(),
            };
            args.extend(["--prefix-lists".into(), arg]);
        }
        let with = |cmd: &[&str]| -> Vec<String> {
            cmd.iter().map(|s| (*s).to_string()).chain(args.clone()).collect()
        };
        let apply = with(&["apply"]);
        let out = pair.sgctl(Side::A, &apply.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}: apply: {}", row.file, String::from_utf8_lossy(&out.stderr));
        let st = pair.status_json();
        let ifaces = st["interfaces"].as_array().unwrap();
        assert_eq!(ifaces.len(), 1, "{}: {st}", row.file);
        let export = with(&["export", "nft"]);
        let script = pair.sgctl_ok(Side::A, &export.iter().map(String::as_str).collect::<Vec<_>>());
        let nft_file = write_temp(&format!("real-{i}.nft"), &script);
        let out = pair.cmd(Side::A, "nft", &["-c", "-f", &nft_file.display().to_string()]);
        assert!(out.status.success(), "{}: nft -c: {}", row.file, String::from_utf8_lossy(&out.stderr));
        applied += 1;
    }
    let importable = rows.iter().filter(|r| matches!(r.expect, Expect::Imports { .. })).count();
    assert_eq!(applied, importable);
    assert!(applied >= 5, "{applied} rows applied");
}

/// `describe-network-acls` beside the groups (`--network-acls`, `--bind IF=GROUPS,acl-ID`):
/// ours (every entry field, both families, AWS's final rules 32767/32768 left to the implicit
/// deny, a CIDR with host bits warned about) and the recorded default ACL of a real VPC.
#[test]
fn network_acls_come_with_network_acls_and_bind_by_id() {
    let sg = read(&own("describe-security-groups.json"));
    let ctx = |acls: &str, bind: &str| AwsContext {
        members: Some(("m.toml".into(), read(&own("members.toml")))),
        network_acls: vec![(acls.to_string(), read(&input_path(acls)))],
        bindings: vec![format!("eth0={bind}").parse().expect("a binding")],
        ..AwsContext::default()
    };
    let l = import("sg.json", &sg, &ctx("own:describe-network-acls.json", "web,acl-0pub000000000001"))
        .unwrap_or_else(|e| panic!("{e}"));
    let acl = l.rules.iface_acl("eth0").expect("bound by its id");
    assert_eq!(
        (acl.aws_id.as_deref(), acl.aws_vpc.as_deref()),
        (Some("acl-0pub000000000001"), Some("vpc-0a1b2c3d4e5f00001"))
    );
    let numbers = |d| acl.entries(d).iter().map(|e| e.number).collect::<Vec<_>>();
    assert_eq!(numbers(sg_userspace::rules::Dir::Ingress), vec![90, 100, 101, 110, 120, 130, 140]);
    assert_eq!(
        numbers(sg_userspace::rules::Dir::Egress),
        vec![100, 101],
        "32767 and 32768 are the implicit deny"
    );
    let said: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert!(said.iter().any(|w| w.contains("host bits set in 198.51.100.7/24")), "{said:?}");
    let text = sg_userspace::rules::toml_out::to_toml(&l.rules);
    assert!(text.contains("{ rule = 120, action = \"allow\", proto = \"icmp\", icmp_type = 3, icmp_code = 4, cidr = \"0.0.0.0/0\" }"), "{text}");
    assert!(
        text.contains("{ rule = 130, action = \"allow\", proto = \"icmpv6\", cidr = \"::/0\" }"),
        "{text}"
    );
    compile::compile(&l.rules).expect("compiles");
    // export aws-acls -> --network-acls: the same ACLs.
    let exported = serde_json::to_string_pretty(&aws::nacl::export(&l.rules)).unwrap();
    let back = AwsContext {
        network_acls: vec![("acls.json".into(), exported.clone())],
        ..ctx("own:describe-network-acls.json", "web,acl-0pub000000000001")
    };
    let again = import("sg.json", &sg, &back).unwrap_or_else(|e| panic!("{e}\n{exported}"));
    assert_eq!(again.rules.without_locations().acls, l.rules.without_locations().acls, "{exported}");

    let real = "custodian-test_network_acl_s3_missing-describe-network-acls-2.json";
    let l = import("sg.json", &sg, &ctx(real, "web,acl-6c9db915")).unwrap_or_else(|e| panic!("{e}"));
    let acl = l.rules.iface_acl("eth0").expect("bound");
    assert_eq!(acl.ingress.len(), 1, "100 allow all; 32767 is the implicit deny");
    assert!(acl.egress.is_empty(), "this recorded ACL lists no egress allow: all egress is denied");

    let err = import("sg.json", &sg, &ctx(real, "web,acl-6c9db915,acl-6c9db915")).unwrap_err().to_string();
    assert!(err.contains("an interface has at most one"), "{err}");
}
