//! Front ends and validation: every error kind, with its file:line:column text.

use ipnet::IpNet;

use super::*;

fn parse(text: &str) -> Result<RuleSet, RuleErrors> {
    parse_str("t.toml", text, Format::Toml, &AwsContext::default())
}

/// "t.toml:LINE:COL" of the first occurrence of `needle` in `text`.
fn at(text: &str, needle: &str) -> String {
    let off = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the test text"));
    Loc::at("t.toml", text, off).to_string()
}

/// The one error of `text`; it must be at `needle` and contain `msg`.
fn expect_error(text: &str, needle: &str, msg: &str) {
    let errs = parse(text).expect_err("must be rejected");
    let want = at(text, needle);
    assert!(
        errs.0.iter().any(|d| d.loc.to_string() == want && d.msg.contains(msg)),
        "expected `{want}: ...{msg}...`, got:\n{errs}"
    );
    // Every message is one line and names file:line:column.
    for d in &errs.0 {
        assert!(!d.msg.contains('\n'), "{d}");
        assert!(d.to_string().starts_with("t.toml:"), "{d}");
    }
}

fn group_with(rule: &str) -> String {
    format!("[groups.web]\ningress = [\n  {rule},\n]\n[interfaces.eth0]\ngroups = [\"web\"]\n")
}

#[test]
fn the_sketch_from_the_issue_parses() {
    let text = r#"
[groups.web]
description = "public web server"
ingress = [
  { proto = "tcp", ports = "80", from = "0.0.0.0/0" },
  { proto = "tcp", ports = "443", from = ["0.0.0.0/0", "::/0"] },
  { proto = "tcp", ports = "22", from = "203.0.113.7/32", description = "admin" },
  { proto = "icmp", icmp_type = 8, from = "0.0.0.0/0" },
  { proto = "tcp", ports = "5432", from_group = "app" },
  { proto = "tcp", ports = "1024-65535", from_prefix_list = "office" },
  { proto = -1, from = "198.51.100.0/24" },
  { proto = 47, from = "198.51.100.0/24" },
]
egress = [ { proto = "all", to = ["0.0.0.0/0", "::/0"] } ]
[groups.app]
members = ["198.51.100.10", "2001:db8::10"]
[prefix_lists.office]
entries = ["203.0.113.0/28"]
[interfaces.eth0]
groups = ["web"]
"#;
    let rs = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let web = rs.group("web").unwrap();
    assert_eq!(web.ingress.len(), 9, "the 443 line has two peers");
    assert_eq!(web.ingress[1].index, 1);
    assert_eq!(web.ingress[2].index, 1);
    assert_eq!(web.ingress[3].description.as_deref(), Some("admin"));
    assert_eq!(web.ingress[4].ports, Ports::Icmp { icmp_type: Some(8), code: None });
    assert_eq!(web.ingress[6].ports, Ports::Range(1024, 65535));
    assert_eq!(web.ingress[7].proto, Proto::All);
    assert_eq!(web.ingress[8].proto, Proto::Num(47));
    assert!(!web.default_egress);
    assert!(rs.group("app").unwrap().default_egress, "no egress list: AWS default allow-all");
    assert_eq!(rs.peer_nets(&Peer::Group("app".into())).len(), 2);
    assert_eq!(web.ingress[0].loc.line, 5);
    let rules = rs.iface_rules("eth0");
    assert_eq!(rules.len(), 11, "9 ingress + egress to 0.0.0.0/0 and ::/0");
}

