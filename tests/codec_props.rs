//! Properties of the IKEv2 codec: any message it can represent survives
//! encode → decode → encode byte for byte; hostile bytes never make it panic and
//! whatever it accepts re-encodes stably; truncation and unknown critical
//! payloads are typed errors with the notify RFC 7296 prescribes.

use esptun::wire::payload::{
    AddrRange, AttrValue, AuthPayload, CertPayload, CertReqPayload, CfgAttribute, CpPayload,
    DeletePayload, EapPayload, IdPayload, Identity, KePayload, NoncePayload, NotifyPayload,
    Payload, Proposal, SaPayload, SkPayload, SkfPayload, TrafficSelector, Transform,
    TransformAttribute, TsPayload, TsRange, UnknownPayload, VendorPayload,
};
use esptun::wire::{
    AuthMethod, CertEncoding, CfgAttrType, CfgType, DecodeErrorKind, ExchangeType, Flags, Header,
    IdType, IkeSpi, KeGroup, Message, NotifyType, PayloadType, ProtocolId, TransformAttrType,
    TransformType, TsType,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn ascii(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap()
}

fn transform() -> impl Strategy<Value = Transform> {
    let attribute =
        (0u16..0x8000, any::<bool>(), any::<u16>(), bytes(8)).prop_map(|(kind, short, v, long)| {
            TransformAttribute {
                kind: TransformAttrType(kind),
                value: if short {
                    AttrValue::Short(v)
                } else {
                    AttrValue::Long(long)
                },
            }
        });
    (any::<u8>(), any::<u16>(), vec(attribute, 0..3)).prop_map(|(kind, id, attributes)| Transform {
        kind: TransformType(kind),
        id,
        attributes,
    })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (any::<u8>(), any::<u8>(), bytes(8), vec(transform(), 0..6)).prop_map(
        |(number, protocol, spi, transforms)| Proposal {
            number,
            protocol: ProtocolId(protocol),
            spi,
            transforms,
        },
    )
}

fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| Identity::Ipv4(a.into())),
        any::<[u8; 16]>().prop_map(|a| Identity::Ipv6(a.into())),
        ascii(40).prop_map(Identity::Fqdn),
        ascii(40).prop_map(Identity::Rfc822),
        bytes(60).prop_map(Identity::DerDn),
        bytes(60).prop_map(Identity::DerGn),
        bytes(20).prop_map(Identity::KeyId),
        Just(Identity::Null),
        (
            any::<u8>().prop_filter("named ID type", |t| ![1, 2, 3, 5, 9, 10, 11, 13]
                .contains(t)),
            bytes(20)
        )
            .prop_map(|(t, data)| Identity::Other {
                id_type: IdType(t),
                data,
            }),
    ]
}

fn selector() -> impl Strategy<Value = TrafficSelector> {
    let v4 =
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| AddrRange::V4(a.into(), b.into()));
    let v6 =
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| AddrRange::V6(a.into(), b.into()));
    prop_oneof![
        4 => (any::<u8>(), any::<u16>(), any::<u16>(), prop_oneof![v4, v6]).prop_map(
            |(ip_protocol, start_port, end_port, addrs)| {
                TrafficSelector::Range(TsRange {
                    ip_protocol,
                    start_port,
                    end_port,
                    addrs,
                })
            }
        ),
        1 => (any::<u8>().prop_filter("range TS type", |t| *t != 7 && *t != 8), any::<u8>(), bytes(20)).prop_map(|(t, second_octet, body)| {
            TrafficSelector::Other {
                ts_type: TsType(t),
                second_octet,
                body,
            }
        }),
    ]
}

fn eap() -> impl Strategy<Value = EapPayload> {
    (1u8..=4, any::<u8>(), any::<u8>(), bytes(40)).prop_map(|(code, id, kind, data)| {
        let mut message = vec![code, id, 0, 0];
        if code <= 2 {
            message.push(kind);
        }
        message.extend(data);
        let len = message.len() as u16;
        message[2..4].copy_from_slice(&len.to_be_bytes());
        EapPayload { message }
    })
}

/// Payload types the codec does not decode, so they travel as [`Payload::Unknown`].
fn unknown_type() -> impl Strategy<Value = u8> {
    (1u8..=255).prop_filter("known payload type", |t| !(33..=48).contains(t) && *t != 53)
}

