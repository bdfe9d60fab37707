//! The frame every HTML page of stampede shares (`report.html`, `sweep.html`): one
//! self-contained document (inline CSS and SVG, no scripts, nothing fetched), its head and
//! stylesheet, and small pieces both pages set the same way (the verdict with its commands as
//! code, a key/value table, an alert).

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The stylesheet: readable tables (values carry their unit without a space, `1.02s`, so a
/// cell never breaks a number from its unit), charts beside their legends (the legend wraps
/// below on a narrow window, never over the plot).
const CSS: &str = "\
body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#222}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}\
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
td.text{text-align:left}\
div.wide{overflow-x:auto}div.wide table{font-size:13px}\
.verdict{font-size:16px;background:#f3f7fb;border-left:4px solid #0072b2;padding:8px 12px}\
.alert{background:#fff4e5;border-left:4px solid #d55e00;padding:6px 12px}\
.pass{color:#006b4f;font-weight:600}.fail{color:#b02a00;font-weight:600}\
figure.chart{display:flex;flex-wrap:wrap;align-items:flex-start;gap:8px 16px;margin:12px 0}\
figure.chart figcaption{flex-basis:100%;font-weight:600}\
figure.chart .plot svg{max-width:100%;height:auto}\
ul.legend{list-style:none;margin:0;padding:0;font-size:13px;min-width:200px;max-width:320px}\
ul.legend li{margin:3px 0}ul.legend svg{vertical-align:middle}\
p.note{color:#555;font-size:13px}\
code{background:#f2f2f2;padding:0 3px}";

/// A whole page: `title` as `<title>` and `<h1>`, then `body`.
pub(crate) fn page(title: &str, body: Markup) -> String {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (title) }
                (body)
            }
        }
    };
    let mut s = doc.into_string();
    s.push('\n');
    s
}

/// The verdict paragraph: text written for the terminal too, where `backquotes` mark a
/// command; here they become `<code>`.
pub(crate) fn verdict(text: &str) -> Markup {
    html! {
        p.verdict { strong { "Verdict: " } (code_spans(text)) }
    }
}

/// Text whose `backquoted` parts become `<code>` (an unpaired backquote marks nothing).
pub(crate) fn code_spans(text: &str) -> Markup {
    if !text.matches('`').count().is_multiple_of(2) {
        return html! { (text) };
    }
    html! {
        @for (i, part) in text.split('`').enumerate() {
            // Odd parts are inside backquotes.
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// An alert line: `label: text`.
pub(crate) fn alert(label: &str, text: &str) -> Markup {
    html! { p.alert { strong { (label) ": " } (text) } }
}

/// A two-column table of names and values.
pub(crate) fn pairs<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Markup {
    html! {
        table {
            @for (name, value) in rows {
                tr { th { (name) } td.text { (value) } }
            }
        }
    }
}

/// Pass or fail, styled.
pub(crate) fn pass_fail(passed: bool) -> Markup {
    html! {
        @if passed { span.pass { "pass" } } @else { span.fail { "FAIL" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backquoted_commands_become_code_and_text_is_escaped() {
        assert_eq!(
            code_spans("see `stampede sweep` <now>").into_string(),
            "see <code>stampede sweep</code> &lt;now&gt;"
        );
        assert_eq!(code_spans("one ` alone").into_string(), "one ` alone");
    }

    #[test]
    fn a_page_is_one_document_with_no_scripts() {
        let p = page("t <1>", html! { p { "x" } });
        assert!(p.starts_with("<!DOCTYPE html>"), "{p}");
        assert!(p.contains("<title>t &lt;1&gt;</title>"));
        assert!(!p.contains("<script") && !p.contains("<link"));
    }
}
