//! TLS and mutual TLS on the gRPC listener, with certificates generated at
//! test time: what a client must trust, what the broker must be shown, the
//! principal a client certificate maps to, and rotation on disk.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Broker;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use strata_client::proto::WhoAmIRequest;
use strata_client::{Client, TlsOptions};
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// A test CA.
struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key, in PEM.
struct Pem {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A leaf for `names` (DNS SANs; "127.0.0.1" becomes an IP SAN) with
    /// subject CN `cn`; `edit` changes anything else.
    fn issue(&self, cn: &str, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Pem {
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// Writes `pem` as server.crt / server.key (and the client CA if given)
/// under `dir`; returns the broker's environment for them.
fn server_files(dir: &Path, pem: &Pem, client_ca: Option<&Ca>) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    write_atomically(&cert, &pem.cert);
    write_atomically(&key, &pem.key);
    let mut env = vec![
        ("STRATA_TLS__CERT_FILE".to_string(), cert.display().to_string()),
        ("STRATA_TLS__KEY_FILE".to_string(), key.display().to_string()),
        ("STRATA_TLS__RELOAD_INTERVAL_MS".to_string(), "100".to_string()),
    ];
    if let Some(ca) = client_ca {
        let path = dir.join("clients-ca.crt");
        write_atomically(&path, &ca.pem());
        env.push(("STRATA_TLS__CLIENT_CA_FILE".to_string(), path.display().to_string()));
    }
    env
}

/// As an operator's deploy tool would: write beside, then rename over.
fn write_atomically(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start(dir: &Path, env: &[(String, String)]) -> Broker {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Broker::start_with(dir, &[], &env)
}

fn trusting(ca: &Ca) -> TlsOptions {
    TlsOptions { ca_pem: Some(ca.pem().into_bytes()), server_name: Some("localhost".into()), ..Default::default() }
}

fn with_identity(mut tls: TlsOptions, pem: &Pem) -> TlsOptions {
    tls.cert_pem = Some(pem.cert.clone().into_bytes());
    tls.key_pem = Some(pem.key.clone().into_bytes());
    tls
}

/// Connects and asks who the broker takes the client for.
async fn who(addr: &str, tls: Option<&TlsOptions>) -> Result<(String, bool), String> {
    let mut c = Client::connect_with(addr, tls).await.map_err(|e| format!("connect: {e:?}"))?;
    let r = c.admin.who_am_i(WhoAmIRequest {}).await.map_err(|s| format!("rpc: {s:?}"))?.into_inner();
    Ok((r.principal, r.tls))
}

#[tokio::test]
async fn plaintext_to_the_tls_port_fails_and_a_client_trusting_the_ca_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    let env = server_files(&dir.path().join("tls"), &ca.issue("broker", &["localhost"], |_| {}), None);
    let b = start(&dir.path().join("data"), &env);
    assert!(who(&b.addr, None).await.is_err(), "plaintext must not be served on a TLS port");
    assert_eq!(who(&b.addr, Some(&trusting(&ca))).await.unwrap(), (String::new(), true));
    // The plain client changed nothing and the broker still serves.
    let mut c = Client::connect_with(&b.addr, Some(&trusting(&ca))).await.unwrap();
    c.create_topic("t", 1, []).await.unwrap();
}

#[tokio::test]
async fn clients_refuse_untrusted_expired_and_wrong_name_server_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    // (case, what the client's error names), certificate.
    let cases: [((&str, &str), Pem); 3] = [
        (("untrusted", "UnknownIssuer"), Ca::new("another ca").issue("broker", &["localhost"], |_| {})),
        (
            ("expired", "Expired"),
            ca.issue("broker", &["localhost"], |p| {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }),
        ),
        (("wrong name", "NotValidForName"), ca.issue("broker", &["broker.example.org"], |_| {})),
    ];
    for (i, (case, pem)) in cases.iter().enumerate() {
        let env = server_files(&dir.path().join(format!("tls{i}")), pem, None);
        let b = start(&dir.path().join(format!("data{i}")), &env);
        let err = who(&b.addr, Some(&trusting(&ca))).await.unwrap_err();
        assert!(err.starts_with("connect") && err.contains(case.1), "{}: {err}", case.0);
    }
}

#[tokio::test]
async fn mutual_tls_wants_a_certificate_from_the_client_ca_and_maps_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let server = server_ca.issue("broker", &["localhost"], |_| {});
    let env = server_files(&dir.path().join("tls"), &server, Some(&client_ca));
    let b = start(&dir.path().join("data"), &env);

