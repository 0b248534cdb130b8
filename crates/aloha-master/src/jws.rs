//! Spark's JWS bearer for the REST submission port (`--submission-jws-secret-file`).
//!
//! Spark 4 guards its master's REST submission server with `org.apache.spark.ui.JWSFilter`:
//! every request carries `Authorization: Bearer <jws>`, a compact JWS signed with HMAC-SHA256
//! under a shared secret given base64url-encoded
//! (`spark.org.apache.spark.ui.JWSFilter.param.secretKey`). [`JwsKey::verify`] accepts what
//! that filter accepts: header `alg` `HS256` (nothing else: no `none`, no other algorithm), a
//! valid signature (compared in constant time), and a JSON object payload whose `exp` and `nbf`,
//! when present, hold at the time of the request. The payload's other claims are not checked,
//! as in Spark: whoever holds the secret may submit.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The shortest secret accepted, in bytes: HS256 keys must have at least 256 bits (as jjwt,
/// which Spark's filter uses, requires).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a JWS was refused; the text goes to the log, never to the caller in detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts separated by dots, or a part is not JSON.
    #[error("not a compact JWS: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than HS256 (`none` included).
    #[error("algorithm {0:?} is not accepted (HS256 only)")]
    Algorithm(String),
    /// The header has `crit` extensions this verifier does not know.
    #[error("critical header extensions are not supported")]
    Critical,
    /// The signature does not match the secret.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("not valid yet")]
    NotYetValid,
}

/// The shared secret of the submission port's JWS bearer.
#[derive(Clone, PartialEq)]
pub struct JwsKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for JwsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwsKey(<secret>)")
    }
}

/// Base64url, with or without padding (Spark's documentation shows Java's padded encoder).
fn decode_base64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

impl JwsKey {
    /// Reads the base64url-encoded secret from `path` (mode 0600, like every secret file).
    pub fn from_file(path: &Path) -> Result<JwsKey, String> {
        let text = aloha_proto::auth::read_secret_file(path, "submission JWS secret")?;
        Self::from_base64url(&text)
            .map_err(|e| format!("submission JWS secret file {}: {e}", path.display()))
    }

