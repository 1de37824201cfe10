//! Tag-following policies, as WUD and Keel have them and watchtower does not: a container
//! labelled with a semver range (`wharf.watch.semver=^1.2`) or a tag regex
//! (`wharf.watch.include=…`, `wharf.watch.exclude=…`) is moved to the highest tag of its
//! repository that matches and is newer than the one it runs. `wharf.watch.min-age=24h`
//! holds back an image younger than that until it is old enough: younger by its config's
//! `created`, or by when this watcher first saw its tag appear, since a reproducible build
//! says it was created in 1970. Flags set the same for every container; a label overrides
//! its flag.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use regex::Regex;
use semver::{Version, VersionReq};
use wharf_client::ImageRef;
use wharf_oci::sync::lock;
use wharf_oci::units::parse_duration;

use crate::check::Registries;

pub const SEMVER: &str = "wharf.watch.semver";
pub const INCLUDE: &str = "wharf.watch.include";
pub const EXCLUDE: &str = "wharf.watch.exclude";
pub const MIN_AGE: &str = "wharf.watch.min-age";

/// The global flags, as typed: each is a default for containers without the label.
#[derive(Debug, Clone, Default)]
pub struct PolicyDefaults {
    pub semver: Option<String>,
    pub include: Option<String>,
    pub exclude: Option<String>,
    pub min_age: Option<String>,
}

impl PolicyDefaults {
    /// Refuses at start what no container could use.
    pub fn validate(&self) -> Result<(), String> {
        Policy::of(&HashMap::new(), self).map(drop)
    }
}

/// A container's policy, compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    range: Option<VersionReq>,
    include: Option<Regex>,
    exclude: Option<Regex>,
    pub min_age: Option<Duration>,
    /// As written, for the report: `semver ^1.2`.
    pub describe: String,
}

impl Policy {
    /// The policy `labels` (over `defaults`) give, `None` when the container follows no
    /// tags (neither a range nor an include regex). A bad label is an error for that
    /// container alone.
    pub fn of(
        labels: &HashMap<String, String>,
        defaults: &PolicyDefaults,
    ) -> Result<Option<Policy>, String> {
        let pick = |label: &str, default: &Option<String>| {
            labels
                .get(label)
                .cloned()
                .or_else(|| default.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let semver = pick(SEMVER, &defaults.semver);
        let include = pick(INCLUDE, &defaults.include);
        let exclude = pick(EXCLUDE, &defaults.exclude);
        let min_age = pick(MIN_AGE, &defaults.min_age);
        let regex = |label: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| Regex::new(t).map_err(|e| format!("{label}={t:?} is not a regex: {e}")))
                .transpose()
        };
        let policy = Policy {
            range: semver.as_deref().map(parse_range).transpose()?,
            include: regex(INCLUDE, &include)?,
            exclude: regex(EXCLUDE, &exclude)?,
            min_age: min_age
                .as_deref()
                .map(|t| parse_duration(t).map_err(|e| format!("{MIN_AGE}={t:?}: {e}")))
                .transpose()?,
            describe: [
                ("semver", &semver),
                ("include", &include),
                ("exclude", &exclude),
                ("min-age", &min_age),
            ]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect::<Vec<_>>()
            .join(", "),
        };
        Ok((policy.range.is_some() || policy.include.is_some()).then_some(policy))
    }

    /// The tags this policy would move a container on `current` to, best first: those
    /// matching the range and regexes, read as versions, newer than `current`.
    pub fn candidates(&self, current: &str, tags: &[String]) -> Result<Vec<String>, String> {
        let now = parse_version(current).ok_or_else(|| {
            format!("it runs tag {current:?}, which is not a version to compare others with")
        })?;
        let mut found: Vec<(Version, &String)> = tags
            .iter()
            .filter(|t| self.include.as_ref().is_none_or(|r| r.is_match(t)))
            .filter(|t| !self.exclude.as_ref().is_some_and(|r| r.is_match(t)))
            .filter_map(|t| Some((parse_version(t)?, t)))
            .filter(|(v, _)| self.range.as_ref().is_none_or(|r| r.matches(v)))
            .filter(|(v, _)| *v > now)
            .collect();
        // Highest first; of `v1.3` and `1.3.0`, the longer spelling wins, deterministically.
        found.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.len().cmp(&a.1.len()))
                .then(b.1.cmp(a.1))
        });
        Ok(found.into_iter().map(|(_, t)| t.clone()).collect())
    }
}

/// What a policy found for a container: the reference to move it to, if any, and what to
/// say about it in the report.
#[derive(Debug, Default)]
pub struct Followed {
    pub to: Option<ImageRef>,
    pub note: Option<String>,
}

