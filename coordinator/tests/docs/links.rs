//! The relative links of a markdown page (`[text](path#heading)` and `[ref]: path`), outside
//! code, and whether each points at a file that exists and, for a `#heading` in a markdown
//! file, at a heading there (GitHub's anchors: lowercase, punctuation dropped, spaces to `-`).

use std::path::Path;

/// `(line, target)` of every link that is not a URL (`scheme://`, `mailto:`).
pub(crate) fn relative(page: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in page.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let text = without_code_spans(line);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_owned()));
            rest = &after[end..];
        }
        // A reference definition: `[name]: target`.
        if let Some(def) = text.trim_start().strip_prefix('[')
            && let Some((_, target)) = def.split_once("]: ")
        {
            out.push((
                i + 1,
                target.split_whitespace().next().unwrap_or("").to_owned(),
            ));
        }
    }
    out.retain(|(_, t)| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"));
    out
}

/// `line` with its `code spans` blanked.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut code = false;
    for c in line.chars() {
        if c == '`' {
            code = !code;
        }
        out.push(if code { ' ' } else { c });
    }
    out
}

/// Checks one link of `page`: the file exists; a `#anchor` in a markdown file is a heading.
pub(crate) fn check(page: &Path, target: &str) -> Result<(), String> {
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        page.to_owned()
    } else {
        page.parent().expect("a page is in a directory").join(path)
    };
    if !file.exists() {
        return Err(format!("{} does not exist", file.display()));
    }
    if anchor.is_empty() || file.extension().is_none_or(|e| e != "md") {
        return Ok(());
    }
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    let anchors = anchors(&text);
    if anchors.iter().any(|a| a == anchor) {
        Ok(())
    } else {
        Err(format!(
            "no heading #{anchor} in {} (it has: {})",
            path_or_self(path),
            anchors.join(", ")
        ))
    }
}

fn path_or_self(path: &str) -> &str {
    if path.is_empty() { "this page" } else { path }
}

/// The anchors of a page's headings, as GitHub makes them (a repeated one gets `-1`, `-2`).
pub(crate) fn anchors(page: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !fenced) else {
            continue;
        };
        let title = heading.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = out
            .iter()
            .filter(|a| {
                **a == slug
                    || a.strip_prefix(slug.as_str()).is_some_and(|r| {
                        r.starts_with('-') && r[1..].chars().all(|c| c.is_ascii_digit())
                    })
            })
            .count();
        out.push(if repeats == 0 {
            slug
        } else {
            format!("{slug}-{repeats}")
        });
    }
    out
}

#[test]
fn links_and_anchors_are_read_as_github_does() {
    let page = "# Top\n\nSee [a](docs/x.md#two-words) and `[not](code.md)`, [web](https://x.org).\n\n```\n[in](fence.md)\n```\n[ref]: ../y.md\n## Two words\n## 3. Phantoms: connect() is not admission\n## Two words\n";
    assert_eq!(
        relative(page),
        [
            (3, "docs/x.md#two-words".to_owned()),
            (8, "../y.md".to_owned())
        ]
    );
    assert_eq!(
        anchors(page),
        [
            "top",
            "two-words",
            "3-phantoms-connect-is-not-admission",
            "two-words-1"
        ]
    );
}
