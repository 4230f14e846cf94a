//! A real etcd cluster (Debian's etcd-server) on 127.0.0.1 with ports and data directories of
//! its own: started by a test or the demo, its members stopped and restarted at will, and
//! every member killed and its data removed on drop, also on panic (and, through
//! `PR_SET_PDEATHSIG`, when the test process dies).

use std::{
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One member's ports and process.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    /// The address members listen on, and the namespace they run in (`None`: this one).
    ip: String,
    ns: Option<String>,
    /// TLS: the directory holding ca.pem, server.pem/key and client.pem/key.
    tls: Option<PathBuf>,
}

/// Runs openssl; panics unless it succeeds.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A certificate `name`.pem/.key in `dir` for subject CN `cn`, signed by the CA there, with the
/// extensions `ext` (openssl extfile lines), valid for a day.
fn sign(dir: &std::path::Path, name: &str, cn: &str, ext: &str) {
    let (key, csr, pem, extf) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    let subj = format!("/CN={cn}");
    let mut a = vec!["req"];
    a.extend(EC_KEY);
    a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &a);
    std::fs::write(dir.join(&extf), ext).unwrap();
    let a = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "1",
        "-extfile",
        &extf,
    ];
    openssl(dir, &a);
}

/// A test CA and, signed by it, a server certificate for 127.0.0.1 and `ip` and a client
/// certificate (CN `client_cn`), all in `dir`.
fn make_certs(dir: &std::path::Path, client_cn: &str, ip: &str) {
    let mut a = vec!["req", "-x509"];
    a.extend(EC_KEY);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=sgctl-test-ca"]);
    openssl(dir, &a);
    let san = if ip == "127.0.0.1" { "IP:127.0.0.1".to_string() } else { format!("IP:127.0.0.1,IP:{ip}") };
    sign(dir, "server", "etcd", &format!("subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n"));
    sign(dir, "client", client_cn, "extendedKeyUsage=clientAuth\n");
}

