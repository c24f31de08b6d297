//! Inventory errors reported the way rustc and cargo do: file, line and column, the field, a caret
//! under the offending text, and what would be valid.

use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

/// One problem in an inventory file.
#[derive(Debug, Clone, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct InventoryError {
    pub message: String,
    #[source_code]
    pub src: NamedSource<Arc<str>>,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl InventoryError {
    /// `file:line:column` of the error, 1-based, for one-line summaries and tests.
    pub fn location(&self) -> String {
        let text = self.src.inner();
        let offset = self.span.offset().min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}", self.src.name())
    }
}

/// Every problem found in one inventory file; the loader reports all of them at once.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{} in {file}", count(errors.len()))]
pub struct InventoryErrors {
    pub file: String,
    #[related]
    pub errors: Vec<InventoryError>,
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 error".into()
    } else {
        format!("{n} errors")
    }
}

/// Collects errors against one source text.
pub(super) struct Reporter {
    src: NamedSource<Arc<str>>,
    pub errors: Vec<InventoryError>,
}

impl Reporter {
    pub fn new(name: &str, text: &str) -> Self {
        Self {
            src: NamedSource::new(name, Arc::from(text)),
            errors: Vec::new(),
        }
    }

    /// Records an error at `span`; `label` is the short text under the caret.
    pub fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        let help: String = help.into();
        self.errors.push(InventoryError {
            message: message.into(),
            src: self.src.clone(),
            span: span.into(),
            label: label.into(),
            help: (!help.is_empty()).then_some(help),
        });
    }

    /// 1-based line number of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        let text = self.src.inner();
        text[..offset.min(text.len())].matches('\n').count() + 1
    }

    /// The value when nothing was reported; every error otherwise.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, InventoryErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => {
                if self.errors.is_empty() {
                    self.error(
                        0..0,
                        "the inventory is incomplete",
                        "here",
                        "see inventories/ for complete examples",
                    );
                }
                Err(InventoryErrors {
                    file: self.src.name().to_string(),
                    errors: self.errors,
                })
            }
        }
    }
}
