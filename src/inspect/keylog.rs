//! The key file `inspect --keys` reads: the IKE and Child SA keys of a capture, in
//! the JSON shape the strongSwan vectors in `tests/vectors/*/keys.json` use, as one
//! object or as several in a row (`esptun run --keylog DIR` appends one per SA to
//! `DIR/keys.json`), whose lists are joined.

use crate::crypto::Secret;
use crate::wire::IkeSpi;
use serde::{Deserialize, Deserializer};

/// Every SA's keys in one capture.
#[derive(Debug, Deserialize)]
pub struct KeyLog {
    /// IKE SAs, the first one and each rekeyed one.
    #[serde(default)]
    pub ike_sas: Vec<IkeSaKeys>,
    /// Child SAs (ESP).
    #[serde(default)]
    pub child_sas: Vec<ChildSaKeys>,
}

/// The SPIs, shared secret and keys of one IKE SA.
#[derive(Debug, Deserialize)]
pub struct IkeSaKeys {
    /// The initiator's SPI.
    #[serde(deserialize_with = "ike_spi")]
    pub spi_i: IkeSpi,
    /// The responder's SPI.
    #[serde(deserialize_with = "ike_spi")]
    pub spi_r: IkeSpi,
    /// The Diffie-Hellman shared secret g^ir (the vectors have it; esptun's key log
    /// does not keep it).
    #[serde(default, deserialize_with = "secret")]
    pub g_ir: Secret,
    /// SKEYSEED (likewise).
    #[serde(default, deserialize_with = "secret")]
    pub skeyseed: Secret,
    /// SK_d.
    #[serde(deserialize_with = "secret")]
    pub sk_d: Secret,
    /// SK_ai, absent with AEAD.
    #[serde(default, deserialize_with = "secret")]
    pub sk_ai: Secret,
    /// SK_ar, absent with AEAD.
    #[serde(default, deserialize_with = "secret")]
    pub sk_ar: Secret,
    /// SK_ei (with the salt for AEAD).
    #[serde(deserialize_with = "secret")]
    pub sk_ei: Secret,
    /// SK_er (with the salt for AEAD).
    #[serde(deserialize_with = "secret")]
    pub sk_er: Secret,
    /// SK_pi.
    #[serde(deserialize_with = "secret")]
    pub sk_pi: Secret,
    /// SK_pr.
    #[serde(deserialize_with = "secret")]
    pub sk_pr: Secret,
}

/// The SPIs and keys of one Child SA, named by the direction of its traffic ("left":
/// the initiating gateway in the vectors, the gateway that wrote esptun's key log).
#[derive(Debug, Deserialize)]
pub struct ChildSaKeys {
    /// SPI of the SA carrying traffic from the left (initiating) gateway.
    #[serde(deserialize_with = "esp_spi")]
    pub spi_left_to_right: u32,
    /// SPI of the SA carrying traffic towards the left gateway.
    #[serde(deserialize_with = "esp_spi")]
    pub spi_right_to_left: u32,
    /// g^ir of the CREATE_CHILD_SA key exchange, when it had one (PFS).
    #[serde(default, deserialize_with = "secret")]
    pub pfs_g_ir: Secret,
    /// Encryption key (with salt for AEAD) of the initiator-to-responder SA.
    #[serde(deserialize_with = "secret")]
    pub encryption_initiator: Secret,
    /// Encryption key of the responder-to-initiator SA.
    #[serde(deserialize_with = "secret")]
    pub encryption_responder: Secret,
    /// Integrity key of the initiator-to-responder SA, absent with AEAD.
    #[serde(default, deserialize_with = "secret")]
    pub integrity_initiator: Secret,
    /// Integrity key of the responder-to-initiator SA, absent with AEAD.
    #[serde(default, deserialize_with = "secret")]
    pub integrity_responder: Secret,
}

/// Why a key file was not loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct KeyLogError {
    path: String,
    source: serde_json::Error,
}

