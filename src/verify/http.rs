//! The `http` check's probe: `GET url`, and the status it answered.
//!
//! Redirects are followed as the client is built to follow them (reqwest's default: up to 10
//! hops), so the status read is the final one: a health URL that moved still counts by where it
//! leads, and a redirect loop is a failure. The body is not read.

use std::time::Duration;

use super::{describe_transport_error, redact_url};
use crate::domain::verification::Reading;

/// Probes `url` once, allowing it `timeout`: its HTTP status, or why there was none.
pub async fn status(client: &reqwest::Client, url: &str, timeout: Duration) -> Reading {
    let shown = redact_url(url);
    let parsed = match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
        Ok(_) => {
            return Reading::Broken(format!(
                "the http check url `{shown}` must start with http:// or https://"
            ))
        }
        Err(err) => {
            return Reading::Broken(format!("the http check url `{shown}` is not a URL: {err}"))
        }
    };
    match client.get(parsed).timeout(timeout).send().await {
        Ok(response) => Reading::Status(response.status().as_u16()),
        Err(err) => {
            let why = describe_transport_error(&err, timeout);
            Reading::Unreachable(format!("GET {shown}: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn server_answering(status: u16) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/healthz"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn the_status_is_read() {
        let client = reqwest::Client::new();
        for code in [200, 204, 404, 503] {
            let server = server_answering(code).await;
            let url = format!("{}/healthz", server.uri());
            assert_eq!(status(&client, &url, TIMEOUT).await, Reading::Status(code));
        }
    }

    #[tokio::test]
    async fn the_probe_client_names_shipmate() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(wiremock::matchers::header(
                "user-agent",
                concat!("shipmate/", env!("CARGO_PKG_VERSION")),
            ))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        let client = crate::verify::http_client().unwrap();

        let reading = status(&client, &server.uri(), TIMEOUT).await;

        assert_eq!(reading, Reading::Status(204));
    }

    #[tokio::test]
    async fn redirects_are_followed_to_the_final_status() {
        let server = server_answering(503).await;
        Mock::given(method("GET"))
            .and(path("/old"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "/healthz"))
            .mount(&server)
            .await;
        let url = format!("{}/old", server.uri());

        let reading = status(&reqwest::Client::new(), &url, TIMEOUT).await;

        assert_eq!(reading, Reading::Status(503));
    }

    #[tokio::test]
    async fn a_refused_connection_says_so_without_the_credentials() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://deploy:hunter2@127.0.0.1:{port}/healthz");

        let reading = status(&reqwest::Client::new(), &url, TIMEOUT).await;

        assert_eq!(
            reading,
            Reading::Unreachable(format!(
                "GET http://127.0.0.1:{port}/healthz: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
            .mount(&server)
            .await;
        let url = format!("{}/healthz", server.uri());

        let reading = status(&reqwest::Client::new(), &url, Duration::from_millis(200)).await;

        assert_eq!(
            reading,
            Reading::Unreachable(format!("GET {url}: timed out after 200ms"))
        );
    }

    #[tokio::test]
    async fn a_url_that_is_not_http_is_broken() {
        let client = reqwest::Client::new();
        let reading = status(&client, "healthz", TIMEOUT).await;
        assert!(
            matches!(&reading, Reading::Broken(why) if why.starts_with("the http check url `healthz` is not a URL")),
            "{reading:?}"
        );
        let reading = status(&client, "file:///etc/passwd", TIMEOUT).await;
        assert!(
            matches!(&reading, Reading::Broken(why) if why.contains("must start with http://")),
            "{reading:?}"
        );
    }
}
