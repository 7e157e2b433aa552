//! `application/x-protobuf` for the Mesos API, by transcoding: a protobuf
//! call is decoded with Mesos' own descriptors (`proto/mesos/`) and handed
//! to the JSON codec as the JSON Mesos would have sent; an event goes the
//! other way. So there is one mapping ([`super::codec`]) and the wire
//! format is only an encoding of it.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;

use super::codec::BadCall;

/// The encoding of a request body or of an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/x-protobuf`.
    Protobuf,
}

impl Format {
    /// The media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => "application/x-protobuf",
        }
    }

    /// The format a media type names, if it is one we speak.
    pub fn of(media_type: &str) -> Option<Format> {
        let m = media_type.split(';').next().unwrap_or("").trim();
        match m {
            "application/json" => Some(Format::Json),
            "application/x-protobuf" => Some(Format::Protobuf),
            _ => None,
        }
    }
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is generated at build time from the vendored files; a
        // failure here is a build defect, caught by every test that runs.
        DescriptorPool::decode(mezz_proto::mesos::FILE_DESCRIPTOR_SET)
            .expect("the Mesos descriptor set built into this binary decodes")
    })
}

fn message(name: &str) -> prost_reflect::MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the vendored Mesos protos"))
}

/// A protobuf `mesos.v1.scheduler.Call` as the JSON a client would send.
pub fn call_to_json(body: &[u8]) -> Result<Vec<u8>, BadCall> {
    let msg = DynamicMessage::decode(message("mesos.v1.scheduler.Call"), body).map_err(|e| {
        format!("the body is not a protobuf mesos.v1.scheduler.Call ({e}); check Content-Type")
    })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    let mut out = Vec::new();
    msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .map_err(|e| format!("the call cannot be read: {e}"))?;
    Ok(out)
}

/// A Mesos event in JSON, encoded as a protobuf `mesos.v1.scheduler.Event`.
pub fn event_to_protobuf(json: &Value) -> Result<Vec<u8>, String> {
    let msg = DynamicMessage::deserialize_with_options(
        message("mesos.v1.scheduler.Event"),
        json.clone(),
        &DeserializeOptions::new(),
    )
    .map_err(|e| format!("event {json} does not encode as mesos.v1.scheduler.Event: {e}"))?;
    Ok(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::mesos::v1::scheduler::{call, Call};
    use mezz_proto::mesos::v1::{FrameworkId, FrameworkInfo, OfferId};

    #[test]
    fn a_protobuf_call_reads_as_its_json() {
        let c = Call {
            framework_id: Some(FrameworkId {
                value: "f-1".into(),
            }),
            r#type: Some(call::Type::Decline as i32),
            decline: Some(call::Decline {
                offer_ids: vec![OfferId {
                    value: "o-1".into(),
                }],
                filters: Some(mezz_proto::mesos::v1::Filters {
                    refuse_seconds: Some(60.0),
                }),
            }),
            ..Default::default()
        };
        let json = call_to_json(&c.encode_to_vec()).expect("transcodes");
        let parsed = super::super::codec::parse_call(&json).expect("the codec reads it");
        let super::super::codec::MesosCall::Call {
            call:
                Some(crate::node::Call::Decline {
                    offer_ids,
                    refuse_seconds,
                    ..
                }),
            ..
        } = parsed
        else {
            panic!("not a decline: {parsed:?}")
        };
        assert_eq!(offer_ids, vec!["o-1"]);
        assert_eq!(refuse_seconds, Some(60.0));

        let s = Call {
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: FrameworkInfo {
                    user: "u".into(),
                    name: "n".into(),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = call_to_json(&s.encode_to_vec()).expect("transcodes");
        assert!(matches!(
            super::super::codec::parse_call(&json),
            Ok(super::super::codec::MesosCall::Subscribe(_))
        ));
    }

    #[test]
    fn garbage_is_named_as_such() {
        let e = call_to_json(b"\xff\xff\xff").expect_err("garbage");
        assert!(e.contains("not a protobuf"), "{e}");
    }
}