    // No certificate, or one from another CA: refused.
    assert!(who(&b.addr, Some(&trusting(&server_ca))).await.is_err());
    let stranger = Ca::new("client ca").issue("svc-orders", &[], |_| {});
    assert!(who(&b.addr, Some(&with_identity(trusting(&server_ca), &stranger))).await.is_err());

    // From the client CA: the principal is the subject CN, exactly.
    let orders = client_ca.issue("svc-orders", &[], |_| {});
    let tls = with_identity(trusting(&server_ca), &orders);
    assert_eq!(who(&b.addr, Some(&tls)).await.unwrap(), ("svc-orders".to_string(), true));
    drop(b);

    // By the first URI SAN (a SPIFFE id), and a certificate without one is refused.
    let mut env = env;
    env.push(("STRATA_TLS__PRINCIPAL".into(), "san_uri".into()));
    let b = start(&dir.path().join("data"), &env);
    let spiffe = client_ca.issue("ignored cn", &[], |p| {
        p.subject_alt_names.push(SanType::DnsName("orders.internal".try_into().unwrap()));
        p.subject_alt_names.push(SanType::URI("spiffe://example.org/ns/shop/sa/orders".try_into().unwrap()));
    });
    let tls = with_identity(trusting(&server_ca), &spiffe);
    assert_eq!(who(&b.addr, Some(&tls)).await.unwrap().0, "spiffe://example.org/ns/shop/sa/orders");
    assert!(who(&b.addr, Some(&with_identity(trusting(&server_ca), &orders))).await.is_err(), "no URI SAN");
}

