use super::*;
use crate::notify::PORCELAIN_V1;
use crate::report::{ContainerReport, Outcome, SessionReport};

fn report() -> SessionReport {
    let line = |name: &str, outcome, detail: Option<&str>| ContainerReport {
        name: name.into(),
        image: format!("localhost:5000/{name}:latest"),
        old_digest: Some(format!("sha256:{}", "1".repeat(64))),
        new_digest: Some(format!("sha256:{}", "2".repeat(64))),
        outcome,
        detail: detail.map(str::to_owned),
        host: None,
    };
    SessionReport {
        started: 0,
        // 2026-01-02 03:04:05 UTC
        finished: 1_767_323_045,
        containers: vec![
            line("web", Outcome::Updated, None),
            line("db", Outcome::Fresh, None),
            line("api", Outcome::RolledBack, Some("exit code 3")),
        ],
    }
}

fn render(text: &str, report_mode: bool, rank: u8) -> Result<String, String> {
    let r = report();
    let entries = entries(&r, rank);
    let data = if report_mode {
        report_data(&r, &entries, "box")
    } else {
        legacy_data(&r, &entries)
    };
    Template::parse(text)?.render(&data)
}

#[test]
fn watchtowers_legacy_template_lists_the_entries_at_the_level() {
    let text = "{{range .}}{{.Message}}{{println}}{{end}}";
    let out = render(text, false, 4).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with(
        "Updated web (localhost:5000/web:latest) from 111111111111 to 222222222222\n"
    ));
    assert!(out.contains("Rolled back api"));
    // At error level nothing here qualifies: the message is empty, so nothing is sent.
    assert_eq!(render(text, false, 2).unwrap(), "");
    // At debug, the fresh container too.
    assert_eq!(render(text, false, 5).unwrap().lines().count(), 3);
}

#[test]
fn time_format_level_and_functions_as_compose_files_write_them() {
    let text = r#"{{range .}}{{.Time.Format "2006-01-02 15:04:05"}} ({{.Level | ToUpper}}): {{.Message}}{{println}}{{end}}"#;
    let out = render(text, false, 3).unwrap();
    assert!(out.contains(" (WARNING): Rolled back api"), "{out}");
    assert!(out.len() > 20 && out.as_bytes()[4] == b'-', "{out}");
}

#[test]
fn report_templates_see_the_report_and_trim_as_go_does() {
    let text = "{{- if .Report -}}
  {{- with .Report -}}
{{len .Scanned}} Scanned, {{len .Updated}} Updated, {{len .Failed}} Failed
    {{- range .Updated}}
- {{.Name}} ({{.ImageName}}): {{.CurrentImageID.ShortID}} updated to {{.LatestImageID.ShortID}}
    {{- end -}}
    {{- range .Failed}}
- {{.Name}}: {{.State}}: {{.Error}}
    {{- end -}}
  {{- end -}}
{{- else -}}
  {{range .Entries -}}{{.Message}}{{\"\\n\"}}{{- end -}}
{{- end -}}";
    let out = render(text, true, 4).unwrap();
    assert_eq!(
        out,
        "3 Scanned, 1 Updated, 1 Failed\n- web (localhost:5000/web:latest): 111111111111 updated to 222222222222\n- api: Failed: exit code 3"
    );
    let title = render(
        "{{.Title}} {{ if or .Report.Updated .Report.Failed }}yes{{ else if .Host }}no{{ end }}",
        true,
        4,
    )
    .unwrap();
    assert_eq!(title, "wharf watch updates on box yes");
}

#[test]
fn porcelain_v1_prints_one_line_per_container() {
    let out = render(PORCELAIN_V1, true, 4).unwrap();
    assert_eq!(
        out,
        "web (localhost:5000/web:latest): Updated\ndb (localhost:5000/db:latest): Fresh\napi (localhost:5000/api:latest): Failed Error: exit code 3\n"
    );
    let empty = Template::parse(PORCELAIN_V1)
        .unwrap()
        .render(&report_data(&SessionReport::default(), &[], "h"))
        .unwrap();
    assert_eq!(empty, "no containers matched filter\n");
}

#[test]
fn what_is_outside_the_subset_is_refused_by_name() {
    for (text, named) in [
        ("{{printf \"%s\" .}}", "`printf`"),
        ("{{$x := .}}", "variables"),
        ("{{template \"x\"}}", "{{template}}"),
        ("{{range .}}", "has no {{end}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.Message", "not closed"),
    ] {
        let e = Template::parse(text).unwrap_err();
        assert!(e.contains(named), "{text}: {e}");
    }
    let e = render("{{range .}}{{.Mesage}}{{end}}", false, 4).unwrap_err();
    assert!(e.contains(".Mesage") && e.contains("Message"), "{e}");
}
