//! Redis over TLS for the tests: certificates made here (rcgen: a CA, a server certificate for
//! 127.0.0.1/localhost, a client certificate, and a second CA nobody trusts), written to a temp
//! dir; `TlsRedis` is one `redis-server --port 0 --tls-port N`, `TlsCluster` three TLS primaries
//! (`tls-cluster yes`) made with `redis-cli --tls --cluster create`. Both are checked with
//! `redis-cli --tls` (no plaintext port exists) and killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::redis::{cli_query, wait_until};

/// A fresh self-signed CA named `name`: its certificate (PEM) and the issuer to sign with.
pub fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let key = KeyPair::generate().expect("ca key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("ca cert");
    (cert.pem(), Issuer::new(params, key))
}

/// The PEM files of one test PKI.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
        let dir = tempfile::tempdir().expect("pki dir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write pem");
        };
        let (ca_pem, issuer) = ca("slotd test redis CA");
        write("ca.pem", ca_pem);
        let (other_pem, _) = ca("a CA nobody trusts");
        write("other-ca.pem", other_pem);

        let server_key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        // Redis uses its server certificate as the client one too (cluster bus, replication).
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");
        write("server.pem", server_cert.pem());
        write("server.key", server_key.serialize_pem());

        let client_key = KeyPair::generate().expect("client key");
        let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
        client.distinguished_name.push(DnType::CommonName, "slotd");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");
        write("client.pem", client_cert.pem());
        write("client.key", client_key.serialize_pem());
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    pub fn other_ca(&self) -> String {
        self.path("other-ca.pem").display().to_string()
    }

    /// `--redis-client-cert X --redis-client-key Y`.
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "--redis-client-cert".into(),
            self.path("client.pem").display().to_string(),
            "--redis-client-key".into(),
            self.path("client.key").display().to_string(),
        ]
    }

    /// redis-server's TLS arguments; `auth_clients`: `yes` (mutual TLS), `no`.
    pub fn server_args(&self, auth_clients: &str) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            auth_clients.into(),
        ]
    }

    /// `redis-cli --tls` with the client certificate.
    fn cli(&self) -> Command {
        let mut c = Command::new("redis-cli");
        c.arg("--tls")
            .arg("--cacert")
            .arg(self.path("ca.pem"))
            .arg("--cert")
            .arg(self.path("client.pem"))
            .arg("--key")
            .arg(self.path("client.key"));
        c
    }

    /// `redis-cli --tls -p port args...`'s output ("" when it fails).
    pub fn query(&self, port: u16, args: &[&str]) -> String {
        cli_query(self.cli(), port, args)
    }
}

fn spawn(dir: &Path, args: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): needs redis-server 7"))
}

/// One Redis that speaks TLS only.
pub struct TlsRedis {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsRedis {
    /// `auth_clients`: `yes` requires a client certificate signed by the CA, `no` does not.
    pub fn start(pki: &Pki, auth_clients: &str) -> Self {
        let dir = tempfile::tempdir().expect("redis dir");
        let port = super::process::free_port();
        let mut args = vec!["--tls-port".to_owned(), port.to_string()];
        args.extend(pki.server_args(auth_clients));
        let child = spawn(dir.path(), &args);
        wait_until("TLS redis answers PING", 10, || {
            pki.query(port, &["PING"]).contains("PONG")
        });
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three TLS primaries (no replicas: the failover cases are the plaintext cluster's), mutual
/// TLS on client links, the cluster bus and replication.
pub struct TlsCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: TempDir,
}

impl TlsCluster {
    pub fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().expect("cluster dir");
        let ports = super::cluster::free_ports(3);
        let mut children = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let mut args: Vec<String> = ["--tls-port", &port.to_string()]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend(pki.server_args("yes"));
            args.extend(
                [
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ]
                .map(String::from),
            );
            children.push(spawn(&node_dir, &args));
        }
        let cluster = Self {
            ports,
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_until("TLS cluster node answers PING", 10, || {
                pki.query(*port, &["PING"]).contains("PONG")
            });
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = pki
            .cli()
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli on PATH");
        assert!(status.success(), "redis-cli --tls --cluster create failed");
        for port in &cluster.ports {
            wait_until("cluster_state:ok on every TLS node", 30, || {
                let info = pki.query(*port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            });
        }
        cluster
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("rediss-cluster://{}", nodes.join(","))
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
