//! Listings that must stay fast at scale: a repository's tags, served from memory while
//! the repository's `tags_version` (bumped by a trigger in every transaction that changes
//! its tags, migration 8) is unchanged, and the UI's search, by the trigram index on names.

use std::sync::Arc;

use wharf_oci::RepoName;

use super::meta::PgMetaStore;
use crate::store::{paginate, Page, StoreResult};

/// Repositories whose tag lists are kept; past this the cache starts over.
const TAG_LISTS: usize = 1_000;

/// `%`, `_` and `\` taken literally in a LIKE pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl PgMetaStore {
    /// The tags of `repo`, sorted; None when there is no such repository. One small query
    /// while the cached list is current, since a changed list has a new version.
    pub(super) async fn tags_listed(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> StoreResult<Option<Page>> {
        // The version is read before the names: a change between the two leaves a list
        // newer than its version, which the next read replaces, never an older one.
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT id, tags_version FROM repositories WHERE name = $1")
                .bind(repo.as_str())
                .fetch_optional(self.db().await?)
                .await
                .map_err(self.err())?;
        let Some((id, version)) = row else {
            return Ok(None);
        };
        let cached = self
            .tag_lists
            .get(&id)
            .filter(|e| e.0 == version)
            .map(|e| e.1.clone());
        let names = match cached {
            Some(names) => names,
            None => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM tags WHERE repository_id = $1 ORDER BY name",
                )
                .bind(id)
                .fetch_all(self.db().await?)
                .await
                .map_err(self.err())?;
                let names = Arc::new(names);
                if self.tag_lists.len() >= TAG_LISTS {
                    self.tag_lists.clear();
                }
                self.tag_lists.insert(id, (version, names.clone()));
                names
            }
        };
        Ok(Some(paginate(names.iter().cloned(), last, n)))
    }

    /// Repositories whose name contains `needle`, sorted.
    pub(super) async fn search_names(&self, needle: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name LIKE '%' || $1 || '%' ESCAPE '\\' \
             ORDER BY name",
        )
        .bind(like_escape(needle))
        .fetch_all(self.db().await?)
        .await
        .map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(super::like_escape("a_b%c\\d"), "a\\_b\\%c\\\\d");
    }
}
