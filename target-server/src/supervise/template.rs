//! `--template SRC:DST`: a configuration file rendered for each backlog. Every `{backlog}` in
//! SRC becomes the number and the result replaces DST atomically (a temporary file beside it,
//! then a rename), so the server never reads a half-written file. The same substitution applies
//! to the command's arguments.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// The placeholder replaced by the backlog.
pub(crate) const PLACEHOLDER: &str = "{backlog}";

/// Largest template read (a configuration file, not a data set).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// One template: where it is read from and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The template.
    pub src: PathBuf,
    /// The rendered file.
    pub dst: PathBuf,
}

impl std::str::FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((src, dst)) if !src.is_empty() && !dst.is_empty() => Ok(Template {
                src: src.into(),
                dst: dst.into(),
            }),
            _ => Err(format!(
                "invalid template \"{}\": expected SRC:DST (the template and the file to write)",
                stampede_proto::usage::cut(s)
            )),
        }
    }
}

impl Template {
    /// Reads the template (bounded); warns when it has no `{backlog}`, since then every
    /// backlog gets the same file.
    pub(crate) fn load(&self) -> Result<String, ConfigError> {
        let text = self.read()?;
        if !text.contains(PLACEHOLDER) {
            tracing::warn!(
                template = %self.src.display(),
                "the template has no {PLACEHOLDER}: every backlog gets the same file"
            );
        }
        Ok(text)
    }

    /// Reads the template (bounded), UTF-8 text or an error naming it.
    pub(crate) fn read(&self) -> Result<String, ConfigError> {
        let file = stampede_proto::input::read_bounded(&self.src, MAX_TEMPLATE_BYTES)
            .map_err(|e| ConfigError::new("template", self.src.display(), e))?;
        let text = String::from_utf8(file.bytes)
            .map_err(|_| ConfigError::new("template", self.src.display(), "not UTF-8 text"))?;
        Ok(text)
    }

    /// Writes `text` with `backlog` in place of every `{backlog}` to DST, atomically.
    pub(crate) fn render(&self, text: &str, backlog: i32) -> std::io::Result<()> {
        write_atomic(&self.dst, &substitute(text, backlog))
    }
}

/// `text` with every `{backlog}` replaced.
pub(crate) fn substitute(text: &str, backlog: i32) -> String {
    text.replace(PLACEHOLDER, &backlog.to_string())
}

fn write_atomic(dst: &Path, text: &str) -> std::io::Result<()> {
    let name = dst
        .file_name()
        .map_or_else(|| "rendered".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dst.with_file_name(format!(".{name}.stampede-tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dst).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        std::io::Error::new(e.kind(), format!("writing {}: {e}", dst.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        assert!(
            "a.conf"
                .parse::<Template>()
                .unwrap_err()
                .contains("expected SRC:DST")
        );
        assert!(":b".parse::<Template>().is_err());
        let dir = std::env::temp_dir().join(format!("stp-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("t.conf");
        std::fs::write(&src, "listen 80 backlog={backlog}; # {backlog}\n").unwrap();
        let t: Template = format!("{}:{}", src.display(), dir.join("out.conf").display())
            .parse()
            .unwrap();
        let text = t.load().unwrap();
        t.render(&text, 512).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("out.conf")).unwrap(),
            "listen 80 backlog=512; # 512\n"
        );
        let missing: Template = format!("{}:x", dir.join("nope").display()).parse().unwrap();
        let e = missing.load().unwrap_err().to_string();
        assert!(e.starts_with("invalid template"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