#[test]
fn bad_cidr() {
    let t = group_with(r#"{ proto = "tcp", ports = "22", from = "198.51.100.300/24" }"#);
    expect_error(&t, "\"198.51.100.300/24\"", "bad CIDR '198.51.100.300/24'");
}

#[test]
fn host_bits_set() {
    let t = group_with(r#"{ proto = "tcp", ports = "22", from = "192.0.2.1/24" }"#);
    expect_error(&t, "\"192.0.2.1/24\"", "host bits set in 192.0.2.1/24 (the network is 192.0.2.0/24)");
}

#[test]
fn missing_prefix_length() {
    let t = group_with(r#"{ proto = "tcp", ports = "22", from = "203.0.113.7" }"#);
    expect_error(&t, "\"203.0.113.7\"", "missing prefix length (write 203.0.113.7/32)");
}

#[test]
fn port_range_reversed() {
    let t = group_with(r#"{ proto = "tcp", ports = "90-80", from = "0.0.0.0/0" }"#);
    expect_error(&t, "\"90-80\"", "port range 90-80 is reversed");
}

#[test]
fn port_out_of_range() {
    let t = group_with(r#"{ proto = "udp", ports = 70000, from = "0.0.0.0/0" }"#);
    expect_error(&t, "70000", "port 70000 out of range 0-65535");
}

#[test]
fn ports_on_icmp() {
    let t = group_with(r#"{ proto = "icmp", ports = "8", from = "0.0.0.0/0" }"#);
    expect_error(&t, "\"8\"", "ports apply only to tcp and udp, not icmp (use icmp_type and icmp_code)");
}

#[test]
fn icmp_type_on_tcp() {
    let t = group_with(r#"{ proto = "tcp", icmp_type = 8, from = "0.0.0.0/0" }"#);
    expect_error(&t, "8,", "icmp_type applies only to icmp and icmpv6, not tcp");
}

#[test]
fn icmp_code_without_type() {
    let t = group_with(r#"{ proto = "icmpv6", icmp_code = 4, from = "::/0" }"#);
    expect_error(&t, "4,", "icmp_code needs an icmp_type");
}

#[test]
fn unknown_group_in_rule() {
    let t = group_with(r#"{ proto = "tcp", ports = "5432", from_group = "nope" }"#);
    expect_error(&t, "\"nope\"", "unknown group 'nope'");
}

#[test]
fn unknown_group_in_binding() {
    let t = "[groups.web]\n[interfaces.eth0]\ngroups = [\"web\", \"ghost\"]\n";
    expect_error(t, "\"ghost\"", "unknown group 'ghost'");
}

#[test]
fn unknown_prefix_list() {
    let t = group_with(r#"{ proto = "tcp", ports = "22", from_prefix_list = "office" }"#);
    expect_error(&t, "\"office\"", "unknown prefix list 'office'");
}

#[test]
fn membership_loop() {
    let t = "[groups.a]\nmember_groups = [\"b\"]\n[groups.b]\nmember_groups = [\"c\"]\n[groups.c]\nmember_groups = [\"a\"]\n";
    let errs = parse(t).expect_err("loop");
    assert!(errs.to_string().contains("group membership loops: a -> b -> c -> a"), "{errs}");
    expect_error(t, "\"a\"]", "group membership loops");
}

#[test]
fn duplicate_names() {
    let t = "[groups.web]\ningress = []\n[groups.web]\negress = []\n";
    expect_error(t, "web]\negress", "duplicate key");
    let t = "[groups.a]\naws_id = \"sg-1\"\n[groups.b]\naws_id = \"sg-1\"\n";
    let errs = parse(t).unwrap_err().to_string();
    assert!(errs.contains("t.toml:4:10: duplicate aws_id 'sg-1' (first at t.toml:2:10)"), "{errs}");
}

#[test]
fn quota_rules_per_group() {
    let t = "[quotas]\nrules_per_group = 2\n[groups.web]\ningress = [\n  { proto = \"tcp\", ports = \"1\", from = [\"192.0.2.0/24\", \"198.51.100.0/24\", \"203.0.113.0/24\"] },\n]\n";
    expect_error(t, "web]", "group web has 3 ingress rules, quota is 2 (rules_per_group; each peer counts)");
}

#[test]
fn quota_groups_per_interface() {
    let t = "[quotas]\ngroups_per_interface = 1\n[groups.a]\n[groups.b]\n[interfaces.eth0]\ngroups = [\"a\", \"b\"]\n";
    expect_error(t, "eth0]", "2 groups bound to eth0, quota is 1 (groups_per_interface)");
}

#[test]
fn unknown_protocol() {
    let t = group_with(r#"{ proto = "sctpx", from = "0.0.0.0/0" }"#);
    expect_error(&t, "\"sctpx\"", "unknown protocol 'sctpx'");
}

#[test]
fn protocol_number_out_of_range() {
    let t = group_with(r#"{ proto = 300, from = "0.0.0.0/0" }"#);
    expect_error(&t, "300", "protocol number 300 out of range 0-255");
}

#[test]
fn rule_without_peer() {
    let t = group_with(r#"{ proto = "tcp", ports = "22" }"#);
    expect_error(&t, "{ proto", "rule has no peer");
}

#[test]
fn two_peer_kinds() {
    let t = "[groups.app]\n".to_string()
        + &group_with(r#"{ proto = "tcp", ports = "22", from = "0.0.0.0/0", from_group = "app" }"#);
    expect_error(&t, "\"app\" }", "a rule takes exactly one peer kind, found from and from_group");
}

#[test]
fn peer_of_the_wrong_direction() {
    let t = group_with(r#"{ proto = "tcp", ports = "22", to = "0.0.0.0/0" }"#);
    expect_error(&t, "\"0.0.0.0/0\"", "`to` does not apply to an ingress rule (use `from`)");
}

#[test]
fn description_too_long() {
    let long = "x".repeat(256);
    let t = group_with(&format!(
        r#"{{ proto = "tcp", ports = "22", from = "0.0.0.0/0", description = "{long}" }}"#
    ));
    expect_error(&t, &format!("\"{long}\""), "description longer than 255 characters");
}

#[test]
fn unknown_key() {
    let t = group_with(r#"{ proto = "tcp", port = "22", from = "0.0.0.0/0" }"#);
    expect_error(&t, "port =", "unknown field `port`");
}

#[test]
fn invalid_names() {
    expect_error("[groups.\"../etc\"]\n", "\"../etc\"", "invalid group name '../etc'");
    expect_error(
        "[groups.a]\n[interfaces.\"eth/0\"]\ngroups = [\"a\"]\n",
        "\"eth/0\"",
        "invalid interface name 'eth/0'",
    );
}

#[test]
fn member_not_an_address() {
    expect_error(
        "[groups.app]\nmembers = [\"web-1\"]\n",
        "\"web-1\"",
        "'web-1' is not an IP address or CIDR",
    );
    expect_error(
        "[groups.app]\nmembers = [\"192.0.2.1/24\"]\n",
        "\"192.0.2.1/24\"",
        "host bits set in 192.0.2.1/24",
    );
}

#[test]
fn toml_syntax_error() {
    expect_error("[groups.web\n", "\n", "");
    let e = parse("[groups.web]\ningress = [ { proto = \"tcp\" \n").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].loc.line >= 2, "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let t = r#"[groups.web]
ingress = [
  { proto = "tcp", ports = "90-80", from = "0.0.0.0/0" },
  { proto = "tcp", ports = "22", from = "192.0.2.1/24" },
  { proto = "bogus", from = "0.0.0.0/0" },
]
"#;
    let errs = parse(t).unwrap_err();
    assert_eq!(errs.0.len(), 3, "{errs}");
    assert_eq!(errs.0.iter().map(|d| d.loc.line).collect::<Vec<_>>(), vec![3, 4, 5]);
}

#[test]
fn toml_output_round_trips() {
    let text = r#"
[quotas]
rules_per_group = 100
groups_per_interface = 3
[groups."web-1"]
description = "web \"front\""
aws_id = "sg-0a1"
ingress = [
  { proto = "tcp", ports = "443", from = ["0.0.0.0/0", "::/0"], description = "https" },
  { proto = "icmp", icmp_type = 3, icmp_code = 4, from = "0.0.0.0/0" },
  { proto = "icmpv6", from = "::/0" },
  { proto = "tcp", ports = "5432", from_group = "app" },
  { proto = 50, from_prefix_list = "pl-1" },
]
[groups.app]
members = ["198.51.100.10"]
egress = []
[prefix_lists.pl-1]
entries = ["203.0.113.0/28"]
[interfaces.eth0]
groups = ["web-1", "app"]
timeouts = { tcp_established = 3600, udp = 45 }
implicit = { dhcp = false }
monitor = true
"#;
    let a = parse(text).unwrap();
    let b0 = a.binding("eth0").unwrap();
    assert_eq!((b0.timeouts.tcp_established, b0.timeouts.udp, b0.timeouts.icmp), (3600, 45, 30));
    assert_eq!(b0.no_implicit, sg_common::config::CONFIG_NO_IMPLICIT_DHCP);
    assert_eq!(b0.monitor, Some(true));
    let out = toml_out::to_toml(&a);
    let b = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(a.without_locations(), b.without_locations(), "{out}");
}

const AWS_FIXTURE: &str = include_str!("../../tests/fixtures/aws/describe-security-groups.json");
const AWS_MEMBERS: &str = include_str!("../../tests/fixtures/aws/members.toml");

fn aws_ctx() -> AwsContext {
    AwsContext {
        bindings: vec!["eth0=web,sg-0db0000000000001".parse().unwrap(), "eth1=bastion".parse().unwrap()],
        members: Some(("members.toml".into(), AWS_MEMBERS.into())),
        ..AwsContext::default()
    }
}

#[test]
fn aws_fixture_imports_as_documented() {
    let rs = parse_str("sg.json", AWS_FIXTURE, Format::Aws, &aws_ctx()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = rs.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec!["web", "db", "bastion"]);
    let web = rs.group("web").unwrap();
    assert_eq!(web.aws_id.as_deref(), Some("sg-0web000000000001"));
    assert_eq!(web.members.len(), 2);
    assert_eq!(web.ingress.len(), 8, "each range of a permission is a rule");
    assert_eq!(web.ingress[2].peer, Peer::Group("bastion".into()), "GroupId resolved to the group's name");
    assert_eq!(web.ingress[3].ports, Ports::Icmp { icmp_type: Some(8), code: None });
    assert_eq!(web.ingress[4].ports, Ports::Icmp { icmp_type: Some(3), code: Some(4) });
    assert_eq!(web.ingress[6].proto, Proto::All);
    assert_eq!(rs.group("db").unwrap().ingress[3].proto, Proto::Num(50));
    assert_eq!(rs.binding("eth0").unwrap().groups, vec!["web", "db"]);
    assert_eq!(web.ingress[0].loc.line, 12, "locations point into the JSON");
}

#[test]
fn aws_round_trip_import_toml_export() {
    let rs = parse_str("sg.json", AWS_FIXTURE, Format::Aws, &aws_ctx()).unwrap();
    let toml = toml_out::to_toml(&rs);
    let again = parse_str("imported.toml", &toml, Format::Toml, &AwsContext::default())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let exported = serde_json::to_value(aws_export::export(&again)).unwrap();
    let original: serde_json::Value = serde_json::from_str(AWS_FIXTURE).unwrap();
    assert_eq!(aws_export::meaning(&exported), aws_export::meaning(&original));
}

/// `export aws` with its members file imports back to the same rule set: members, member
/// groups, prefix-list entries and bindings included.
#[test]
fn aws_export_with_members_file_round_trips() {
    let text = r#"
[groups.web]
aws_id = "sg-0web"
members = ["192.0.2.10", "2001:db8::10", "203.0.113.16/28"]
member_groups = ["canary"]
ingress = [
  { proto = "tcp", ports = "443", from_prefix_list = "pl-0office", description = "office" },
  { proto = "tcp", ports = "80", from = ["0.0.0.0/0", "::/0"] },
]

[groups.canary]
members = ["192.0.2.99"]
ingress = []
egress = []

[groups.db]
aws_id = "sg-0db"
members = ["192.0.2.20"]
ingress = [ { proto = "tcp", ports = "5432", from_group = "web" } ]
egress = [ { proto = "udp", ports = "53", to = ["198.51.100.53/32"] } ]

[prefix_lists.pl-0office]
entries = ["198.51.100.0/24", "2001:db8:1::/48"]

[interfaces.eth0]
groups = ["web", "db"]
"#;
    let rs = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_string_pretty(&aws_export::export(&rs)).unwrap();
    let members = toml_out::members_file(&rs, &|g| aws_export::export_id(&rs, g));
    let ctx = AwsContext {
        bindings: aws_export::bindings(&rs),
        members: Some(("m.toml".into(), members.clone())),
        ..AwsContext::default()
    };
    let again = parse_str("sg.json", &json, Format::Aws, &ctx).unwrap_or_else(|e| panic!("{e}\n{members}"));
    // Names: a group with an AWS id is named by it after the trip (the JSON has its name as
    // GroupName too, which names it when valid and unique).
    let norm = |rs: &RuleSet| {
        let mut rs = rs.without_locations();
        for g in &mut rs.groups {
            g.default_egress = false;
            g.aws_name = None;
        }
        for b in &mut rs.interfaces {
            b.groups.sort();
        }
        rs
    };
    let (a, b) = (norm(&rs), norm(&again));
    for (x, y) in a.groups.iter().zip(&b.groups) {
        assert_eq!(x.members, y.members, "{}: members\n{members}", x.name);
        assert_eq!(x.member_groups, y.member_groups, "{}: member groups\n{members}", x.name);
    }
    assert_eq!(a.prefix_lists, b.prefix_lists, "prefix lists\n{members}");
    assert_eq!(a.interfaces, b.interfaces, "bindings");
    assert_eq!(
        aws_export::meaning(&serde_json::to_value(aws_export::export(&again)).unwrap()),
        aws_export::meaning(&serde_json::from_str(&json).unwrap())
    );
    // Without the members file the groups match nothing: said by warnings, not silently.
    let bare = AwsContext { bindings: aws_export::bindings(&rs), ..AwsContext::default() };
    let l = parse_with_warnings("sg.json", &json, Format::Aws, &bare).unwrap();
    assert!(
        l.warnings.iter().any(|w| w.msg.contains("prefix list pl-0office has no known entries")),
        "{:?}",
        l.warnings
    );
}

/// AWS outputs that are not what they seem: each refused with one line naming what to give
/// instead, or accepted with a warning that says what was assumed.
#[test]
fn aws_import_does_not_change_meaning_silently() {
    let ctx = AwsContext { bindings: vec!["eth0=sg-1".parse().unwrap()], ..AwsContext::default() };
    // authorize-security-group-ingress answers with the rules it added: a delta.
    let delta = r#"{"Return": true, "SecurityGroupRules": [{"SecurityGroupRuleId": "sgr-1", "GroupId": "sg-1",
        "IsEgress": false, "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "192.0.2.0/24"}]}"#;
    let e = parse_str("add.json", delta, Format::Aws, &ctx).unwrap_err().to_string();
    assert!(e.starts_with("add.json:1:1: output of authorize- or revoke-security-group"), "{e}");
    assert!(e.contains("describe-security-group-rules --filters Name=group-id,Values=ID"), "{e}");
    let revoke = r#"{"Return": true, "RevokedSecurityGroupRules": []}"#;
    assert!(parse_str("rm.json", revoke, Format::Aws, &ctx).is_err());
    // tcp with -1/-1: every port, with a warning at FromPort.
    let minus = r#"{"SecurityGroups": [{"GroupId": "sg-1", "GroupName": "web", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}]}]}"#;
    let l = parse_with_warnings("m.json", minus, Format::Aws, &ctx).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.rules.group("web").unwrap().ingress[0].ports, Ports::Range(0, 65535));
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].to_string().starts_with("m.json:2:"), "{}", l.warnings[0]);
    assert!(
        l.warnings[0].msg.contains("tcp with FromPort/ToPort -1: taken as every port"),
        "{}",
        l.warnings[0]
    );
    // The same for udp given by number; icmp's -1 is AWS's own "any": no warning.
    let udp = minus.replace("\"tcp\"", "\"17\"");
    assert_eq!(parse_with_warnings("m.json", &udp, Format::Aws, &ctx).unwrap().warnings.len(), 1);
    let icmp = minus.replace("\"tcp\"", "\"icmp\"");
    assert!(parse_with_warnings("m.json", &icmp, Format::Aws, &ctx).unwrap().warnings.is_empty());
    // describe-security-group-rules of a group without egress rules: no egress, said.
    let rules = r#"{"SecurityGroupRules": [{"GroupId": "sg-1", "IsEgress": false, "IpProtocol": "tcp",
        "FromPort": 22, "ToPort": 22, "CidrIpv4": "192.0.2.0/24"}]}"#;
    let l = parse_with_warnings("r.json", rules, Format::Aws, &ctx).unwrap();
    assert!(l.rules.group("sg-1").unwrap().egress.is_empty());
    assert!(
        l.warnings.iter().any(|w| w.msg.contains("group sg-1 has no egress rule here")),
        "{:?}",
        l.warnings
    );
    // A rules file given as --members would lose its rules: refused at its first rule.
    let full = "[groups.sg-1]\nmembers = [\"192.0.2.5\"]\ningress = [ { proto = \"tcp\", ports = \"22\", from = [\"192.0.2.0/24\"] } ]\n";
    let m = AwsContext { members: Some(("full.toml".into(), full.into())), ..ctx.clone() };
    let e = parse_str("m.json", minus, Format::Aws, &m).unwrap_err().to_string();
    assert!(e.starts_with("full.toml:3:"), "{e}");
    assert!(
        e.contains("a members file holds only members and prefix-list entries, this one has rules"),
        "{e}"
    );
    let iface = "[groups.sg-1]\nmembers = []\n[interfaces.eth0]\ngroups = [\"sg-1\"]\n";
    let m = AwsContext { members: Some(("i.toml".into(), iface.into())), ..ctx };
    let e = parse_str("m.json", minus, Format::Aws, &m).unwrap_err().to_string();
    assert!(e.contains("this one has [interfaces]"), "{e}");
}

/// The fleet's bounds: ranges are CIDRs, a host's pinned addresses lie within them.
#[test]
fn fleet_bounds_are_checked() {
    let base = "[groups.web]\ningress = []\n[hosts.web1.interfaces.eth0]\ngroups = [\"web\"]\n";
    let ok = format!(
        "[fleet]\nmember_ranges = [\"198.51.100.0/24\"]\n{base}[hosts.web1]\naddresses = [\"198.51.100.2\"]\n"
    );
    let rs = parse(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.member_ranges, vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(rs.hosts[0].addresses, vec!["198.51.100.2/32".parse::<IpNet>().unwrap()]);
    let outside = ok.replace("\"198.51.100.2\"", "\"203.0.113.9\"");
    expect_error(
        &outside,
        "\"203.0.113.9\"",
        "address 203.0.113.9 of host web1 is outside [fleet] member_ranges",
    );
    let bad = ok.replace("\"198.51.100.0/24\"", "\"198.51.100.1/24\"");
    expect_error(&bad, "\"198.51.100.1/24\"", "host bits set");
    expect_error(&format!("[fleet]\nranges = []\n{base}"), "ranges", "unknown field");
}

#[test]
fn a_binding_is_parsed_where_it_is_given() {
    let b: AwsBinding = "eth0=web, sg-1 ,acl-2".parse().unwrap();
    assert_eq!(
        (b.iface.as_str(), b.names.as_slice()),
        ("eth0", &["web".to_string(), "sg-1".into(), "acl-2".into()][..])
    );
    assert_eq!(b.to_string(), "eth0=web,sg-1,acl-2");
    for bad in ["eth0", "=web", "eth0=", "eth0= , "] {
        let e = bad.parse::<AwsBinding>().unwrap_err();
        assert!(e.contains("write IFACE=GROUP[,GROUP...]"), "{bad}: {e}");
    }
}

#[test]
fn aws_errors_name_the_json_location() {
    let bad = AWS_FIXTURE.replace("\"CidrIp\": \"198.51.100.0/24\"", "\"CidrIp\": \"198.51.100.1/24\"");
    // What AWS returned is accepted: the network, with a warning at the JSON location.
    let l = parse_with_warnings("sg.json", &bad, Format::Aws, &aws_ctx()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0].to_string().starts_with("sg.json:46:39: host bits set in 198.51.100.1/24"),
        "{}",
        l.warnings[0]
    );
    assert_eq!(l.rules.group("web").unwrap().ingress[3].peer, Peer::Cidr("198.51.100.0/24".parse().unwrap()));
    // A rule with ports and protocol -1 is one error with its location.
    let bad = AWS_FIXTURE.replacen("\"IpProtocol\": \"tcp\"", "\"IpProtocol\": \"-1\"", 1);
    let e = parse_str("sg.json", &bad, Format::Aws, &aws_ctx()).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.to_string().contains("FromPort/ToPort 443/443 given for protocol -1"), "{e}");
    // Without members, referenced groups match nothing, with one warning each.
    let no_members = AwsContext { members: None, ..aws_ctx() };
    let l = parse_with_warnings("sg.json", AWS_FIXTURE, Format::Aws, &no_members)
        .unwrap_or_else(|e| panic!("{e}"));
    let warned: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warned.len(), 3, "web, bastion, and the office prefix list: {warned:?}");
    assert!(
        warned.iter().any(|w| w.contains("group web is referenced but no input lists its members")),
        "{warned:?}"
    );
    assert!(l.rules.group("bastion").unwrap().members.is_empty());
    let e = parse_str("sg.json", "{\"SecurityGroups\": [ { \"GroupId\": 5 } ]}", Format::Aws, &aws_ctx())
        .unwrap_err();
    assert_eq!(e.0[0].loc.line, 1, "{e}");
}

#[test]
fn diff_lists_added_removed_and_rebound() {
    let old = parse(
        "[groups.web]\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"0.0.0.0/0\" }, { proto = \"tcp\", ports = \"22\", from = \"0.0.0.0/0\" }]\n[groups.old]\n[interfaces.eth0]\ngroups = [\"web\"]\n[interfaces.eth1]\ngroups = [\"web\"]\n",
    )
    .unwrap();
    let new = parse(
        "[groups.web]\ningress = [{ proto = \"tcp\", ports = \"443\", from = \"0.0.0.0/0\" }, { proto = \"tcp\", ports = \"22\", from = \"0.0.0.0/0\" }]\n[groups.app]\n[interfaces.eth0]\ngroups = [\"web\", \"app\"]\n[interfaces.eth2]\ngroups = [\"app\"]\n",
    )
    .unwrap();
    let d = diff::diff(Some(&old), &new);
    assert_eq!(
        d.lines,
        vec![
            "~ interface eth0: groups web -> web, app",
            "+ interface eth2 (groups app)",
            "- interface eth1",
            "group web: + ingress tcp 443 from 0.0.0.0/0",
            "group web: - ingress tcp 80 from 0.0.0.0/0",
            "+ group app (0 ingress, 2 egress rules)",
            "- group old",
        ]
    );
    assert_eq!(d.attach, vec!["eth2"]);
    assert_eq!(d.detach, vec!["eth1"]);
    assert!(diff::diff(Some(&new), &new).is_empty());
}

#[test]
fn timeout_out_of_range() {
    let t = "[groups.g]\n[interfaces.eth0]\ngroups = [\"g\"]\ntimeouts = { udp_stream = 500 }\n";
    expect_error(t, "500", "udp_stream timeout 500 out of range 60-180 seconds");
}

/// Group references are resolved in validation, for every input: an AWS pair by GroupId, or by
/// a GroupName one described group has; a GroupName several VPCs use is one error (at its
/// first reference); a members file's `member_groups` by id; a TOML `from_group` by a group's
/// `aws_id`.
#[test]
fn group_references_resolve_in_validation() {
    let json = r#"{ "SecurityGroups": [
  { "GroupId": "sg-a", "GroupName": "default", "VpcId": "vpc-1", "IpPermissions": [], "IpPermissionsEgress": [] },
  { "GroupId": "sg-b", "GroupName": "default", "VpcId": "vpc-2", "IpPermissions": [], "IpPermissionsEgress": [] },
  { "GroupId": "sg-w", "GroupName": "web", "VpcId": "vpc-1", "IpPermissions": [], "IpPermissionsEgress": [] },
  { "GroupId": "sg-d", "GroupName": "db", "VpcId": "vpc-1", "IpPermissionsEgress": [],
    "IpPermissions": [
      { "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [ { "GroupId": "sg-w" } ] },
      { "IpProtocol": "tcp", "FromPort": 6432, "ToPort": 6432, "UserIdGroupPairs": [ { "GroupName": "web" } ] },
      { "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [ { "GroupId": "sg-a" } ] }
    ] }
] }"#;
    let members = "[groups.sg-a]\nmember_groups = [\"sg-w\"]\n\n[groups.web]\nmembers = [\"192.0.2.10\"]\n";
    let ctx = AwsContext { members: Some(("members.toml".into(), members.into())), ..AwsContext::default() };
    let rs = parse_str("sg.json", json, Format::Aws, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let db = rs.group("db").unwrap();
    let peers: Vec<&Peer> = db.ingress.iter().map(|r| &r.peer).collect();
    assert_eq!(
        peers,
        [&Peer::Group("web".into()), &Peer::Group("web".into()), &Peer::Group("sg-a".into())],
        "by GroupId, by GroupName, by the id of a group whose name is ambiguous"
    );
    assert_eq!(rs.group("sg-a").unwrap().member_groups, ["web"], "the members file's sg-w is web");
    assert_eq!(rs.peer_nets(&Peer::Group("sg-a".into())), ["192.0.2.10/32".parse::<IpNet>().unwrap()]);

    // Two references by the ambiguous name: one error, at the first.
    let ambiguous = json
        .replace("{ \"GroupId\": \"sg-a\" }", "{ \"GroupName\": \"default\" }")
        .replace("{ \"GroupName\": \"web\" }", "{ \"GroupName\": \"default\" }");
    let e = parse_str("sg.json", &ambiguous, Format::Aws, &AwsContext::default()).unwrap_err();
    let msgs: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(
        msgs[0].contains(
            "group name 'default' is ambiguous: it names sg-a in vpc-1, sg-b in vpc-2 (use the GroupId)"
        ),
        "{msgs:#?}"
    );

    // TOML: a reference by a group's aws_id.
    let toml = "[groups.web]\naws_id = \"sg-w\"\nmembers = [\"192.0.2.10\"]\n\n[groups.db]\ningress = [ { proto = \"tcp\", ports = \"5432\", from_group = \"sg-w\" } ]\n";
    let rs = parse(toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.group("db").unwrap().ingress[0].peer, Peer::Group("web".into()));
}