/// Waits until a client trusting `ca` gets in (the broker checks its files
/// every 100 ms in these tests); panics after 20 s.
async fn served_eventually(addr: &str, ca: &Ca, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while who(addr, Some(&trusting(ca))).await.is_err() {
        assert!(Instant::now() < deadline, "{what} was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TLS broker whose certificate (from `old_ca`) sits in `tls_dir`, to be
/// replaced by one from `new_ca`.
struct Rotation {
    _dir: tempfile::TempDir,
    tls_dir: PathBuf,
    old_ca: Ca,
    new_ca: Ca,
    b: Broker,
}

impl Rotation {
    fn start() -> Rotation {
        let dir = tempfile::tempdir().unwrap();
        let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
        let tls_dir = dir.path().join("tls");
        let env = server_files(&tls_dir, &old_ca.issue("broker", &["localhost"], |_| {}), None);
        let b = start(&dir.path().join("data"), &env);
        Rotation { _dir: dir, tls_dir, old_ca, new_ca, b }
    }
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_used_by_new_connections_without_a_restart() {
    let Rotation { _dir, tls_dir, old_ca, new_ca, b } = Rotation::start();
    let mut established = Client::connect_with(&b.addr, Some(&trusting(&old_ca))).await.unwrap();
    established.create_topic("t", 1, []).await.unwrap();

    server_files(&tls_dir, &new_ca.issue("broker", &["localhost"], |_| {}), None);
    served_eventually(&b.addr, &new_ca, "the rotated certificate").await;
    assert!(who(&b.addr, Some(&trusting(&old_ca))).await.is_err(), "new connections get the new certificate");
    // The connection made before the rotation goes on.
    established.admin.describe_topic(strata_client::proto::DescribeTopicRequest { name: "t".into() }).await.unwrap();
}

#[tokio::test]
async fn a_damaged_certificate_on_disk_is_refused_and_the_one_in_use_kept() {
    let Rotation { _dir, tls_dir, old_ca, new_ca, b } = Rotation::start();
    assert!(who(&b.addr, Some(&trusting(&old_ca))).await.is_ok());

    // A deploy that went wrong half-way: the certificate file is garbage.
    write_atomically(&tls_dir.join("server.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n");
    b.log_lines_once(|l| l.contains("do not load"));
    assert!(who(&b.addr, Some(&trusting(&old_ca))).await.is_ok(), "the certificate in use is kept");
    assert!(who(&b.addr, None).await.is_err(), "and the listener stays TLS");

    // A good pair later is picked up as usual.
    server_files(&tls_dir, &new_ca.issue("broker", &["localhost"], |_| {}), None);
    served_eventually(&b.addr, &new_ca, "the repaired certificate").await;
}

#[tokio::test]
async fn a_declared_writer_is_the_only_principal_that_may_produce() {
    use strata_client::proto::{Acks, DescribeTopicRequest, ProduceRequest};
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let env =
        server_files(&dir.path().join("tls"), &server_ca.issue("broker", &["localhost"], |_| {}), Some(&client_ca));
    let b = start(&dir.path().join("data"), &env);
    let client = |cn: &str| with_identity(trusting(&server_ca), &client_ca.issue(cn, &[], |_| {}));
    let mut orders = Client::connect_with(&b.addr, Some(&client("svc-orders"))).await.unwrap();
    let mut billing = Client::connect_with(&b.addr, Some(&client("svc-billing"))).await.unwrap();
    let configs = [("writer.principal".to_string(), "svc-orders".to_string())];
    let topic = orders.create_topic("orders", 1, configs).await.unwrap();
    let shown = topic.configs.iter().find(|c| c.key == "writer.principal").unwrap();
    assert_eq!(shown.value, "svc-orders");

    let record = || vec![strata_client::record(None, bytes::Bytes::from_static(b"order placed"))];
    orders.produce("orders", Some(0), record(), Acks::Durable).await.unwrap();
    let err = billing.produce("orders", Some(0), record(), Acks::Durable).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("\"svc-orders\"") && err.message().contains("\"svc-billing\""), "{}", err.message());
    // ProduceStream follows the same rule, request by request.
    let req = ProduceRequest {
        topic: "orders".into(),
        partition: Some(0),
        records: record(),
        request_id: 7,
        ..Default::default()
    };
    let mut replies = billing.broker.produce_stream(futures::stream::iter([req])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    assert_eq!(reply.error.map(|e| e.code), Some(tonic::Code::PermissionDenied as i32));
    // Nothing of the refused writes was stored.
    let d = orders.admin.describe_topic(DescribeTopicRequest { name: "orders".into() }).await.unwrap().into_inner();
    assert_eq!(d.topic.unwrap().partitions[0].high_watermark, 1);
}

#[tokio::test]
async fn without_mutual_tls_a_topic_with_a_declared_writer_refuses_every_producer() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    let configs = [("writer.principal".to_string(), "svc-orders".to_string())];
    c.create_topic("orders", 1, configs).await.unwrap();
    let records = vec![strata_client::record(None, bytes::Bytes::from_static(b"x"))];
    let err = c.produce("orders", None, records, strata_client::proto::Acks::Written).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("anonymous"), "{}", err.message());
    let err = c.create_topic("bad", 1, [("writer.principal".to_string(), "a\u{7}b".to_string())]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("writer.principal"), "{}", err.message());
}

/// What each mutual-TLS principal gets from each RPC with `auth.enabled`:
/// anonymous UNAUTHENTICATED, a principal without ACLs PERMISSION_DENIED
/// (empty lists), a super user through; health and WhoAmI for all. (The
/// whole matrix, with ACLs and API tokens, is in tests/auth.rs.)
#[tokio::test]
async fn with_auth_enabled_every_rpc_answers_by_principal() {
    use strata_client::proto::*;
    use tonic::Code;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let mut env =
        server_files(&dir.path().join("tls"), &server_ca.issue("broker", &["localhost"], |_| {}), Some(&client_ca));
    env.push(("STRATA_AUTH__ENABLED".into(), "true".into()));
    env.push(("STRATA_AUTH__SUPER_USERS".into(), "[\"admin\"]".into()));
    let b = start(&dir.path().join("data"), &env);
    let client = |cn: &str| with_identity(trusting(&server_ca), &client_ca.issue(cn, &[], |_| {}));
    let mut admin = Client::connect_with(&b.addr, Some(&client("admin"))).await.unwrap();
    admin.create_topic("t", 1, []).await.unwrap();

    /// One call of each kind; Ok(()) or the status code.
    async fn calls(c: &mut Client) -> Vec<(&'static str, Result<(), Code>)> {
        let code = |r: Result<(), tonic::Status>| r.map_err(|s| s.code());
        let rec = vec![strata_client::record(None, bytes::Bytes::from_static(b"x"))];
        let fetch = common::fetch_request("t");
        vec![
            ("Produce", code(c.produce("t", Some(0), rec, Acks::Written).await.map(|_| ()))),
            ("Fetch", code(c.broker.fetch(fetch).await.map(|_| ()))),
            (
                "ListOffsets",
                code(
                    c.broker
                        .list_offsets(ListOffsetsRequest {
                            topic: "t".into(),
                            partition: 0,
                            spec: Some(list_offsets_request::Spec::Latest(true)),
                        })
                        .await
                        .map(|_| ()),
                ),
            ),
            ("ListTopics", code(c.admin.list_topics(ListTopicsRequest::default()).await.map(|_| ()))),
            (
                "DescribeTopic",
                code(c.admin.describe_topic(DescribeTopicRequest { name: "t".into() }).await.map(|_| ())),
            ),
            (
                "AlterTopicConfig",
                code(
                    c.admin
                        .alter_topic_config(AlterTopicConfigRequest {
                            name: "t".into(),
                            set: [("retention.ms".to_string(), "-1".to_string())].into(),
                            reset: vec![],
                        })
                        .await
                        .map(|_| ()),
                ),
            ),
            ("CreateTopic", code(c.create_topic("u", 1, []).await.map(|_| ()))),
            ("ListGroups", code(c.groups.list_groups(ListGroupsRequest::default()).await.map(|_| ()))),
            ("WhoAmI", code(c.admin.who_am_i(WhoAmIRequest {}).await.map(|_| ()))),
        ]
    }
    let health = |addr: String, tls: Option<TlsOptions>| async move {
        let ch = strata_client::channel(&addr, tls.as_ref()).await.unwrap();
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        tonic_health::pb::health_client::HealthClient::new(ch).check(req).await.map(|_| ()).map_err(|s| s.code())
    };
    // Anonymous: a client with no certificate cannot even connect under
    // mutual TLS, so this cell is a plaintext broker with auth enabled.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Broker::start_with(plain_dir.path(), &[], &[("STRATA_AUTH__ENABLED", "true")]);
    let mut anonymous = plain.client().await;
    for (rpc, got) in calls(&mut anonymous).await {
        let want = if rpc == "WhoAmI" { Ok(()) } else { Err(Code::Unauthenticated) };
        assert_eq!(got, want, "anonymous {rpc}");
    }
    assert_eq!(health(plain.addr.clone(), None).await, Ok(()), "health is public");

    let mut nobody = Client::connect_with(&b.addr, Some(&client("svc-nobody"))).await.unwrap();
    for (rpc, got) in calls(&mut nobody).await {
        // Lists answer with what the caller may describe: here nothing.
        let want =
            if matches!(rpc, "WhoAmI" | "ListTopics" | "ListGroups") { Ok(()) } else { Err(Code::PermissionDenied) };
        assert_eq!(got, want, "principal without ACLs, {rpc}");
    }
    assert_eq!(health(b.addr.clone(), Some(client("svc-nobody"))).await, Ok(()));
    for (rpc, got) in calls(&mut admin).await {
        assert_eq!(got, Ok(()), "super user, {rpc}");
    }
    // The denied calls changed nothing: one record (the super user's), topic u by the super user only.
    let d = admin.admin.describe_topic(DescribeTopicRequest { name: "t".into() }).await.unwrap().into_inner();
    assert_eq!(d.topic.unwrap().partitions[0].high_watermark, 1);
}

/// `server.metrics_tls`: the metrics endpoint speaks only TLS, with the
/// gRPC listener's certificate; a scraper trusting the CA gets the metrics.
#[tokio::test]
async fn the_metrics_endpoint_over_tls() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    let mut env = server_files(&dir.path().join("tls"), &ca.issue("broker", &["localhost"], |_| {}), None);
    env.push(("STRATA_SERVER__METRICS_TLS".into(), "true".into()));
    let b = start(&dir.path().join("data"), &env);
    let get = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Plaintext: no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(&b.metrics_addr).await.unwrap();
    plain.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/1.1"), "plaintext was answered: {:?}", String::from_utf8_lossy(&answer));
    // TLS, trusting the CA, asking for HTTP/1.1.
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&b.metrics_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("strata_"), "{text}");
}
