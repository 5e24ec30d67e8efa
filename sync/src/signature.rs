//! Ed25519 signatures as serde fields: 64 bytes, written as a byte string,
//! refused on reading if they are any other length. Shared by the signed
//! statements (`membership` ops, `authorship` attestations).

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
    let bytes = <Vec<u8>>::deserialize(d)?;
    bytes
        .try_into()
        .map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
}
