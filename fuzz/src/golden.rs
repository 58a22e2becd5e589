//! The golden mitogen frames (`tests/data/mitogen-frames.json`), for seeding corpora.
//!
//! Only the `frame_hex` strings are needed, so they are scanned out of the text rather than
//! parsed as JSON: the fuzz crate stays free of serde_json.

const GOLDEN: &str = include_str!("../../tests/data/mitogen-frames.json");

/// Every golden frame's wire bytes, in file order.
pub fn frames() -> Vec<Vec<u8>> {
    GOLDEN.split("\"frame_hex\": \"").skip(1).filter_map(|rest| rest.split('"').next()).map(unhex).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_33_golden_frames_are_found() {
        let frames = super::frames();
        assert_eq!(frames.len(), 33);
        assert!(frames.iter().all(|f| f.len() >= arbor_core::frame::HEADER_LEN));
    }
}
