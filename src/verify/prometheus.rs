//! The `prometheus` check's probe: one instant query (`POST <url>/api/v1/query`), its one value.
//!
//! How answers count (notes/backends.md §6): a value or a scalar is read; an empty vector is no
//! data; more than one series, a range vector or a query Prometheus refuses as malformed (400
//! `bad_data`, 422 `execution`) is [`Reading::Broken`] — a configuration error, never a pass;
//! 503 and other 5xx, timeouts, network errors and answers that are not Prometheus JSON are
//! [`Reading::Unreachable`] (inconclusive: Prometheus may be restarting).

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value as Json;

use super::{describe_transport_error, redact_url, shorten};
use crate::domain::verification::Reading;

/// The largest answer read. One series is a few hundred bytes; an answer cut at this size does
/// not parse and reads as "not a Prometheus answer" (inconclusive), which is all a query
/// returning megabytes deserves, without holding the rest in memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How much of a body that is not Prometheus JSON a reading quotes.
const BODY_EXCERPT_CHARS: usize = 200;
/// How much of Prometheus's own error message a reading quotes.
const ERROR_CHARS: usize = 500;

/// The answer envelope of every Prometheus HTTP API call.
#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    /// `[<unix time>, "<value>"]`.
    Scalar((Json, String)),
    Matrix(IgnoredAny),
    String(IgnoredAny),
}

/// One series of an instant vector: its labels and `[<unix time>, "<value>"]`; a native
/// histogram sample carries `histogram` instead of `value`.
#[derive(Debug, Deserialize)]
struct Sample {
    #[serde(default)]
    metric: serde_json::Map<String, Json>,
    #[serde(default)]
    value: Option<(Json, String)>,
}

/// Evaluates `query` now at the Prometheus server `base_url` (which may have a path prefix,
/// `http://host/prom`), allowing it `timeout`.
pub async fn instant_query(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
    timeout: Duration,
) -> Reading {
    let endpoint = match query_endpoint(base_url) {
        Ok(endpoint) => endpoint,
        Err(why) => return Reading::Broken(why),
    };
    let shown = redact_url(endpoint.as_str());
    let form = [
        ("query", query.to_string()),
        // Prometheus stops evaluating when we stop waiting, instead of burning CPU after.
        ("timeout", format!("{}ms", timeout.as_millis())),
    ];
    let sent = client
        .post(endpoint)
        .form(&form)
        .timeout(timeout)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            let why = describe_transport_error(&err, timeout);
            return Reading::Unreachable(format!("POST {shown}: {why}"));
        }
    };
    let status = response.status();
    let body = match read_body(response).await {
        Ok(body) => body,
        Err(err) => {
            let why = describe_transport_error(&err, timeout);
            return Reading::Unreachable(format!("POST {shown}: reading the answer: {why}"));
        }
    };
    let reading = reading_of(status, &body, &shown);
    if let Reading::Broken(why) | Reading::Unreachable(why) = &reading {
        tracing::warn!(url = %shown, query, why = %why, "prometheus check query did not give a value");
    }
    reading
}

/// `<base>/api/v1/query`, keeping any path prefix of `base`.
fn query_endpoint(base_url: &str) -> Result<url::Url, String> {
    let shown = redact_url(base_url);
    let mut url = url::Url::parse(base_url)
        .map_err(|err| format!("the prometheus url `{shown}` is not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the prometheus url `{shown}` must start with http:// or https://"
        ));
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| format!("the prometheus url `{shown}` cannot have a path"))?
        // `http://host/prom/` and `http://host/prom` both mean the prefix `/prom`.
        .pop_if_empty()
        .extend(["api", "v1", "query"]);
    Ok(url)
}

/// The body, up to [`MAX_BODY_BYTES`] (the rest is dropped unread).
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY_BYTES {
            break;
        }
    }
    Ok(body)
}

