//! Character predicates and case mappings exactly as CPython 3.11's `_sre` sees them.
//!
//! Rust's own `char` methods follow a newer Unicode version and different definitions (for example
//! `char::is_numeric` is wider than Python's `\d`, and `char::to_lowercase` is the *full* mapping),
//! so everything the engine needs is looked up in tables taken from Python itself (`tables.rs`).

use super::tables;

/// Looks `c` up in a sorted, non-overlapping list of inclusive ranges.
fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    // Binary search for the last range starting at or before `c`.
    let idx = ranges.partition_point(|&(lo, _)| lo <= c);
    idx > 0 && c <= ranges[idx - 1].1
}

/// Looks `c` up in a sorted mapping table, returning the mapped value or `c` itself.
fn mapped(table: &[(u32, u32)], c: u32) -> u32 {
    match table.binary_search_by_key(&c, |&(from, _)| from) {
        Ok(i) => table[i].1,
        Err(_) => c,
    }
}

/// Python's Unicode `\w`: alphanumeric (in the `str.isalnum` sense) or underscore.
pub(crate) fn is_word(c: u32) -> bool {
    if c < 0x80 {
        return c == u32::from(b'_') || (c as u8).is_ascii_alphanumeric();
    }
    in_ranges(tables::WORD, c)
}

/// Python's Unicode `\d`: decimal digits (general category Nd).
pub(crate) fn is_digit(c: u32) -> bool {
    if c < 0x80 {
        return (c as u8).is_ascii_digit();
    }
    in_ranges(tables::DIGIT, c)
}

/// Python's Unicode `\s`, which is also `str.isspace()` (and so what `str.strip()` removes).
pub(crate) fn is_space(c: u32) -> bool {
    if c < 0x80 {
        // \t \n \v \f \r, the information separators U+001C..U+001F, and space.
        return matches!(c, 0x09..=0x0D | 0x1C..=0x20);
    }
    in_ranges(tables::SPACE, c)
}

/// Whether `repr()` shows `c` as it is (`str.isprintable()`), rather than as an escape.
pub(crate) fn is_printable(c: u32) -> bool {
    if c < 0x80 {
        return (0x20..0x7F).contains(&c);
    }
    in_ranges(tables::PRINTABLE, c)
}

/// ASCII-only `\w` used under the `(?a)` flag.
pub(crate) fn is_ascii_word(c: u32) -> bool {
    c < 0x80 && (c == u32::from(b'_') || (c as u8).is_ascii_alphanumeric())
}

/// ASCII-only `\d` used under the `(?a)` flag.
pub(crate) fn is_ascii_digit(c: u32) -> bool {
    c < 0x80 && (c as u8).is_ascii_digit()
}

/// ASCII-only `\s` (`Py_ISSPACE`: space, `\t`, `\n`, `\v`, `\f`, `\r`).
pub(crate) fn is_ascii_space(c: u32) -> bool {
    matches!(c, 0x09..=0x0D | 0x20)
}

/// `_sre.unicode_tolower`: the simple (one code point) lowercase mapping.
pub(crate) fn lower(c: u32) -> u32 {
    if c < 0x80 {
        return u32::from((c as u8).to_ascii_lowercase());
    }
    mapped(tables::LOWER, c)
}

/// `sre_upper_unicode`: the simple uppercase mapping.
pub(crate) fn upper(c: u32) -> u32 {
    if c < 0x80 {
        return u32::from((c as u8).to_ascii_uppercase());
    }
    mapped(tables::UPPER, c)
}

/// `_sre.unicode_iscased`: whether case-insensitive matching can treat `c` specially.
pub(crate) fn is_cased(c: u32) -> bool {
    if c < 0x80 {
        return (c as u8).is_ascii_alphabetic();
    }
    in_ranges(tables::CASED, c)
}

/// `_sre.ascii_tolower`.
pub(crate) fn ascii_lower(c: u32) -> u32 {
    if c < 0x80 {
        u32::from((c as u8).to_ascii_lowercase())
    } else {
        c
    }
}

