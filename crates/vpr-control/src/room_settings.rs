//! Room settings that the store has no column for, kept beside CAD's opaque
//! metadata in the `sessions.metadata` column.
//!
//! The column holds a JSON object `{"vpr_room_v1": {"empty_timeout_s": N},
//! "metadata": "<CAD metadata>"}`. A column that is not such an object (a
//! room written before this format) is CAD metadata as it is, with no
//! settings.

use serde::{Deserialize, Serialize};

/// Key that marks the column as this format.
const FORMAT_KEY: &str = "vpr_room_v1";

/// Room settings stored with the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    /// Seconds an empty room may stay open; 0 = no limit.
    // NOTE: stored and returned only; the media plane does not close empty
    // rooms yet.
    pub empty_timeout_s: u32,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "vpr_room_v1")]
    settings: RoomSettings,
    metadata: String,
}

/// Returns the column value for CAD's `metadata` and `settings`.
pub fn encode(metadata: &str, settings: RoomSettings) -> String {
    let envelope = Envelope {
        settings,
        metadata: metadata.to_owned(),
    };
    // A struct of a string and an integer always serializes.
    serde_json::to_string(&envelope).expect("room settings serialize to JSON")
}

/// Splits a column value into CAD's metadata and the room settings.
pub fn decode(column: &str) -> (String, RoomSettings) {
    if column.contains(FORMAT_KEY) {
        if let Ok(envelope) = serde_json::from_str::<Envelope>(column) {
            return (envelope.metadata, envelope.settings);
        }
    }
    (column.to_owned(), RoomSettings::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_settings_round_trip() {
        let settings = RoomSettings {
            empty_timeout_s: 300,
        };
        let column = encode(r#"{"address":"1 Main St"}"#, settings);

        assert_eq!(
            decode(&column),
            (r#"{"address":"1 Main St"}"#.to_owned(), settings)
        );
    }

    #[test]
    fn plain_column_is_metadata() {
        assert_eq!(
            decode(r#"{"address":"1 Main St"}"#),
            (r#"{"address":"1 Main St"}"#.to_owned(), RoomSettings::default())
        );
        assert_eq!(decode(""), (String::new(), RoomSettings::default()));
    }
}
