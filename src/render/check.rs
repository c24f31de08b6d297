//! Parse-back of rendered files, so a broken template override fails here, naming the template,
//! instead of on a host.

use std::path::Path;

use super::RenderError;

/// Checks that a YAML or TOML file parses; other formats are left to the tests with real tools.
pub fn parses(template: &str, path: &Path, text: &str) -> Result<(), RenderError> {
    let invalid = |message: String| RenderError::Invalid {
        template: template.to_string(),
        path: path.to_path_buf(),
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml") => {
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(text).map_err(|e| invalid(e.to_string()))?;
            if let Some(i) = docs.iter().position(|d| !d.is_object()) {
                return Err(invalid(format!("document {} is not a mapping", i + 1)));
            }
        }
        Some("toml") => {
            toml::from_str::<toml::Table>(text).map_err(|e| invalid(e.to_string()))?;
        }
        _ => {}
    }
    Ok(())
}