impl KeyLog {
    /// Parses a key file; `path` names it in errors, which carry line and column.
    pub fn parse(path: &str, json: &str) -> Result<Self, KeyLogError> {
        let mut log = Self {
            ike_sas: Vec::new(),
            child_sas: Vec::new(),
        };
        for part in serde_json::Deserializer::from_str(json).into_iter::<Self>() {
            let part = part.map_err(|source| KeyLogError {
                path: path.to_owned(),
                source,
            })?;
            log.ike_sas.extend(part.ike_sas);
            log.child_sas.extend(part.child_sas);
        }
        Ok(log)
    }

    /// The keys of the IKE SA with these SPIs.
    pub fn ike_sa(&self, spi_i: IkeSpi, spi_r: IkeSpi) -> Option<&IkeSaKeys> {
        self.ike_sas
            .iter()
            .find(|k| k.spi_i == spi_i && k.spi_r == spi_r)
    }
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let text = zeroize::Zeroizing::new(String::deserialize(d)?);
    hex::decode(text.as_str())
        .map(Secret::new)
        .map_err(serde::de::Error::custom)
}

fn fixed_hex<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let text = String::deserialize(d)?;
    let mut out = [0; N];
    hex::decode_to_slice(&text, &mut out)
        .map_err(|e| serde::de::Error::custom(format!("{e}: expected {} hex digits", 2 * N)))?;
    Ok(out)
}

fn ike_spi<'de, D: Deserializer<'de>>(d: D) -> Result<IkeSpi, D::Error> {
    fixed_hex::<D, 8>(d).map(|b| IkeSpi(u64::from_be_bytes(b)))
}

fn esp_spi<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    fixed_hex::<D, 4>(d).map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vector_key_files() {
        let log = KeyLog::parse("gcm", include_str!("../../tests/vectors/cbc/keys.json")).unwrap();
        assert_eq!(log.ike_sas.len(), 2);
        assert_eq!(log.ike_sas[0].sk_ai.len(), 32);
        assert!(log.child_sas[0].pfs_g_ir.is_empty());
        let sa = &log.ike_sas[1];
        assert!(log.ike_sa(sa.spi_i, sa.spi_r).is_some());
        assert!(log.ike_sa(sa.spi_r, sa.spi_i).is_none());
    }

    #[test]
    fn objects_in_a_row_are_joined() {
        let ike = |spi: &str| {
            format!(
                r#"{{"ike_sas": [{{"spi_i": "{spi}", "spi_r": "0000000000000002", "sk_d": "", "sk_ei": "00", "sk_er": "01", "sk_pi": "", "sk_pr": ""}}]}}"#
            )
        };
        let child = r#"{"child_sas": [{"spi_left_to_right": "00000003", "spi_right_to_left": "00000004", "encryption_initiator": "05", "encryption_responder": "06"}]}"#;
        let text = format!(
            "{}\n{child}\n{}\n",
            ike("0000000000000001"),
            ike("0000000000000007")
        );
        let log = KeyLog::parse("keys.json", &text).unwrap();
        assert_eq!(log.ike_sas.len(), 2);
        assert_eq!(log.child_sas.len(), 1);
        assert!(log.ike_sa(IkeSpi(7), IkeSpi(2)).is_some());
        assert_eq!(log.ike_sas[0].sk_er.expose(), [1]);
        assert!(log.ike_sas[0].g_ir.is_empty());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = KeyLog::parse("k.json", "{\n \"ike_sas\": [{\"spi_i\": \"00\"}]\n}").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("k.json: "), "{text}");
        assert!(
            text.contains("16 hex digits") && text.contains("line 2"),
            "{text}"
        );
        let err = KeyLog::parse(
            "k.json",
            "{\"ike_sas\": [{\"spi_i\": \"0011223344556677\"}]}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing field `spi_r`"), "{err}");
    }
}
