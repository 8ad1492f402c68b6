//! GitHub, for a plugin whose code lives there: the repository's description and licence, and
//! its commit activity (commits in a period, counted from the pagination of a one-per-page
//! listing, as aiida-registry does, including its one-commit case that has no `Link`).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Http, SourceError};

const NAME: &str = "GitHub";

/// GitHub's REST API and its raw files at configurable addresses, with an optional token
/// (higher rate limits).
#[derive(Debug, Clone)]
pub struct GitHub {
    api: String,
    raw: String,
    token: Option<String>,
    http: Http,
}

impl Default for GitHub {
    fn default() -> Self {
        GitHub::new("https://api.github.com", std::env::var("GITHUB_TOKEN").ok())
    }
}

/// `(owner, repository)` of a GitHub address (`https://github.com/o/r`, with or without `.git`,
/// `/tree/...` or a fragment); `None` for any other host.
pub fn repository(url: &str) -> Option<(String, String)> {
    let rest =
        url.trim().strip_prefix("https://github.com/").or_else(|| url.trim().strip_prefix("http://github.com/"))?;
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let (owner, repo) = (parts.next()?, parts.next()?);
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    Some((owner.to_owned(), repo.to_owned()))
}

impl GitHub {
    /// The API at `api` (e.g. `https://api.github.com`); 30 s to answer.
    pub fn new(api: impl Into<String>, token: Option<String>) -> GitHub {
        GitHub {
            api: api.into().trim_end_matches('/').to_owned(),
            raw: "https://raw.githubusercontent.com".to_owned(),
            token,
            http: Http::new(Duration::from_secs(30)),
        }
    }

    /// The same, with the raw files (`CITATION.cff`) at `raw`.
    pub fn with_raw(mut self, raw: impl Into<String>) -> GitHub {
        self.raw = raw.into().trim_end_matches('/').to_owned();
        self
    }

    /// `GET {api}{path}`: the status, the `Link` header and the JSON body (retried on a 5xx or
    /// 429, which are errors then).
    fn call(&self, path: &str) -> Result<(u16, Option<String>, Value, String), SourceError> {
        let url = format!("{}{path}", self.api);
        self.http.retrying(|| {
            let mut request = self.http.agent.get(&url).header("Accept", "application/vnd.github+json");
            if let Some(token) = &self.token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let unreachable =
                |reason: String| SourceError::Unreachable { source_name: NAME, what: url.clone(), reason };
            let response = request.call().map_err(|e| unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            if status >= 500 || status == 429 {
                return Err(SourceError::Status { source_name: NAME, what: url.clone(), status });
            }
            let link = response.headers().get("link").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = response.into_body().with_config().limit(16 * 1024 * 1024).read_to_vec();
            let body = body.map_err(|e| unreachable(e.to_string()))?;
            let value = if (200..300).contains(&status) {
                serde_json::from_slice(&body).map_err(|e| SourceError::Malformed {
                    source_name: NAME,
                    what: url.clone(),
                    reason: e.to_string(),
                })?
            } else {
                Value::Null
            };
            Ok((status, link, value, url.clone()))
        })
    }

    /// The same source, trying `attempts` times in all, `initial` before the second.
    pub fn with_retries(mut self, attempts: u32, initial: Duration) -> GitHub {
        self.http = self.http.with_retries(attempts, initial);
        self
    }

    /// The repository's description, licence (SPDX; GitHub's `NOASSERTION` is none), stars,
    /// whether it is archived, and when it was last pushed to.
    pub fn metadata(&self, owner: &str, repo: &str) -> Result<Map<String, Value>, SourceError> {
        let (status, _, value, url) = self.call(&format!("/repos/{owner}/{repo}"))?;
        if !(200..300).contains(&status) {
            return Err(SourceError::Status { source_name: NAME, what: url, status });
        }
        let mut metadata = Map::new();
        if let Some(description) = value.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            metadata.insert("description".into(), json!(description));
        }
        let license = value.pointer("/license/spdx_id").and_then(Value::as_str).filter(|l| *l != "NOASSERTION");
        if let Some(license) = license {
            metadata.insert("license".into(), json!(license));
        }
        for (from, to) in [("stargazers_count", "stars"), ("archived", "archived"), ("pushed_at", "pushed_at")] {
            if let Some(value) = value.get(from).filter(|v| !v.is_null()) {
                metadata.insert(to.into(), value.clone());
            }
        }
        Ok(metadata)
    }

    /// The authors its `CITATION.cff` names (`given-names family-names`, or `name`), in order;
    /// `None` when it has none.
    pub fn citation_authors(&self, owner: &str, repo: &str) -> Result<Option<Vec<String>>, SourceError> {
        let url = format!("{}/{owner}/{repo}/HEAD/CITATION.cff", self.raw);
        let Some(body) = self.http.get(NAME, &url, 1024 * 1024)? else { return Ok(None) };
        let citation: Value = serde_yaml_ng::from_slice(&body).map_err(|e| SourceError::Malformed {
            source_name: NAME,
            what: url.clone(),
            reason: e.to_string(),
        })?;
        let authors: Vec<String> = citation
            .get("authors")
            .and_then(Value::as_array)
            .map(|authors| {
                authors
                    .iter()
                    .filter_map(|author| {
                        let part = |key: &str| {
                            author.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
                        };
                        match (part("given-names"), part("family-names"), part("name")) {
                            (Some(given), Some(family), _) => Some(format!("{given} {family}")),
                            (None, Some(family), _) => Some(family.to_owned()),
                            (_, _, Some(name)) => Some(name.to_owned()),
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(authors).filter(|a| !a.is_empty()))
    }

    /// How many commits the repository had since `since` (RFC 3339); `None` when GitHub does not
    /// say (a refusal, a rate limit: aiida-registry's -1).
    pub fn commits_since(&self, owner: &str, repo: &str, since: &str) -> Result<Option<u64>, SourceError> {
        let (status, link, value, _) = self.call(&format!("/repos/{owner}/{repo}/commits?since={since}&per_page=1"))?;
        if !(200..300).contains(&status) {
            return Ok(None);
        }
        let last_page = link.as_deref().and_then(|link| {
            link.split(',').find(|part| part.contains("rel=\"last\"")).and_then(|part| {
                let url = part.split(';').next()?.trim().trim_start_matches('<').trim_end_matches('>');
                url.split(['?', '&']).find_map(|pair| pair.strip_prefix("page=")).and_then(|n| n.parse().ok())
            })
        });
        Ok(Some(last_page.unwrap_or_else(|| value.as_array().map_or(0, |commits| commits.len() as u64))))
    }
}

#[cfg(test)]
mod tests {
    use super::repository;

    #[test]
    fn github_addresses_are_normalised() {
        let pair = |o: &str, r: &str| Some((o.to_owned(), r.to_owned()));
        assert_eq!(repository("https://github.com/aiidateam/aiida-diff"), pair("aiidateam", "aiida-diff"));
        assert_eq!(repository("https://github.com/aiidateam/aiida-diff.git"), pair("aiidateam", "aiida-diff"));
        assert_eq!(repository("https://github.com/o/r/tree/main/docs#readme"), pair("o", "r"));
        assert_eq!(repository("https://gitlab.com/o/r"), None);
        assert_eq!(repository("https://github.com/o"), None);
    }
}
