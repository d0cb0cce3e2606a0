//! Behaviour of the StackStorm double against `st2-protocol.md`: these keep the double honest,
//! so that the bridge's error handling is tested against what StackStorm really answers.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use st2_matrix_testkit::st2::{CredentialKind, CredentialPlace, RuleState, St2Double, St2Options};

// ----- helpers ---------------------------------------------------------------------------------

fn client() -> Client {
    // Built in the same cargo invocation as the bridge, reqwest gets the bridge's
    // `rustls-no-provider` feature and needs a provider even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

async fn double() -> St2Double {
    let st2 = St2Double::start(St2Options {
        heartbeat: Duration::from_millis(200),
        ..St2Options::default()
    })
    .await;
    st2.add_user("bot", "s3cret");
    st2
}

/// A double with the fixture aliases and a token for `bot`.
async fn double_with_token() -> (St2Double, String) {
    let st2 = double().await;
    st2.load_fixture_aliases();
    let token = st2.issue_token("bot", Duration::from_secs(600));
    (st2, token)
}

async fn body(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

async fn fault(response: Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "errors are JSON"
    );
    let body = body(response).await;
    (
        status,
        body["faultstring"]
            .as_str()
            .expect("faultstring")
            .to_owned(),
    )
}

async fn get(st2: &St2Double, token: &str, path_and_query: &str) -> Response {
    client()
        .get(format!("{}{path_and_query}", st2.url()))
        .header("X-Auth-Token", token)
        .send()
        .await
        .expect("request")
}

async fn execute(st2: &St2Double, token: &str, payload: Value) -> Response {
    client()
        .post(format!("{}/aliasexecution", st2.api_url()))
        .header("X-Auth-Token", token)
        .json(&payload)
        .send()
        .await
        .expect("request")
}

fn run_date(route: &str) -> Value {
    json!({
        "name": "remote_shell_cmd", "format": "run {{cmd}} on {{hosts}}", "command": "run date on web1",
        "user": "@alice:example.org", "source_channel": "!room:example.org",
        "source_context": {"room_id": "!room:example.org", "event_id": "$ev"},
        "notification_route": route,
    })
}

/// Reads an SSE response chunk by chunk.
struct Sse {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
}

impl Sse {
    async fn open(
        st2: &St2Double,
        token: &str,
        events: Option<&str>,
    ) -> (Sse, reqwest::header::HeaderMap) {
        let mut url = format!("{}/stream", st2.stream_url());
        if let Some(events) = events {
            url.push_str(&format!("?events={events}"));
        }
        let response = client()
            .get(url)
            .header("X-Auth-Token", token)
            .send()
            .await
            .expect("stream request");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let stream = response
            .bytes_stream()
            .map(|r| r.map(|b| b.to_vec()))
            .boxed();
        (
            Sse {
                stream,
                buf: String::new(),
            },
            headers,
        )
    }

    /// Next raw text received, or `None` when the stream ended or failed.
    async fn chunk(&mut self, within: Duration) -> Option<String> {
        match tokio::time::timeout(within, self.stream.next()).await {
            Ok(Some(Ok(bytes))) => Some(String::from_utf8(bytes).expect("UTF-8 stream")),
            Ok(_) => None,
            Err(_) => panic!("nothing received within {within:?}"),
        }
    }

    /// Next `(event, data)` frame, skipping heartbeats.
    async fn event(&mut self, within: Duration) -> (String, Value) {
        let deadline = Instant::now() + within;
        loop {
            while self.buf.starts_with('\n') {
                self.buf.remove(0);
            }
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut lines = frame.lines();
                let event = lines
                    .next()
                    .and_then(|l| l.strip_prefix("event: "))
                    .expect("event line");
                let data = lines
                    .next()
                    .and_then(|l| l.strip_prefix("data: "))
                    .expect("data line");
                return (
                    event.to_owned(),
                    serde_json::from_str(data).expect("data is one JSON line"),
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = self.chunk(left).await.expect("stream still open");
            self.buf.push_str(&chunk);
        }
    }
}

// ----- conventions -----------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_a_request_id_and_errors_are_json_faultstrings() {
    let st2 = double().await;
    let response = client()
        .get(format!("{}/nope", st2.api_url()))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        fault(response).await,
        (
            StatusCode::NOT_FOUND,
            "The resource could not be found.".into()
        )
    );
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_is_echoed() {
    let st2 = double().await;
    let response = client()
        .get(format!("{}/actionalias", st2.api_url()))
        .header("X-Request-ID", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
}

// ----- auth ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_is_issued_for_valid_basic_credentials() {
    let st2 = double().await;
    let response = client()
        .post(format!("{}/tokens", st2.auth_url()))
        .basic_auth("bot", Some("s3cret"))
        .json(&json!({"ttl": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().contains_key("x-api-url"));
    let token = body(response).await;
    assert_eq!(token["user"], "bot");
    assert_eq!(token["metadata"], json!({}));
    assert_eq!(token["id"].as_str().unwrap().len(), 24);
    let t = token["token"].as_str().unwrap();
    assert!(
        t.len() == 32
            && t.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let expiry = token["expiry"].as_str().unwrap();
    assert_eq!(
        expiry.len(),
        "2016-05-28T12:39:28.650231Z".len(),
        "{expiry}"
    );
    assert!(expiry.ends_with('Z') && expiry.as_bytes()[19] == b'.');
    assert_eq!(
        get(&st2, t, "/api/v1/actionalias").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_password_is_invalid_or_missing_credentials() {
    let st2 = double().await;
    for auth in [Some(("bot", "nope")), None] {
        let mut request = client().post(format!("{}/tokens", st2.auth_url()));
        if let Some((u, p)) = auth {
            request = request.basic_auth(u, Some(p));
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            fault(response).await,
            (
                StatusCode::UNAUTHORIZED,
                "Invalid or missing credentials".into()
            )
        );
    }
}

#[tokio::test]
async fn a_ttl_above_the_maximum_is_refused_with_st2s_text() {
    let st2 = double().await;
    st2.set_token_ttls(Duration::from_secs(5), Duration::from_secs(10));
    let response = client()
        .post(format!("{}/tokens", st2.auth_url()))
        .basic_auth("bot", Some("s3cret"))
        .json(&json!({"ttl": 86400}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        fault(response).await,
        (
            StatusCode::BAD_REQUEST,
            "TTL specified 86400 is greater than max allowed 10.".into()
        )
    );
}

#[tokio::test]
async fn a_short_lived_token_expires_with_token_has_expired() {
    let st2 = double().await;
    let response = client()
        .post(format!("{}/tokens", st2.auth_url()))
        .basic_auth("bot", Some("s3cret"))
        .json(&json!({"ttl": 1}))
        .send()
        .await
        .unwrap();
    let token = body(response).await["token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&st2, &token, "/api/v1/actionalias").await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/actionalias").await).await,
        (
            StatusCode::UNAUTHORIZED,
            "Unauthorized - Token has expired.".into()
        )
    );
}

#[tokio::test]
async fn missing_unknown_and_expired_credentials_get_st2s_401_texts() {
    let st2 = double().await;
    let none = client()
        .get(format!("{}/actionalias", st2.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        fault(none).await,
        (
            StatusCode::UNAUTHORIZED,
            "Unauthorized - One of Token or API key required.".into()
        )
    );
    let unknown = get(
        &st2,
        "0123456789abcdef0123456789abcdef",
        "/api/v1/actionalias",
    )
    .await;
    assert_eq!(
        fault(unknown).await,
        (StatusCode::UNAUTHORIZED, "Unauthorized".into())
    );
    let token = st2.issue_token("bot", Duration::from_secs(60));
    st2.expire_token(&token);
    let expired = get(&st2, &token, "/api/v1/actionalias").await;
    assert_eq!(
        fault(expired).await,
        (
            StatusCode::UNAUTHORIZED,
            "Unauthorized - Token has expired.".into()
        )
    );
}

#[tokio::test]
async fn api_keys_authenticate_until_disabled_and_unknown_ones_name_their_hash() {
    let st2 = double().await;
    let key = st2.add_api_key("bot");
    let with_key = |k: &str| {
        client()
            .get(format!("{}/actionalias", st2.api_url()))
            .header("St2-Api-Key", k)
            .send()
    };
    assert_eq!(with_key(&key).await.unwrap().status(), StatusCode::OK);
    let (status, text) = fault(with_key("nope").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let hash = text
        .strip_prefix("Unauthorized - ApiKey with key_hash=")
        .and_then(|t| t.strip_suffix(" not found."))
        .expect(&text);
    assert!(hash.len() == 128 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    st2.set_api_key_enabled(&key, false);
    assert_eq!(
        fault(with_key(&key).await.unwrap()).await,
        (
            StatusCode::UNAUTHORIZED,
            "Unauthorized - API key is disabled.".into()
        )
    );
}

#[tokio::test]
async fn the_header_token_wins_over_other_credentials_and_the_record_says_so() {
    let st2 = double().await;
    let token = st2.issue_token("alice", Duration::from_secs(60));
    let key = st2.add_api_key("bot");
    let response = client()
        .get(format!("{}/actionalias?st2-api-key={key}", st2.api_url()))
        .header("X-Auth-Token", &token)
        .header("St2-Api-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let record = st2.requests_to("/api/v1/actionalias").pop().unwrap();
    let used = record.credential.clone().unwrap();
    assert_eq!(
        (used.kind, used.place, used.value.as_str()),
        (
            CredentialKind::Token,
            CredentialPlace::Header,
            token.as_str()
        )
    );
    assert_eq!(record.user.as_deref(), Some("alice"));
    assert!(record.credential_in_url(), "the key was also in the query");
}

#[tokio::test]
async fn a_query_credential_works_and_is_recorded_as_in_the_url() {
    let st2 = double().await;
    let key = st2.add_api_key("bot");
    let response = client()
        .get(format!("{}/actionalias?st2-api-key={key}", st2.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let record = st2.requests().pop().unwrap();
    assert_eq!(
        record.credential.as_ref().unwrap().place,
        CredentialPlace::Query
    );
    assert!(record.credential_in_url());
}

#[tokio::test]
async fn a_token_by_header_gets_an_auth_token_cookie_and_a_key_does_not() {
    let st2 = double().await;
    let token = st2.issue_token("bot", Duration::from_secs(60));
    let response = get(&st2, &token, "/api/v1/actionalias").await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with(&format!("auth-token={token};")),
        "{cookie}"
    );
    let key = st2.add_api_key("bot");
    let response = client()
        .get(format!("{}/actionalias", st2.api_url()))
        .header("St2-Api-Key", &key)
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn validate_tells_whether_a_token_is_still_valid() {
    let st2 = double().await;
    let token = st2.issue_token("bot", Duration::from_secs(60));
    let validate = |t: Value| {
        client()
            .post(format!("{}/tokens/validate", st2.auth_url()))
            .json(&t)
            .send()
    };
    assert_eq!(
        body(validate(json!({"token": token})).await.unwrap()).await,
        json!({"valid": true})
    );
    st2.expire_token(&token);
    assert_eq!(
        body(validate(json!({"token": token})).await.unwrap()).await,
        json!({"valid": false})
    );
    assert_eq!(
        fault(validate(json!({})).await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "Token is not provided.".into())
    );
}

// ----- aliases ---------------------------------------------------------------------------------

fn many_aliases(n: usize) -> Vec<Value> {
    // Inserted in an order that is not the listing order, to show the sort.
    (0..n)
        .rev()
        .map(|i| {
            St2Double::simple_alias(
                &format!("pack{}", i % 3),
                &format!("alias{i:03}"),
                "core.local",
                &["x"],
            )
        })
        .collect()
}

#[tokio::test]
async fn aliases_come_in_pages_of_100_with_the_total_count() {
    let st2 = double().await;
    st2.set_aliases(many_aliases(250));
    let token = st2.issue_token("bot", Duration::from_secs(60));
    let mut seen = Vec::new();
    for offset in [0, 100, 200] {
        let response = get(
            &st2,
            &token,
            &format!("/api/v1/actionalias?limit=100&offset={offset}"),
        )
        .await;
        assert_eq!(response.headers()["x-total-count"], "250");
        assert_eq!(response.headers()["x-limit"], "100");
        let page = body(response).await;
        let page = page.as_array().unwrap();
        assert_eq!(page.len(), if offset == 200 { 50 } else { 100 });
        seen.extend(page.iter().map(|a| {
            (
                a["pack"].as_str().unwrap().to_owned(),
                a["name"].as_str().unwrap().to_owned(),
            )
        }));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "sorted by pack, then name");
    sorted.dedup();
    assert_eq!(sorted.len(), 250);
}

#[tokio::test]
async fn without_limit_the_page_size_is_100() {
    let st2 = double().await;
    st2.set_aliases(many_aliases(150));
    let token = st2.issue_token("bot", Duration::from_secs(60));
    let response = get(&st2, &token, "/api/v1/actionalias").await;
    assert_eq!(response.headers()["x-limit"], "100");
    assert_eq!(body(response).await.as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn limit_minus_one_is_for_admins_only() {
    let st2 = double().await;
    st2.set_aliases(many_aliases(150));
    let token = st2.issue_token("bot", Duration::from_secs(60));
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/actionalias?limit=-1").await).await,
        (
            StatusCode::FORBIDDEN,
            "Administrator access required to be able to specify limit=-1 and retrieve all the records".into()
        )
    );
    st2.set_admin("bot", true);
    let response = get(&st2, &token, "/api/v1/actionalias?limit=-1").await;
    assert!(!response.headers().contains_key("x-limit"));
    assert_eq!(body(response).await.as_array().unwrap().len(), 150);
}

#[tokio::test]
async fn bad_limits_are_refused_with_st2s_texts() {
    let st2 = double().await;
    let token = st2.issue_token("bot", Duration::from_secs(60));
    let cases = [
        (
            "limit=0",
            StatusCode::BAD_REQUEST,
            "Limit, \"0\" specified, must be a positive number or -1 for full result set.",
        ),
        (
            "limit=-2",
            StatusCode::BAD_REQUEST,
            "Limit, \"-2\" specified, must be a positive number.",
        ),
        (
            "limit=101",
            StatusCode::FORBIDDEN,
            "Limit \"101\" specified, maximum value is \"100\"",
        ),
        (
            "limit=ten",
            StatusCode::BAD_REQUEST,
            "Parameter \"limit\" is not of type integer",
        ),
    ];
    for (query, status, text) in cases {
        let response = get(&st2, &token, &format!("/api/v1/actionalias?{query}")).await;
        assert_eq!(fault(response).await, (status, text.to_owned()), "{query}");
    }
}

#[tokio::test]
async fn aliases_filter_by_pack_and_are_found_by_ref() {
    let (st2, token) = double_with_token().await;
    let packs = body(get(&st2, &token, "/api/v1/actionalias?pack=packs").await).await;
    let names: Vec<&str> = packs
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["pack_get", "pack_install", "pack_search", "pack_show"]
    );
    let one = body(
        get(
            &st2,
            &token,
            "/api/v1/actionalias/examples.remote_shell_cmd",
        )
        .await,
    )
    .await;
    assert_eq!(one["uid"], "action_alias:examples:remote_shell_cmd");
    let by_id = body(
        get(
            &st2,
            &token,
            &format!("/api/v1/actionalias/{}", one["id"].as_str().unwrap()),
        )
        .await,
    )
    .await;
    assert_eq!(by_id, one);
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/actionalias/examples.nope").await).await,
        (
            StatusCode::NOT_FOUND,
            "Resource with a reference or id \"examples.nope\" not found".into()
        )
    );
}

#[tokio::test]
async fn help_counts_every_matching_display_and_returns_one_page() {
    let (st2, token) = double_with_token().await;
    let all = body(get(&st2, &token, "/api/v1/actionalias/help?limit=0").await).await;
    let available = all["available"].as_i64().unwrap();
    assert_eq!(
        all["helpstrings"].as_array().unwrap().len() as i64,
        available
    );
    let first = &all["helpstrings"][0];
    assert_eq!(first["pack"], "aliases", "sorted by pack then name");
    let packs = body(
        get(
            &st2,
            &token,
            "/api/v1/actionalias/help?filter=PACK%20(get|show)&pack=packs",
        )
        .await,
    )
    .await;
    let displays: Vec<&str> = packs["helpstrings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["display"].as_str().unwrap())
        .collect();
    assert_eq!(displays, ["pack get <pack>", "pack show <pack>"]);
    let page = body(get(&st2, &token, "/api/v1/actionalias/help?limit=2&offset=3").await).await;
    assert_eq!(page["available"].as_i64().unwrap(), available);
    assert_eq!(
        page["helpstrings"].as_array().unwrap()[..],
        all["helpstrings"].as_array().unwrap()[3..5]
    );
}

// ----- alias execution -------------------------------------------------------------------------

#[tokio::test]
async fn an_alias_execution_answers_201_with_the_execution_and_the_rendered_ack() {
    let (st2, token) = double_with_token().await;
    let response = execute(&st2, &token, run_date("matrix")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created = body(response).await;
    let ex = &created["execution"];
    let id = ex["id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    assert_eq!(ex["status"], "requested");
    assert_eq!(
        ex["web_url"],
        format!("{}/#/history/{id}/general", st2.url())
    );
    assert_eq!(ex["action"]["ref"], "core.remote");
    assert_eq!(ex["parameters"], json!({"cmd": "date", "hosts": "web1"}));
    assert_eq!(ex["context"]["api_user"], "@alice:example.org");
    assert_eq!(ex["context"]["user"], "bot");
    assert_eq!(ex["context"]["source_channel"], "!room:example.org");
    assert_eq!(
        ex["context"]["action_alias_ref"]["name"],
        "remote_shell_cmd"
    );
    assert_eq!(created["actionalias"]["ref"], "examples.remote_shell_cmd");
    assert_eq!(
        created["message"],
        "Hold tight while I run command: *date* on hosts *web1*"
    );
    assert!(created.get("extra").is_none());
}

#[tokio::test]
async fn an_undefined_variable_in_the_ack_becomes_st2s_message() {
    let (st2, token) = double_with_token().await;
    let mut payload = run_date("matrix");
    payload["name"] = json!("alias_with_undefined_jinja_in_ack_format");
    let created = body(execute(&st2, &token, payload).await).await;
    assert_eq!(
        created["message"],
        "Cannot render \"format\" in field \"ack\" for alias. 'cmd' is undefined"
    );
}

#[tokio::test]
async fn an_ack_extra_comes_back_rendered_as_extra() {
    let (st2, token) = double_with_token().await;
    let payload = json!({"name": "alias1", "format": "Lorem ipsum {{param1}} dolor sit {{param2}} amet.",
        "command": "Lorem ipsum a dolor sit b amet.", "source_channel": "!r:hs", "notification_route": "matrix"});
    let created = body(execute(&st2, &token, payload).await).await;
    assert_eq!(created["extra"], json!({"color": "red"}));
    assert!(created.get("message").is_none());
    assert_eq!(
        created["execution"]["parameters"],
        json!({"param1": "a", "param2": "b"})
    );
}

#[tokio::test]
async fn alias_execution_errors_use_st2s_status_and_text() {
    let (st2, token) = double_with_token().await;
    st2.set_alias_enabled("hello_st2.greet", false);
    let with = |patch: Value| {
        let mut p = run_date("matrix");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        p
    };
    let cases = [
        (
            with(json!({"name": "nope"})),
            StatusCode::NOT_FOUND,
            "Unable to find the ActionAliasDB instance. {'name': 'nope'}",
        ),
        (
            with(json!({"name": "greet", "format": "greet {{greeting}}"})),
            StatusCode::BAD_REQUEST,
            "Action alias with name \"greet\" is disabled.",
        ),
        (
            with(json!({"format": "run {{cmd}}"})),
            StatusCode::BAD_REQUEST,
            "Format string \"run {{cmd}}\" is not available on the alias \"remote_shell_cmd\"",
        ),
        (
            with(json!({"command": "walk date"})),
            StatusCode::BAD_REQUEST,
            "Command \"walk date\" doesn't match format string \"run {{cmd}} on {{hosts}}\"",
        ),
        (
            with(json!({"source_channel": null})),
            StatusCode::BAD_REQUEST,
            "'source_channel' is a required property",
        ),
        (
            with(json!({"room": "!r:hs"})),
            StatusCode::BAD_REQUEST,
            "Additional properties are not allowed ('room' was unexpected)",
        ),
        (
            with(json!({"user": 42})),
            StatusCode::BAD_REQUEST,
            "42 is not of type 'string'",
        ),
        (
            with(json!({"name": ""})),
            StatusCode::BAD_REQUEST,
            "Alias execution \"name\" is required",
        ),
    ];
    for (payload, status, text) in cases {
        assert_eq!(
            fault(execute(&st2, &token, payload.clone()).await).await,
            (status, text.to_owned()),
            "{payload}"
        );
    }
    assert!(
        st2.executions().is_empty(),
        "no failed request created an execution"
    );
}

#[tokio::test]
async fn immutable_parameters_are_injected_and_cannot_be_overridden() {
    let (st2, token) = double_with_token().await;
    let payload = |command: &str| json!({"name": "alias5", "format": "lorem ipsum", "command": command, "source_channel": "!r:hs"});
    let created = body(execute(&st2, &token, payload("lorem ipsum")).await).await;
    assert_eq!(
        created["execution"]["parameters"],
        json!({"param1": "value1", "param2": "value2"})
    );
    assert_eq!(
        fault(execute(&st2, &token, payload("lorem ipsum param1=x")).await).await,
        (
            StatusCode::BAD_REQUEST,
            "Immutable arguments cannot be overriden: param1".into()
        )
    );
}

#[tokio::test]
async fn rbac_denial_and_missing_actions_are_refused() {
    let (st2, token) = double_with_token().await;
    st2.deny_execute("bot", true);
    assert_eq!(
        fault(execute(&st2, &token, run_date("matrix")).await).await,
        (
            StatusCode::FORBIDDEN,
            "User \"bot\" doesn't have required permission \"action_execute\" on resource \"action:core:remote\"".into()
        )
    );
    st2.deny_execute("bot", false);
    st2.set_action_missing("core.remote", true);
    assert_eq!(
        fault(execute(&st2, &token, run_date("matrix")).await).await,
        (
            StatusCode::NOT_FOUND,
            "Action with ref \"core.remote\" not found ".into()
        )
    );
}

#[tokio::test]
async fn executions_are_recorded_with_request_and_credential_and_can_be_fetched() {
    let (st2, token) = double_with_token().await;
    // Kept `requested`, so the fetched execution is the one the 201 carried.
    st2.set_start_delay(None);
    let created = body(execute(&st2, &token, run_date("matrix")).await).await;
    let id = created["execution"]["id"].as_str().unwrap();
    let recorded = st2.execution(id).unwrap();
    assert_eq!(recorded.user, "bot");
    assert_eq!(recorded.credential.value, token);
    assert_eq!(recorded.request["source_context"]["event_id"], "$ev");
    assert_eq!(recorded.request["notification_route"], "matrix");
    let fetched = body(get(&st2, &token, &format!("/api/v1/executions/{id}")).await).await;
    assert_eq!(fetched, created["execution"]);
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/executions/000000000000000000000000").await).await,
        (
            StatusCode::NOT_FOUND,
            "Unable to identify resource with id \"000000000000000000000000\".".into()
        )
    );
}

#[tokio::test]
async fn commands_are_parsed_as_st2_parses_them() {
    let (st2, token) = double_with_token().await;
    let mut payload = run_date("matrix");
    payload["command"] = json!(r#"run "uname -a" on web1 timeout=5"#);
    let created = body(execute(&st2, &token, payload).await).await;
    assert_eq!(
        created["execution"]["parameters"],
        json!({"cmd": "uname -a", "hosts": "web1", "timeout": "5"})
    );
}

#[tokio::test]
async fn an_invalid_format_is_a_500_as_in_st2() {
    let (st2, token) = double_with_token().await;
    // `{{my-param}}` becomes `(?P<my-param>…)`, which Python's `re` rejects.
    let alias = St2Double::simple_alias("examples", "bad_name", "core.local", &["go {{my-param}}"]);
    st2.set_aliases(vec![alias]);
    let mut payload = run_date("matrix");
    payload["name"] = json!("bad_name");
    payload["format"] = json!("go {{my-param}}");
    payload["command"] = json!("go now");
    assert_eq!(
        fault(execute(&st2, &token, payload).await).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error".into()
        )
    );
}

// ----- results and the stream ------------------------------------------------------------------

#[tokio::test]
async fn the_stream_greets_with_a_newline_then_sends_heartbeats_when_idle() {
    let (st2, token) = double_with_token().await;
    let (mut sse, headers) = Sse::open(&st2, &token, Some("st2.announcement__matrix")).await;
    assert_eq!(headers["content-type"], "text/event-stream; charset=UTF-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n")
    );
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n")
    );
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n")
    );
}

#[tokio::test]
async fn finishing_an_execution_announces_the_default_result_on_the_route() {
    let (st2, token) = double_with_token().await;
    st2.add_alias(St2Double::simple_alias(
        "ops",
        "shell",
        "core.local",
        &["shell {{cmd}}"],
    ));
    let (mut sse, _) = Sse::open(&st2, &token, Some("st2.announcement__matrix")).await;
    let payload = json!({"name": "shell", "format": "shell {{cmd}}", "command": "shell uname",
        "user": "@alice:example.org", "source_channel": "!room:example.org",
        "source_context": {"event_id": "$ev"}, "notification_route": "matrix"});
    let id = body(execute(&st2, &token, payload).await).await["execution"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outcome = st2.finish_execution(
        &id,
        "succeeded",
        json!({"stdout": "Linux", "stderr": "", "return_code": 0}),
    );
    assert_eq!(outcome.delivered_to, 1);
    let (event, data) = sse.event(Duration::from_secs(2)).await;
    assert_eq!(event, "st2.announcement__matrix");
    let p = &data["payload"];
    assert_eq!(p["channel"], "!room:example.org");
    assert_eq!(p["user"], "@alice:example.org");
    assert_eq!(p["whisper"], false);
    assert_eq!(p["extra"], json!({}));
    assert_eq!(p["context"], json!({"event_id": "$ev"}));
    let web_url = format!("{}/#/history/{id}/general", st2.url());
    let took = p["message"]
        .as_str()
        .unwrap()
        .split("Took ")
        .nth(1)
        .unwrap()
        .split(" to complete")
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        p["message"],
        format!(
            "\nAction core.local completed.\nstatus : succeeded\nexecution: {id}\n\nweb_url: {web_url}\n\nTook {took} to complete.\n\nresult :\n--------\nstdout : Linux\n\n"
        )
    );
    assert!(data.get("trace_context").is_some());
    let fetched = body(get(&st2, &token, &format!("/api/v1/executions/{id}")).await).await;
    assert_eq!(fetched["status"], "succeeded");
    assert!(fetched["end_timestamp"].is_string() && fetched["elapsed_seconds"].is_number());
}

#[tokio::test]
async fn the_fixture_result_format_renders_as_jinja2_does() {
    let (st2, token) = double_with_token().await;
    let (mut sse, _) = Sse::open(&st2, &token, Some("st2.announcement__matrix")).await;
    let id = body(execute(&st2, &token, run_date("matrix")).await).await["execution"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    st2.finish_execution(
        &id,
        "succeeded",
        json!({"web1": {"stderr": "", "stdout": "Mon"}}),
    );
    let (_, data) = sse.event(Duration::from_secs(2)).await;
    // Rendered by Jinja2 3.1.6 from the same template and values.
    assert_eq!(
        data["payload"]["message"],
        "Ran command *date* on *1* hosts.\n\nDetails are as follows:\nHost: *web1*\n    ---> stdout: Mon\n    ---> stderr: \n"
    );
}

#[tokio::test]
async fn the_alias_result_format_and_extra_shape_the_announcement() {
    let (st2, token) = double_with_token().await;
    let mut alias = St2Double::simple_alias("ops", "uptime", "core.local", &["uptime {{host}}"]);
    alias["result"] = json!({"format": "{{ execution.parameters.host }}: {{ execution.result.stdout }}", "extra": {"color": "{{ 'green' if execution.status == 'succeeded' else 'red' }}"}});
    st2.add_alias(alias);
    let (mut sse, _) = Sse::open(&st2, &token, Some("st2.announcement__*")).await;
    let payload = json!({"name": "uptime", "format": "uptime {{host}}", "command": "uptime web1", "source_channel": "!r:hs", "notification_route": "matrix"});
    let id = body(execute(&st2, &token, payload).await).await["execution"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    st2.finish_execution(&id, "succeeded", json!({"stdout": "up 3 days"}));
    let (_, data) = sse.event(Duration::from_secs(2)).await;
    assert_eq!(data["payload"]["message"], "web1: up 3 days");
    assert_eq!(data["payload"]["extra"], json!({"color": "green"}));
    assert_eq!(data["payload"]["user"], Value::Null);
}

#[tokio::test]
async fn the_events_filter_only_lets_matching_events_through() {
    let (st2, token) = double_with_token().await;
    let (mut filtered, _) = Sse::open(&st2, &token, Some("st2.announcement__matrix")).await;
    let (mut everything, _) = Sse::open(&st2, &token, None).await;
    // Counted: the connections the event reaches (the filtered one is not among them).
    assert_eq!(
        st2.announce("errbot", json!({"channel": "c", "message": "not for us"})),
        1
    );
    st2.announce(
        "matrix",
        json!({"channel": "c", "message": "for us", "whisper": true, "user": "@a:hs"}),
    );
    let (event, data) = filtered.event(Duration::from_secs(2)).await;
    assert_eq!(
        (event.as_str(), &data["payload"]["message"]),
        ("st2.announcement__matrix", &json!("for us"))
    );
    let (first, _) = everything.event(Duration::from_secs(2)).await;
    assert_eq!(
        first, "st2.announcement__errbot",
        "the default whitelist includes every announcement"
    );
    execute(&st2, &token, run_date("matrix")).await;
    let _ = everything.event(Duration::from_secs(2)).await;
    let (created, _) = everything.event(Duration::from_secs(2)).await;
    assert_eq!(created, "st2.execution__create");
}

#[tokio::test]
async fn a_missing_or_disabled_notify_rule_means_results_never_arrive() {
    let (st2, token) = double_with_token().await;
    let rule = body(get(&st2, &token, "/api/v1/rules/st2_matrix.notify_matrix").await).await;
    assert_eq!(
        (rule["enabled"].clone(), rule["action"]["ref"].clone()),
        (json!(true), json!("chatops.post_result"))
    );
    st2.set_notify_rule("matrix", RuleState::Disabled);
    assert_eq!(
        body(get(&st2, &token, "/api/v1/rules/st2_matrix.notify_matrix").await).await["enabled"],
        false
    );
    let id = body(execute(&st2, &token, run_date("matrix")).await).await["execution"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outcome = st2.finish_execution(&id, "succeeded", json!({}));
    assert!(outcome.payload.is_none() && outcome.skipped.unwrap().contains("disabled"));
    st2.set_notify_rule("matrix", RuleState::Absent);
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/rules/st2_matrix.notify_matrix").await).await,
        (
            StatusCode::NOT_FOUND,
            "Resource with a reference or id \"st2_matrix.notify_matrix\" not found".into()
        )
    );
}

#[tokio::test]
async fn an_alias_with_result_disabled_announces_nothing() {
    let (st2, token) = double_with_token().await;
    let mut alias = St2Double::simple_alias("ops", "quiet", "core.local", &["quiet"]);
    alias["result"] = json!({"enabled": false});
    st2.add_alias(alias);
    let payload = json!({"name": "quiet", "format": "quiet", "command": "quiet", "source_channel": "!r:hs", "notification_route": "matrix"});
    let id = body(execute(&st2, &token, payload).await).await["execution"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outcome = st2.finish_execution(&id, "succeeded", json!({"stdout": "x"}));
    assert!(outcome.payload.is_none());
    assert_eq!(
        outcome.skipped.as_deref(),
        Some("the alias disables result output")
    );
}

#[tokio::test]
async fn announcements_made_while_nobody_listens_are_lost() {
    let (st2, token) = double_with_token().await;
    assert_eq!(
        st2.announce("matrix", json!({"channel": "c", "message": "lost"})),
        0
    );
    let (mut sse, _) = Sse::open(&st2, &token, Some("st2.announcement__matrix")).await;
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n")
    );
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n"),
        "a heartbeat, not the lost event"
    );
}

#[tokio::test]
async fn cutting_the_stream_drops_open_connections() {
    let (st2, token) = double_with_token().await;
    let (mut sse, _) = Sse::open(&st2, &token, Some("st2.announcement__matrix")).await;
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n")
    );
    assert_eq!(st2.stream_subscribers(), 1);
    st2.cut_streams();
    assert_eq!(sse.chunk(Duration::from_secs(2)).await, None);
    let deadline = Instant::now() + Duration::from_secs(2);
    while st2.stream_subscribers() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(st2.stream_subscribers(), 0);
}

#[tokio::test]
async fn a_stream_that_is_down_refuses_connections_until_it_comes_back() {
    let (st2, token) = double_with_token().await;
    st2.stream_down_for(Duration::from_millis(300));
    let refused = get(&st2, &token, "/stream/v1/stream").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Poll rather than sleep a fixed time: the timer may fire late on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = get(&st2, &token, "/stream/v1/stream").await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the stream never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        st2.requests_to("/stream/v1/stream")
            .iter()
            .any(|r| r.status == 503)
    );
}

#[tokio::test]
async fn the_stream_requires_credentials_too() {
    let (st2, _) = double_with_token().await;
    let response = client()
        .get(format!("{}/stream", st2.stream_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// ----- fault injection -------------------------------------------------------------------------

#[tokio::test]
async fn injected_failures_answer_st2_style_500s_and_503s() {
    let (st2, token) = double_with_token().await;
    st2.set_failure(Some(500));
    assert_eq!(
        fault(get(&st2, &token, "/api/v1/actionalias").await).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error".into()
        )
    );
    st2.set_failure(None);
    st2.fail_next(1, 503);
    assert_eq!(
        get(&st2, &token, "/api/v1/actionalias").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&st2, &token, "/api/v1/actionalias").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_stopped_server_refuses_connections_and_restarts_on_the_same_port() {
    let (st2, token) = double_with_token().await;
    let (mut sse, _) = Sse::open(&st2, &token, None).await;
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await.as_deref(),
        Some("\n")
    );
    st2.stop().await;
    assert_eq!(
        sse.chunk(Duration::from_secs(2)).await,
        None,
        "open streams die with the server"
    );
    let refused = client()
        .get(format!("{}/actionalias", st2.api_url()))
        .send()
        .await;
    assert!(refused.unwrap_err().is_connect());
    st2.restart().await;
    assert_eq!(
        get(&st2, &token, "/api/v1/actionalias").await.status(),
        StatusCode::OK,
        "state survives"
    );
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let (st2, token) = double_with_token().await;
    st2.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    get(&st2, &token, "/api/v1/actionalias").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}