/// Any payload that may appear before the end of a chain.
fn plain_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        vec(proposal(), 1..4).prop_map(|proposals| Payload::Sa(SaPayload { proposals })),
        (any::<u16>(), bytes(64)).prop_map(|(g, data)| Payload::Ke(KePayload {
            group: KeGroup(g),
            data
        })),
        identity().prop_map(|id| Payload::IdI(IdPayload { id })),
        identity().prop_map(|id| Payload::IdR(IdPayload { id })),
        (any::<u8>(), bytes(100)).prop_map(|(e, data)| Payload::Cert(CertPayload {
            encoding: CertEncoding(e),
            data
        })),
        (any::<u8>(), bytes(60)).prop_map(|(e, authorities)| Payload::CertReq(CertReqPayload {
            encoding: CertEncoding(e),
            authorities
        })),
        (any::<u8>(), bytes(100)).prop_map(|(m, data)| Payload::Auth(AuthPayload {
            method: AuthMethod(m),
            data
        })),
        vec(any::<u8>(), 16..=256).prop_map(|data| Payload::Nonce(NoncePayload { data })),
        (any::<u8>(), bytes(8), any::<u16>(), bytes(40)).prop_map(|(protocol, spi, t, data)| {
            Payload::Notify(NotifyPayload {
                protocol: ProtocolId(protocol),
                spi,
                notify_type: NotifyType(t),
                data,
            })
        }),
        prop_oneof![
            Just(DeletePayload::ike()),
            vec(any::<u32>(), 1..5).prop_map(|spis| DeletePayload::esp(&spis)),
        ]
        .prop_map(Payload::Delete),
        bytes(30).prop_map(|id| Payload::Vendor(VendorPayload { id })),
        vec(selector(), 0..4).prop_map(|selectors| Payload::TsI(TsPayload { selectors })),
        vec(selector(), 0..4).prop_map(|selectors| Payload::TsR(TsPayload { selectors })),
        (
            any::<u8>(),
            vec(
                (0u16..0x8000, bytes(20)).prop_map(|(k, value)| CfgAttribute {
                    kind: CfgAttrType(k),
                    value
                }),
                0..5
            )
        )
            .prop_map(|(t, attributes)| Payload::Cp(CpPayload {
                cfg_type: CfgType(t),
                attributes
            })),
        eap().prop_map(Payload::Eap),
        (unknown_type(), bytes(30)).prop_map(|(t, body)| Payload::Unknown(UnknownPayload {
            payload_type: PayloadType(t),
            body
        })),
    ]
}

/// An SK or SKF payload, which ends a chain.
fn encrypted_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (any::<u8>(), bytes(200)).prop_map(|(first, data)| Payload::Sk(SkPayload {
            first_payload: PayloadType(first),
            data
        })),
        (any::<u8>(), 1u16..=64, bytes(200))
            .prop_flat_map(|(first, total, data)| (Just(first), 1..=total, Just(total), Just(data)))
            .prop_map(|(first, number, total, data)| Payload::Skf(SkfPayload {
                first_payload: PayloadType(first),
                fragment_number: number,
                total_fragments: total,
                data,
            })),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let header = (
        any::<u64>(),
        any::<u64>(),
        0u8..16,
        prop_oneof![
            Just(ExchangeType::IKE_SA_INIT),
            Just(ExchangeType::IKE_AUTH),
            Just(ExchangeType::CREATE_CHILD_SA),
            Just(ExchangeType::INFORMATIONAL),
            Just(ExchangeType::IKE_INTERMEDIATE),
            any::<u8>().prop_map(ExchangeType),
        ],
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(
            |(i, r, minor_version, exchange, flags, message_id)| Header {
                spi_i: IkeSpi(i),
                spi_r: IkeSpi(r),
                minor_version,
                exchange,
                flags: Flags(flags),
                message_id,
            },
        );
    (
        header,
        vec(plain_payload(), 0..8),
        proptest::option::of(encrypted_payload()),
    )
        .prop_map(|(header, mut payloads, last)| {
            payloads.extend(last);
            Message { header, payloads }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encode_decode_encode_is_byte_identical(m in message()) {
        let bytes = m.encode().unwrap();
        let decoded = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &m);
        prop_assert_eq!(decoded.encode().unwrap(), bytes);
    }

    #[test]
    fn every_truncation_is_an_error(m in message(), cut in any::<prop::sample::Index>()) {
        let bytes = m.encode().unwrap();
        let len = cut.index(bytes.len());
        prop_assert!(Message::decode(&bytes[..len]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_input_is_stable(data in bytes(2048)) {
        assert_stable(&data)?;
    }

    #[test]
    fn mutated_messages_never_panic_and_accepted_input_is_stable(
        m in message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        tail in bytes(16),
    ) {
        let mut bytes = m.encode().unwrap();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        assert_stable(&bytes)?;
        // Extra bytes with the header length adjusted to match.
        bytes.extend(tail);
        let len = bytes.len() as u32;
        bytes[24..28].copy_from_slice(&len.to_be_bytes());
        assert_stable(&bytes)?;
    }

    #[test]
    fn unknown_payloads_are_kept_unless_critical(t in unknown_type(), body in bytes(40)) {
        let m = Message {
            header: Header {
                spi_i: IkeSpi(1),
                spi_r: IkeSpi(2),
                minor_version: 0,
                exchange: ExchangeType::INFORMATIONAL,
                flags: Flags::new(true, false),
                message_id: 7,
            },
            payloads: vec![Payload::Unknown(UnknownPayload { payload_type: PayloadType(t), body })],
        };
        let mut bytes = m.encode().unwrap();
        prop_assert_eq!(Message::decode(&bytes).unwrap().encode().unwrap(), bytes.clone());
        bytes[29] |= 0x80; // the critical bit of the first payload's generic header
        let err = Message::decode(&bytes).unwrap_err();
        prop_assert_eq!(err.kind.clone(), DecodeErrorKind::UnsupportedCritical(PayloadType(t)));
        prop_assert_eq!(err.notify(), (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t]));
    }
}

/// Whatever decodes re-encodes, and decoding that again gives the same message.
fn assert_stable(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::decode(bytes) {
        let again = m.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Message::decode(&again).unwrap(), m);
    }
    Ok(())
}
