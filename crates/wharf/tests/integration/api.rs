//! The Distribution API over raw HTTP: every resource, its headers and its error paths.

use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_oci::media_type::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use wharf_oci::Digest;

use crate::harness::{add_query, header, http_client as client, Wharf};

/// The response is the spec's error body with `code`.
fn assert_error(r: Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status);
    let body: Value = r.json().expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

fn push_blob(c: &Client, w: &Wharf, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let r = c
        .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", w.url()))
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    d
}

fn image_manifest(
    config: &Digest,
    config_len: usize,
    layers: &[(&Digest, usize)],
    extra: Value,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_len},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})).collect::<Vec<_>>(),
    });
    if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
        m.extend(extra);
    }
    serde_json::to_vec(&m).unwrap()
}

fn put_manifest(
    c: &Client,
    w: &Wharf,
    repo: &str,
    reference: &str,
    body: &[u8],
    media_type: &str,
) -> Response {
    c.put(format!("{}/v2/{repo}/manifests/{reference}", w.url()))
        .header(CONTENT_TYPE, media_type)
        .body(body.to_vec())
        .send()
        .unwrap()
}

#[test]
fn base_endpoint_announces_the_api_version() {
    let w = Wharf::start();
    let r = client().get(format!("{}/v2/", w.url())).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[test]
fn chunked_upload_checks_ranges_and_digest() {
    let (w, c) = (Wharf::start(), client());
    let r = c
        .post(format!("{}/v2/chunks/blobs/uploads/", w.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-0");
    let loc = format!("{}{}", w.url(), header(&r, "location"));

    let r = c
        .patch(&loc)
        .header(CONTENT_RANGE, "0-4")
        .header(CONTENT_LENGTH, "5")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-4");

    // Out of order: refused with where the upload really is.
    let r = c
        .patch(&loc)
        .header(CONTENT_RANGE, "10-14")
        .header(CONTENT_LENGTH, "5")
        .body("xxxxx")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-4");

    let r = c.get(&loc).send().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-4");
    assert!(!header(&r, "docker-upload-uuid").is_empty());

    // A chunk without Content-Range appends.
    assert_eq!(
        c.patch(&loc).body(" wor").send().unwrap().status(),
        StatusCode::ACCEPTED
    );

    let wrong = Digest::sha256_of(b"something else");
    assert_error(
        c.put(add_query(&loc, "digest", &wrong))
            .body("ld")
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );

    // The failed PUT appended "ld"; the right digest now commits.
    let d = Digest::sha256_of(b"hello world");
    let r = c.put(add_query(&loc, "digest", &d)).send().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/chunks/blobs/{d}"));
    let body = c
        .get(format!("{}/v2/chunks/blobs/{d}", w.url()))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&body[..], b"hello world");
    assert_error(
        c.get(&loc).send().unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    );
}

#[test]
fn uploads_can_be_cancelled_and_unknown_ones_are_404() {
    let (w, c) = (Wharf::start(), client());
    let r = c
        .post(format!("{}/v2/cancel/blobs/uploads/", w.url()))
        .send()
        .unwrap();
    let loc = format!("{}{}", w.url(), header(&r, "location"));
    assert_eq!(
        c.delete(&loc).send().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        c.get(&loc).send().unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(
        c.patch(&loc).body("x").send().unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    );
    let bogus = format!("{}/v2/cancel/blobs/uploads/not-a-uuid", w.url());
    assert_error(
        c.get(bogus).send().unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    );
    // A PUT without a digest is an error, not a silent success.
    let r = c
        .post(format!("{}/v2/cancel/blobs/uploads/", w.url()))
        .send()
        .unwrap();
    let loc = format!("{}{}", w.url(), header(&r, "location"));
    assert_error(
        c.put(&loc).body("x").send().unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );
}

#[test]
fn blob_reads_honour_ranges_and_repository_links() {
    let (w, c) = (Wharf::start(), client());
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let d = push_blob(&c, &w, "ranges", &data);
    let url = format!("{}/v2/ranges/blobs/{d}", w.url());

    let r = c.head(&url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());

    let r = c.get(&url).header(RANGE, "bytes=10-19").send().unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 10-19/100000");
    assert_eq!(&r.bytes().unwrap()[..], &data[10..20]);

    let r = c.get(&url).header(RANGE, "bytes=-5").send().unwrap();
    assert_eq!(&r.bytes().unwrap()[..], &data[99_995..]);

    let r = c.get(&url).header(RANGE, "bytes=200000-").send().unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */100000");

    // Another repository may not read it until it is mounted there.
    assert_error(
        c.get(format!("{}/v2/elsewhere/blobs/{d}", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    );
    let r = c
        .post(format!(
            "{}/v2/elsewhere/blobs/uploads/?mount={d}&from=ranges",
            w.url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/elsewhere/blobs/{d}"));
    assert_eq!(
        c.get(format!("{}/v2/elsewhere/blobs/{d}", w.url()))
            .send()
            .unwrap()
            .bytes()
            .unwrap()
            .len(),
        100_000
    );

    // Mounting what the source does not have falls back to an upload session.
    let missing = Digest::sha256_of(b"missing");
    let r = c
        .post(format!(
            "{}/v2/elsewhere/blobs/uploads/?mount={missing}&from=ranges",
            w.url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/elsewhere/blobs/uploads/"));

    // A monolithic push whose body does not match its digest stores nothing.
    let r = c
        .post(format!(
            "{}/v2/ranges/blobs/uploads/?digest={missing}",
            w.url()
        ))
        .body("not it")
        .send()
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_error(
        c.get(format!("{}/v2/ranges/blobs/{missing}", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    );
}

#[test]
fn manifests_require_their_blobs_and_negotiate_types() {
    let (w, c) = (Wharf::start(), client());
    let config = b"{}";
    let cd = push_blob(&c, &w, "app", config);
    let layer = b"layer bytes";
    let missing = Digest::sha256_of(layer);
    let m = image_manifest(&cd, 2, &[(&missing, layer.len())], json!({}));
    assert_error(
        put_manifest(&c, &w, "app", "v1", &m, OCI_MANIFEST),
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    );

    push_blob(&c, &w, "app", layer);
    let r = put_manifest(&c, &w, "app", "v1", &m, OCI_MANIFEST);
    assert_eq!(r.status(), StatusCode::CREATED);
    let md = Digest::sha256_of(&m);
    assert_eq!(header(&r, "docker-content-digest"), md.to_string());
    assert_eq!(header(&r, "location"), format!("/v2/app/manifests/{md}"));

    for reference in ["v1".to_owned(), md.to_string()] {
        let r = c
            .get(format!("{}/v2/app/manifests/{reference}", w.url()))
            .header("accept", OCI_MANIFEST)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), md.to_string());
        assert_eq!(&r.bytes().unwrap()[..], &m[..]);
    }
    let r = c
        .head(format!("{}/v2/app/manifests/v1", w.url()))
        .send()
        .unwrap();
    assert_eq!(header(&r, "content-length"), m.len().to_string());

    // An index needs its children in the repository.
    let child = Digest::sha256_of(b"not pushed");
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": 10}]}),
    )
    .unwrap();
    assert_error(
        put_manifest(&c, &w, "app", "multi", &index, OCI_INDEX),
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    );
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len(), "platform": {"architecture": "amd64", "os": "linux"}}]})).unwrap();
    assert_eq!(
        put_manifest(&c, &w, "app", "multi", &index, OCI_INDEX).status(),
        StatusCode::CREATED
    );

    // Bad input is refused with the right codes.
    assert_error(
        put_manifest(&c, &w, "app", "bad", b"{not json", OCI_MANIFEST),
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    );
    assert_error(
        put_manifest(&c, &w, "app", &child.to_string(), &m, OCI_MANIFEST),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );
    assert_error(
        put_manifest(&c, &w, "app", ".bad-tag", &m, OCI_MANIFEST),
        StatusCode::BAD_REQUEST,
        "MANIFEST_INVALID",
    );
    let huge = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(
        put_manifest(&c, &w, "app", "huge", &huge, OCI_MANIFEST).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_error(
        c.get(format!("{}/v2/app/manifests/nope", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    );
}

#[test]
fn tags_and_catalog_paginate_with_link_headers() {
    let (w, c) = (Wharf::start(), client());
    let cd = push_blob(&c, &w, "pages/a", b"{}");
    let m = image_manifest(&cd, 2, &[], json!({}));
    for tag in ["t3", "t1", "t2", "t4"] {
        assert_eq!(
            put_manifest(&c, &w, "pages/a", tag, &m, OCI_MANIFEST).status(),
            StatusCode::CREATED
        );
    }
    for repo in ["pages/b", "pages/c"] {
        push_blob(&c, &w, repo, b"{}");
        put_manifest(&c, &w, repo, "latest", &m, OCI_MANIFEST);
    }
    let r = c
        .get(format!("{}/v2/pages/a/tags/list?n=2", w.url()))
        .send()
        .unwrap();
    assert_eq!(
        header(&r, "link"),
        "</v2/pages/a/tags/list?n=2&last=t2>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"name": "pages/a", "tags": ["t1", "t2"]})
    );
    let r = c
        .get(format!("{}/v2/pages/a/tags/list?n=2&last=t2", w.url()))
        .send()
        .unwrap();
    assert_eq!(header(&r, "link"), "");
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["t3", "t4"]));

    let r = c
        .get(format!("{}/v2/_catalog?n=2", w.url()))
        .send()
        .unwrap();
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=2&last=pages%2Fb>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"repositories": ["pages/a", "pages/b"]})
    );
    let r = c
        .get(format!("{}/v2/_catalog?last=pages/b", w.url()))
        .send()
        .unwrap();
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"repositories": ["pages/c"]})
    );

    assert_error(
        c.get(format!("{}/v2/nosuch/tags/list", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
    );
    assert_eq!(
        c.get(format!("{}/v2/pages/a/tags/list?n=x", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn referrers_list_manifests_by_subject_and_filter_by_artifact_type() {
    let (w, c) = (Wharf::start(), client());
    let cd = push_blob(&c, &w, "refs", b"{}");
    let subject = image_manifest(&cd, 2, &[], json!({}));
    let sd = Digest::sha256_of(&subject);
    put_manifest(&c, &w, "refs", "app", &subject, OCI_MANIFEST);
    let subject_desc = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()});
    let mut referrers = vec![];
    for (kind, note) in [
        ("application/vnd.example.sbom", "sbom"),
        ("application/vnd.example.sig", "sig"),
    ] {
        let m = image_manifest(
            &cd,
            2,
            &[],
            json!({"artifactType": kind, "subject": subject_desc, "annotations": {"note": note}}),
        );
        let r = put_manifest(
            &c,
            &w,
            "refs",
            &Digest::sha256_of(&m).to_string(),
            &m,
            OCI_MANIFEST,
        );
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), sd.to_string());
        referrers.push(Digest::sha256_of(&m));
    }
    let r = c
        .get(format!("{}/v2/refs/referrers/{sd}", w.url()))
        .send()
        .unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let index: Value = r.json().unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert!(index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["annotations"]["note"].is_string()));

    let r = c
        .get(format!(
            "{}/v2/refs/referrers/{sd}?artifactType=application/vnd.example.sig",
            w.url()
        ))
        .send()
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: Value = r.json().unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );

    // A restarted server rebuilds the index from disk.
    let mut w = w;
    w.crash_and_restart();
    let index: Value = c
        .get(format!("{}/v2/refs/referrers/{sd}", w.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);

    // Deleting a referrer removes it from the list; an unknown subject has an empty list.
    c.delete(format!("{}/v2/refs/manifests/{}", w.url(), referrers[0]))
        .send()
        .unwrap();
    let index: Value = c
        .get(format!("{}/v2/refs/referrers/{sd}", w.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    let none = Digest::sha256_of(b"none");
    let index: Value = c
        .get(format!("{}/v2/refs/referrers/{none}", w.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(index["manifests"], json!([]));
}

#[test]
fn deletes_remove_tags_manifests_and_blob_links() {
    let (w, c) = (Wharf::start(), client());
    let cd = push_blob(&c, &w, "del", b"{}");
    let m = image_manifest(&cd, 2, &[], json!({}));
    let md = Digest::sha256_of(&m);
    put_manifest(&c, &w, "del", "a", &m, OCI_MANIFEST);
    put_manifest(&c, &w, "del", "b", &m, OCI_MANIFEST);

    assert_eq!(
        c.delete(format!("{}/v2/del/manifests/a", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_error(
        c.get(format!("{}/v2/del/manifests/a", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    );
    assert_eq!(
        c.get(format!("{}/v2/del/manifests/b", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );

    assert_eq!(
        c.delete(format!("{}/v2/del/manifests/{md}", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_error(
        c.get(format!("{}/v2/del/manifests/b", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    );
    assert_error(
        c.delete(format!("{}/v2/del/manifests/{md}", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    );

    assert_eq!(
        c.delete(format!("{}/v2/del/blobs/{cd}", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.head(format!("{}/v2/del/blobs/{cd}", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_error(
        c.get(format!("{}/v2/del/blobs/{cd}", w.url()))
            .send()
            .unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    );
}

#[test]
fn deletes_are_refused_when_disabled() {
    let (w, c) = (Wharf::start_without_deletes(), client());
    let cd = push_blob(&c, &w, "keep", b"{}");
    let m = image_manifest(&cd, 2, &[], json!({}));
    put_manifest(&c, &w, "keep", "v", &m, OCI_MANIFEST);
    assert_error(
        c.delete(format!("{}/v2/keep/manifests/v", w.url()))
            .send()
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
    );
    assert_error(
        c.delete(format!("{}/v2/keep/blobs/{cd}", w.url()))
            .send()
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
    );
    assert_eq!(
        c.get(format!("{}/v2/keep/manifests/v", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn invalid_names_and_digests_never_reach_storage() {
    let (w, c) = (Wharf::start(), client());
    assert_error(
        c.get(format!("{}/v2/UPPER/tags/list", w.url()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    );
    assert_error(
        c.get(format!("{}/v2/a/..%2F..%2Fetc/tags/list", w.url()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    );
    assert_error(
        c.get(format!("{}/v2/a/blobs/sha256:..%2F..%2Fx", w.url()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );
    assert_error(
        c.get(format!("{}/v2/a/blobs/md5:abcd", w.url()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );
    assert_error(
        c.post(format!("{}/v2/a/blobs/uploads/?digest=sha256:xyz", w.url()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );
    let long = "a".repeat(256);
    assert_error(
        c.get(format!("{}/v2/{long}/tags/list", w.url()))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    );
    assert_eq!(
        c.put(format!("{}/v2/", w.url())).send().unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        c.get(format!("{}/nothing", w.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // Nothing was created outside the layout.
    let entries: Vec<_> = std::fs::read_dir(&w.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(entries.iter().all(|e| e == "docker"), "{entries:?}");
}
