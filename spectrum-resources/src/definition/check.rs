//! Checks shared by every kind's validation: text fields, absolute paths, credentials.

use std::path::Path;

use super::{MAX_SEALED_LEN, MAX_VALUE_LEN};
use crate::error::DefinitionError;
use crate::secret::Secret;

/// Checks a string: not empty, at most [`MAX_VALUE_LEN`] bytes, and no control
/// characters (line breaks and tabs allowed when `multiline`).
pub(super) fn check_text(field: &str, value: &str, multiline: bool) -> Result<(), DefinitionError> {
    if value.trim().is_empty() {
        return Err(DefinitionError::missing(field));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(DefinitionError::TooLarge { field: field.into(), len: value.len(), max: MAX_VALUE_LEN });
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if let Some(ch) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(DefinitionError::invalid(field, format!("holds the control character {ch:?}")));
    }
    Ok(())
}

pub(super) fn check_path(field: &str, path: &Path) -> Result<(), DefinitionError> {
    let text = path.to_str().ok_or_else(|| DefinitionError::invalid(field, "is not valid UTF-8"))?;
    check_text(field, text, false)?;
    if !path.is_absolute() {
        return Err(DefinitionError::invalid(field, format!("{text:?} is not an absolute path")));
    }
    Ok(())
}

pub(super) fn check_credentials(
    user: Option<&str>,
    password: Option<&Secret>,
) -> Result<(), DefinitionError> {
    if let Some(user) = user {
        check_text("user", user, false)?;
    }
    if let Some(password) = password {
        if password.is_empty() {
            return Err(DefinitionError::invalid("password", "is empty; leave the field out instead"));
        }
        let max = if password.is_sealed() { MAX_SEALED_LEN } else { MAX_VALUE_LEN };
        if password.len() > max {
            return Err(DefinitionError::TooLarge { field: "password".into(), len: password.len(), max });
        }
    }
    Ok(())
}

pub(super) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