/// What an answer of HTTP `status` with `body` means. `shown` is the endpoint for messages.
fn reading_of(status: StatusCode, body: &[u8], shown: &str) -> Reading {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(_) => {
            // A proxy's error page or a wrong URL: say what came back instead.
            let excerpt = shorten(&String::from_utf8_lossy(body), BODY_EXCERPT_CHARS);
            return Reading::Unreachable(format!(
                "POST {shown}: HTTP {}, not a Prometheus answer: {excerpt}",
                status.as_u16()
            ));
        }
    };
    for warning in &envelope.warnings {
        tracing::warn!(url = %shown, warning, "prometheus warns about a check query");
    }
    for info in &envelope.infos {
        tracing::debug!(url = %shown, info, "prometheus note about a check query");
    }
    if envelope.status != "success" {
        return refusal(status, &envelope);
    }
    match envelope.data {
        Some(data) => reading_of_data(data),
        None => Reading::Unreachable(format!(
            "POST {shown}: HTTP {}, a success without data",
            status.as_u16()
        )),
    }
}

/// An answer with `"status":"error"`: a refused query is a config error, anything else passes.
fn refusal(status: StatusCode, envelope: &Envelope) -> Reading {
    let kind = envelope.error_type.as_deref().unwrap_or("unknown");
    let error = shorten(
        envelope.error.as_deref().unwrap_or("no message"),
        ERROR_CHARS,
    );
    if matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
    ) {
        Reading::Broken(format!(
            "Prometheus refused the query (HTTP {}, {kind}): {error}",
            status.as_u16()
        ))
    } else {
        Reading::Unreachable(format!(
            "Prometheus answered HTTP {} ({kind}): {error}",
            status.as_u16()
        ))
    }
}

fn reading_of_data(data: Data) -> Reading {
    match data {
        Data::Vector(samples) => match samples.as_slice() {
            [] => Reading::NoData,
            [sample] => match &sample.value {
                Some((_, value)) => parse_value(value),
                None => Reading::Broken(format!(
                    "the query returned a histogram sample ({}); make it return a number, e.g. with histogram_quantile(…)",
                    series_name(sample)
                )),
            },
            many => Reading::Broken(format!(
                "the query returned {} series; make it return one, e.g. wrap it in sum(…)",
                many.len()
            )),
        },
        Data::Scalar((_, value)) => parse_value(&value),
        Data::Matrix(_) => Reading::Broken(
            "the query returned a range vector; make it return an instant value, e.g. wrap it in sum(rate(…))"
                .to_string(),
        ),
        Data::String(_) => {
            Reading::Broken("the query returned a string; make it return a number".to_string())
        }
    }
}

