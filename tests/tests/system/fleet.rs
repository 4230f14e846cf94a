//! Fleet policy in a real etcd cluster (3 members on 127.0.0.1): `sgctl fleet put` validates
//! and writes in one transaction, only the keys that change; `fleet get` reads it back; a file
//! with an error writes nothing; the store keeps working with one member of three down.

use std::process::{Command, Output};

use sg_tests::{etcd::EtcdCluster, write_temp};
use sg_userspace::rules::{AwsContext, Format, RuleSet, parse_str};

const POLICY: &str = r#"
[groups.web]
description = "web servers"
ingress = [
  { proto = "tcp", ports = "443", from = ["0.0.0.0/0", "::/0"] },
  { proto = "tcp", ports = "22", from_prefix_list = "office" },
]

[groups.db]
ingress = [ { proto = "tcp", ports = "5432", from_group = "web" } ]
egress = []

[prefix_lists.office]
entries = ["203.0.113.0/28"]

[hosts.web1.interfaces.eth0]
groups = ["web"]

[hosts.db1.interfaces.eth0]
groups = ["db"]
timeouts = { tcp_established = 3600 }
"#;

fn sgctl(cluster: &EtcdCluster, args: &[&str]) -> Output {
    Command::new(sg_tests::sgctl_path())
        .args(args)
        .args(["--etcd", &cluster.urls(), "--etcd-timeout", "3"])
        .output()
        .expect("run sgctl")
}

fn ok(cluster: &EtcdCluster, args: &[&str]) -> String {
    let out = sgctl(cluster, args);
    assert!(out.status.success(), "sgctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn rs(name: &str, text: &str) -> RuleSet {
    let mut rs = parse_str(name, text, Format::Toml, &AwsContext::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .without_locations();
    // Stored groups come back in name order; the rest is the file's.
    rs.groups.sort_by(|a, b| a.name.cmp(&b.name));
    rs.hosts.sort_by(|a, b| a.host.cmp(&b.host));
    rs
}

fn revision(cluster: &EtcdCluster) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&ok(cluster, &["fleet", "get", "--json"])).unwrap();
    v["revision"].as_i64().unwrap()
}

#[test]
fn put_writes_one_revision_and_get_reads_the_same_policy() {
    let cluster = EtcdCluster::start(3);
    let file = write_temp("fleet-policy.toml", POLICY);
    let file = file.to_str().unwrap();

    let dry = ok(&cluster, &["fleet", "put", file, "--dry-run"]);
    assert!(dry.contains("+ /sgctl/v1/groups/web") && dry.contains("dry run: 5 keys would change"), "{dry}");
    assert_eq!(cluster.etcdctl(&["get", "--prefix", "/sgctl/", "--keys-only"]).trim(), "", "dry run wrote");

    let put = ok(&cluster, &["fleet", "put", file]);
    assert!(put.contains("wrote 5 keys in one transaction"), "{put}");
    // One transaction: every key (and the meta key) has the same modification revision.
    let kv: serde_json::Value =
        serde_json::from_str(&cluster.etcdctl(&["get", "--prefix", "/sgctl/v1/", "-w", "json"])).unwrap();
    let revs: Vec<i64> =
        kv["kvs"].as_array().unwrap().iter().map(|k| k["mod_revision"].as_i64().unwrap()).collect();
    assert_eq!(revs.len(), 6, "{kv}");
    assert!(revs.iter().all(|r| *r == revs[0]), "{revs:?}");

    let got = ok(&cluster, &["fleet", "get"]);
    assert_eq!(rs("get", &got), rs("file", POLICY), "fleet get:\n{got}");
    let rev = revision(&cluster);

    // The same file again: nothing written.
    let again = ok(&cluster, &["fleet", "put", file]);
    assert!(again.contains("no change"), "{again}");
    assert_eq!(revision(&cluster), rev);

    // A change: one rule, one list gone (with its use), a host added.
    let changed = POLICY
        .replace("  { proto = \"tcp\", ports = \"22\", from_prefix_list = \"office\" },\n", "")
        .replace("[prefix_lists.office]\nentries = [\"203.0.113.0/28\"]\n", "")
        .replace("ports = \"5432\"", "ports = \"5433\"")
        + "\n[hosts.web2.interfaces.eth0]\ngroups = [\"web\"]\n";
    let file2 = write_temp("fleet-policy-2.toml", &changed);
    let dry = ok(&cluster, &["fleet", "put", file2.to_str().unwrap(), "--dry-run"]);
    let mut lines: Vec<&str> = dry.lines().filter(|l| !l.starts_with("dry run")).collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "+ /sgctl/v1/hosts/web2/interfaces/eth0",
            "- /sgctl/v1/prefix_lists/office",
            "~ /sgctl/v1/groups/db",
            "~ /sgctl/v1/groups/web"
        ],
        "{dry}"
    );
    assert_eq!(revision(&cluster), rev, "a dry run writes nothing");
    let put = ok(&cluster, &["fleet", "put", file2.to_str().unwrap(), "--json"]);
    let out: serde_json::Value = serde_json::from_str(&put).unwrap();
    assert_eq!(out["revision"].as_i64(), Some(rev + 1), "{out}");
    assert_eq!(rs("get", &ok(&cluster, &["fleet", "get"])), rs("file", &changed));
}

