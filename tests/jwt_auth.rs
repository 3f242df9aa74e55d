//! jwt_auth through the binary built with the `jwt` feature, against a test OIDC issuer on
//! PyJWT and `cryptography` (tests/interop/oidc_issuer.py): every rule of a token, the answers
//! and log lines of a refusal, what the function sees, every mode, the startup failures and key
//! rotation. The default build refuses jwt_auth=true.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const REFERENCE_NS: &str = "openfaas-fn";
const REFERENCE_NAME: &str = "fn1";

/// The test issuer, stopped when dropped.
struct Issuer {
    child: Child,
    port: u16,
}

impl Issuer {
    fn start(behaviour: &str) -> Issuer {
        Self::start_on(0, behaviour).expect("the test issuer starts")
    }

    fn start_on(port: u16, behaviour: &str) -> Option<Issuer> {
        let mut child = Command::new("python3")
            .args([&interop("oidc_issuer.py"), "--port", &port.to_string(), "--behaviour", behaviour])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run python3");
        let mut line = String::new();
        let read = child.stdout.take().map(|out| BufReader::new(out).read_line(&mut line));
        let port = read.and_then(Result::ok).and_then(|_| line.trim().strip_prefix("PORT ")?.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        Some(Issuer { child, port })
    }

    fn url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    fn discovery(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/openid-configuration", self.port)
    }

    /// A token from `spec` (see oidc_issuer.py's /mint).
    fn mint(&self, spec: &str) -> String {
        let r = request(self.port, "POST", "/mint", &[("Content-Type", "application/json")], spec.as_bytes());
        assert_eq!(r.status, 200, "mint {spec}: {}", r.text());
        r.text()
    }

    /// A token of the `rsa` key for this function, with `extra` claims (JSON members).
    fn token(&self, function: &str) -> String {
        self.mint(&format!(
            r#"{{"claims": {{"iss": "{i}", "aud": ["{i}"], "function": {function}}}, "exp_in": 300}}"#,
            i = self.url()
        ))
    }

    fn key_fetches(&self) -> u64 {
        let r = request(self.port, "GET", "/stats", &[], b"");
        json_field(&r.text(), "key_fetches").and_then(|v| v.parse().ok()).expect("stats")
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready() -> Option<String> {
    if !have_python_module("jwt") || !have_python_module("cryptography") {
        return None;
    }
    jwt_bin()
}

const GRANT: &str = r#"{"permissions": ["openfaas-fn:fn1"]}"#;

fn auth_env(issuer: &Issuer) -> Vec<(String, String)> {
    [
        ("jwt_auth", "true".to_string()),
        ("jwt_auth_discovery_url", issuer.discovery()),
        ("OPENFAAS_NAME", REFERENCE_NAME.to_string()),
        ("OPENFAAS_NAMESPACE", REFERENCE_NS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn start(bin: &str, issuer: &Issuer, env: &[(&str, &str)]) -> Watchdog {
    let mut opts = Options::new(env);
    opts.env.extend(auth_env(issuer));
    opts.bin = Some(bin.to_string());
    Watchdog::start_with(opts)
}

fn call(wd: &Watchdog, authorization: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = authorization.map(|a| ("Authorization", a)).into_iter().collect();
    wd.request("POST", "/", &headers, b"hello")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn the_default_build_refuses_jwt_auth_naming_the_build_that_has_it() {
    let dir = TempDir::new("nojwt");
    let (code, _, err) = run_bin(&[], &[("fprocess", "cat"), ("jwt_auth", "true")], &dir.0);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("without the `jwt` feature") && err.contains("-jwt"), "{err}");
}

/// Each rule of a token, through one watchdog: what passes, and the status and reason of what
/// does not. Deviations from the Go watchdog are marked.
#[test]
fn every_rule_of_a_token_is_enforced() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let wd = start(&bin, &issuer, &[("fprocess", "cat")]);
    let i = issuer.url();
    let claims = |aud: &str, function: &str| format!(r#""iss": "{i}", "aud": {aud}, "function": {function}"#);
    let ok_claims = claims(&format!(r#""{i}""#), GRANT);
    let mint =
        |extra: &str, body: &str| issuer.mint(&format!(r#"{{{extra} "claims": {{{body}}}, "exp_in": 300}}"#));

    // (what, token, expected status, text the body contains)
    let mut cases: Vec<(String, Option<String>, u16, &str)> = Vec::new();
    for (key, alg) in [
        ("rsa", "RS256"),
        ("rsa", "RS384"),
        ("rsa", "RS512"),
        ("rsa", "PS256"),
        ("rsa", "PS384"),
        ("rsa", "PS512"),
        ("ec256", "ES256"),
        ("ec384", "ES384"),
        ("ec521", "ES512"),
    ] {
        let t = mint(&format!(r#""key": "{key}", "alg": "{alg}","#), &ok_claims);
        cases.push((format!("{alg} with {key}"), Some(bearer(&t)), 200, "hello"));
    }
    let list_aud = claims(&format!(r#"["other", "{i}"]"#), GRANT);
    cases.push(("aud a list holding the issuer".into(), Some(bearer(&mint("", &list_aud))), 200, "hello"));
    let denied = |what: &str, t: String, status: u16, why: &'static str| {
        (what.to_string(), Some(bearer(&t)), status, why)
    };
    // Signatures and keys.
    cases.push(denied(
        "ES256 header on the RSA key",
        mint(r#""key": "ec256", "alg": "ES256", "kid": "rsa","#, &ok_claims),
        401,
        "token signature is invalid: signing method ES256 does not fit key",
    ));
    cases.push(denied(
        "ES384 signature under the P-256 key",
        mint(r#""key": "ec384", "alg": "ES384", "kid": "ec256","#, &ok_claims),
        401,
        "token signature is invalid: signing method ES384 does not fit key",
    ));
    cases.push(denied(
        "signed by a key the issuer never published",
        mint(r#""key": "rogue", "kid": "rsa","#, &ok_claims),
        401,
        "token signature is invalid: verification error",
    ));
    cases.push(denied(
        "a kid the key set lacks",
        mint(r#""kid": "nope","#, &ok_claims),
        401,
        "invalid kid: nope",
    ));
    cases.push(denied("no kid", mint(r#""no_kid": true,"#, &ok_claims), 401, "invalid kid: <nil>"));
    // Deviation: Go accepts HS256 signed with an `oct` key published in the key set.
    cases.push(denied(
        "HS256 with the published oct key",
        mint(r#""key": "oct", "alg": "HS256","#, &ok_claims),
        401,
        "invalid kid: oct",
    ));
    cases.push(denied(
        "alg none",
        mint(r#""alg": "none","#, &ok_claims),
        401,
        "'none' signature type is not allowed",
    ));
    let t = mint("", &ok_claims);
    // One character inside the signature (the last one may only carry padding bits).
    let mut tampered: Vec<char> = t.chars().collect();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    cases.push(denied("a signature changed by one character", tampered, 401, "token signature is invalid"));
    cases.push((
        "not a JWT".into(),
        Some("Bearer abc".into()),
        401,
        "token is malformed: token contains an invalid number of segments",
    ));
    // Issuer and audience.
    let wrong_iss = format!(r#""iss": "http://elsewhere", "aud": "{i}", "function": {GRANT}"#);
    cases.push(denied("another issuer", mint("", &wrong_iss), 401, "token has invalid issuer"));
    cases.push(denied(
        "aud a list without the issuer",
        mint("", &claims(r#"["other"]"#, GRANT)),
        401,
        "token has invalid audience",
    ));
    cases.push(denied(
        "aud another string",
        mint("", &claims(r#""other""#, GRANT)),
        401,
        "token has invalid audience",
    ));
    let no_aud = format!(r#""iss": "{i}", "function": {GRANT}"#);
    cases.push(denied("no aud", mint("", &no_aud), 401, "aud claim is required"));
    // The function claim. Deviation: Go grants on a substring match.
    let grant = |permissions: &str, audience: &str| {
        mint(
            "",
            &claims(
                &format!(r#""{i}""#),
                &format!(r#"{{"permissions": {permissions}, "audience": {audience}}}"#),
            ),
        )
    };
    for (permissions, audience, status) in [
        (r#"["openfaas-fn:fn1"]"#, "[]", 200),
        (r#"["openfaas-fn:*"]"#, "[]", 200),
        (r#"["*"]"#, "[]", 200),
        (r#"["*:fn1"]"#, "[]", 200),
        (r#"["dev:*", "openfaas-fn:fn*"]"#, r#"["openfaas-fn:fn1"]"#, 200),
        (r#"["*"]"#, r#"["dev:*", "openfaas-fn:*"]"#, 200),
        (r#"["fn1"]"#, "[]", 403),
        (r#"["faas"]"#, "[]", 403),
        (r#"["openfaas-fn:fn"]"#, "[]", 403),
        (r#"["dev:*"]"#, "[]", 403),
        ("[]", "[]", 403),
        (r#"["*"]"#, r#"["dev:*"]"#, 403),
        (r#"["*"]"#, r#"["fn1"]"#, 403),
    ] {
        let why = if status == 200 { "hello" } else { "insufficient permissions" };
        let what = format!("permissions {permissions} audience {audience}");
        cases.push((what, Some(bearer(&grant(permissions, audience))), status, why));
    }
    cases.push(denied(
        "no function claim",
        mint("", &claims(&format!(r#""{i}""#), "null")),
        403,
        "insufficient permissions",
    ));
    // Schemes. Deviations: Go takes a bare token, and refuses `bearer`.
    cases.push(("no Authorization".into(), None, 401, "Bearer must be present in Authorization header"));
    cases.push((
        "a bare token".into(),
        Some(t.clone()),
        401,
        "Bearer must be present in Authorization header",
    ));
    cases.push((
        "Basic".into(),
        Some("Basic dXNlcjpwYXNz".into()),
        401,
        "Bearer must be present in Authorization header",
    ));
    cases.push((
        "Bearer without a token".into(),
        Some("Bearer".into()),
        401,
        "Bearer must be present in Authorization header",
    ));
    cases.push(("the scheme in lower case".into(), Some(format!("bearer {t}")), 200, "hello"));
    cases.push(("the scheme in capitals".into(), Some(format!("BEARER {t}")), 200, "hello"));

    let mut failures = Vec::new();
    let mut check = |what: &str, authorization: Option<&str>, status: u16, why: &str| {
        let r = call(&wd, authorization);
        if r.status != status || !r.text().contains(why) {
            failures.push(format!(
                "{what}: got {} {:?}, want {status} containing {why:?}",
                r.status,
                r.text()
            ));
        }
    };
    for (what, authorization, status, why) in &cases {
        check(what, authorization.as_deref(), *status, why);
    }
    // Time, with one second of leeway: each token minted just before its call (generous
    // margins: the machine may be loaded).
    for (times, status, why) in [
        (r#""exp_in": -0.3"#, 200, "hello"),
        (r#""exp_in": -5"#, 401, "token has invalid claims: token is expired"),
        (r#""exp_in": 60, "nbf_in": 0.3"#, 200, "hello"),
        (r#""exp_in": 60, "nbf_in": 5"#, 401, "token has invalid claims: token is not valid yet"),
    ] {
        let token = bearer(&issuer.mint(&format!(r#"{{"claims": {{{ok_claims}}}, {times}}}"#)));
        check(&format!("minted with {times}"), Some(&token), status, why);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + 4,
        failures.join("\n")
    );
}

#[test]
fn refusals_carry_the_go_watchdogs_headers_bodies_and_log_lines_and_are_counted() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let mut wd = start(&bin, &issuer, &[("fprocess", "cat")]);

    let r = call(&wd, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "Bearer must be present in Authorization header\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("Www-Authenticate"), Some("Bearer realm=IAM function invoke"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("X-Openfaas-Internal"), Some("faas-middleware"));
    wd.wait_log("POST / - 401 ACCESS DENIED - (", STARTUP);

    let r = call(&wd, Some("Bearer x.y"));
    assert_eq!(r.status, 401);
    assert!(
        r.text().starts_with("failed to parse JWT token: token is malformed") && r.text().ends_with('\n'),
        "{}",
        r.text()
    );

    let t = issuer.token(r#"{"permissions": ["dev:*"]}"#);
    let r = wd.request("GET", "/some/path?x=1", &[("Authorization", &bearer(&t))], b"");
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "insufficient permissions\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("X-Openfaas-Internal"), Some("faas-middleware"));
    assert_eq!(r.header("Www-Authenticate"), None);
    wd.wait_log("GET /some/path - 403 ACCESS DENIED - (", STARTUP);
    assert!(!wd.output.all().contains("POST / - 401 -"), "a refusal is not logged as a call");

    // Health and readiness are open, and so is the metrics port, which counts the refusals.
    assert_eq!(wd.get("/_/health").status, 200);
    assert_eq!(wd.get("/_/ready").status, 200);
    let ok = call(&wd, Some(&bearer(&issuer.token(GRANT))));
    assert_eq!(ok.status, 200);
    wait_for("the refusals and the call counted", STARTUP, || {
        metric(&wd, r#"http_requests_total{code="401",method="post"}"#) == Some(2.0)
            && metric(&wd, r#"http_requests_total{code="403",method="get"}"#) == Some(1.0)
            && metric(&wd, r#"http_requests_total{code="200",method="post"}"#) == Some(1.0)
    });
}

/// What the function sees of a call that passed: `Authorization` as sent, and `X-Auth-Seconds`
/// (the check's duration) in place of the client's.
#[test]
fn fork_modes_see_the_token_and_the_checks_duration() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    for mode in ["streaming", "serializing"] {
        let wd = start(&bin, &issuer, &[("mode", mode), ("fprocess", "env")]);
        let token = bearer(&issuer.token(GRANT));
        let r = wd.request("POST", "/", &[("Authorization", &token), ("X-Auth-Seconds", "99")], b"");
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let env = env_map(&r.text());
        assert_eq!(env.get("Http_Authorization"), Some(&token), "{mode}");
        let secs = env.get("Http_X_Auth_Seconds").unwrap_or_else(|| panic!("{mode}: no Http_X_Auth_Seconds"));
        let (whole, frac) = secs.split_once('.').unwrap_or_else(|| panic!("{mode}: {secs}"));
        assert!(whole == "0" && frac.len() == 6, "{mode}: six decimals, under a second: {secs}");
        assert_eq!(call(&wd, None).status, 401, "{mode}");
    }
}

#[test]
fn http_mode_relays_the_auth_headers_and_refuses_calls_and_upgrades_without_a_token() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let dir = TempDir::new("jwt-http");
    let upstream_port = free_port();
    let server = dir.path("echo.py");
    std::fs::write(
        &server,
        "import json, sys\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\n\
         class H(BaseHTTPRequestHandler):\n    def do_GET(self):\n        \
         body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()\n        \
         self.send_response(200)\n        self.send_header('Content-Length', str(len(body)))\n        \
         self.end_headers()\n        self.wfile.write(body)\n    do_POST = do_GET\n    \
         def log_message(self, *a):\n        pass\n\
         HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n",
    )
    .expect("write upstream");
    let fprocess = format!("python3 {} {upstream_port}", server.display());
    let upstream = format!("http://127.0.0.1:{upstream_port}");
    let wd = start(&bin, &issuer, &[("mode", "http"), ("fprocess", &fprocess), ("upstream_url", &upstream)]);
    let token = bearer(&issuer.token(GRANT));
    let r = wd.request("GET", "/", &[("Authorization", &token), ("X-Auth-Seconds", "99")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert_eq!(json_field(&text, "authorization").as_deref(), Some(token.as_str()), "{text}");
    let secs = json_field(&text, "x-auth-seconds").expect("X-Auth-Seconds relayed");
    assert!(secs.starts_with("0.") && secs.len() == 8, "{secs}");
    assert_eq!(wd.request("GET", "/", &[], b"").status, 401);

    // A websocket upgrade is a call like any other.
    let mut s = wd.connect();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("write");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("answer");
    assert_eq!(&head, b"HTTP/1.1 401", "{}", String::from_utf8_lossy(&head));
}

#[test]
fn static_mode_serves_files_only_with_a_token() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let dir = TempDir::new("jwt-static");
    std::fs::write(dir.path("page.html"), "<p>hi</p>").expect("write");
    let root = dir.0.to_string_lossy().into_owned();
    let wd = start(&bin, &issuer, &[("mode", "static"), ("static_path", &root)]);
    assert_eq!(wd.get("/page.html").status, 401);
    let token = bearer(&issuer.token(GRANT));
    let r = wd.request("GET", "/page.html", &[("Authorization", &token)], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "<p>hi</p>"));
}

/// With max_inflight, a call beyond it gets its 429 before any token is looked at.
#[test]
fn a_busy_function_answers_429_before_authentication() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let dir = TempDir::new("jwt-busy");
    let gate = dir.path("go");
    let f =
        dir.script("slow.sh", &format!("while [ ! -e {} ]; do sleep 0.05; done; echo done", gate.display()));
    let wd = start(&bin, &issuer, &[("fprocess", &f), ("max_inflight", "1")]);
    let port = wd.port;
    let token = bearer(&issuer.token(GRANT));
    let held =
        std::thread::spawn(move || request(port, "POST", "/", &[("Authorization", &token)], b"").status);
    wait_for("the first call holds the only place", STARTUP, || wd.get("/_/ready").status == 429);
    assert_eq!(call(&wd, None).status, 429, "429, not 401");
    std::fs::write(&gate, "").expect("release");
    assert_eq!(held.join().expect("first call"), 200);
}

fn start_fails(bin: &str, env: &[(&str, &str)], within: Duration) -> String {
    let dir = TempDir::new("jwt-start");
    let started = Instant::now();
    let (code, _, err) = run_program(bin, &[], env, &dir.0);
    assert_eq!(code, 1, "{err}");
    assert!(started.elapsed() < within, "took {:?}: {err}", started.elapsed());
    assert!(err.contains("Error: error creating JWTAuthMiddleware: "), "{err}");
    assert!(!err.contains("Listening on port"), "nothing is served: {err}");
    assert!(!dir.path(".lock").exists(), "no lock file");
    err
}

#[test]
fn startup_fails_clearly_when_the_issuer_or_the_functions_identity_is_missing() {
    let Some(bin) = ready() else { return };
    let base = |discovery: &str| {
        vec![
            ("fprocess", "cat".to_string()),
            ("jwt_auth", "true".to_string()),
            ("jwt_auth_discovery_url", discovery.to_string()),
            ("OPENFAAS_NAME", "fn1".to_string()),
            ("OPENFAAS_NAMESPACE", "openfaas-fn".to_string()),
        ]
    };
    let run = |env: Vec<(&str, String)>, within: u64| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start_fails(&bin, &env, Duration::from_secs(within))
    };
    // Nobody listens: retried for a bounded time, each attempt logged.
    let down = format!("http://127.0.0.1:{}/.well-known/openid-configuration", free_port());
    let err = run(base(&down), 40);
    assert!(err.contains("cannot connect") && err.contains("trying again"), "{err}");
    // An issuer that accepts and never answers.
    let slow = Issuer::start("slow");
    let err = run(base(&slow.discovery()), 40);
    assert!(err.contains("no complete answer within"), "{err}");
    // Not JSON: at once, no retry.
    let bad = Issuer::start("badjson");
    let err = run(base(&bad.discovery()), 10);
    assert!(err.contains("invalid JSON") && !err.contains("trying again"), "{err}");
    let empty = Issuer::start("empty");
    let err = run(base(&empty.discovery()), 10);
    assert!(err.contains("the key set has no usable signing key"), "{err}");
    let https = Issuer::start("https_jwks");
    let err = run(base(&https.discovery()), 10);
    assert!(err.contains("https is not supported"), "{err}");
    let failing = Issuer::start("status500");
    let err = run(base(&failing.discovery()), 40);
    assert!(err.contains("status code: 500, body: gateway starting"), "{err}");

    let good = Issuer::start("normal");
    let mut env = base(&good.discovery());
    env.retain(|(k, _)| *k != "OPENFAAS_NAME");
    let err = run(env, 10);
    assert!(err.contains("failed to get function name: env variable 'OPENFAAS_NAME' not set"), "{err}");
    if !std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists() {
        let mut env = base(&good.discovery());
        env.retain(|(k, _)| *k != "OPENFAAS_NAMESPACE");
        let err = run(env, 10);
        assert!(err.contains("failed to get function namespace: open /var/run/secrets/kubernetes.io/serviceaccount/namespace"), "{err}");
    }
}

/// A rotated key is learnt from the key set fetched again, at most once per 30 s.
#[test]
fn a_rotated_key_is_fetched_again_at_most_every_thirty_seconds() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let started = Instant::now();
    let wd = start(&bin, &issuer, &[("fprocess", "cat"), ("jwt_auth_debug", "true")]);
    assert_eq!(issuer.key_fetches(), 1);
    // A token of the old key, verified (and remembered) before the rotation.
    let old = bearer(&issuer.token(GRANT));
    assert_eq!(call(&wd, Some(&old)).status, 200);
    request(issuer.port, "POST", "/rotate", &[], b"{}");
    let i = issuer.url();
    let spec = format!(
        r#"{{"key": "rsa_next", "claims": {{"iss": "{i}", "aud": "{i}", "function": {GRANT}}}, "exp_in": 600}}"#
    );
    let next = bearer(&issuer.mint(&spec));
    let r = call(&wd, Some(&next));
    if started.elapsed() < Duration::from_secs(25) {
        assert_eq!(r.status, 401, "a fetch less than 30 s after the last is not made");
        assert!(r.text().contains("invalid kid: rsa_next"), "{}", r.text());
        assert_eq!(issuer.key_fetches(), 1);
    }
    std::thread::sleep(Duration::from_secs(31).saturating_sub(started.elapsed()));
    let r = call(&wd, Some(&next));
    assert_eq!(r.status, 200, "the new key is learnt: {}", r.text());
    assert_eq!(issuer.key_fetches(), 2);
    // The old key is gone from the new set: its token, verified before, is not taken on trust.
    let r = call(&wd, Some(&old));
    assert_eq!(r.status, 401, "a token of a key no longer published: {}", r.text());
    assert!(r.text().contains("invalid kid: rsa\n"), "{}", r.text());
    // Another unknown kid right after: no new fetch.
    let unknown =
        bearer(&issuer.mint(&spec.replace(r#""key": "rsa_next""#, r#""key": "rsa_next", "kid": "later""#)));
    assert_eq!(call(&wd, Some(&unknown)).status, 401);
    assert_eq!(issuer.key_fetches(), 2);
    let log = wd.output.all();
    assert!(log.contains("[JWT Auth] Issuer: ") && log.contains("[JWT Auth] Key: rsa"), "{log}");
    assert!(log.contains("[JWT Auth] Token: audience: ["), "{log}");
    assert!(log.contains("JWT Auth: true"), "{log}");
}

/// A token used again is remembered only for its signature: its time claims are checked on
/// every call, so a token that expires while in use stops passing.
#[test]
fn a_token_used_again_is_still_refused_once_expired() {
    let Some(bin) = ready() else { return };
    let issuer = Issuer::start("normal");
    let wd = start(&bin, &issuer, &[("fprocess", "cat")]);
    let i = issuer.url();
    let minted = Instant::now();
    let token =
        bearer(&issuer.mint(&format!(
            r#"{{"claims": {{"iss": "{i}", "aud": "{i}", "function": {GRANT}}}, "exp_in": 4}}"#
        )));
    for _ in 0..3 {
        let r = call(&wd, Some(&token));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    if minted.elapsed() > Duration::from_secs(3) {
        skip("the machine is too slow for a 4 s token's first calls; nothing checked");
        return;
    }
    // Past exp and the second of leeway, with a margin.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(minted.elapsed()));
    let r = call(&wd, Some(&token));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("token is expired"), "{}", r.text());
}

/// jwt_auth_local reads the discovery document of a port-forwarded gateway on 127.0.0.1:8000.
#[test]
fn jwt_auth_local_asks_the_gateway_forwarded_to_port_8000() {
    let Some(bin) = ready() else { return };
    let Some(issuer) = Issuer::start_on(8000, "normal") else {
        skip("port 8000 is in use on this machine");
        return;
    };
    let mut opts = Options::new(&[
        ("fprocess", "cat"),
        ("jwt_auth", "true"),
        ("jwt_auth_local", "true"),
        ("OPENFAAS_NAME", REFERENCE_NAME),
        ("OPENFAAS_NAMESPACE", REFERENCE_NS),
    ]);
    opts.bin = Some(bin);
    let wd = Watchdog::start_with(opts);
    assert_eq!(call(&wd, Some(&bearer(&issuer.token(GRANT)))).status, 200);
    assert_eq!(call(&wd, None).status, 401);
}
