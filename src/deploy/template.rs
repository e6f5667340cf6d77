//! The placeholders of backend and check strings (SPEC §5): `{service}`, `{version}`,
//! `{environment}`, `{previous_version}`.

use super::DeployRequest;

/// The placeholders backend and check strings may use (SPEC §5), each with its value.
fn placeholders(request: &DeployRequest) -> [(&'static str, &str); 4] {
    [
        ("{service}", request.service.as_str()),
        ("{version}", request.version.as_str()),
        ("{environment}", request.environment.as_str()),
        (
            "{previous_version}",
            request.previous_version.as_deref().unwrap_or_default(),
        ),
    ]
}

/// `text` with `{service}`, `{version}`, `{environment}` and `{previous_version}` (empty on a
/// first deploy) replaced. Anything else in braces is left as written, so PromQL label matchers
/// (`{code=~"5.."}`) survive; one pass, so a value that itself looks like a placeholder is not
/// replaced again.
pub fn substitute(text: &str, request: &DeployRequest) -> String {
    let placeholders = placeholders(request);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let found = placeholders.iter().find(|(name, _)| rest.starts_with(name));
        match found {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::deploy::sample_request as request;

    #[test]
    fn the_four_placeholders_are_replaced_and_promql_braces_are_left_alone() {
        let query = r#"sum(rate(http_requests_total{code=~"5..",service="{service}",version="{version}"}[1m])) / sum(rate(http_requests_total{version="{version}"}[1m]))"#;
        assert_eq!(
            substitute(query, &request(Some("1.4.1"))),
            r#"sum(rate(http_requests_total{code=~"5..",service="api",version="1.4.2"}[1m])) / sum(rate(http_requests_total{version="1.4.2"}[1m]))"#
        );
        assert_eq!(
            substitute(
                "https://{environment}.example.com/{service}?from={previous_version}&to={version}",
                &request(Some("1.4.1"))
            ),
            "https://production.example.com/api?from=1.4.1&to=1.4.2"
        );
    }

    #[test]
    fn a_missing_previous_version_is_empty_and_near_misses_stay() {
        assert_eq!(substitute("[{previous_version}]", &request(None)), "[]");
        for untouched in [
            "{Service}",
            "{ version }",
            "{versions}",
            "{",
            "}{",
            "{{}}",
            "x{code=~\"5..\"}",
            "{service",
            "",
        ] {
            assert_eq!(substitute(untouched, &request(None)), untouched);
        }
        assert_eq!(substitute("{{version}}", &request(None)), "{1.4.2}");
        assert_eq!(substitute("é{é{version}é", &request(None)), "é{é1.4.2é");
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_replaced_again() {
        let mut odd = request(None);
        odd.service = "{version}".to_string();
        assert_eq!(substitute("{service}/{version}", &odd), "{version}/1.4.2");
    }
}
