//! The template set: built-in templates compiled into the binary, each overridable by a file of
//! the same name in a user directory.

use std::path::{Path, PathBuf};

use rust_embed::Embed;
use tera::{Kwargs, State, Tera, TeraResult, Value};

use super::RenderError;

#[derive(Embed)]
#[folder = "templates/"]
struct Builtin;

/// Prefix the built-in templates are stored under; tera falls back to it when no override exists.
const BUILTIN_PREFIX: &str = "builtin/";

/// A compiled template set, ready to render.
pub struct Templates {
    tera: Tera,
    /// Template names taken from the override directory, sorted.
    overridden: Vec<String>,
}

impl Templates {
    /// Only the built-in templates.
    pub fn builtin() -> Result<Self, RenderError> {
        Self::load(None)
    }

    /// The built-in templates, with any file in `dir` replacing the built-in template of the same
    /// name. A file that overrides nothing is an error: a misspelt name would otherwise be ignored.
    pub fn with_overrides(dir: &Path) -> Result<Self, RenderError> {
        Self::load(Some(dir))
    }

    /// Names of the built-in templates, sorted.
    pub fn builtin_names() -> Vec<String> {
        let mut names: Vec<String> = Builtin::iter().map(|n| n.into_owned()).collect();
        names.sort();
        names
    }

    /// Which built-in templates the override directory replaced.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    fn load(dir: Option<&Path>) -> Result<Self, RenderError> {
        let mut tera = Tera::default();
        // Nothing here is HTML; escaping would corrupt configs.
        tera.autoescape_on(Vec::<&str>::new());
        // Filters and prefixes must exist before templates are parsed.
        tera.register_filter("q", quote);
        tera.set_fallback_prefixes([BUILTIN_PREFIX])
            .map_err(|e| RenderError::template("(setup)", e))?;
        for name in Self::builtin_names() {
            let file = Builtin::get(&name).ok_or_else(|| RenderError::Builtin(name.clone()))?;
            let text =
                std::str::from_utf8(&file.data).map_err(|_| RenderError::Builtin(name.clone()))?;
            tera.add_raw_template(&format!("{BUILTIN_PREFIX}{name}"), text)
                .map_err(|e| RenderError::template(&name, e))?;
        }
        let mut overridden = Vec::new();
        if let Some(dir) = dir {
            let builtin = Self::builtin_names();
            for (name, path) in override_files(dir)? {
                if !builtin.contains(&name) {
                    return Err(RenderError::UnknownOverride {
                        path,
                        known: builtin.join(", "),
                    });
                }
                let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Io {
                    path: path.clone(),
                    source,
                })?;
                tera.add_raw_template(&name, &text)
                    .map_err(|e| RenderError::template(&name, e))?;
                overridden.push(name);
            }
        }
        Ok(Self { tera, overridden })
    }

    pub(super) fn render(
        &self,
        name: &str,
        context: &tera::Context,
    ) -> Result<String, RenderError> {
        self.tera
            .render(name, context)
            .map_err(|e| RenderError::template(name, e))
    }
}

/// Regular files directly in `dir`, as (file name, path), sorted by name.
fn override_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, RenderError> {
    let io = |source| RenderError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            files.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    files.sort();
    Ok(files)
}

/// `{{ x | q }}`: the value as JSON, which is also valid YAML and TOML for strings and lists, so
/// an inserted value can never change a document's structure.
fn quote(value: Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    serde_json::to_string(&value)
        .map(|s| Value::safe_string(&s))
        .map_err(|e| tera::Error::message(e.to_string()))
}