/// `_sre.ascii_iscased`.
pub(crate) fn ascii_is_cased(c: u32) -> bool {
    c < 0x80 && (c as u8).is_ascii_alphabetic()
}

/// `re._casefix._EXTRA_CASES[c]`: other lowercase characters sharing `c`'s uppercase form.
pub(crate) fn extra_cases(c: u32) -> &'static [u32] {
    match tables::EXTRA_CASES.binary_search_by_key(&c, |&(k, _)| k) {
        Ok(i) => tables::EXTRA_CASES[i].1,
        Err(_) => &[],
    }
}

/// `str.isidentifier()`, which Python uses to validate group names.
pub(crate) fn is_identifier(s: &str) -> bool {
    if s.is_ascii() {
        let b = s.as_bytes();
        return !b.is_empty()
            && (b[0] == b'_' || b[0].is_ascii_alphabetic())
            && b.iter().all(|c| *c == b'_' || c.is_ascii_alphanumeric());
    }
    let mut chars = s.chars();
    match chars.next() {
        Some(first) if first == '_' || in_ranges(tables::XID_START, u32::from(first)) => {}
        _ => return false,
    }
    chars.all(|c| in_ranges(tables::XID_CONTINUE, u32::from(c)))
}

/// The numeric value of a Unicode decimal digit (Python's `int()` accepts any of them).
pub(crate) fn decimal_value(c: char) -> Option<u32> {
    let cp = u32::from(c);
    if !is_digit(cp) {
        return None;
    }
    // Decimal digits are encoded in contiguous runs of ten starting at zero (a Unicode stability
    // guarantee), and the generated table merges only whole runs, so the offset inside the
    // containing range gives the value.
    let ranges = tables::DIGIT;
    let idx = ranges.partition_point(|&(lo, _)| lo <= cp);
    let start = ranges[idx - 1].0;
    Some((cp - start) % 10)
}

/// Python's `str.strip()` with no argument: removes leading and trailing `isspace()` characters.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| is_space(u32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_classes_follow_python_not_rust() {
        // Arabic-Indic digit is `\d`; Roman numeral Ⅻ is numeric for Rust but not `\d` for Python.
        assert!(is_digit(0x0663));
        assert!(!is_digit(u32::from('Ⅻ')));
        assert!(is_word(u32::from('Ⅻ')));
        // NBSP and U+001C are Python whitespace.
        assert!(is_space(0xA0));
        assert!(is_space(0x1C));
        assert!(!is_space(0x200B));
    }

    #[test]
    fn ascii_fast_paths_agree_with_tables() {
        for c in 0..0x80 {
            assert_eq!(is_space(c), in_ranges(tables::SPACE, c), "{c:#x}");
            assert_eq!(is_word(c), in_ranges(tables::WORD, c), "{c:#x}");
            assert_eq!(is_digit(c), in_ranges(tables::DIGIT, c), "{c:#x}");
            assert_eq!(is_cased(c), in_ranges(tables::CASED, c), "{c:#x}");
            assert_eq!(lower(c), mapped(tables::LOWER, c), "{c:#x}");
            assert_eq!(upper(c), mapped(tables::UPPER, c), "{c:#x}");
            let s = char::from_u32(c).map(String::from).unwrap_or_default();
            let table_ident = c == u32::from(b'_') || in_ranges(tables::XID_START, c);
            assert_eq!(is_identifier(&s), table_ident, "{c:#x}");
        }
    }

    #[test]
    fn case_mappings_are_simple_mappings() {
        assert_eq!(lower(0x130), u32::from('i'));
        assert_eq!(lower(u32::from('K')), u32::from('k'));
        assert_eq!(lower(0x212A), u32::from('k'));
        assert_eq!(upper(u32::from('ß')), u32::from('ß'));
        assert_eq!(extra_cases(u32::from('s')), &[0x17F]);
    }

    #[test]
    fn identifiers_follow_str_isidentifier() {
        assert!(is_identifier("größe"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }

    #[test]
    fn digit_values_cover_non_ascii_digits() {
        assert_eq!(decimal_value('٣'), Some(3));
        assert_eq!(decimal_value('7'), Some(7));
        assert_eq!(decimal_value('x'), None);
    }
}