    /// The secret from its base64url text.
    pub fn from_base64url(text: &str) -> Result<JwsKey, String> {
        let key = decode_base64url(text.trim()).map_err(|e| {
            format!("the secret must be base64url-encoded, as Spark's JWSFilter takes it: {e}")
        })?;
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} (e.g. `openssl \
                 rand 32 | basenc --base64url`)",
                key.len()
            ));
        }
        Ok(JwsKey { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    /// Checks `token` (a compact JWS) at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<(), JwsError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("three dot-separated parts"));
        };
        let header_json: serde_json::Value = decode_base64url(header)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwsError::Malformed("the header is not base64url JSON"))?;
        match header_json.get("alg").and_then(|a| a.as_str()) {
            Some("HS256") => {}
            other => return Err(JwsError::Algorithm(other.unwrap_or("").to_string())),
        }
        if header_json.get("crit").is_some() {
            return Err(JwsError::Critical);
        }
        let signature =
            decode_base64url(signature).map_err(|_| JwsError::Malformed("the signature"))?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        // Constant time.
        mac.verify_slice(&signature)
            .map_err(|_| JwsError::Signature)?;
        // Signed: now the claims. Spark's filter reads them as JWT claims: an object.
        let claims: serde_json::Map<String, serde_json::Value> = decode_base64url(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwsError::Malformed(
                "the payload is not a base64url JSON object",
            ))?;
        let time = |name: &str| -> Result<Option<i64>, JwsError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|t| Some(t as i64))
                    .ok_or(JwsError::Malformed("exp and nbf must be numbers")),
            }
        };
        if let Some(exp) = time("exp")? {
            if now >= exp {
                return Err(JwsError::Expired);
            }
        }
        if let Some(nbf) = time("nbf")? {
            if now < nbf {
                return Err(JwsError::NotYetValid);
            }
        }
        Ok(())
    }

    /// A JWS over `header` and `claims` (JSON texts) signed with this key.
    #[cfg(test)]
    pub fn sign(&self, header: &str, claims: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str =
        "VmlzaXQgaHR0cHM6Ly9zcGFyay5hcGFjaGUub3JnIHRvIGRvd25sb2FkIEFwYWNoZSBTcGFyay4=";
    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn key() -> JwsKey {
        JwsKey::from_base64url(SECRET).unwrap()
    }

    #[test]
    fn a_token_signed_with_the_secret_is_accepted() {
        let t = key().sign(HS256, r#"{"sub":"ci"}"#);
        assert_eq!(key().verify(&t, 1_000), Ok(()));
        // A header without `typ` and empty claims, as jjwt makes by default.
        let spark = key().sign(r#"{"alg":"HS256"}"#, "{}");
        assert_eq!(key().verify(&spark, 1_000), Ok(()));
    }

    #[test]
    fn another_secret_none_other_algorithms_and_tampering_are_refused() {
        let other = JwsKey::from_base64url(&URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap();
        let t = other.sign(HS256, "{}");
        assert_eq!(key().verify(&t, 0), Err(JwsError::Signature));

        // alg none, with no signature and with the right HS256 signature stuck on.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(
            key().verify(&none, 0),
            Err(JwsError::Algorithm("none".into()))
        );
        let forged = key().sign(r#"{"alg":"none"}"#, "{}");
        assert!(matches!(
            key().verify(&forged, 0),
            Err(JwsError::Algorithm(_))
        ));
        let hs512 = key().sign(r#"{"alg":"HS512"}"#, "{}");
        assert!(matches!(
            key().verify(&hs512, 0),
            Err(JwsError::Algorithm(_))
        ));
        let no_alg = key().sign(r#"{"typ":"JWT"}"#, "{}");
        assert!(matches!(
            key().verify(&no_alg, 0),
            Err(JwsError::Algorithm(_))
        ));
        let crit = key().sign(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#, "{}");
        assert_eq!(key().verify(&crit, 0), Err(JwsError::Critical));

        // A changed payload under the old signature.
        let t = key().sign(HS256, r#"{"sub":"a"}"#);
        let mut parts: Vec<&str> = t.split('.').collect();
        let changed = URL_SAFE_NO_PAD.encode(r#"{"sub":"b"}"#);
        parts[1] = &changed;
        assert_eq!(key().verify(&parts.join("."), 0), Err(JwsError::Signature));

        for bad in ["", "a.b", "a.b.c.d", "!!.e30.x", "e30.e30.e30"] {
            assert!(key().verify(bad, 0).is_err(), "{bad}");
        }
        // Signed, but not a claims object.
        let text = key().sign(HS256, "hello");
        assert!(matches!(
            key().verify(&text, 0),
            Err(JwsError::Malformed(_))
        ));
    }

    #[test]
    fn exp_and_nbf_hold_when_present() {
        let t = key().sign(HS256, r#"{"exp":100,"nbf":50}"#);
        assert_eq!(key().verify(&t, 49), Err(JwsError::NotYetValid));
        assert_eq!(key().verify(&t, 50), Ok(()));
        assert_eq!(key().verify(&t, 99), Ok(()));
        assert_eq!(key().verify(&t, 100), Err(JwsError::Expired));
        let t = key().sign(HS256, r#"{"exp":"soon"}"#);
        assert!(matches!(key().verify(&t, 0), Err(JwsError::Malformed(_))));
    }

    #[test]
    fn short_or_undecodable_secrets_and_open_files_are_refused() {
        assert!(JwsKey::from_base64url("c2hvcnQ")
            .unwrap_err()
            .contains("at least 32"));
        assert!(JwsKey::from_base64url("not base64!").is_err());
        // Padded and unpadded are the same key.
        assert_eq!(
            JwsKey::from_base64url(SECRET).unwrap(),
            JwsKey::from_base64url(SECRET.trim_end_matches('=')).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("jws");
        std::fs::write(&f, format!("{SECRET}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(JwsKey::from_file(&f).unwrap_err().contains("too open"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(JwsKey::from_file(&f).unwrap(), key());
        assert_eq!(format!("{:?}", key()), "JwsKey(<secret>)");
    }
}