/// When this watcher first saw each tag of a repository. Tags listed the first time a
/// repository is looked at have no time (they may be years old: only `created` speaks for
/// them); a tag that appears later was pushed since, and is dated by its appearance. Kept
/// in memory: after a restart, what exists is old again, as at the first start.
#[derive(Debug, Default)]
pub struct Sightings(Mutex<HashMap<String, HashMap<String, Option<SystemTime>>>>);

impl Sightings {
    /// Records `tags` of `repository`; when each was first seen, where known.
    fn record(&self, repository: &str, tags: &[String]) -> HashMap<String, Option<SystemTime>> {
        let mut all = lock(&self.0);
        let first_look = !all.contains_key(repository);
        let seen = all.entry(repository.to_owned()).or_default();
        let now = SystemTime::now();
        let listed: HashSet<&String> = tags.iter().collect();
        seen.retain(|t, _| listed.contains(t));
        for t in tags {
            seen.entry(t.clone())
                .or_insert_with(|| (!first_look).then_some(now));
        }
        seen.clone()
    }
}

/// Lists `image`'s tags and picks the highest the policy allows that is old enough.
pub async fn follow(
    registries: &Registries,
    sightings: &Sightings,
    policy: &Policy,
    image: &ImageRef,
) -> Result<Followed, String> {
    let current = image
        .tag()
        .map(|t| t.as_str().to_owned())
        .ok_or("it names no tag to follow from")?;
    let tags = registries.tags(image).await.map_err(|e| e.to_string())?;
    let repository = format!("{}/{}", image.registry(), image.repository());
    let seen = sightings.record(&repository, &tags);
    let mut held: Vec<String> = Vec::new();
    for tag in policy.candidates(&current, &tags)? {
        let candidate: ImageRef = format!("{}/{}:{tag}", image.registry(), image.repository())
            .parse()
            .map_err(|e| format!("tag {tag}: {e}"))?;
        if let Some(min_age) = policy.min_age {
            let created = registries
                .created(&candidate)
                .await
                .map_err(|e| e.to_string())?;
            let first_seen = seen.get(&tag).copied().flatten();
            let until = held_until(created.as_deref(), min_age)
                .into_iter()
                .chain(seen_until(first_seen, min_age))
                .max();
            if let Some(until) = until {
                tracing::info!(image = %candidate, %until, "newer tag held back: younger than {MIN_AGE}");
                held.push(format!("{tag} is held back until {until} ({MIN_AGE})"));
                continue;
            }
        }
        let mut note = format!("{}: {current} -> {tag}", policy.describe);
        for h in &held {
            note.push_str("; ");
            note.push_str(h);
        }
        return Ok(Followed {
            to: Some(candidate),
            note: Some(note),
        });
    }
    Ok(Followed {
        to: None,
        note: (!held.is_empty()).then(|| held.join("; ")),
    })
}

