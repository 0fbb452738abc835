//! Bounds on the text that becomes span attributes.

/// Values longer than this are cut (at a character boundary) before they become attributes.
pub const MAX_VALUE_BYTES: usize = 256;

/// `s` cut to at most [`MAX_VALUE_BYTES`] bytes, at a character boundary.
pub fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE_BYTES {
        let end = (0..=MAX_VALUE_BYTES)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_boundary() {
        assert_eq!(cut("abc".into()), "abc");
        let long = "é".repeat(200); // 400 bytes, 2 per character
        let c = cut(long);
        assert_eq!(c.len(), 256);
        assert!(c.chars().all(|ch| ch == 'é'));
        let odd = format!("a{}", "é".repeat(200)); // the boundary falls inside a character
        assert_eq!(cut(odd).len(), 255);
    }
}