/// Ports the kernel says are free now (held open together so that they differ).
fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl EtcdCluster {
    /// Starts `n` members on 127.0.0.1 and waits until every one is healthy (20 s at most).
    pub fn start(n: usize) -> EtcdCluster {
        let ports = free_ports(2 * n);
        Self::start_with(n, None, "127.0.0.1", &ports)
    }

    /// Starts `n` members inside namespace `ns` (a LAN host), listening on `ip` (its address)
    /// and on its loopback, ports 32379 and up (the namespace is the cluster's own).
    pub fn start_in(n: usize, ns: &str, ip: std::net::IpAddr) -> EtcdCluster {
        let ports: Vec<u16> = (0..2 * n).map(|i| 32379 + i as u16).collect();
        Self::start_with(n, Some(ns.to_string()), &ip.to_string(), &ports)
    }

    /// One member on 127.0.0.1 serving clients over TLS only, and requiring a client
    /// certificate signed by its CA (`--client-cert-auth`); the client certificate's CN is
    /// `client_cn` (etcd maps it to a user when auth is on).
    pub fn start_tls(client_cn: &str) -> EtcdCluster {
        let ports = free_ports(2);
        Self::start_inner(1, None, "127.0.0.1", &ports, Some(client_cn))
    }

    /// [`EtcdCluster::start_tls`] inside namespace `ns` (a LAN host), listening on `ip` (which
    /// its certificate names) and on its loopback, ports 32379 and 32380.
    pub fn start_tls_in(ns: &str, ip: std::net::IpAddr, client_cn: &str) -> EtcdCluster {
        Self::start_inner(1, Some(ns.to_string()), &ip.to_string(), &[32379, 32380], Some(client_cn))
    }

    /// etcd users and roles as the README sets them up (the cluster's client certificate must
    /// be root's): user `admin` with role sgctl-admin (read and write the prefix), and per host
    /// a user and role sgctl-host-HOST that reads the prefix and writes only
    /// `members/HOST/` and `status/HOST`; then auth on.
    pub fn enable_roles(&self, hosts: &[&str]) {
        let mut cmds: Vec<String> = [
            "user add root --no-password",
            "user grant-role root root",
            "role add sgctl-admin",
            "role grant-permission sgctl-admin --prefix=true readwrite /sgctl/v1/",
            "user add admin --no-password",
            "user grant-role admin sgctl-admin",
        ]
        .map(str::to_string)
        .into();
        for h in hosts {
            cmds.extend([
                format!("role add sgctl-host-{h}"),
                format!("role grant-permission sgctl-host-{h} --prefix=true read /sgctl/v1/"),
                format!(
                    "role grant-permission sgctl-host-{h} --prefix=true readwrite /sgctl/v1/members/{h}/"
                ),
                format!("role grant-permission sgctl-host-{h} readwrite /sgctl/v1/status/{h}"),
                format!("user add {h} --no-password"),
                format!("user grant-role {h} sgctl-host-{h}"),
            ]);
        }
        cmds.push("auth enable".into());
        for cmd in cmds {
            self.etcdctl(&cmd.split(' ').collect::<Vec<_>>());
        }
    }

    /// `--etcd-cacert/--etcd-cert/--etcd-key` for user `cn` of a TLS cluster.
    pub fn tls_args(&self, cn: &str) -> Vec<String> {
        let (ca, _, _) = self.client_tls().expect("a TLS cluster");
        let (cert, key) = self.client_cert(cn);
        [("--etcd-cacert", ca), ("--etcd-cert", cert), ("--etcd-key", key)]
            .into_iter()
            .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
            .collect()
    }

    /// Another client certificate of a TLS cluster, for user `cn`: (cert, key).
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        let d = self.tls.as_ref().expect("a TLS cluster");
        let name = format!("client-{cn}");
        sign(d, &name, cn, "extendedKeyUsage=clientAuth\n");
        (d.join(format!("{name}.pem")), d.join(format!("{name}.key")))
    }

    /// Paths of (ca.pem, client.pem, client.key) of a TLS cluster.
    pub fn client_tls(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        self.tls.as_ref().map(|d| (d.join("ca.pem"), d.join("client.pem"), d.join("client.key")))
    }

    fn start_with(n: usize, ns: Option<String>, ip: &str, ports: &[u16]) -> EtcdCluster {
        Self::start_inner(n, ns, ip, ports, None)
    }

    fn start_inner(
        n: usize,
        ns: Option<String>,
        ip: &str,
        ports: &[u16],
        tls_cn: Option<&str>,
    ) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!(
            "sgctl-etcd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("etcd data dir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{ip}:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let tls = tls_cn.map(|cn| {
            let d = dir.join("tls");
            std::fs::create_dir_all(&d).expect("tls dir");
            make_certs(&d, cn, ip);
            d
        });
        let mut c = EtcdCluster { dir, members, initial_cluster, ip: ip.to_string(), ns, tls };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy(&(0..n).collect::<Vec<_>>());
        c
    }

    /// Client URLs of every member, comma-separated (`--etcd`).
    pub fn urls(&self) -> String {
        (0..self.members.len()).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// The client URL of member `i`.
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.members[i].client)
    }

    /// etcdctl's TLS flags (client certificate), if TLS is on.
    fn ctl_tls(&self) -> Vec<String> {
        self.client_tls().map_or_else(Vec::new, |(ca, cert, key)| {
            vec![
                format!("--cacert={}", ca.display()),
                format!("--cert={}", cert.display()),
                format!("--key={}", key.display()),
            ]
        })
    }

    /// A command run in the cluster's namespace.
    fn command(&self, program: &str) -> Command {
        match &self.ns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program);
                c
            }
        }
    }

    /// Process ids of the running members (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.child.as_ref().map(Child::id)).collect()
    }

    /// (Re)starts member `i` on its data directory.
    pub fn start_member(&mut self, i: usize) {
        let m = &self.members[i];
        assert!(m.child.is_none(), "member {} runs already", m.name);
        let data = self.dir.join(&m.name);
        let state = if data.exists() { "existing" } else { "new" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{}", self.ip, m.client);
        let peer = format!("http://{}:{}", self.ip, m.peer);
        let listen = if self.ns.is_some() && self.ip != "127.0.0.1" {
            format!("{client},{scheme}://127.0.0.1:{}", m.client)
        } else {
            client.clone()
        };
        let mut cmd = self.command("etcd");
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &listen, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "sgctl-test", "--max-txn-ops", "1024"])
            .args(self.tls.as_ref().map_or_else(Vec::new, |d| {
                vec![
                    format!("--cert-file={}", d.join("server.pem").display()),
                    format!("--key-file={}", d.join("server.key").display()),
                    format!("--trusted-ca-file={}", d.join("ca.pem").display()),
                    "--client-cert-auth".to_string(),
                ]
            }))
            // Fast elections and lease renewals, as a test wants them.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl only sets a flag of the child; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn etcd (cargo xtask setup installs etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Kills member `i` (SIGKILL) and reaps it; its data stays for a restart.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the members `which` answer healthy (a quorum read through each).
    pub fn wait_healthy(&self, which: &[usize]) {
        let urls: Vec<String> = which.iter().map(|&i| self.url(i)).collect();
        let t = Instant::now();
        loop {
            let ok = self
                .command("etcdctl")
                .args(self.ctl_tls())
                .args(["--endpoints", &urls.join(","), "--command-timeout", "2s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "etcd not healthy after 20 s; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl ARGS` against every member; panics unless it succeeds; its stdout.
    /// etcdctl as user `cn` of a TLS cluster with roles (its own client certificate): what
    /// that user may do, and nothing more.
    pub fn etcdctl_as(&self, cn: &str, args: &[&str]) -> std::process::Output {
        let (ca, _, _) = self.client_tls().expect("a TLS cluster");
        let (cert, key) = self.client_cert(cn);
        self.command("etcdctl")
            .args([
                format!("--cacert={}", ca.display()),
                format!("--cert={}", cert.display()),
                format!("--key={}", key.display()),
            ])
            .args(["--endpoints", &self.urls(), "--command-timeout", "5s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl")
    }

    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self
            .command("etcdctl")
            .args(self.ctl_tls())
            .args(["--endpoints", &self.urls(), "--command-timeout", "5s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