/// When an image created at `created` (RFC 3339) is `min_age` old, if that is still to
/// come. An image that does not say when it was built is not held back: nothing would
/// ever release it.
fn held_until(created: Option<&str>, min_age: Duration) -> Option<String> {
    let created = chrono::DateTime::parse_from_rfc3339(created?).ok()?;
    let until = (created + chrono::Duration::from_std(min_age).ok()?).with_timezone(&chrono::Utc);
    (until > chrono::Utc::now()).then(|| until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// When a tag first seen at `seen` is `min_age` old, if that is still to come.
fn seen_until(seen: Option<SystemTime>, min_age: Duration) -> Option<String> {
    let until = chrono::DateTime::<chrono::Utc>::from(seen? + min_age);
    (until > chrono::Utc::now()).then(|| until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A tag as a version: `1.2.3`, `v1.2.3`, `1.2` (= 1.2.0), `1` (= 1.0.0), with pre-release
/// and build parts as semver has them. Anything else (`latest`, `1.2.3.4`) is no version.
pub fn parse_version(tag: &str) -> Option<Version> {
    let t = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    let split = t.find(['-', '+']).unwrap_or(t.len());
    let (core, rest) = t.split_at(split);
    let parts = core.split('.').count();
    let full = match parts {
        1 => format!("{core}.0.0{rest}"),
        2 => format!("{core}.0{rest}"),
        _ => t.to_owned(),
    };
    Version::parse(&full).ok()
}

/// A range as people write them: `^1.2`, `~1.2.3`, `>=1.0 <2` (npm's space-separated
/// form, which the semver crate spells `>=1.0, <2`), `>= 1.0`, with `v` prefixes.
pub fn parse_range(text: &str) -> Result<VersionReq, String> {
    if text.contains("||") {
        return Err(format!(
            "{SEMVER}={text:?}: alternatives (||) are not supported; use one range"
        ));
    }
    let mut comparators: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for token in text.replace(',', " ").split_whitespace() {
        if token.chars().all(|c| "<>=^~".contains(c)) {
            pending_op.push_str(token);
            continue;
        }
        let (op, version) = token.split_at(token.find(|c: char| !"<>=^~".contains(c)).unwrap_or(0));
        let version = version.strip_prefix(['v', 'V']).unwrap_or(version);
        comparators.push(format!("{pending_op}{op}{version}"));
        pending_op.clear();
    }
    if !pending_op.is_empty() || comparators.is_empty() {
        return Err(format!("{SEMVER}={text:?} is not a version range"));
    }
    VersionReq::parse(&comparators.join(", "))
        .map_err(|e| format!("{SEMVER}={text:?} is not a version range: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    fn policy(labels: &[(&str, &str)]) -> Policy {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Policy::of(&labels, &PolicyDefaults::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn young_images_are_held_until_old_enough() {
        let day = Duration::from_secs(86_400);
        assert!(held_until(Some("2000-01-01T00:00:00Z"), day).is_none());
        let now = chrono::Utc::now().to_rfc3339();
        assert!(held_until(Some(&now), day).is_some());
        assert!(held_until(None, day).is_none());
        assert!(seen_until(Some(SystemTime::now()), day).is_some());
        assert!(seen_until(None, day).is_none());
    }

    #[test]
    fn tags_there_at_the_first_look_are_undated_and_later_ones_dated() {
        let s = Sightings::default();
        let first = s.record("r/app", &tags(&["1.0", "1.1"]));
        assert_eq!(first["1.0"], None);
        let later = s.record("r/app", &tags(&["1.0", "1.1", "1.2"]));
        assert_eq!(later["1.1"], None);
        assert!(later["1.2"].is_some());
        // A tag deleted and pushed again is new again.
        s.record("r/app", &tags(&["1.0"]));
        assert!(s.record("r/app", &tags(&["1.0", "1.1"]))["1.1"].is_some());
    }

    #[test]
    fn ranges_in_every_usual_spelling() {
        for (range, yes, no) in [
            ("^1.2", "1.9.0", "2.0.0"),
            ("~1.2.3", "1.2.9", "1.3.0"),
            (">=1.0 <2", "1.5.0", "2.0.0"),
            (">= 1.0, < 2", "1.0.0", "0.9.0"),
            ("^v1.2", "1.2.0", "1.1.0"),
        ] {
            let r = parse_range(range).unwrap();
            assert!(r.matches(&Version::parse(yes).unwrap()), "{range} {yes}");
            assert!(!r.matches(&Version::parse(no).unwrap()), "{range} {no}");
        }
        for bad in ["", ">=", "1.x || 2", "not a range"] {
            assert!(parse_range(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_read_as_versions_with_v_and_two_parts() {
        assert_eq!(parse_version("v1.2"), Version::parse("1.2.0").ok());
        assert_eq!(parse_version("1"), Version::parse("1.0.0").ok());
        assert_eq!(parse_version("1.3-rc1"), Version::parse("1.3.0-rc1").ok());
        assert_eq!(parse_version("latest"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
    }

    #[test]
    fn the_highest_matching_newer_tag_comes_first() {
        let all = tags(&[
            "1.2.3",
            "1.2.4",
            "1.3.0",
            "2.0.0",
            "latest",
            "1.4.0-rc1",
            "v1.3.1",
        ]);
        let p = policy(&[(SEMVER, "^1.2")]);
        assert_eq!(
            p.candidates("1.2.3", &all).unwrap(),
            tags(&["v1.3.1", "1.3.0", "1.2.4"])
        );
        let p = policy(&[(SEMVER, "^1.2"), (EXCLUDE, "^v")]);
        assert_eq!(p.candidates("1.2.3", &all).unwrap()[0], "1.3.0");
        let p = policy(&[(INCLUDE, r"^1\.2\.")]);
        assert_eq!(p.candidates("1.2.3", &all).unwrap(), tags(&["1.2.4"]));
        assert!(p.candidates("latest", &all).is_err());
        assert!(policy(&[(SEMVER, "^2")])
            .candidates("2.0.0", &all)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn no_range_and_no_include_is_no_policy_and_labels_override_flags() {
        let none = Policy::of(&HashMap::new(), &PolicyDefaults::default()).unwrap();
        assert!(none.is_none());
        let defaults = PolicyDefaults {
            semver: Some("^1".into()),
            min_age: Some("1h".into()),
            ..Default::default()
        };
        let labels = [(SEMVER.to_owned(), "~1.2".to_owned())]
            .into_iter()
            .collect();
        let p = Policy::of(&labels, &defaults).unwrap().unwrap();
        assert_eq!(p.describe, "semver ~1.2, min-age 1h");
        assert_eq!(p.min_age, Some(Duration::from_secs(3600)));
        assert!(Policy::of(
            &[(INCLUDE.to_owned(), "(".to_owned())].into_iter().collect(),
            &defaults
        )
        .is_err());
    }
}