#[test]
fn a_file_with_an_error_writes_nothing() {
    let cluster = EtcdCluster::start(1);
    let good = write_temp("fleet-good.toml", POLICY);
    ok(&cluster, &["fleet", "put", good.to_str().unwrap()]);
    let rev = revision(&cluster);
    for (what, text, want) in [
        (
            "unknown group bound to a host",
            POLICY.replace("groups = [\"db\"]", "groups = [\"dbb\"]"),
            ":20:11: unknown group 'dbb'",
        ),
        ("bad port", POLICY.replace("\"5432\"", "\"99999\""), ":10:"),
        (
            "top-level interfaces",
            format!("{POLICY}\n[interfaces.eth0]\ngroups = [\"web\"]\n"),
            "a fleet file binds interfaces per host",
        ),
        ("invalid host name", POLICY.replace("hosts.web1", "hosts.\"web 1\""), "invalid host name 'web 1'"),
    ] {
        let f = write_temp("fleet-bad.toml", &text);
        let out = sgctl(&cluster, &["fleet", "put", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(err.contains(&format!("{}", f.display())) && err.contains(want), "{what}: {err}");
        assert_eq!(revision(&cluster), rev, "{what}: something was written");
    }
}

#[test]
fn one_member_of_three_down_changes_nothing_and_no_quorum_is_a_clear_error() {
    let mut cluster = EtcdCluster::start(3);
    let file = write_temp("fleet-quorum.toml", POLICY);
    cluster.stop_member(0);
    let put = ok(&cluster, &["fleet", "put", file.to_str().unwrap()]);
    assert!(put.contains("wrote 5 keys"), "{put}");
    assert_eq!(rs("get", &ok(&cluster, &["fleet", "get"])), rs("file", POLICY));
    // Two of three down: the last member has no leader and says so instead of answering
    // from its own (possibly stale) copy.
    cluster.stop_member(1);
    let t = std::time::Instant::now();
    let out = sgctl(&cluster, &["fleet", "get"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "answered without a quorum: {}", String::from_utf8_lossy(&out.stdout));
    eprintln!("no quorum: failed after {:?}: {err}", t.elapsed());
    cluster.stop_member(2);
    let t = std::time::Instant::now();
    let out = sgctl(&cluster, &["fleet", "get"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd (http://127.0.0.1:"), "{err}");
    eprintln!("all members down: failed after {:?}: {err}", t.elapsed());
}

#[test]
fn a_value_written_by_hand_is_checked_as_a_file_is() {
    let cluster = EtcdCluster::start(1);
    let file = write_temp("fleet-hand.toml", POLICY);
    ok(&cluster, &["fleet", "put", file.to_str().unwrap()]);
    cluster.etcdctl(&[
        "put",
        "/sgctl/v1/groups/web",
        r#"{"ingress":[{"proto":"tcp","ports":"70000","from":"0.0.0.0/0"}]}"#,
    ]);
    let out = sgctl(&cluster, &["fleet", "get"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("etcd:/sgctl/v1/@") && err.contains("70000"), "{err}");
}

/// A member that serves clients over TLS only and requires client certificates: sgctl gets in
/// with `--etcd-cacert/--etcd-cert/--etcd-key`, not without its certificate, and not over
/// plain HTTP.
#[test]
fn tls_with_client_certificates() {
    let cluster = EtcdCluster::start_tls("admin");
    let (ca, cert, key) = cluster.client_tls().unwrap();
    let (ca, cert, key) = (ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap());
    let file = write_temp("fleet-tls.toml", POLICY);
    let tls = ["--etcd-cacert", ca, "--etcd-cert", cert, "--etcd-key", key];
    let with_tls =
        |args: &[&str]| -> Vec<String> { args.iter().chain(&tls).map(|s| (*s).to_string()).collect() };
    let put = with_tls(&["fleet", "put", file.to_str().unwrap()]);
    let out = ok(&cluster, &put.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("wrote 5 keys"), "{out}");
    let get = with_tls(&["fleet", "get"]);
    assert_eq!(
        rs("get", &ok(&cluster, &get.iter().map(String::as_str).collect::<Vec<_>>())),
        rs("file", POLICY)
    );
    // The CA but no client certificate: the member refuses the handshake.
    let out = sgctl(&cluster, &["fleet", "get", "--etcd-cacert", ca]);
    assert!(!out.status.success(), "got in without a client certificate");
    // Plain HTTP to a TLS port.
    let plain = cluster.urls().replace("https://", "http://");
    let out = Command::new(sg_tests::sgctl_path())
        .args(["fleet", "get", "--etcd", &plain, "--etcd-timeout", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain HTTP got an answer");
}

/// etcd users and roles as the README sets them up (client certificates name the user by
/// their CN): the admin writes the policy; a host reads it and writes only its own member and
/// status keys.
#[test]
fn roles_let_a_host_write_only_its_own_keys() {
    let cluster = EtcdCluster::start_tls("root");
    cluster.enable_roles(&["db1"]);
    let (ca, _, _) = cluster.client_tls().unwrap();
    let ca = ca.to_str().unwrap().to_string();
    let as_user = |user: &str, args: &[&str]| -> Output {
        let (cert, key) = cluster.client_cert(user);
        Command::new(sg_tests::sgctl_path())
            .args(args)
            .args(["--etcd", &cluster.urls(), "--etcd-timeout", "3", "--etcd-cacert", &ca])
            .args(["--etcd-cert", cert.to_str().unwrap(), "--etcd-key", key.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let file = write_temp("fleet-roles.toml", POLICY);
    let file = file.to_str().unwrap();
    let out = as_user("db1", &["fleet", "put", file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("permission denied"), "a host wrote the policy: {err}");
    let out = as_user("admin", &["fleet", "put", file]);
    assert!(out.status.success(), "admin: {}", String::from_utf8_lossy(&out.stderr));
    let out = as_user("db1", &["fleet", "get"]);
    assert!(out.status.success(), "db1 cannot read the policy: {}", String::from_utf8_lossy(&out.stderr));

    // What a host's daemon writes, with its own certificate (etcdctl, as the daemon needs BPF).
    let (cert, key) = cluster.client_cert("db1");
    let ctl = |args: &[&str]| -> Output {
        Command::new("etcdctl")
            .args(["--endpoints", &cluster.urls(), "--cacert", &ca])
            .args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap()
    };
    let lease = String::from_utf8(ctl(&["lease", "grant", "10"]).stdout).unwrap();
    let id = lease.split_whitespace().nth(1).expect("lease id");
    let v = r#"{"groups":["db"],"addresses":["192.0.2.1"]}"#;
    assert!(ctl(&["put", "--lease", id, "/sgctl/v1/members/db1/eth0", v]).status.success(), "own member key");
    assert!(ctl(&["put", "/sgctl/v1/status/db1", "{}"]).status.success(), "own status key");
    for other in ["/sgctl/v1/members/web1/eth0", "/sgctl/v1/status/web1", "/sgctl/v1/groups/db"] {
        let out = ctl(&["put", other, "{}"]);
        assert!(!out.status.success(), "db1 wrote {other}");
    }
}