/// `name{label="value",…}` of a sample, for messages.
fn series_name(sample: &Sample) -> String {
    let name = sample
        .metric
        .get("__name__")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let labels: Vec<String> = sample
        .metric
        .iter()
        .filter(|(label, _)| *label != "__name__")
        .map(|(label, value)| format!("{label}={value}"))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// A sample value as Prometheus writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Reading {
    let value = match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust would also read `inf` or `infinity`; Prometheus writes neither, so refuse them
        // like any other word.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => text.parse().ok(),
    };
    match value {
        Some(value) => Reading::Value(value),
        None => Reading::Unreachable(format!(
            "Prometheus answered a value that is not a number: {}",
            shorten(text, BODY_EXCERPT_CHARS)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A Prometheus stand-in that answers every query with `status` and `body`.
    async fn prometheus(status: u16, body: &str) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/query"))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_raw(body.as_bytes().to_vec(), "application/json"),
            )
            .mount(&server)
            .await;
        server
    }

    async fn query(status: u16, body: &str) -> Reading {
        let server = prometheus(status, body).await;
        instant_query(&reqwest::Client::new(), &server.uri(), "up", TIMEOUT).await
    }

    fn broken(reading: Reading) -> String {
        match reading {
            Reading::Broken(why) => why,
            other => panic!("expected Broken, got {other:?}"),
        }
    }

    fn unreachable(reading: Reading) -> String {
        match reading {
            Reading::Unreachable(why) => why,
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    fn vector(values: &[&str]) -> String {
        let samples: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                format!(
                    r#"{{"metric":{{"__name__":"app_error_ratio","track":"canary","pod":"p{i}"}},"value":[1763800000.123,"{value}"]}}"#
                )
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            samples.join(",")
        )
    }

    #[tokio::test]
    async fn the_query_is_posted_form_encoded_with_a_timeout() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/query"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains(
                "query=sum%28rate%28http_requests_total%7Bcode%3D%7E%225..%22%7D%5B1m%5D%29%29",
            ))
            .and(body_string_contains("timeout=5000ms"))
            .respond_with(ResponseTemplate::new(200).set_body_string(vector(&["0.5"])))
            .expect(1)
            .mount(&server)
            .await;
        let query = r#"sum(rate(http_requests_total{code=~"5.."}[1m]))"#;

        let reading = instant_query(&reqwest::Client::new(), &server.uri(), query, TIMEOUT).await;

        assert_eq!(reading, Reading::Value(0.5));
    }

    #[tokio::test]
    async fn a_single_series_gives_its_value() {
        assert_eq!(query(200, &vector(&["0.002"])).await, Reading::Value(0.002));
        assert_eq!(query(200, &vector(&["1e-3"])).await, Reading::Value(0.001));
    }

    #[tokio::test]
    async fn an_empty_vector_is_no_data() {
        assert_eq!(query(200, &vector(&[])).await, Reading::NoData);
    }

    #[tokio::test]
    async fn a_scalar_gives_its_value() {
        let body =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1763800000,"42"]}}"#;
        assert_eq!(query(200, body).await, Reading::Value(42.0));
    }

    #[tokio::test]
    async fn nan_and_infinities_are_read() {
        match query(200, &vector(&["NaN"])).await {
            Reading::Value(value) => assert!(value.is_nan(), "{value}"),
            other => panic!("expected NaN, got {other:?}"),
        }
        assert_eq!(
            query(200, &vector(&["+Inf"])).await,
            Reading::Value(f64::INFINITY)
        );
        assert_eq!(
            query(200, &vector(&["-Inf"])).await,
            Reading::Value(f64::NEG_INFINITY)
        );
    }

    #[tokio::test]
    async fn more_than_one_series_is_a_broken_query() {
        assert_eq!(
            broken(query(200, &vector(&["0.1", "0.2", "0.3"])).await),
            "the query returned 3 series; make it return one, e.g. wrap it in sum(…)"
        );
    }

    #[tokio::test]
    async fn a_range_vector_is_a_broken_query() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#;
        assert!(broken(query(200, body).await).contains("range vector"));
    }

    #[tokio::test]
    async fn a_parse_error_is_a_broken_query_naming_the_error() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:31: parse error: unclosed left parenthesis"}"#;
        assert_eq!(
            broken(query(400, body).await),
            r#"Prometheus refused the query (HTTP 400, bad_data): invalid parameter "query": 1:31: parse error: unclosed left parenthesis"#
        );
    }

    #[tokio::test]
    async fn an_execution_error_is_a_broken_query() {
        let body = r#"{"status":"error","errorType":"execution","error":"found duplicate series for the match group {pod=\"a\"} on the right hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side"}"#;
        let why = broken(query(422, body).await);
        assert!(
            why.starts_with(
                "Prometheus refused the query (HTTP 422, execution): found duplicate series"
            ),
            "{why}"
        );
    }

    #[tokio::test]
    async fn unavailable_is_inconclusive() {
        let body = r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#;
        assert_eq!(
            unreachable(query(503, body).await),
            "Prometheus answered HTTP 503 (timeout): query timed out in expression evaluation"
        );
        let body = r#"{"status":"error","errorType":"internal","error":"boom"}"#;
        assert_eq!(
            unreachable(query(500, body).await),
            "Prometheus answered HTTP 500 (internal): boom"
        );
    }

    #[tokio::test]
    async fn warnings_do_not_change_the_value() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1763800000,"0.25"]}]},"warnings":["PromQL info: metric might not be a counter"],"infos":["note"]}"#;
        assert_eq!(query(200, body).await, Reading::Value(0.25));
    }

    #[tokio::test]
    async fn a_body_that_is_not_prometheus_json_is_inconclusive_and_quoted() {
        let server = prometheus(502, "<html><body>502 Bad Gateway</body></html>").await;
        let why =
            unreachable(instant_query(&reqwest::Client::new(), &server.uri(), "up", TIMEOUT).await);
        assert_eq!(
            why,
            format!(
                "POST {}/api/v1/query: HTTP 502, not a Prometheus answer: <html><body>502 Bad Gateway</body></html>",
                server.uri()
            )
        );
        let why = unreachable(query(200, "{\"status\":").await);
        assert!(why.contains("HTTP 200, not a Prometheus answer"), "{why}");
    }

    #[tokio::test]
    async fn a_value_that_is_not_a_number_is_inconclusive() {
        let why = unreachable(query(200, &vector(&["lots"])).await);
        assert_eq!(
            why,
            "Prometheus answered a value that is not a number: lots"
        );
        let why = unreachable(query(200, &vector(&["infinity"])).await);
        assert!(why.ends_with("infinity"), "{why}");
    }

    #[tokio::test]
    async fn a_histogram_sample_is_a_broken_query() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"latency","job":"api"},"histogram":[1,{"count":"2","sum":"3"}]}]}}"#;
        let why = broken(query(200, body).await);
        assert!(why.contains(r#"latency{job="api"}"#), "{why}");
    }

    #[tokio::test]
    async fn a_path_prefix_is_kept() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/prom/api/v1/query"))
            .respond_with(ResponseTemplate::new(200).set_body_string(vector(&["7"])))
            .expect(2)
            .mount(&server)
            .await;
        let client = reqwest::Client::new();
        for base in [
            format!("{}/prom", server.uri()),
            format!("{}/prom/", server.uri()),
        ] {
            assert_eq!(
                instant_query(&client, &base, "up", TIMEOUT).await,
                Reading::Value(7.0),
                "{base}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_inconclusive_and_named() {
        let port = free_port();
        let base = format!("http://admin:hunter2@127.0.0.1:{port}");
        let why = unreachable(instant_query(&reqwest::Client::new(), &base, "up", TIMEOUT).await);
        assert_eq!(
            why,
            format!("POST http://127.0.0.1:{port}/api/v1/query: connection refused")
        );
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_as_inconclusive() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(vector(&["1"]))
                    .set_delay(Duration::from_secs(10)),
            )
            .mount(&server)
            .await;
        let timeout = Duration::from_millis(200);
        let why =
            unreachable(instant_query(&reqwest::Client::new(), &server.uri(), "up", timeout).await);
        assert!(why.ends_with("timed out after 200ms"), "{why}");
    }

    #[test]
    fn endpoints_keep_the_prefix_and_refuse_what_is_not_http() {
        let endpoint = |base: &str| query_endpoint(base).map(|url| url.to_string());
        assert_eq!(
            endpoint("http://prometheus:9090").as_deref(),
            Ok("http://prometheus:9090/api/v1/query")
        );
        assert_eq!(
            endpoint("https://h/a/b/?x=1#f").as_deref(),
            Ok("https://h/a/b/api/v1/query")
        );
        assert!(endpoint("prometheus:9090").is_err());
        assert!(endpoint("ftp://h/").is_err());
        assert!(endpoint("").is_err());
        let secret = endpoint("ftp://u:hunter2@h/").unwrap_err();
        assert!(!secret.contains("hunter2"), "{secret}");
    }

    #[test]
    fn values_are_read_as_prometheus_writes_them() {
        assert_eq!(parse_value("0.034"), Reading::Value(0.034));
        assert_eq!(parse_value("-2"), Reading::Value(-2.0));
        assert_eq!(parse_value("1.5e+06"), Reading::Value(1.5e6));
        assert!(matches!(parse_value(""), Reading::Unreachable(_)));
        assert!(matches!(parse_value("inf"), Reading::Unreachable(_)));
        assert!(matches!(parse_value("nan"), Reading::Unreachable(_)));
    }

    /// A loopback port nobody listens on (bound, then released).
    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }
}
