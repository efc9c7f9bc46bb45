//! Field-level validation errors, collected so a client learns about every bad field at once.

use std::collections::BTreeMap;

/// Whether `c` is invisible or reorders text around it: Unicode's default-ignorable code
/// points (zero-width spaces and joiners, the byte order mark, soft hyphens, variation
/// selectors, tags, fillers) and the bidirectional controls among them (U+200E/F, U+202A–E,
/// U+2066–9, U+061C). In a name they make two different names look the same, or a name look
/// like another.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Field path (`aws.region`, `log_groups[2]`) → what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }

    pub fn into_map(self) -> BTreeMap<String, Vec<String>> {
        self.0
    }

    /// `Ok(value)` when nothing was added.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = FieldErrors::default();
        e.add(field, message);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::is_invisible;

    #[test]
    fn invisible_and_bidi_characters() {
        for c in ['\u{200B}', '\u{200D}', '\u{FEFF}', '\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}', '\u{E0041}'] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'é', '中', ' ', '-', '\u{05D0}'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }
}
